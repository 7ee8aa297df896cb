//! Several endpoints per service (`urls`) against real servers: three ComfyUI stand-ins
//! (aiohttp) as one service, each job in a session; two LiteLLM proxies as one service
//! under 50 concurrent streams. One server of each is killed mid-run. What each server
//! served is counted on the server side: the ComfyUI stand-ins run with `--instance NAME`
//! (each HTTP response carries `X-Mock-Instance`, each WebSocket event an `instance`
//! field), and every server's access log names each request and the client port of its
//! connection.
//!
//! These servers are this module's own processes, on free ports, started and stopped by
//! the tests (`start.sh`'s servers are untouched but for the first LiteLLM proxy, which is
//! used as it is): the second LiteLLM proxy (a few hundred MB) lives only for its test.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{
    ErrorClass, HealthState, Message, PoolManager, Secret, ServiceConfig, WsPoolConfig,
};
use serde_json::{json, Value};

use crate::common::*;
use crate::support::*;

// ---- processes of our own ------------------------------------------------------------------

/// A server process of this module's, in its own process group (`setsid`), its output
/// appended to `log`. Killed (SIGKILL to the group) when dropped.
struct Proc {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    /// `comfyui` or `litellm`, and the instance name of a ComfyUI stand-in.
    kind: &'static str,
    instance: String,
}

fn venv() -> PathBuf {
    PathBuf::from(
        std::env::var("BACKENDS_VENV").unwrap_or_else(|_| "/tmp/backend-pool-venv".into()),
    )
}

fn run_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("BACKENDS_DIR").unwrap_or_else(|_| "/tmp/backend-pool-backends".into()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn backends_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backends")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Does `GET path` on the loopback `port` answer 200 within a second?
fn answers(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

impl Proc {
    fn comfy(instance: &str, port: u16) -> Proc {
        let mut p = Proc {
            child: None,
            port,
            log: run_dir().join(format!("multi-{instance}.log")),
            kind: "comfyui",
            instance: instance.to_string(),
        };
        let _ = std::fs::remove_file(&p.log);
        p.start();
        p
    }

    fn litellm(port: u16) -> Proc {
        let mut p = Proc {
            child: None,
            port,
            log: run_dir().join("multi-litellm2.log"),
            kind: "litellm",
            instance: String::new(),
        };
        let _ = std::fs::remove_file(&p.log);
        p.start();
        p
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port (again, after [`Proc::kill`]) and waits for its health
    /// check.
    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let port = self.port.to_string();
        let mut cmd = Command::new("setsid");
        let health = match self.kind {
            "comfyui" => {
                cmd.arg(venv().join("bin/python"))
                    .arg(backends_dir().join("comfyui_server.py"))
                    .args(["--host", "127.0.0.1", "--port", &port, "--instance"])
                    .arg(&self.instance)
                    .env("PYTHONUNBUFFERED", "1");
                ("/prompt", Duration::from_secs(30))
            }
            _ => {
                cmd.arg(venv().join("bin/litellm"))
                    .arg("--config")
                    .arg(backends_dir().join("litellm.yaml"))
                    .args(["--host", "127.0.0.1", "--port", &port])
                    .args(["--num_workers", "1", "--telemetry", "False"])
                    .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                    .env("LITELLM_TELEMETRY", "False")
                    .env("NO_PROXY", "127.0.0.1,localhost")
                    .env("no_proxy", "127.0.0.1,localhost")
                    .env(
                        "PATH",
                        format!(
                            "{}:{}",
                            venv().join("bin").display(),
                            std::env::var("PATH").unwrap_or_default()
                        ),
                    );
                ("/health/liveliness", Duration::from_secs(180))
            }
        };
        // The server logs a request after answering it: wait for our check's line too, so
        // that a mark taken after `start` never sees it.
        let needle = format!("\"GET {} HTTP/1.1\" 200", health.0);
        let logged = |log: &Path| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches(&needle)
                .count()
        };
        let before = logged(&self.log);
        let child = cmd
            .current_dir(run_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.kind));
        self.child = Some(child);
        let start = Instant::now();
        while !answers(self.port, health.0) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} {} exited while starting ({status}); see {}",
                    self.kind,
                    self.instance,
                    self.log.display()
                );
            }
            assert!(
                start.elapsed() < health.1,
                "{} did not answer {} within {:?}; see {}",
                self.kind,
                health.0,
                health.1,
                self.log.display()
            );
            thread::sleep(Duration::from_millis(100));
        }
        assert!(
            eventually(Duration::from_secs(5), || logged(&self.log) > before),
            "{}: no access-log line for its health check in {}",
            self.kind,
            self.log.display()
        );
    }

    /// SIGKILL to its process group (a crash: the kernel closes its sockets).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn mark(&self) -> LogMark {
        LogMark::at(&self.log)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- ComfyUI: three stand-ins, jobs in sessions --------------------------------------------

