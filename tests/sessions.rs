//! Sessions (`manager.session(name)`): a job's HTTP calls and WebSocket leases pinned to one
//! endpoint, chosen once by health, sessions pinned and the queue length each server
//! reported at its health probe (ComfyUI's `GET /prompt`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use backend_pool::{ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::{Response, TestServer};
use serde_json::json;
use support::eventually;

/// A ComfyUI stand-in: `GET /prompt` reports `queue`, `POST /prompt` and `GET /view`
/// answer, `/ws` echoes.
fn comfy(queue: Arc<AtomicU64>) -> TestServer {
    TestServer::builder()
        .http(move |req| match (req.method.as_str(), req.path_only()) {
            ("GET", "/prompt") => Response::json(
                200,
                json!({"exec_info": {"queue_remaining": queue.load(SeqCst)}}),
            ),
            ("POST", "/prompt") => Response::json(200, json!({"prompt_id": "p", "number": 1})),
            _ => Response::text(200, "image"),
        })
        .websocket("/ws", |_| {})
        .build()
        .unwrap()
}

fn service(urls: Vec<String>) -> ServiceConfig {
    let mut s = support::service("comfyui", "");
    s.url = String::new();
    s.urls = Some(urls);
    s.health_path = Some("/prompt".into());
    s.health_interval_ms = 20;
    s.websocket = Some(WsPoolConfig {
        max_connections: 8,
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    s
}

fn manager(s: ServiceConfig) -> PoolManager {
    PoolManager::new(ManagerConfig {
        maintenance_interval_ms: 10,
        service: vec![s],
    })
    .expect("valid config")
}

/// Two ComfyUI machines reporting queues of 0 and 5 (the first takes new sessions) as one
/// service, `tweak`ed, and its manager once both queue lengths were probed.
fn two_machines(
    tweak: impl FnOnce(&mut ServiceConfig),
) -> (Vec<TestServer>, Vec<String>, PoolManager) {
    let depth = [0, 5].map(|n| Arc::new(AtomicU64::new(n)));
    let servers: Vec<TestServer> = depth.iter().map(|q| comfy(Arc::clone(q))).collect();
    let urls: Vec<String> = servers.iter().map(TestServer::http_url).collect();
    let mut s = service(urls.clone());
    tweak(&mut s);
    let m = manager(s);
    assert!(eventually(Duration::from_secs(5), || {
        queues(&m) == [Some(0), Some(5)]
    }));
    (servers, urls, m)
}

/// Each endpoint's reported queue length, in configuration order.
fn queues(m: &PoolManager) -> Vec<Option<u64>> {
    let stats = m.stats();
    let s = stats.service("comfyui").unwrap();
    s.endpoints.iter().map(|e| e.queue_remaining).collect()
}

/// The requests `server` logged whose path carries `job=<id>`, as (method, id).
fn jobs_seen(server: &TestServer) -> Vec<(String, String)> {
    server
        .request_log()
        .into_iter()
        .filter_map(|(method, path)| {
            let id = path.split("job=").nth(1)?.to_string();
            Some((method, id))
        })
        .collect()
}

#[test]
fn a_session_goes_to_the_shortest_queue_and_stays_there() {
    let depth: Vec<Arc<AtomicU64>> = [5, 0, 9].map(|n| Arc::new(AtomicU64::new(n))).into();
    let servers: Vec<TestServer> = depth.iter().map(|q| comfy(Arc::clone(q))).collect();
    let urls: Vec<String> = servers.iter().map(TestServer::http_url).collect();
    let m = manager(service(urls.clone()));
    assert!(eventually(Duration::from_secs(5), || {
        queues(&m) == [Some(5), Some(0), Some(9)]
    }));

    // The empty queue takes the first session, and the second (1 pinned < 5 queued).
    let first = m.session("comfyui").unwrap();
    let second = m.session("comfyui").unwrap();
    assert_eq!(first.endpoint(), urls[1]);
    assert_eq!(second.endpoint(), urls[1]);
    assert_eq!(
        m.stats().service("comfyui").unwrap().endpoints[1].sessions,
        2
    );

    // Its queue grows: the next session goes to the next shortest (5 < 9 < 2 + 20).
    depth[1].store(20, SeqCst);
    assert!(eventually(Duration::from_secs(5), || queues(&m)[1] == Some(20)));
    let third = m.session("comfyui").unwrap();
    assert_eq!(third.endpoint(), urls[0]);

    // Every call of a session reaches its endpoint, however loads change meanwhile.
    depth[0].store(100, SeqCst);
    for i in 0..5 {
        let http = first.http().unwrap();
        http.post(&format!("/prompt?job=first{i}"))
            .send_json(&json!({}))
            .unwrap();
        http.get(&format!("/view?job=first{i}")).call().unwrap();
        let mut ws = first.websocket().unwrap();
        ws.send_text("hi").unwrap();
        ws.read().unwrap();
        ws.finish();
    }
    assert_eq!(jobs_seen(&servers[1]).len(), 10);
    assert!(jobs_seen(&servers[0]).is_empty() && jobs_seen(&servers[2]).is_empty());
    assert!(servers[1].ws_accepted() >= 1);
    assert_eq!(servers[0].ws_accepted() + servers[2].ws_accepted(), 0);

    drop((first, second, third));
    let stats = m.stats();
    let sessions: Vec<usize> = stats
        .service("comfyui")
        .unwrap()
        .endpoints
        .iter()
        .map(|e| e.sessions)
        .collect();
    assert_eq!(sessions, [0, 0, 0]);
}

#[test]
fn eight_threads_twenty_jobs_each_on_one_machine_spread_over_three() {
    let servers: Vec<TestServer> = (0..3).map(|_| comfy(Arc::new(AtomicU64::new(0)))).collect();
    let urls: Vec<String> = servers.iter().map(TestServer::http_url).collect();
    let m = Arc::new(manager(service(urls.clone())));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let m = Arc::clone(&m);
            thread::spawn(move || {
                (0..20)
                    .map(|j| {
                        let id = format!("{t}-{j}");
                        let job = m.session("comfyui").unwrap();
                        let mut ws = job.websocket().unwrap();
                        let http = job.http().unwrap();
                        http.post(&format!("/prompt?job={id}"))
                            .send_json(&json!({"prompt": {}}))
                            .unwrap();
                        ws.send_text(&id).unwrap();
                        ws.read().unwrap();
                        ws.finish();
                        http.get(&format!("/view?job={id}")).call().unwrap();
                        (id, job.endpoint().to_string())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let pinned: BTreeMap<String, String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(pinned.len(), 160);
    // Each job's prompt and output went to the one machine its session named.
    for (i, server) in servers.iter().enumerate() {
        let seen = jobs_seen(server);
        let ids: BTreeSet<&String> = seen.iter().map(|(_, id)| id).collect();
        for id in &ids {
            assert_eq!(pinned[*id], urls[i], "job {id} reached {}", urls[i]);
            let methods: BTreeSet<&str> = seen
                .iter()
                .filter(|(_, s)| s == *id)
                .map(|(m, _)| m.as_str())
                .collect();
            assert_eq!(methods, BTreeSet::from(["GET", "POST"]), "job {id}");
        }
        let expected = pinned.values().filter(|u| **u == urls[i]).count();
        assert_eq!(ids.len(), expected);
        assert!(
            expected >= 10,
            "load not spread: {expected} jobs on {}",
            urls[i]
        );
    }
    // Each endpoint's WebSocket leases are its jobs'.
    let stats = m.stats();
    for (i, e) in stats
        .service("comfyui")
        .unwrap()
        .endpoints
        .iter()
        .enumerate()
    {
        let jobs = pinned.values().filter(|u| **u == urls[i]).count() as u64;
        assert_eq!(e.websocket.as_ref().unwrap().acquisitions, jobs);
        assert_eq!(e.sessions, 0);
    }
}

#[test]
fn a_session_websocket_lease_is_cancellable_and_stays_on_its_endpoint() {
    let servers: Vec<TestServer> = (0..2).map(|_| comfy(Arc::new(AtomicU64::new(0)))).collect();
    let urls: Vec<String> = servers.iter().map(TestServer::http_url).collect();
    let m = manager(service(urls.clone()));
    let job = m.session("comfyui").unwrap();
    let mine = urls.iter().position(|u| u == job.endpoint()).unwrap();

    let token = backend_pool::CancelToken::new();
    let mut ws = job.websocket_cancellable(&token).unwrap();
    ws.send_text("hi").unwrap();
    ws.read().unwrap();
    ws.finish();
    assert!(servers[mine].ws_accepted() >= 1);
    assert_eq!(servers[1 - mine].ws_accepted(), 0);

    token.cancel();
    let err = job.websocket_cancellable(&token).unwrap_err();
    assert!(
        matches!(err, backend_pool::Error::Cancelled { .. }),
        "{err}"
    );
    assert_eq!(servers[1 - mine].ws_accepted(), 0);
}

/// Three endpoints whose first reported the shortest queue at its one health probe, then
/// died unnoticed (no probe since): a new session is pinned to the dead one. Returns the
/// manager, the two live servers and the three URLs.
fn first_endpoint_dead_unnoticed() -> (PoolManager, Vec<TestServer>, Vec<String>) {
    let depth = [0, 5, 5].map(|n| Arc::new(AtomicU64::new(n)));
    let mut servers: Vec<TestServer> = depth.iter().map(|q| comfy(Arc::clone(q))).collect();
    let urls: Vec<String> = servers.iter().map(TestServer::http_url).collect();
    let mut s = service(urls.clone());
    s.health_interval_ms = 60_000; // the first probe only
    let m = manager(s);
    assert!(eventually(Duration::from_secs(5), || {
        queues(&m) == [Some(0), Some(5), Some(5)]
    }));
    drop(servers.remove(0));
    let health = m.stats().service("comfyui").unwrap().endpoints[0]
        .health
        .clone();
    assert_eq!(health.consecutive_failures, 0, "noticed too soon");
    (m, servers, urls)
}

#[test]
fn a_session_on_an_endpoint_dead_before_its_first_call_moves_to_a_live_one() {
    // A POST first: its connect is refused (nothing sent), so it goes to a live endpoint,
    // once, and the session stays there for the rest of the job.
    let (m, servers, urls) = first_endpoint_dead_unnoticed();
    let job = m.session("comfyui").unwrap();
    assert_eq!(job.endpoint(), urls[0]);
    job.http()
        .unwrap()
        .post("/prompt?job=a")
        .send_json(&json!({}))
        .expect("the first call moves to a live endpoint");
    let now = job.endpoint().to_string();
    let live = urls.iter().position(|u| *u == now).unwrap();
    assert_ne!(live, 0);
    job.http().unwrap().get("/view?job=a").call().unwrap();
    let mut ws = job.websocket().unwrap();
    ws.send_text("hi").unwrap();
    ws.read().unwrap();
    ws.finish();
    // The prompt was sent once, and every part of the job met on one machine.
    let seen = jobs_seen(&servers[live - 1]);
    assert_eq!(
        seen,
        [("POST".into(), "a".into()), ("GET".into(), "a".into())]
    );
    assert!(jobs_seen(&servers[2 - live]).is_empty());
    assert_eq!(servers[2 - live].ws_accepted(), 0);
    let stats = m.stats();
    let sessions: Vec<usize> = stats
        .service("comfyui")
        .unwrap()
        .endpoints
        .iter()
        .map(|e| e.sessions)
        .collect();
    assert_eq!(sessions[0], 0, "the dead endpoint still counts the session");
    assert_eq!(sessions[live], 1);

    // A WebSocket first: the same.
    let (m, servers, urls) = first_endpoint_dead_unnoticed();
    let job = m.session("comfyui").unwrap();
    assert_eq!(job.endpoint(), urls[0]);
    let mut ws = job
        .websocket()
        .expect("the first lease moves to a live endpoint");
    ws.send_text("hi").unwrap();
    ws.read().unwrap();
    ws.finish();
    let live = urls.iter().position(|u| u == job.endpoint()).unwrap();
    assert_ne!(live, 0);
    assert_eq!(servers[live - 1].ws_accepted(), 1);
    assert_eq!(servers[2 - live].ws_accepted(), 0);
}

#[test]
fn a_session_whose_job_reached_its_endpoint_never_moves() {
    let (mut servers, urls, m) = two_machines(|s| s.health_interval_ms = 60_000);
    let job = m.session("comfyui").unwrap();
    assert_eq!(job.endpoint(), urls[0]);
    job.http()
        .unwrap()
        .post("/prompt?job=b")
        .send_json(&json!({}))
        .unwrap();
    // Its machine dies: the job's state was there, so its next calls fail (classified),
    // and are not sent to the other machine.
    drop(servers.remove(0));
    for _ in 0..3 {
        let err = job.http().unwrap().get("/view?job=b").call().unwrap_err();
        assert!(
            matches!(
                err.class(),
                backend_pool::ErrorClass::Connect | backend_pool::ErrorClass::Unavailable
            ),
            "{err}"
        );
        let err = job.websocket().unwrap_err();
        assert!(
            matches!(
                err.class(),
                backend_pool::ErrorClass::Connect | backend_pool::ErrorClass::Unavailable
            ),
            "{err}"
        );
        assert_eq!(job.endpoint(), urls[0]);
    }
    assert!(jobs_seen(&servers[0]).is_empty());
    assert_eq!(servers[0].ws_accepted(), 0);
}

#[test]
fn a_session_whose_endpoints_are_all_dead_unnoticed_fails_its_first_call_once_per_endpoint() {
    let (servers, _, m) = two_machines(|s| {
        s.health_interval_ms = 60_000;
        s.unhealthy_after = 5;
    });
    drop(servers);
    let job = m.session("comfyui").unwrap();
    let err = job
        .http()
        .unwrap()
        .post("/prompt")
        .send_json(&json!({}))
        .unwrap_err();
    assert_eq!(err.class(), backend_pool::ErrorClass::Connect, "{err}");
    // Each endpoint was tried once (one connect failure each), and the session stays
    // counted once, where it ended.
    let stats = m.stats();
    let endpoints = &stats.service("comfyui").unwrap().endpoints;
    let failures: Vec<u64> = endpoints
        .iter()
        .map(|e| e.http.as_ref().unwrap().connect_failures)
        .collect();
    assert_eq!(failures, [1, 1]);
    assert_eq!(endpoints.iter().map(|e| e.sessions).sum::<usize>(), 1);
    let err = job.websocket().unwrap_err();
    assert!(
        matches!(
            err.class(),
            backend_pool::ErrorClass::Connect | backend_pool::ErrorClass::Unavailable
        ),
        "{err}"
    );
    drop(job);
    let stats = m.stats();
    let endpoints = &stats.service("comfyui").unwrap().endpoints;
    assert_eq!(endpoints.iter().map(|e| e.sessions).sum::<usize>(), 0);
}

#[test]
fn a_session_whose_endpoint_turned_unhealthy_before_its_first_call_moves() {
    let (mut servers, urls, m) = two_machines(|s| s.unhealthy_after = 2);
    let job = m.session("comfyui").unwrap();
    assert_eq!(job.endpoint(), urls[0]);
    // Its machine dies and health notices before the job's first call: the fail-fast
    // gate turns the call away (nothing sent), and the session takes the other machine.
    drop(servers.remove(0));
    assert!(eventually(Duration::from_secs(5), || {
        m.stats().service("comfyui").unwrap().endpoints[0]
            .health
            .state
            == backend_pool::HealthState::Unhealthy
    }));
    job.http()
        .unwrap()
        .post("/prompt?job=c")
        .send_json(&json!({}))
        .expect("moved to the live endpoint");
    assert_eq!(job.endpoint(), urls[1]);
    assert_eq!(jobs_seen(&servers[0]), [("POST".into(), "c".into())]);
}

/// A server may report any queue length JSON can carry: the largest does not overflow the
/// load sum (sessions pinned + queue), which still orders endpoints.
#[test]
fn a_huge_reported_queue_neither_overflows_nor_wins() {
    let depth: Vec<Arc<AtomicU64>> = [u64::MAX, u64::MAX - 1, 3]
        .map(|n| Arc::new(AtomicU64::new(n)))
        .into();
    let servers: Vec<TestServer> = depth.iter().map(|q| comfy(Arc::clone(q))).collect();
    let urls: Vec<String> = servers.iter().map(TestServer::http_url).collect();
    let m = manager(service(urls.clone()));
    assert!(eventually(Duration::from_secs(5), || {
        queues(&m).iter().all(Option::is_some)
    }));
    // The two huge queues saturate; the short one takes sessions until it is as long.
    let sessions: Vec<_> = (0..4).map(|_| m.session("comfyui").unwrap()).collect();
    for s in &sessions {
        assert_eq!(s.endpoint(), urls[2]);
    }
    // Pinned sessions on a huge queue: still no overflow.
    depth[2].store(u64::MAX, SeqCst);
    assert!(eventually(Duration::from_secs(5), || {
        queues(&m)[2] == Some(u64::MAX - 1)
    }));
    // Loads now: MAX - 1, MAX - 1, MAX (saturated): the next two go to the first two.
    let more: Vec<_> = (0..2).map(|_| m.session("comfyui").unwrap()).collect();
    let mut chosen: Vec<&str> = more.iter().map(|s| s.endpoint()).collect();
    chosen.sort_unstable();
    let mut expected = vec![urls[0].as_str(), urls[1].as_str()];
    expected.sort_unstable();
    assert_eq!(chosen, expected);
}
