//! A service with several endpoints (`urls`): configuration rules, least-in-flight routing,
//! an endpoint taken out when it dies and back when it returns, the retry-elsewhere rule
//! (a GET once, a POST never), per-endpoint statistics against what each server accepted.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use backend_pool::{ConfigError, Error, ErrorClass, ManagerConfig, PoolManager, ServiceConfig};
use support::eventually;

/// How a [`Backend`] answers `/work`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The head at once, the body after `delay`.
    Answer { delay: Duration },
    /// Reads the request and closes the connection without a byte of a response.
    CloseBeforeResponse,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    gets: AtomicUsize,
    posts: AtomicUsize,
}

/// A loopback HTTP/1.1 server bound to a chosen port, so that a test can kill it and start
/// another on the same port (the testkit's `TestServer` binds port 0 only). Counts the
/// connections it accepted and the `/work` requests it read, by method; `/health` answers
/// 200 and is not counted.
struct Backend {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(port: u16, mode: Mode) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (c, halt, live) = (counts.clone(), stop.clone(), conns.clone());
        let accept = thread::spawn(move || {
            while !halt.load(SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        // The head and the body go in two writes: no Nagle wait between.
                        stream.set_nodelay(true).unwrap();
                        c.accepted.fetch_add(1, SeqCst);
                        live.lock().unwrap().push(stream.try_clone().unwrap());
                        let (c, halt) = (c.clone(), halt.clone());
                        thread::spawn(move || serve(stream, mode, &c, &halt));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
            // The listener closes here: new connects are refused.
        });
        Backend {
            addr,
            counts,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn gets(&self) -> usize {
        self.counts.gets.load(SeqCst)
    }

    fn posts(&self) -> usize {
        self.counts.posts.load(SeqCst)
    }

    /// Stops listening and shuts every connection down, as a crashed backend.
    fn kill(mut self) -> u16 {
        self.stop.store(true, SeqCst);
        if let Some(accept) = self.accept.take() {
            accept.join().unwrap();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        self.addr.port()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Serves keep-alive requests on one connection until the client or the server ends it.
fn serve(stream: TcpStream, mode: Mode, counts: &Counts, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let first = head.lines().next().unwrap_or("");
        if first.contains(" /health") {
            let _ = writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            continue;
        }
        if first.starts_with("POST") {
            counts.posts.fetch_add(1, SeqCst);
        } else {
            counts.gets.fetch_add(1, SeqCst);
        }
        match mode {
            Mode::CloseBeforeResponse => {
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            Mode::Answer { delay } => {
                let sent = writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n");
                thread::sleep(delay);
                if sent.is_err() || stop.load(SeqCst) || writer.write_all(b"done").is_err() {
                    return;
                }
            }
        }
    }
}

/// A service over `urls` with test-friendly timeouts and a fast health check.
fn service(urls: &[String]) -> ServiceConfig {
    let mut s = support::service("gpu", "");
    s.url = String::new();
    s.urls = Some(urls.to_vec());
    s.health_path = Some("/health".into());
    s.health_interval_ms = 20;
    s.health_timeout_ms = 500;
    s.unhealthy_after = 2;
    s.http.as_mut().unwrap().max_connections = 8;
    s
}

fn manager(s: ServiceConfig) -> PoolManager {
    PoolManager::new(ManagerConfig {
        maintenance_interval_ms: 10,
        service: vec![s],
    })
    .expect("valid config")
}

/// The `requests` figure of each endpoint's HTTP pool, in configuration order.
fn requests_per_endpoint(m: &PoolManager) -> Vec<u64> {
    let stats = m.stats();
    let gpu = stats.service("gpu").expect("listed");
    gpu.endpoints
        .iter()
        .map(|e| e.http.as_ref().unwrap().requests.unwrap())
        .collect()
}

#[test]
fn urls_is_validated_and_names_the_service() {
    let reason = |s: ServiceConfig| match s.validate() {
        Err(ConfigError::Invalid {
            service,
            field,
            reason,
            ..
        }) => {
            assert_eq!(service, "gpu");
            format!("{field}: {reason}")
        }
        other => panic!("{other:?}"),
    };
    let mut both = service(&["http://127.0.0.1:1".into()]);
    both.url = "http://127.0.0.1:2".into();
    assert!(reason(both).starts_with("urls: is given with url"));
    assert!(reason(service(&[])).starts_with("urls: is empty"));
    let bad = service(&["http://127.0.0.1:1".into(), "ftp://h".into()]);
    assert!(reason(bad).starts_with("urls[1]: 'ftp://h' must start with http://"));
    let twice = service(&["http://127.0.0.1:1".into(), "http://127.0.0.1:1".into()]);
    assert!(
        reason(twice).starts_with("urls[1]: 'http://127.0.0.1:1' is the same endpoint as urls[0]")
    );
    let mut ca = service(&["https://a:1".into(), "http://b:1".into()]);
    ca.ca_file = Some("ca.pem".into());
    assert!(reason(ca).starts_with("ca_file: is set but the url is http://"));
    assert!(service(&["http://a:1".into(), "http://b:1".into()])
        .validate()
        .is_ok());
}

#[test]
fn urls_from_a_file_replace_a_presets_url() {
    let text = "[[service]]\npreset = \"comfyui\"\nurls = [\"http://10.0.0.1:8188\", \"http://10.0.0.2:8188\"]\n";
    let config = ManagerConfig::from_toml_str(text).expect("valid");
    let s = &config.service[0];
    assert_eq!(s.url, "");
    assert_eq!(s.urls.as_ref().unwrap().len(), 2);
    // A JSON configuration (the Python binding's) says the same.
    let json = r#"{"service": [{"name": "gpu", "urls": ["http://a:1", "http://b:1"]}]}"#;
    let config = ManagerConfig::from_json_str(json).expect("valid");
    assert_eq!(config.service[0].urls.as_ref().unwrap().len(), 2);
    let both = "[[service]]\nname = \"a\"\nurl = \"http://h:1\"\nurls = [\"http://h:2\"]\n";
    let err = ManagerConfig::from_toml_str(both).unwrap_err().to_string();
    assert!(err.contains("'a'") && err.contains("urls"), "{err}");
}

#[test]
fn calls_spread_over_three_endpoints_and_a_dead_one_is_taken_out_and_back() {
    let delay = Duration::from_millis(10);
    let servers: Vec<Backend> = (0..3)
        .map(|_| Backend::start(0, Mode::Answer { delay }))
        .collect();
    let urls: Vec<String> = servers.iter().map(Backend::url).collect();
    let m = Arc::new(manager(service(&urls)));

    // 8 threads x 20 calls, all healthy: every call succeeds, every endpoint takes a share.
    let run = |m: &Arc<PoolManager>| {
        let start = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (m, start) = (Arc::clone(m), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    (0..20)
                        .map(|_| {
                            let began = Instant::now();
                            (began, m.http("gpu").unwrap().get("/work").call())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    };
    let results = run(&m);
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    let gets: Vec<usize> = servers.iter().map(Backend::gets).collect();
    assert_eq!(gets.iter().sum::<usize>(), 160, "{gets:?}");
    assert!(gets.iter().all(|&n| n >= 20), "load not spread: {gets:?}");
    // Stats per endpoint agree with what each server accepted.
    let per_endpoint = requests_per_endpoint(&m);
    assert_eq!(
        per_endpoint,
        gets.iter().map(|&n| n as u64).collect::<Vec<_>>()
    );
    let stats = m.stats();
    let gpu = stats.service("gpu").unwrap();
    assert_eq!(gpu.http.as_ref().unwrap().requests, Some(160), "totals");
    assert!(stats.to_json().contains("\"endpoints\":["));
    let prom = stats.to_prometheus();
    assert!(
        prom.contains(&format!(
            "backend_pool_requests_total{{service=\"gpu\",endpoint=\"{}\",pool=\"http\"}} {}",
            urls[1], gets[1]
        )),
        "{prom}"
    );

    // Server 1 dies while 8 threads call: its calls in flight fail with a classified
    // error; calls begun after it died all succeed on the others.
    let mut servers = servers;
    let victim = servers.remove(1);
    let before: Vec<usize> = servers.iter().map(Backend::gets).collect();
    let killer = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            // Wait until the victim holds calls in flight.
            let busy = || {
                let stats = m.stats();
                stats.service("gpu").unwrap().endpoints[1]
                    .http
                    .as_ref()
                    .unwrap()
                    .in_use
                    > 0
            };
            assert!(eventually(Duration::from_secs(5), busy));
            let port = victim.kill();
            (Instant::now(), port)
        })
    };
    let results = run(&m);
    let (killed_at, port) = killer.join().unwrap();
    let failed: Vec<&Error> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(failed.len() <= 8, "more failures than calls in flight");
    for e in &failed {
        assert_eq!(e.class(), ErrorClass::Closed, "{e}");
    }
    let late: Vec<_> = results
        .iter()
        .filter(|(began, _)| *began > killed_at)
        .collect();
    assert!(!late.is_empty(), "the run ended before the kill");
    for (_, r) in &late {
        assert!(
            r.is_ok(),
            "a call after the kill failed: {:?}",
            r.as_ref().err()
        );
    }
    let after: Vec<usize> = servers.iter().map(Backend::gets).collect();
    assert!(after.iter().zip(&before).all(|(a, b)| a > b));
    assert!(eventually(Duration::from_secs(2), || {
        m.stats().service("gpu").unwrap().endpoints[1].health.state
            == backend_pool::HealthState::Unhealthy
    }));

    // While it is out, no call is routed to it (its fail-fast gate turns none away).
    let unavailable = |m: &PoolManager| {
        let stats = m.stats();
        stats.service("gpu").unwrap().endpoints[1]
            .http
            .as_ref()
            .unwrap()
            .errors
            .get(ErrorClass::Unavailable)
    };
    let turned_away = unavailable(&m);
    let results = run(&m);
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(
        unavailable(&m),
        turned_away,
        "calls were routed to the dead endpoint"
    );

    // It restarts on the same port: its health probe passes, and it takes calls again.
    let reborn = Backend::start(port, Mode::Answer { delay });
    assert!(eventually(Duration::from_secs(5), || {
        m.stats().service("gpu").unwrap().endpoints[1].health.state
            == backend_pool::HealthState::Healthy
    }));
    let results = run(&m);
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    assert!(reborn.gets() > 0, "the restarted endpoint took no call");
}

#[test]
fn a_get_failing_before_a_response_is_retried_once_elsewhere_a_post_never() {
    let broken = Backend::start(0, Mode::CloseBeforeResponse);
    let good = Backend::start(
        0,
        Mode::Answer {
            delay: Duration::ZERO,
        },
    );
    let mut s = service(&[broken.url(), good.url()]);
    s.unhealthy_after = 100; // the broken endpoint stays in, so every call may meet it
    let m = manager(s);
    let http = m.http("gpu").unwrap();
    // Calls alternate between the two while both are idle; a call that finds the broken
    // one busy still closing the last connection goes to the good one. So send until at
    // least two met the broken endpoint (bounded), rather than a fixed count.
    let mut gets = 0;
    while gets < 10 || (broken.gets() < 2 && gets < 60) {
        let reply = http
            .get("/work")
            .call()
            .expect("retried on the good endpoint");
        assert_eq!(reply.text(), "done");
        gets += 1;
    }
    // Each GET reached the good server once; those the broken one took went there once.
    assert_eq!(good.gets(), gets);
    assert!(broken.gets() >= 1, "no GET met the broken endpoint");
    let stats = m.stats();
    let gpu = stats.service("gpu").unwrap();
    let retries = gpu.endpoints[0].http.as_ref().unwrap().retries;
    assert_eq!(
        retries as usize,
        broken.gets(),
        "one retry per GET it failed"
    );

    let mut failed = 0;
    let mut posts = 0;
    while posts < 10 || (broken.posts() < 2 && posts < 60) {
        posts += 1;
        match http.post("/work").send_bytes(b"{}") {
            Ok(reply) => assert_eq!(reply.text(), "done"),
            Err(e) => {
                assert_eq!(e.class(), ErrorClass::Closed, "{e}");
                failed += 1;
            }
        }
    }
    // No POST was sent twice: each reached exactly one server.
    assert_eq!(broken.posts() + good.posts(), posts);
    assert_eq!(failed, broken.posts());
    assert!(broken.posts() >= 1, "no POST met the broken endpoint");
}

#[test]
fn with_every_endpoint_down_callers_fail_fast_with_the_last_error() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut s = service(&urls);
    s.health_path = None;
    s.unhealthy_after = 1;
    let m = manager(s);
    let http = m.http("gpu").unwrap();
    // The first call meets a refused endpoint, and its retry the other.
    let err = http.get("/work").call().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Connect, "{err}");
    let err = http.get("/work").call().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unavailable, "{err}");
    let text = err.to_string();
    assert!(text.contains("'gpu'") && text.contains("refused"), "{text}");
    assert_eq!(
        m.health("gpu").unwrap().state,
        backend_pool::HealthState::Unhealthy
    );
}

#[test]
fn a_one_url_service_lists_no_endpoints() {
    let server = Backend::start(
        0,
        Mode::Answer {
            delay: Duration::ZERO,
        },
    );
    let m = manager(support::service("gpu", &server.url()));
    m.http("gpu").unwrap().get("/work").call().unwrap();
    let stats = m.stats();
    assert!(stats.service("gpu").unwrap().endpoints.is_empty());
    assert!(!stats.to_json().contains("endpoints"));
    assert!(!stats.to_prometheus().contains("endpoint="));
}

#[test]
fn websocket_leases_go_to_the_endpoint_with_the_fewest_out() {
    let servers: Vec<_> = (0..2).map(|_| support::ws_echo_server()).collect();
    let mut s = service(&servers.iter().map(|s| s.http_url()).collect::<Vec<_>>());
    s.http = None;
    s.health_path = None;
    s.websocket = Some(backend_pool::WsPoolConfig {
        max_connections: 4,
        min_connections: 0,
        ..Default::default()
    });
    let m = manager(s);
    let leases: Vec<_> = (0..6).map(|_| m.websocket("gpu").unwrap()).collect();
    // (The servers count a handshake on their own threads: a moment after the client.)
    let accepted = || servers.iter().map(|s| s.ws_accepted()).collect::<Vec<_>>();
    eventually(Duration::from_secs(2), || accepted() == [3, 3]);
    assert_eq!(accepted(), [3, 3]);
    let stats = m.stats();
    let gpu = stats.service("gpu").unwrap();
    let out: Vec<usize> = gpu
        .endpoints
        .iter()
        .map(|e| e.websocket.as_ref().unwrap().in_use)
        .collect();
    assert_eq!(out, [3, 3]);
    assert_eq!(
        gpu.websocket.as_ref().unwrap().in_use,
        6,
        "the service's sum"
    );
    drop(leases);
}

#[test]
fn a_reconfiguration_and_shutdown_close_every_endpoints_connections() {
    let old: Vec<_> = (0..2).map(|_| support::http_echo_server()).collect();
    let m = manager(service(
        &old.iter().map(|s| s.http_url()).collect::<Vec<_>>(),
    ));
    let http = m.http("gpu").unwrap();
    let barrier = Arc::new(Barrier::new(4));
    thread::scope(|scope| {
        for _ in 0..4 {
            let (http, barrier) = (http.clone(), Arc::clone(&barrier));
            scope.spawn(move || {
                barrier.wait();
                for _ in 0..10 {
                    http.get("/work").call().unwrap();
                }
            });
        }
    });
    assert!(
        old.iter().all(|s| s.open() > 0),
        "both endpoints hold connections"
    );

    let new = support::http_echo_server();
    let mut changed = service(&[new.http_url()]);
    changed.urls = None;
    changed.url = new.http_url();
    let report = m
        .apply(
            ManagerConfig::empty().with_service(changed),
            Duration::from_secs(2),
        )
        .unwrap();
    assert_eq!(report.replaced, ["gpu"]);
    assert!(eventually(Duration::from_secs(2), || old
        .iter()
        .all(|s| s.open() == 0)));
    let err = http.get("/work").call().unwrap_err();
    assert!(matches!(err, Error::ServiceRetired { .. }), "{err}");
    m.http("gpu").unwrap().get("/work").call().unwrap();
    assert!(new.open() > 0);
    m.shutdown(Duration::from_secs(1)).unwrap();
    assert!(eventually(Duration::from_secs(2), || new.open() == 0));
}

/// 8 threads x 20 jobs through sessions, each job a POST and a GET on its session's
/// endpoint: (when it began, its endpoint, its outcome).
type Jobs = Vec<(Instant, String, Result<(), Error>)>;

fn run_jobs(m: &Arc<PoolManager>) -> Jobs {
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let m = Arc::clone(m);
            thread::spawn(move || {
                (0..20)
                    .map(|_| {
                        let began = Instant::now();
                        let job = m.session("gpu").unwrap();
                        let http = job.http().unwrap();
                        let outcome = http
                            .post("/work")
                            .send_bytes(b"{}")
                            .and_then(|_| http.get("/work").call())
                            .map(|_| ());
                        (began, job.endpoint().to_string(), outcome)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn sessions_leave_a_dead_endpoint_and_come_back_when_it_restarts() {
    let delay = Duration::from_millis(10);
    let mut servers: Vec<Backend> = (0..3)
        .map(|_| Backend::start(0, Mode::Answer { delay }))
        .collect();
    let urls: Vec<String> = servers.iter().map(Backend::url).collect();
    let mut s = service(&urls);
    s.unhealthy_after = 1;
    let m = Arc::new(manager(s));
    let jobs = run_jobs(&m);
    assert!(jobs.iter().all(|(_, _, r)| r.is_ok()));
    for (i, server) in servers.iter().enumerate() {
        // Each job sent both its calls to its session's endpoint.
        let pinned = jobs.iter().filter(|(_, u, _)| *u == urls[i]).count();
        assert_eq!((server.posts(), server.gets()), (pinned, pinned));
        assert!(
            pinned >= 20,
            "load not spread: {pinned} jobs on {}",
            urls[i]
        );
    }

    let victim = servers.remove(1);
    let victim_state =
        |m: &PoolManager| m.stats().service("gpu").unwrap().endpoints[1].health.state;
    let killer = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            let busy = || {
                let stats = m.stats();
                stats.service("gpu").unwrap().endpoints[1].sessions > 0
            };
            assert!(eventually(Duration::from_secs(5), busy));
            let port = victim.kill();
            // From when the manager knows (its first failure), no job is pinned there.
            assert!(eventually(Duration::from_secs(2), || {
                victim_state(&m) == backend_pool::HealthState::Unhealthy
            }));
            (Instant::now(), port)
        })
    };
    let jobs = run_jobs(&m);
    let (known_at, port) = killer.join().unwrap();
    for (_, url, r) in &jobs {
        if let Err(e) = r {
            assert_eq!(url, &urls[1], "a job failed on a live endpoint: {e}");
            assert!(
                matches!(e.class(), ErrorClass::Closed | ErrorClass::Connect),
                "{e}"
            );
        }
    }
    let late: Vec<_> = jobs.iter().filter(|(b, _, _)| *b > known_at).collect();
    assert!(!late.is_empty(), "the run ended before the kill was seen");
    for (_, url, r) in late {
        assert!(
            r.is_ok() && *url != urls[1],
            "{url}: {:?}",
            r.as_ref().err()
        );
    }

    let reborn = Backend::start(port, Mode::Answer { delay });
    assert!(eventually(Duration::from_secs(5), || {
        victim_state(&m) == backend_pool::HealthState::Healthy
    }));
    let jobs = run_jobs(&m);
    assert!(jobs.iter().all(|(_, _, r)| r.is_ok()));
    let back = jobs.iter().filter(|(_, u, _)| *u == urls[1]).count();
    assert!(back > 0, "no job went to the restarted endpoint");
    assert_eq!(reborn.posts(), back);
}

#[test]
fn probe_checks_each_endpoint_and_answers_with_a_reachable_one() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let alive = Backend::start(
        0,
        Mode::Answer {
            delay: Duration::ZERO,
        },
    );
    let m = manager(service(&[format!("http://{dead}"), alive.url()]));
    let report = m.probe("gpu", Duration::from_secs(1)).unwrap();
    assert!(report.reachable, "{report:?}");
    let stats = m.stats();
    let endpoints = &stats.service("gpu").unwrap().endpoints;
    // The dead endpoint's failure is recorded in its own health, not the service's answer.
    assert!(endpoints[0].health.consecutive_failures >= 1);
    assert_eq!(endpoints[1].health.consecutive_failures, 0);
    drop(alive);
    let dead2 = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let m = manager(service(&[
        format!("http://{dead}"),
        format!("http://{dead2}"),
    ]));
    let report = m.probe("gpu", Duration::from_secs(1)).unwrap();
    assert!(!report.reachable && report.error.is_some(), "{report:?}");
}

/// A loopback server answering `GET /health` 200 and counting those requests.
fn counting_health() -> (backend_pool_testkit::TestServer, Arc<AtomicUsize>) {
    let probes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&probes);
    let server = backend_pool_testkit::TestServer::builder()
        .http(move |req| {
            if req.path_only() == "/health" {
                seen.fetch_add(1, SeqCst);
            }
            backend_pool_testkit::Response::text(200, "ok")
        })
        .build()
        .unwrap();
    (server, probes)
}

#[test]
fn a_silent_endpoint_does_not_hold_back_its_siblings_health_probes() {
    // The first endpoint accepts and never answers: its probe waits its whole 3 s timeout.
    let silent = support::stall::StallServer::silent();
    let (alive, probes) = counting_health();
    let mut s = service(&[silent.url(), alive.http_url()]);
    s.health_timeout_ms = 3_000;
    let m = manager(s);
    // The live endpoint is probed every 20 ms meanwhile, not once per silent timeout.
    assert!(
        eventually(Duration::from_millis(1_500), || probes.load(SeqCst) >= 5),
        "the live endpoint was probed {} times in 1.5 s beside a silent one",
        probes.load(SeqCst)
    );
    assert!(
        silent.accepted() >= 1,
        "the silent endpoint was never probed"
    );
    drop(m);
}

#[test]
fn probe_answers_within_its_deadline_whatever_the_silent_endpoints() {
    let silent: Vec<_> = (0..3)
        .map(|_| support::stall::StallServer::silent())
        .collect();
    let (alive, _) = counting_health();
    let mut urls: Vec<String> = silent.iter().map(|s| s.url()).collect();
    urls.push(alive.http_url());
    let m = manager(service(&urls));
    let deadline = Duration::from_millis(800);
    let start = Instant::now();
    let report = m.probe("gpu", deadline).unwrap();
    let took = start.elapsed();
    assert!(report.reachable, "{report:?}");
    // One deadline for all the endpoints together (one after another: 3 × 800 ms).
    assert!(
        took < Duration::from_millis(2_000),
        "probe took {took:?} with a deadline of {deadline:?}"
    );
    let stats = m.stats();
    let endpoints = &stats.service("gpu").unwrap().endpoints;
    for e in &endpoints[..3] {
        assert!(e.health.consecutive_failures >= 1, "{e:?}");
    }
    assert_eq!(endpoints[3].health.consecutive_failures, 0);
}
