//! Mock backends built on [`TestServer`], emulating the HTTP
//! (and WebSocket) contracts of the services `backend-pool` fronts.
//!
//! Each mock has a `*_builder` returning a preconfigured
//! [`ServerBuilder`] (so a test can add e.g. an
//! `accept_delay`) and a shortcut that builds it.
//!
//! | mock | real service | idle keep-alive |
//! | --- | --- | --- |
//! | [`comfyui`] | ComfyUI (aiohttp), HTTP + WebSocket `/ws` | none (aiohttp: 3630 s) |
//! | [`litellm`] | LiteLLM proxy (uvicorn), bearer auth | 5 s |
//! | [`gradio`] | Gradio 5 / Wan2GP (uvicorn), SSE | 5 s |
//! | [`rvc`] | rvc-python API (uvicorn) | 5 s |
//! | [`generic`] | any HTTP/1.1 + WebSocket service | none |
//!
//! The shortcuts panic if `127.0.0.1:0` cannot be bound.

mod comfyui;
mod generic;
mod gradio;
mod litellm;
mod rvc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use comfyui::{comfyui, comfyui_builder, comfyui_with, ComfyOptions};
pub use generic::{generic, generic_builder, generic_with_token};
pub use gradio::{gradio, gradio_builder};
pub use litellm::{litellm, litellm_builder, litellm_with_idle};
pub use rvc::{rvc, rvc_builder};

use crate::{ServerBuilder, TestServer};

/// uvicorn's default `timeout_keep_alive`.
pub const UVICORN_KEEP_ALIVE: Duration = Duration::from_secs(5);

fn start(builder: ServerBuilder, what: &str) -> TestServer {
    match builder.build() {
        Ok(server) => server,
        Err(e) => panic!("testkit: cannot start mock {what}: {e}"),
    }
}

/// 128 pseudo-random bits (not cryptographic; unique within the process).
fn random_u128() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x =
        (nanos as u64) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    let mut next = || {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (u128::from(next()) << 64) | u128::from(next())
}

/// A UUID-v4-shaped identifier (`xxxxxxxx-xxxx-4xxx-8xxx-xxxxxxxxxxxx`).
pub fn uuid_like() -> String {
    let r = random_u128();
    let hex = format!("{r:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// 32 hex digits (Gradio's event id shape).
fn hex_id() -> String {
    format!("{:032x}", random_u128())
}

/// Seconds since the Unix epoch.
fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// FastAPI's shape for errors: `{"detail": "..."}`.
fn detail(status: u16, msg: &str) -> crate::Response {
    crate::Response::json(status, serde_json::json!({ "detail": msg }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_shape() {
        let a = super::uuid_like();
        let b = super::uuid_like();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(&a[14..15], "4");
    }
}
