//! Test support for `backend-pool`: loopback mock servers and process counters.
//!
//! - [`TestServer`]: one port speaking HTTP/1.1 keep-alive and WebSocket (like
//!   ComfyUI's aiohttp server), with connection accounting, a request log and
//!   injectable [`Fault`]s. Built with [`TestServer::builder`].
//! - [`backends`]: ready-made mocks of ComfyUI, LiteLLM, Gradio (Wan2GP), RVC and a
//!   generic fifth service.
//! - [`Blackhole`]: an address where a TCP connect waits (its SYNs are dropped).
//! - [`fd_count`], [`thread_count`], [`thread_names`], [`rss_kib`]: leak checks from
//!   `/proc/self` (Linux) or the Win32 process and thread APIs (Windows).
//!
//! Everything binds `127.0.0.1:0` and uses plain threads (no async runtime).
//!
//! ```
//! use backend_pool_testkit::{Response, TestServer};
//! use std::io::{Read, Write};
//!
//! let server = TestServer::builder()
//!     .http(|req| Response::text(200, &format!("you asked for {}", req.path)))
//!     .build()
//!     .unwrap();
//! let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
//! s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
//! let mut reply = String::new();
//! s.read_to_string(&mut reply).unwrap();
//! assert!(reply.ends_with("you asked for /x"));
//! server.stop();
//! ```
// Windows' process counters (proc_stats) call Win32; nothing else may use `unsafe`.
#![cfg_attr(not(windows), forbid(unsafe_code))]
#![cfg_attr(windows, deny(unsafe_code))]
#![warn(missing_docs)]

pub mod backends;
mod blackhole;
pub mod proc_stats;
mod server;

pub use blackhole::Blackhole;
pub use proc_stats::{fd_count, rss_kib, socket_fds_on_port, thread_count, thread_names};
pub use server::{Fault, Request, Response, ServerBuilder, TaskCtx, TestServer, WsHandle};
