//! uvicorn's real 5 s keep-alive: gaps of 6 s between calls all succeed, one connection per gap.

use std::thread;
use std::time::Duration;

use backend_pool::ServiceConfig;
use serde_json::{json, Value};

use crate::common::*;
use crate::support::*;

#[derive(Debug)]
struct GapRun {
    label: String,
    failures: Vec<String>,
    server_requests: usize,
    server_connections: usize,
    created: u64,
    retries: u64,
    closed_idle: u64,
    closed_other: u64,
    /// Per gap: our sockets to the server in CLOSE_WAIT just before the next request.
    close_wait: Vec<usize>,
}

/// Requests separated by `gaps` idle gaps of 6 s (longer than uvicorn's 5 s keep-alive): a
/// GET and a POST after each gap (the POST first after the second gap), tagged with
/// `?run=label` so concurrent runs on one server are told apart in its log.
fn gap_run(
    label: &str,
    svc: ServiceConfig,
    log: &Backend,
    get: &str,
    post: (&str, Value),
    gaps: usize,
) -> GapRun {
    let tag = format!("run={label}");
    let mark = log.mark();
    let name = svc.name.clone();
    let m = manager(1000, vec![svc]);
    let http = m.http(&name).unwrap();
    let get_path = format!("{get}?{tag}");
    let post_path = format!("{}?{tag}", post.0);
    let mut failures = Vec::new();
    let mut close_wait = Vec::new();
    for round in 0..=gaps {
        if round > 0 {
            thread::sleep(Duration::from_millis(5_800));
            close_wait.push(close_wait_to(url_port(&log.url)));
            thread::sleep(Duration::from_millis(200));
        }
        let mut calls = vec![("GET", get_path.as_str()), ("POST", post_path.as_str())];
        if round == 2 {
            calls.reverse(); // the first request after this gap is the POST
        }
        for (method, path) in calls {
            let r = if method == "GET" {
                http.get(path).call()
            } else {
                http.post(path).send_json(&post.1)
            };
            if let Err(e) = expect(r, 200, "") {
                failures.push(format!("round {round} {method} {path}: {e}"));
            }
        }
    }
    let pool = http_stats(&m, &name);
    m.shutdown(Duration::from_secs(2)).unwrap();
    thread::sleep(Duration::from_millis(300));
    let entries: Vec<_> = mark
        .entries()
        .into_iter()
        .filter(|a| a.path.contains(&tag))
        .collect();
    GapRun {
        label: label.to_string(),
        failures,
        server_requests: entries.len(),
        server_connections: ports(&entries).len(),
        created: pool.connections_created,
        retries: pool.retries,
        closed_idle: pool.closed.idle,
        closed_other: pool.closed.other,
        close_wait,
    }
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn uvicorn_closes_idle_connections_after_5s_gaps_of_6s_all_succeed_one_connection_per_gap() {
    const GAPS: usize = 3;
    let rvc = Backend::get("rvc");
    let lite = Backend::get("litellm");
    let audio = base64(&wav(1_000));
    let plain = |mut s: ServiceConfig, keepalive_ms: u64| {
        s.health_path = None; // only the test's requests in the log
        s.http.as_mut().unwrap().keepalive_idle_ms = keepalive_ms;
        s
    };
    // Default keep-alive limit (4 s): the pool drops the socket itself before uvicorn does.
    // 60 s: the pool keeps a socket uvicorn has closed, and must cope when it reaches it.
    let runs = [
        (
            "rvc-default",
            plain(rvc_service(&rvc, 4), 4_000),
            rvc.clone(),
        ),
        ("rvc-60s", plain(rvc_service(&rvc, 4), 60_000), rvc.clone()),
        (
            "litellm-default",
            plain(litellm_service("litellm", &lite, 4), 4_000),
            lite.clone(),
        ),
        (
            "litellm-60s",
            plain(litellm_service("litellm", &lite, 4), 60_000),
            lite.clone(),
        ),
    ];
    let threads: Vec<_> = runs
        .into_iter()
        .map(|(label, svc, backend)| {
            let audio = audio.clone();
            thread::spawn(move || {
                if backend.server == "rvc" {
                    gap_run(
                        label,
                        svc,
                        &backend,
                        "/models",
                        ("/convert", json!({ "audio_data": audio })),
                        GAPS,
                    )
                } else {
                    gap_run(
                        label,
                        svc,
                        &backend,
                        "/v1/models",
                        ("/v1/chat/completions", chat_body(false)),
                        GAPS,
                    )
                }
            })
        })
        .collect();
    let runs: Vec<GapRun> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for r in &runs {
        println!(
            "{:16} {} requests, server saw {} connections for {GAPS} gaps; pool created {}, \
             retried {}, closed idle {} / other {}; sockets in CLOSE_WAIT before each \
             post-gap request {:?}; failures {:?}",
            r.label,
            r.server_requests,
            r.server_connections,
            r.created,
            r.retries,
            r.closed_idle,
            r.closed_other,
            r.close_wait,
            r.failures
        );
    }
    for r in &runs {
        assert!(r.failures.is_empty(), "{}: {:?}", r.label, r.failures);
        assert_eq!(r.server_requests, 2 * (GAPS + 1), "{r:?}");
        // One connection at the start and one per gap: no reconnect loop.
        assert_eq!(r.server_connections, GAPS + 1, "{r:?}");
        assert_eq!(r.created as usize, r.server_connections, "{r:?}");
        if r.label.ends_with("default") {
            assert!(
                r.closed_idle >= GAPS as u64,
                "the pool did not expire the idle socket: {r:?}"
            );
        } else {
            // uvicorn really closed the pooled socket before each post-gap request, and the
            // pool got past it without an error. (The count is per server: a default run
            // on the same server closed its own socket at 4 s, so it is not in CLOSE_WAIT.)
            assert!(r.close_wait.iter().all(|n| *n >= 1), "{r:?}");
            assert_eq!(r.closed_idle, 0, "{r:?}");
        }
    }
}
