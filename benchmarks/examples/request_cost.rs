//! The client's own work per request, counted exactly: one thread sends `N` tiny GETs through
//! one peer, so a run under `valgrind --tool=callgrind` (instructions) or `strace -c` (system
//! calls) gives the cost of that peer's request path without the scheduling noise of a shared
//! machine. Run it twice with different `N` and divide the difference by the difference in
//! requests, which cancels start-up and warm-up.
//!
//! ```sh
//! cargo build -p backend-pool-benchmarks --release --example request_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/request_cost pool 2000 http://127.0.0.1:18080
//! ```
//!
//! Peers: `pool` (`manager.http("svc")?.get("/").call()`), `checkout` (`client.checkout()`
//! then a GET on its agent), `ureq` (a shared `ureq::Agent`, the pool's buffers, no timeouts),
//! `ureq-timeouts` (the same with the pool's default timeouts). `REQUEST_COST_TOKEN=…` gives
//! the pool's service a bearer token. Without a URL the example
//! starts the comparison's fast server as a child process (not traced by valgrind or strace
//! without `-f`), so only the client is counted.

#[path = "support/fastserver.rs"]
mod fastserver;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use backend_pool::{HttpPoolConfig, ManagerConfig, PoolManager, ServiceConfig};

fn main() {
    if std::env::args().any(|a| a == "--server") {
        fastserver::run();
    }
    let mut args = std::env::args().skip(1);
    let peer = args.next().unwrap_or_else(|| "pool".into());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let mut child = None;
    let url = match args.next() {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            let mut server = Command::new(exe)
                .arg("--server")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the server child");
            let mut line = String::new();
            std::io::BufReader::new(server.stdout.take().expect("child stdout"))
                .read_line(&mut line)
                .expect("ports line");
            let port = line.split_whitespace().nth(1).expect("port");
            let url = format!("http://127.0.0.1:{port}");
            child = Some(server);
            url
        }
    };
    let defaults = HttpPoolConfig::default();
    let service = ServiceConfig::default();
    let ms = Duration::from_millis;
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .input_buffer_size(defaults.input_buffer_bytes)
        .output_buffer_size(defaults.output_buffer_bytes);
    if peer == "ureq-timeouts" {
        config = config
            .timeout_connect(Some(ms(service.connect_timeout_ms)))
            .timeout_send_request(Some(ms(service.request_timeout_ms)))
            .timeout_send_body(Some(ms(service.request_timeout_ms)))
            .timeout_recv_response(Some(ms(service.request_timeout_ms)))
            .timeout_per_read(Some(ms(service.read_idle_timeout_ms)));
    }
    let agent = ureq::Agent::new_with_config(config.build());
    let mut svc = ServiceConfig::new("svc", url.as_str());
    // `REQUEST_COST_TOKEN=…`: the service sends a bearer token on every request, as a LiteLLM
    // service does (the pool then sends one header of its own per request).
    if let Ok(token) = std::env::var("REQUEST_COST_TOKEN") {
        svc.bearer_token = Some(backend_pool::Secret::new(token));
    }
    svc.http = Some(HttpPoolConfig {
        max_connections: 1,
        min_connections: 0,
        ..HttpPoolConfig::default()
    });
    let manager = PoolManager::new(ManagerConfig::empty().with_service(svc)).expect("manager");
    let client = manager.http("svc").expect("client");
    let target = format!("{url}/");
    let auth = std::env::var("REQUEST_COST_TOKEN")
        .ok()
        .map(|token| format!("Bearer {token}"));
    let auth = auth.as_deref();
    let one = || -> bool {
        match peer.as_str() {
            "pool" => matches!(client.get("/").call(), Ok(r) if r.status() == 200),
            "checkout" => {
                let conn = client.checkout().expect("checkout");
                ureq_get(conn.agent(), &target, auth)
            }
            "ureq" | "ureq-timeouts" => ureq_get(&agent, &target, auth),
            other => panic!("unknown peer {other:?} (pool, checkout, ureq, ureq-timeouts)"),
        }
    };
    let mut failed = 0;
    for _ in 0..n {
        if !one() {
            failed += 1;
        }
    }
    println!("{peer}: {n} requests, {failed} failed");
    let _ = manager.shutdown(Duration::from_secs(2));
    if let Some(mut server) = child {
        drop(server.stdin.take()); // the server exits when its stdin closes
        let _ = server.wait();
    }
}

fn ureq_get(agent: &ureq::Agent, url: &str, auth: Option<&str>) -> bool {
    let mut request = agent.get(url);
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    match request.call() {
        Ok(mut r) => r.status() == 200 && r.body_mut().read_to_vec().is_ok(),
        Err(_) => false,
    }
}
