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
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

mod abort;
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
mod service;
mod slots;
mod stats;
mod sync;
mod ws;

pub use config::{HttpPoolConfig, ManagerConfig, Secret, ServiceConfig, WsPoolConfig};
pub use error::{
    ConfigError, ConfigLocation, Error, ErrorChain, ErrorClass, Phase, PoolKind, PoolState,
};
pub use health::{HealthSnapshot, HealthState};
pub use http::{HttpClient, HttpConnection, RequestBuilder, Response, StreamingResponse};
pub use manager::{global, InUse, PoolManager, ShutdownReport};
pub use stats::{
    ClosedCounts, ErrorCounts, LatencyStats, ManagerStats, PoolStats, ServiceStats, Totals,
};
pub use tungstenite::Message;
pub use ws::{Socket, WsGuard, WsStream};