fn comfy_urls_service(urls: Vec<String>, ws_max: u32) -> ServiceConfig {
    let mut s = with_http(service("comfyui", ""), 8, 0);
    s.url = String::new();
    s.urls = Some(urls);
    s.health_path = Some("/prompt".into());
    s.health_interval_ms = 200;
    s.unhealthy_after = 2;
    s.websocket = Some(WsPoolConfig {
        client_id_param: Some("clientId".into()),
        max_connections: ws_max,
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    s
}

/// One job's record.
struct Job {
    /// The endpoint its session named at the end.
    endpoint: String,
    began: Instant,
    took: Duration,
    /// The instances that answered its HTTP calls and sent its events, or why it failed.
    outcome: Result<BTreeSet<String>, (ErrorClass, String)>,
}

fn failed(e: backend_pool::Error) -> (ErrorClass, String) {
    (e.class(), e.to_string())
}

/// A job in a session: a socket, `POST /prompt` with its client id, its events to the end,
/// `GET /view` of its output.
fn session_job(m: &PoolManager, steps: u32, step_seconds: f64) -> Job {
    let began = Instant::now();
    let session = m.session("comfyui").expect("session");
    let run = || -> Result<BTreeSet<String>, (ErrorClass, String)> {
        let mut seen = BTreeSet::new();
        let mut ws = session.websocket().map_err(failed)?;
        let client_id = ws.client_id().expect("client id").to_string();
        let http = session.http().map_err(failed)?;
        let reply = http
            .post("/prompt")
            .send_json(&comfy_prompt(&client_id, steps, step_seconds))
            .map_err(failed)?;
        let other = |what: String| (ErrorClass::Other, what);
        if reply.status() != 200 {
            return Err(other(format!("POST /prompt: {}", reply.status())));
        }
        seen.extend(reply.header("x-mock-instance").map(str::to_string));
        let v: Value = reply.json().map_err(failed)?;
        let prompt_id = v["prompt_id"].as_str().expect("prompt_id").to_string();
        loop {
            match ws.read_timeout(Duration::from_secs(15)).map_err(failed)? {
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap();
                    let data = &v["data"];
                    seen.extend(data["instance"].as_str().map(str::to_string));
                    if v["type"] == "executing"
                        && data["node"].is_null()
                        && data["prompt_id"].as_str() == Some(&prompt_id)
                    {
                        break;
                    }
                }
                _ => continue,
            }
        }
        ws.finish();
        let view = http
            .get(&format!("/view?filename=mock_{prompt_id}.png&type=output"))
            .call()
            .map_err(failed)?;
        if view.status() != 200 || !view.body().starts_with(b"\x89PNG") {
            return Err(other(format!("GET /view: {}", view.status())));
        }
        seen.extend(view.header("x-mock-instance").map(str::to_string));
        Ok(seen)
    };
    let outcome = run();
    Job {
        endpoint: session.endpoint().to_string(),
        began,
        took: began.elapsed(),
        outcome,
    }
}

/// `POST /prompt` entries in `entries`.
fn prompts(entries: &[Access]) -> usize {
    entries
        .iter()
        .filter(|a| a.method == "POST" && a.path == "/prompt")
        .count()
}

fn endpoint_health(m: &PoolManager, i: usize) -> HealthState {
    m.stats().service("comfyui").unwrap().endpoints[i]
        .health
        .state
}

#[test]
#[ignore = "needs tests/backends/start.sh (its venv)"]
fn three_comfyui_machines_sticky_jobs_one_killed_and_back() {
    let names = ["c0", "c1", "c2"];
    let mut procs: Vec<Proc> = names.iter().map(|n| Proc::comfy(n, free_port())).collect();
    let urls: Vec<String> = procs.iter().map(Proc::url).collect();
    // Everything the servers log from here on (after the start-up check's request).
    let initial: Vec<LogMark> = procs.iter().map(Proc::mark).collect();
    let name_of: BTreeMap<String, &str> = urls.iter().cloned().zip(names).collect();
    let m = Arc::new(manager(50, vec![comfy_urls_service(urls.clone(), 8)]));
    assert!(eventually(Duration::from_secs(10), || (0..3).all(
        |i| endpoint_health(&m, i) == HealthState::Healthy
            && m.stats().service("comfyui").unwrap().endpoints[i]
                .queue_remaining
                .is_some()
    )));

    // 1. 8 threads × 20 jobs: each job's calls and events from the one machine its
    //    session chose; the jobs spread over the three.
    let marks: Vec<LogMark> = procs.iter().map(Proc::mark).collect();
    let jobs = run_threads(&m, 8, |m, _| {
        (0..20).map(|_| session_job(m, 2, 0.01)).collect()
    });
    assert_eq!(jobs.len(), 160);
    let mut per = BTreeMap::<&str, usize>::new();
    for job in &jobs {
        let seen = job
            .outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("a job failed: {e:?}"));
        let mine = name_of[&job.endpoint];
        assert_eq!(
            seen,
            &BTreeSet::from([mine.to_string()]),
            "a job crossed machines"
        );
        *per.entry(mine).or_default() += 1;
    }
    println!("160 jobs per machine: {per:?}");
    for (i, name) in names.iter().enumerate() {
        let n = per.get(name).copied().unwrap_or(0);
        assert!(n >= 20, "load not spread: {per:?}");
        // Counted on the server: its prompts are exactly the jobs pinned to it.
        assert_eq!(
            prompts(&marks[i].entries()),
            n,
            "{name}'s POST /prompt count"
        );
    }

    // 2. Spread by queue length: c0's queue grows long (slow prompts posted to it
    //    directly, under `/api/`, which the pool never uses); once its probe reports it,
    //    new sessions go to the two others.
    let c0 = procs[0].port;
    for _ in 0..6 {
        direct_post(c0, "/api/prompt", &comfy_prompt("nobody", 100, 0.2));
    }
    assert!(eventually(Duration::from_secs(5), || {
        m.stats().service("comfyui").unwrap().endpoints[0].queue_remaining >= Some(5)
    }));
    let held: Vec<_> = (0..6).map(|_| m.session("comfyui").unwrap()).collect();
    let on_c0 = held.iter().filter(|s| s.endpoint() == urls[0]).count();
    assert_eq!(
        on_c0, 0,
        "a session went to the machine with 6 queued prompts"
    );
    drop(held);
    direct_post(c0, "/api/queue", &json!({"clear": true}));
    direct_post(c0, "/api/interrupt", &json!({}));
    assert!(eventually(Duration::from_secs(10), || {
        m.stats().service("comfyui").unwrap().endpoints[0].queue_remaining == Some(0)
    }));

    // 3. c1 killed mid-run: its jobs in flight fail, classified, promptly; jobs begun after
    //    the kill all succeed, on the two others.
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let (stop2, killed2) = (Arc::clone(&stop), Arc::clone(&killed_at));
    let victim = &mut procs[1];
    let jobs = thread::scope(|scope| {
        let running = scope.spawn(|| {
            run_threads(&m, 8, move |m, _| {
                let mut out = Vec::new();
                while !stop2.load(SeqCst) {
                    out.push(session_job(m, 5, 0.1));
                }
                out
            })
        });
        thread::sleep(Duration::from_millis(1_000));
        // Killed while at least two jobs are in progress on it (their sessions open).
        let busy = eventually(Duration::from_secs(10), || {
            m.stats().service("comfyui").unwrap().endpoints[1].sessions >= 2
        });
        victim.kill();
        *killed2.lock().unwrap() = Some(Instant::now());
        assert!(busy, "c1 never had two jobs at once");
        thread::sleep(Duration::from_millis(3_000));
        stop.store(true, SeqCst);
        running.join().unwrap()
    });
    let killed_at = killed_at.lock().unwrap().unwrap();
    let (before, after): (Vec<&Job>, Vec<&Job>) = jobs.iter().partition(|j| j.began < killed_at);
    let mut failures = Vec::new();
    for job in &jobs {
        assert!(
            job.took < Duration::from_secs(20),
            "a job hung: {:?}",
            job.took
        );
        match &job.outcome {
            Ok(seen) => assert_eq!(seen, &BTreeSet::from([name_of[&job.endpoint].to_string()])),
            Err((class, why)) => {
                assert_eq!(
                    job.endpoint, urls[1],
                    "a job failed off the killed machine: {why}"
                );
                assert_ne!(*class, ErrorClass::Other, "unclassified: {why}");
                failures.push((class, why));
            }
        }
    }
    println!(
        "kill: {} jobs begun before it, {} failed ({:?}); {} begun after",
        before.len(),
        failures.len(),
        failures.iter().map(|(c, _)| **c).collect::<Vec<_>>(),
        after.len()
    );
    assert!(
        !failures.is_empty(),
        "no job was in flight on the killed machine"
    );
    assert!(
        after.len() >= 6,
        "too few jobs after the kill: {}",
        after.len()
    );
    for job in &after {
        assert!(
            job.outcome.is_ok(),
            "a job begun after the kill failed: {:?}",
            job.outcome.as_ref().err()
        );
        assert_ne!(job.endpoint, urls[1]);
    }
    assert!(eventually(Duration::from_secs(5), || endpoint_health(
        &m, 1
    )
        == HealthState::Unhealthy));

    // 4. c1 restarts on its port: it rejoins, and takes jobs again.
    let mark1 = procs[1].mark();
    procs[1].start();
    assert!(eventually(Duration::from_secs(10), || endpoint_health(
        &m, 1
    )
        == HealthState::Healthy));
    let jobs = run_threads(&m, 8, |m, _| {
        (0..6).map(|_| session_job(m, 2, 0.01)).collect()
    });
    let on_c1 = jobs.iter().filter(|j| j.endpoint == urls[1]).count();
    for job in &jobs {
        assert!(job.outcome.is_ok(), "{:?}", job.outcome.as_ref().err());
    }
    println!("after the restart: {on_c1} of {} jobs on c1", jobs.len());
    assert!(on_c1 >= 1, "the restarted machine took no job");
    assert_eq!(prompts(&mark1.entries()), on_c1);

    // 5. Per endpoint, the pool's connection counts are what each server accepted (c0 and
    //    c2 lived through the whole test; c1's first process died with connections open,
    //    which its access log never shows).
    let report = m.shutdown(Duration::from_secs(5)).unwrap();
    assert!(report.still_in_use.is_empty(), "{report:?}");
    let stats = m.stats();
    let endpoints = stats.service("comfyui").unwrap().endpoints.clone();
    for i in [0, 2] {
        let http = endpoints[i].http.as_ref().unwrap();
        let ws = endpoints[i].websocket.as_ref().unwrap();
        // aiohttp logs a WebSocket when it closes: after the shutdown.
        let handshakes = || {
            initial[i]
                .entries()
                .iter()
                .filter(|a| a.status == 101)
                .count() as u64
        };
        assert!(
            eventually(Duration::from_secs(5), || handshakes()
                == ws.connections_created),
            "{}: {} WebSocket handshakes logged, the pool opened {}",
            names[i],
            handshakes(),
            ws.connections_created
        );
        let pool_http: Vec<Access> = http_only(&initial[i].entries())
            .into_iter()
            .filter(|a| !a.path.starts_with("/api/"))
            .collect();
        println!(
            "{}: the server saw {} HTTP connections and {} WebSockets from the pool; \
             the pool counts {} and {}",
            names[i],
            ports(&pool_http).len(),
            handshakes(),
            http.connections_created,
            ws.connections_created
        );
        if ports(&pool_http).len() as u64 != http.connections_created {
            for a in &pool_http {
                println!(
                    "{}: {} {} {} {}",
                    names[i], a.port, a.method, a.path, a.status
                );
            }
            println!("{}: {http:?}", names[i]);
        }
        assert_eq!(
            ports(&pool_http).len() as u64,
            http.connections_created,
            "{}: HTTP connections the server saw vs the endpoint's count",
            names[i]
        );
    }
}

