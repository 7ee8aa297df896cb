//! # backend-pool
//!
//! Every network connection a Blender add-on makes to its AI backends (ComfyUI, a LiteLLM
//! proxy, Wan2GP, RVC, and services you define) is created, reused, health-checked, limited,
//! counted and closed here.
//!
//! * **Synchronous.** Blocking I/O on the caller's thread; no async runtime anywhere.
//! * **HTTP pools** are r2d2 over ureq: one pooled item is one keep-alive TCP connection, so
//!   `max_connections` is a true cap; stale keep-alive connections (uvicorn closes idle ones
//!   after 5 s) never reach the caller.
//! * **WebSocket pools** hold tungstenite sockets behind a Mutex + Condvar with FIFO waiters;
//!   idle sockets are pinged and drained by the maintenance thread.
//! * **Maintenance** per manager: a scheduler thread queues each service's health checks,
//!   eviction, lifetime expiry, refills and leak detection on a pool of workers (one per
//!   service, at most 16), so one slow service never delays another's; shutdown cuts blocked
//!   maintenance I/O short.
//! * **Statistics** as a serde snapshot, rendered as JSON or Prometheus text.
//!
//! ```no_run
//! # fn main() -> Result<(), backend_pool::Error> {
//! use std::time::Duration;
//! use backend_pool::{ManagerConfig, PoolManager};
//!
//! let manager = PoolManager::new(ManagerConfig::from_file("services.toml")?)?;
//! let body = serde_json::json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]});
//! let reply = manager.http("litellm")?.post("/v1/chat/completions").send_json(&body)?;
//! println!("{}", reply.text());
//!
//! let mut ws = manager.websocket("comfyui")?; // a lease: see `WsGuard::finish`
//! let status: serde_json::Value = ws.read_json()?;
//! drop(ws);
//!
//! println!("{}", manager.stats().to_prometheus());
//! manager.shutdown(Duration::from_secs(5))?;
//! # Ok(()) }
//! ```
//!
//! # Stability
//!
//! The public API holds the crate's own types only, so a release of ureq or tungstenite is
//! not a breaking change of ours: a WebSocket message is a [`Message`], a checked-out socket
//! is reached through [`WsGuard`]'s methods, an HTTP response is a [`Response`] or a
//! [`StreamingResponse`].
//!
//! * **Types that will grow** are `#[non_exhaustive]`: the statistics and reports
//!   ([`ManagerStats`], [`ServiceStats`], [`EndpointStats`], [`PoolStats`], [`Totals`], [`ClosedCounts`],
//!   [`LatencyStats`], [`PoolState`], [`HealthSnapshot`], [`ShutdownReport`],
//!   [`ApplyReport`], [`ProbeReport`], [`InUse`]) are
//!   read, not built; the enums [`Error`], [`ConfigError`], [`ErrorClass`], [`Phase`],
//!   [`PoolKind`] and [`HealthState`] need a wildcard arm in a `match`. [`Message`] is
//!   exhaustive: WebSocket data is text or binary.
//! * **Threads.** [`PoolManager`], [`HttpClient`], [`Session`], [`RequestBuilder`], [`HttpConnection`],
//!   [`Response`], [`StreamingResponse`], [`WsGuard`], [`Message`], [`Error`] and the
//!   statistics are `Send` and `Sync` (checked when the crate compiles): a guard or a
//!   stream may move to another thread.
//! * **Raw access** to a dependency's type sits behind the cargo feature `unstable-raw`, off
//!   by default and **outside semver**: it may change or go in any release, with the
//!   dependency. Today it opens `HttpConnection::agent` (the connection's `ureq::Agent`),
//!   for benchmarks and diagnostics. Without the feature it is not reachable:
//!
#![cfg_attr(not(feature = "unstable-raw"), doc = "```compile_fail,E0624")]
#![cfg_attr(feature = "unstable-raw", doc = "```no_run")]
//! # fn main() -> Result<(), backend_pool::Error> {
//! # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
//! let conn = manager.http("litellm")?.checkout()?;
//! let agent = conn.agent(); // only with `features = ["unstable-raw"]`
//! # Ok(()) }
//! ```
//!
//! A `#[non_exhaustive]` struct is read, not built, outside the crate:
//!
//! ```compile_fail,E0639
//! let state = backend_pool::PoolState { in_use: 0, idle: 0, waiting: 0, max: 0 };
//! ```
//!
//! The HTTP transport implements ureq's `unversioned` traits, which ureq may change in any
//! release: `Cargo.toml` pins ureq and ureq-proto exactly (README, "Upgrading ureq").
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![warn(rust_2018_idioms)]

mod abort;
mod cancel;
mod clock;
mod config;
mod error;
mod health;
mod http;
mod lease;
mod maintenance;
mod manager;
mod net;
mod pool;
mod registry;
mod route;
mod service;
mod slots;
pub mod sse;
mod stats;
mod sync;
mod ws;

pub use cancel::CancelToken;
pub use config::{HttpPoolConfig, ManagerConfig, Secret, ServiceConfig, WsPoolConfig};
pub use error::{
    ConfigError, ConfigLocation, Error, ErrorChain, ErrorClass, Phase, PoolKind, PoolState,
    StatusBody,
};
pub use health::{HealthSnapshot, HealthState};
pub use http::{
    Download, Form, HttpClient, HttpConnection, Part, Progress, RequestBuilder, Response,
    StreamingResponse,
};
pub use manager::{global, ApplyReport, InUse, PoolManager, ProbeReport, ShutdownReport};
pub use route::Session;
pub use stats::{
    ClosedCounts, EndpointStats, ErrorCounts, LatencyStats, ManagerStats, PoolStats, ServiceStats,
    Totals,
};
pub use ws::message::Message;
pub use ws::{WsAbort, WsGuard};

/// Fails to compile if a public type stops being `Send` or `Sync` (see "Stability").
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<PoolManager>();
    send_sync::<HttpClient>();
    send_sync::<Session>();
    send_sync::<RequestBuilder>();
    send_sync::<HttpConnection>();
    send_sync::<Response>();
    send_sync::<StreamingResponse>();
    send_sync::<WsGuard>();
    send_sync::<Message>();
    send_sync::<CancelToken>();
    send_sync::<WsAbort>();
    send_sync::<Error>();
    send_sync::<ConfigError>();
    send_sync::<ManagerStats>();
    send_sync::<HealthSnapshot>();
    send_sync::<ShutdownReport>();
    send_sync::<ApplyReport>();
    send_sync::<ProbeReport>();
    send_sync::<ManagerConfig>();
};
