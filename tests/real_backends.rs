//! The pools against the REAL servers of `tests/backends/`: the LiteLLM proxy, Gradio 5.29
//! (twice: `wan2gp` and a fifth service, `upscaler`), ComfyUI's protocol on aiohttp and RVC's
//! API on FastAPI/uvicorn. Reuse and reconnects are counted on the server side, from the
//! servers' access logs (one client port per TCP connection).
//!
//! Ignored by a plain `cargo test`. To run:
//!
//! ```sh
//! tests/backends/start.sh && source /tmp/backend-pool-backends/env
//! cargo test --test real_backends -- --ignored --test-threads=1
//! ```
//!
//! (`.ci/real_backends.sh` does both and stops the servers). A missing `BACKEND_*` variable
//! fails the test. The fault tests kill servers with `tests/backends/restart.sh` and restart
//! them on the same port, also when they fail.
//!
//! One test binary; its modules are in `tests/real_backends/`: `support` (the servers, their
//! logs, counters), `common` (service definitions and request helpers), and one module per
//! area below it.

#[path = "real_backends/comfyui.rs"]
mod comfyui;
#[path = "real_backends/common.rs"]
mod common;
#[path = "real_backends/five_services.rs"]
mod five_services;
#[path = "real_backends/gradio.rs"]
mod gradio;
#[path = "real_backends/keep_alive.rs"]
mod keep_alive;
#[path = "real_backends/litellm.rs"]
mod litellm;
#[path = "real_backends/rvc.rs"]
mod rvc;
#[path = "real_backends/server_kills.rs"]
mod server_kills;
#[path = "real_backends/several_endpoints.rs"]
mod several_endpoints;
#[path = "real_backends/support.rs"]
mod support;