/// `POST path` with a JSON body on a connection of its own (not the pool's); expects 200.
fn direct_post(port: u16, path: &str, body: &Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "POST {path}: {out}");
}

/// Runs `f(manager, thread index)` on `n` threads started together; their results, joined.
fn run_threads<T: Send + 'static>(
    m: &Arc<PoolManager>,
    n: usize,
    f: impl Fn(&PoolManager, usize) -> Vec<T> + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let (m, f, barrier) = (Arc::clone(m), f.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                f(&m, t)
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

// ---- LiteLLM: two proxies, 50 streams, one proxy killed ------------------------------------

/// The call number in a `/v1/chat/completions?call=N` entry.
fn call_id(a: &Access) -> Option<usize> {
    if a.method != "POST" {
        return None;
    }
    a.path
        .strip_prefix("/v1/chat/completions?call=")?
        .parse()
        .ok()
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn two_litellm_proxies_fifty_streams_one_killed_no_post_sent_twice() {
    const CALLS: usize = 50;
    let first = Backend::get("litellm");
    // The second proxy: this test's own, on a free port, with the same configuration.
    let mut second = Proc::litellm(free_port());
    let urls = [first.url.clone(), second.url()];
    let mut s = with_http(service("llm", ""), 32, 0);
    s.url = String::new();
    s.urls = Some(urls.to_vec());
    s.bearer_token = Some(Secret::new(litellm_key()));
    s.health_path = Some("/health/liveliness".into());
    s.health_interval_ms = 200;
    s.unhealthy_after = 2;
    s.read_idle_timeout_ms = 30_000;
    s.request_timeout_ms = 30_000;
    let m = Arc::new(manager(50, vec![s]));
    let endpoints = |m: &PoolManager| m.stats().service("llm").unwrap().endpoints.clone();
    assert!(eventually(Duration::from_secs(10), || endpoints(&m)
        .iter()
        .all(
            |e| e.health.last_check_unix_ms.is_some() && e.health.state == HealthState::Healthy
        )));
    // A fresh proxy's first completions are slow (imports on first use): warm both.
    for url in &urls {
        let mut one = with_http(service("one", url), 1, 0);
        one.bearer_token = Some(Secret::new(litellm_key()));
        let warm = manager(1_000, vec![one]);
        for _ in 0..2 {
            let reply = warm
                .http("one")
                .unwrap()
                .post("/v1/chat/completions")
                .send_json(&chat_body(false))
                .unwrap();
            assert_eq!(reply.status(), 200, "{url}: {}", reply.text());
        }
    }
    let marks = [first.mark(), second.mark()];

    // 50 streams at once, each held 0.3 to 2.1 s before its first byte (LiteLLM's
    // `mock_delay`); the second proxy is killed 1 s in.
    let started = Instant::now();
    let results = thread::scope(|scope| {
        let calls: Vec<_> = (0..CALLS)
            .map(|i| {
                let m = Arc::clone(&m);
                scope.spawn(move || {
                    let mut body = chat_body(true);
                    body["mock_delay"] = json!(0.3 + (i % 10) as f64 * 0.2);
                    let t = Instant::now();
                    let outcome = m
                        .http("llm")
                        .unwrap()
                        .post(&format!("/v1/chat/completions?call={i}"))
                        .header("Content-Type", "application/json")
                        .stream(body.to_string().as_bytes())
                        .map_err(failed)
                        .and_then(|mut stream| {
                            if stream.status() != 200 {
                                return Err((
                                    ErrorClass::Other,
                                    format!("status {}", stream.status()),
                                ));
                            }
                            read_sse(&mut stream, |e| e.data == "[DONE]")
                                .map_err(|e| (ErrorClass::Other, e.to_string()))
                        });
                    (i, t.elapsed(), outcome.map(|events| events.len()))
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(1_000));
        second.kill();
        calls
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    println!("50 streams in {:?}", started.elapsed());

    // Counted on the servers: which calls each proxy answered.
    let served: Vec<Vec<usize>> = marks
        .iter()
        .map(|mk| mk.entries().iter().filter_map(call_id).collect())
        .collect();
    let mut all: Vec<usize> = served.concat();
    all.sort_unstable();
    let distinct: BTreeSet<usize> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        distinct.len(),
        "a POST reached the servers twice: {all:?}"
    );

    let mut ok = 0;
    let mut failures = Vec::new();
    for (i, took, outcome) in &results {
        assert!(*took < Duration::from_secs(30), "call {i} hung: {took:?}");
        match outcome {
            Ok(events) => {
                ok += 1;
                assert!(*events >= 2, "call {i}: {events} events");
                // Answered by one proxy (the second, if before it was killed).
                assert!(
                    distinct.contains(i),
                    "call {i} completed but no proxy logged it"
                );
            }
            Err((class, why)) => {
                assert_ne!(*class, ErrorClass::Other, "call {i}: unclassified: {why}");
                // Not resent to the proxy that lived.
                assert!(
                    !served[0].contains(i),
                    "call {i} failed yet reached the first proxy"
                );
                failures.push((*i, *class));
            }
        }
    }
    // Checkouts per endpoint: one per call sent there (a probe takes none).
    let per: Vec<u64> = endpoints(&m)
        .iter()
        .map(|e| e.http.as_ref().unwrap().acquisitions)
        .collect();
    println!(
        "{ok} streams completed, {} failed {failures:?}; requests per endpoint (pool) {per:?}; \
         calls logged per proxy {:?}",
        failures.len(),
        served.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        !failures.is_empty(),
        "no stream was in flight on the killed proxy"
    );
    assert!(
        served[0].len() >= 20,
        "the first proxy answered only {:?}",
        served[0]
    );
    // One request per call in the pool's counts too: no resend, no retry elsewhere.
    assert_eq!(per.iter().sum::<u64>(), CALLS as u64);
    assert_eq!(
        per[0],
        served[0].len() as u64,
        "first proxy: pool count vs its log"
    );
    // The killed proxy logged only the calls it answered before it died.
    assert!(served[1].len() as u64 <= per[1]);
    assert_eq!(ok as u64 + failures.len() as u64, CALLS as u64);

    // Per endpoint: the connections the first proxy accepted from this manager (its log
    // since the mark, LiteLLM's own health probes included) are the endpoint's count.
    let first_http = endpoints(&m)[0].http.clone().unwrap();
    m.shutdown(Duration::from_secs(5)).unwrap();
    let seen = ports(&marks[0].entries()).len() as u64;
    println!(
        "first proxy: {seen} connections seen, the pool opened {}",
        first_http.connections_created
    );
    assert_eq!(seen, first_http.connections_created);
    drop(second);
}
