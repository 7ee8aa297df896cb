//! Issue 3, items 2–5: the pool against the clients a user would pick instead, on the same
//! workload in the same run, printed as one table.
//!
//! `cargo run -p backend-pool-benchmarks --release --example compare` (about a minute on 2
//! cores). Environment knobs: `COMPARE_ROUNDS` (A/B rounds per throughput test, default 5),
//! `COMPARE_HTTP_N` (requests per peer per round, default 20000), `COMPARE_WS_N` (echo round
//! trips per peer per round, default 10000), `COMPARE_ONLY` (a comma list of sections: memory,
//! http8, http64, ws, spike, fairness), `COMPARE_PEERS` (HTTP peers to run: pool,
//! pool-checkout, ureq, ureq-timeouts, reqwest), `COMPARE_HTTP_URL` (load another keep-alive
//! server on loopback in the HTTP throughput sections, e.g. nginx: see BENCHMARKS.md).
//!
//! Each HTTP throughput round also records the process's CPU time (`getrusage`, all threads)
//! per completed request: the clients' own cost, steadier than throughput on a busy machine.
//!
//! The servers (HTTP keep-alive, a slow-first-response HTTP, WebSocket echo) run in a child
//! process, this binary re-executed with `--server`, so server CPU bookkeeping and memory do
//! not count against the clients. Everything is on loopback and every loop is bounded by a
//! count and a deadline.

#[path = "support/fastserver.rs"]
mod fastserver;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use backend_pool::{HttpPoolConfig, ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig};

/// No single measured run may take longer than this.
const RUN_DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    if std::env::args().any(|a| a == "--server") {
        fastserver::run();
    }
    let mut server = Server::start();
    let rounds = env_usize("COMPARE_ROUNDS", 5).max(1);
    let http_n = env_usize("COMPARE_HTTP_N", 20_000) as u64;
    let ws_n = env_usize("COMPARE_WS_N", 10_000) as u64;
    println!(
        "compare: {} CPUs, {rounds} A/B rounds, {http_n} HTTP requests and {ws_n} WebSocket round trips per peer per round",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // `COMPARE_ONLY=http8,ws` runs a subset (for profiling): memory, http8, http64, ws, spike,
    // fairness.
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);
    let mut table = Table::default();
    // Memory first: later sections leave freed heap behind that would hide growth.
    if want("memory") {
        memory(&mut server, &mut table);
    }
    for threads in [8, 64] {
        if want(&format!("http{threads}")) {
            http_throughput(&mut server, &mut table, threads, http_n, rounds);
        }
    }
    if want("ws") {
        ws_round_trips(&mut server, &mut table, 8, ws_n, rounds);
    }
    if want("spike") {
        spike(&mut server, &mut table);
    }
    if want("fairness") {
        fairness(&mut server, &mut table);
    }
    table.print();
    server.stop();
}

/// `COMPARE_PEERS=pool` runs only the named HTTP peers (pool, pool-checkout, ureq, reqwest), for
/// profiling one client at a time.
fn peer_wanted(name: &str) -> bool {
    let peers = std::env::var("COMPARE_PEERS").unwrap_or_default();
    peers.is_empty() || peers.split(',').any(|p| p.trim() == name)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The child-process server.

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    http: u16,
    slow: u16,
    ws: u16,
}

/// TCP connections accepted per listener.
#[derive(Clone, Copy, Debug, Default)]
struct Accepted {
    http: usize,
    slow: usize,
    ws: usize,
}

impl Server {
    fn start() -> Server {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .arg("--server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server child");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ports line");
        let ports: Vec<u16> = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().expect("port"))
            .collect();
        assert_eq!(ports.len(), 3, "bad ports line {line:?}");
        Server {
            child,
            stdin,
            stdout,
            http: ports[0],
            slow: ports[1],
            ws: ports[2],
        }
    }

    fn accepted(&mut self) -> Accepted {
        let stdin = self.stdin.as_mut().expect("server running");
        writeln!(stdin, "accepted").expect("ask the server");
        stdin.flush().expect("ask the server");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("server reply");
        let n: Vec<usize> = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().expect("count"))
            .collect();
        Accepted {
            http: n[0],
            slow: n[1],
            ws: n[2],
        }
    }

    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The table.

#[derive(Default)]
struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn section(&mut self, title: &str) {
        self.rows.push([
            format!("== {title}"),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }

    fn row(
        &mut self,
        what: &str,
        pool: String,
        peer: String,
        other: String,
        ratio: String,
        target: String,
    ) {
        self.rows
            .push([what.to_string(), pool, peer, other, ratio, target]);
    }

    fn print(&self) {
        let head = [
            "measure",
            "backend-pool",
            "bare peer",
            "other peer",
            "ratio (pool/bare)",
            "target",
        ];
        let mut width = head.map(str::len);
        for r in &self.rows {
            if r[0].starts_with("==") {
                continue;
            }
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        println!();
        let line = |cells: [&str; 6]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                if i == 0 {
                    s.push_str(&format!("| {c:<w$} "));
                } else {
                    s.push_str(&format!("| {c:>w$} "));
                }
            }
            println!("{s}|");
        };
        line(head);
        let sep = width.map(|w| "-".repeat(w));
        line([&sep[0], &sep[1], &sep[2], &sep[3], &sep[4], &sep[5]]);
        for r in &self.rows {
            if r[0].starts_with("==") {
                println!("| **{}** |", r[0].trim_start_matches("== "));
            } else {
                line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
            }
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// CPU time (user + system) this process has used so far, all threads (live and ended)
/// together, in seconds. The servers run in the child process (or nginx), so this is the
/// clients' own work, the kernel's half of their loopback traffic included.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// One measured run: completed operations per second, failed operations, and the process's
/// CPU time per completed operation in µs.
struct Run {
    rate: f64,
    failed: u64,
    cpu_us: f64,
}

/// Runs `op` from `threads` threads until `n` operations are done (or the deadline passes);
/// returns completed operations per second and the count of failed ones.
fn run_parallel<S, F>(threads: usize, n: u64, state: &S, op: F) -> (f64, u64)
where
    S: Sync,
    F: Fn(&S, usize) -> bool + Sync,
{
    let run = run_measured(threads, n, state, op);
    (run.rate, run.failed)
}

/// [`run_parallel`], with the CPU time the whole process spent per completed operation.
fn run_measured<S, F>(threads: usize, n: u64, state: &S, op: F) -> Run
where
    S: Sync,
    F: Fn(&S, usize) -> bool + Sync,
{
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let barrier = Barrier::new(threads + 1);
    // The run lasts from the first worker's start to the last one's end, each read by the
    // worker itself: on a busy machine the main thread may be scheduled late after the
    // barrier, and a start time taken there would shorten the run.
    let origin = Instant::now();
    let first_start = AtomicU64::new(u64::MAX);
    let last_end = AtomicU64::new(0);
    let since = |origin: Instant| origin.elapsed().as_nanos() as u64;
    let deadline = origin + RUN_DEADLINE;
    let cpu_before = cpu_seconds();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (next, done, failed, barrier, op) = (&next, &done, &failed, &barrier, &op);
            let (first_start, last_end) = (&first_start, &last_end);
            std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn_scoped(s, move || {
                    barrier.wait();
                    first_start.fetch_min(since(origin), Ordering::Relaxed);
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        if op(state, t) {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        if Instant::now() > deadline {
                            break;
                        }
                    }
                    last_end.fetch_max(since(origin), Ordering::Relaxed);
                })
                .expect("spawn");
        }
        barrier.wait();
    });
    let nanos = last_end
        .load(Ordering::Relaxed)
        .saturating_sub(first_start.load(Ordering::Relaxed))
        .max(1);
    let secs = nanos as f64 * 1e-9;
    let cpu = cpu_seconds() - cpu_before;
    let done = done.load(Ordering::Relaxed);
    Run {
        rate: done as f64 / secs,
        failed: failed.load(Ordering::Relaxed),
        cpu_us: cpu * 1e6 / done.max(1) as f64,
    }
}

// ---------------------------------------------------------------------------------------------
// Item 2: end-to-end HTTP throughput.

fn http_manager(port: u16, max: u32) -> PoolManager {
    http_manager_at(&Server::url(port), max)
}

fn http_manager_at(base: &str, max: u32) -> PoolManager {
    let mut service = ServiceConfig::new("svc", base);
    service.http = Some(HttpPoolConfig {
        max_connections: max,
        min_connections: 0,
        ..HttpPoolConfig::default()
    });
    PoolManager::new(ManagerConfig::empty().with_service(service)).expect("manager")
}

/// A bare ureq agent configured like the pool's (same buffers, same idle cap).
fn bare_agent(max_idle: usize, pooled_buffers: bool) -> ureq::Agent {
    let defaults = HttpPoolConfig::default();
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(max_idle)
        .max_idle_connections_per_host(max_idle);
    if pooled_buffers {
        b = b
            .input_buffer_size(defaults.input_buffer_bytes)
            .output_buffer_size(defaults.output_buffer_bytes);
    }
    ureq::Agent::new_with_config(b.build())
}

/// A bare agent with the pool's buffers *and* its default timeouts (connect 10 s, request and
/// per-read 60 s): ureq then sets `SO_RCVTIMEO` before each read, as the pool's agents do.
fn timed_agent(max_idle: usize) -> ureq::Agent {
    let defaults = HttpPoolConfig::default();
    let service = ServiceConfig::default();
    let ms = Duration::from_millis;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(max_idle)
        .max_idle_connections_per_host(max_idle)
        .input_buffer_size(defaults.input_buffer_bytes)
        .output_buffer_size(defaults.output_buffer_bytes)
        .timeout_connect(Some(ms(service.connect_timeout_ms)))
        .timeout_send_request(Some(ms(service.request_timeout_ms)))
        .timeout_send_body(Some(ms(service.request_timeout_ms)))
        .timeout_recv_response(Some(ms(service.request_timeout_ms)))
        .timeout_per_read(Some(ms(service.read_idle_timeout_ms)))
        .build();
    ureq::Agent::new_with_config(config)
}

fn ureq_get(agent: &ureq::Agent, url: &str) -> bool {
    match agent.get(url).call() {
        Ok(mut r) => r.status() == 200 && r.body_mut().read_to_vec().is_ok(),
        Err(_) => false,
    }
}

/// The HTTP server the throughput sections load: the child's `http` listener, or
/// `COMPARE_HTTP_URL` (e.g. nginx on loopback, `http://127.0.0.1:18080`) whose
/// `/stub_status` page (nginx's `stub_status`), if it has one, counts accepted connections.
enum HttpTarget<'a> {
    Child(&'a mut Server),
    /// The server's URL, and how many `/stub_status` queries (each a connection) were made.
    External(String, usize),
}

impl HttpTarget<'_> {
    fn base(&self) -> String {
        match self {
            HttpTarget::Child(server) => Server::url(server.http),
            HttpTarget::External(url, _) => url.trim_end_matches('/').to_string(),
        }
    }

    /// Connections accepted so far (`None`: the server does not say).
    fn accepted(&mut self) -> Option<usize> {
        match self {
            HttpTarget::Child(server) => Some(server.accepted().http),
            HttpTarget::External(url, queries) => {
                *queries += 1;
                let agent = ureq::Agent::new_with_defaults();
                let text = agent
                    .get(format!("{}/stub_status", url.trim_end_matches('/')))
                    .header("Connection", "close")
                    .call()
                    .ok()?
                    .body_mut()
                    .read_to_string()
                    .ok()?;
                // "Active connections: N \nserver accepts handled requests\n A H R \n…";
                // the queries' own connections (this one included) are counted: take them off.
                let accepts: usize = text
                    .lines()
                    .nth(2)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(accepts.saturating_sub(*queries))
            }
        }
    }
}

fn http_throughput(server: &mut Server, table: &mut Table, threads: usize, n: u64, rounds: usize) {
    let mut target = match std::env::var("COMPARE_HTTP_URL") {
        Ok(url) if !url.is_empty() => HttpTarget::External(url, 0),
        _ => HttpTarget::Child(server),
    };
    let base = target.base();
    let url = format!("{base}/");
    let manager = http_manager_at(&base, threads as u32);
    let client = manager.http("svc").unwrap();
    let agent = bare_agent(threads, true);
    let agent_t = timed_agent(threads);
    let reqwest = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(threads)
        .build()
        .expect("reqwest client");

    type Op<'a> = Box<dyn Fn() -> bool + Sync + 'a>;
    let peers: Vec<(&str, Op<'_>)> = vec![
        (
            "pool",
            Box::new(|| matches!(client.get("/").call(), Ok(r) if r.status() == 200)),
        ),
        (
            "pool-checkout",
            Box::new(|| match client.checkout() {
                Ok(conn) => ureq_get(conn.agent(), &url),
                Err(_) => false,
            }),
        ),
        ("ureq", Box::new(|| ureq_get(&agent, &url))),
        ("ureq-timeouts", Box::new(|| ureq_get(&agent_t, &url))),
        (
            "reqwest",
            Box::new(|| match reqwest.get(&url).send() {
                Ok(r) => r.status() == 200 && r.bytes().is_ok(),
                Err(_) => false,
            }),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    let mut accepted = vec![Some(0usize); peers.len()];
    let mut requests = vec![0u64; peers.len()];
    let mut failures = vec![0u64; peers.len()];
    let mut count = |target: &mut HttpTarget<'_>, i: usize, before: Option<usize>| {
        let after = target.accepted();
        accepted[i] = match (accepted[i], before, after) {
            (Some(sum), Some(b), Some(a)) => Some(sum + a - b),
            _ => None,
        };
    };
    // Warm-up (counted in connections and requests, not in rates).
    for (i, (name, op)) in peers.iter().enumerate() {
        if !peer_wanted(name) {
            continue;
        }
        let before = target.accepted();
        let (_, failed) = run_parallel(threads, n / 10, &(), |_, _| op());
        count(&mut target, i, before);
        requests[i] += n / 10;
        failures[i] += failed;
    }
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..peers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            if !peer_wanted(peers[i].0) {
                rates[i].push(f64::NAN);
                cpus[i].push(f64::NAN);
                continue;
            }
            let before = target.accepted();
            let run = run_measured(threads, n, &(), |_, _| (peers[i].1)());
            count(&mut target, i, before);
            requests[i] += n;
            failures[i] += run.failed;
            rates[i].push(run.rate);
            cpus[i].push(run.cpu_us);
        }
    }
    // Per-round ratios against bare ureq (peer 2), then their median: both peers of a round
    // ran back to back, so a slow spell of the machine weighs on both.
    let ratio_of = |of: &[Vec<f64>], i: usize, base: usize| -> f64 {
        let mut r: Vec<f64> = of[i].iter().zip(&of[base]).map(|(a, b)| a / b).collect();
        median(&mut r)
    };
    let ratios = |i: usize| ratio_of(&rates, i, 2);
    let med: Vec<f64> = rates.iter().map(|r| median(&mut r.clone())).collect();
    let med_cpu: Vec<f64> = cpus.iter().map(|r| median(&mut r.clone())).collect();
    let pool_ratio = ratios(0);
    table.section(&format!(
        "2. HTTP GET throughput, {threads} threads, tiny JSON reply, keep-alive (median of {rounds} alternating rounds)"
    ));
    table.row(
        "req/s (pool: manager.http().get().call(); bare: shared ureq::Agent, same buffers; other: reqwest::blocking)",
        format!("{:.0}", med[0]),
        format!("{:.0}", med[2]),
        format!("{:.0}", med[4]),
        format!("{pool_ratio:.3}"),
        format!("≥ 0.95× bare: {}", met(pool_ratio >= 0.95)),
    );
    table.row(
        "req/s, pool via checkout() + its ureq agent (no RequestBuilder)",
        format!("{:.0}", med[1]),
        String::new(),
        String::new(),
        format!("{:.3}", ratios(1)),
        String::new(),
    );
    let timed = {
        let mut r: Vec<f64> = rates[0].iter().zip(&rates[3]).map(|(a, b)| a / b).collect();
        median(&mut r)
    };
    table.row(
        "req/s, bare ureq with the pool's timeouts too (ratio: pool / this)",
        String::new(),
        format!("{:.0}", med[3]),
        String::new(),
        format!("{timed:.3}"),
        String::new(),
    );
    table.row(
        "reqwest / bare ureq (median ratio)",
        String::new(),
        String::new(),
        String::new(),
        format!("{:.3}", ratios(4)),
        String::new(),
    );
    table.row(
        "client CPU µs per request (whole process; ratio: median of per-round pool / bare)",
        format!("{:.2}", med_cpu[0]),
        format!("{:.2}", med_cpu[2]),
        format!("{:.2}", med_cpu[4]),
        format!("{:.3}", ratio_of(&cpus, 0, 2)),
        String::new(),
    );
    table.row(
        "client CPU µs per request, pool via checkout() / bare ureq with timeouts",
        format!("{:.2}", med_cpu[1]),
        format!("{:.2}", med_cpu[3]),
        String::new(),
        format!("{:.3}", ratio_of(&cpus, 0, 3)),
        String::new(),
    );
    let reuse =
        |i: usize| accepted[i].map(|a| 100.0 * (1.0 - a as f64 / requests[i].max(1) as f64));
    let conns = |i: usize| match accepted[i] {
        Some(a) => format!("{a} ({})", requests[i]),
        None => format!("? ({})", requests[i]),
    };
    let pct = |i: usize| reuse(i).map_or_else(|| "?".to_string(), |r| format!("{r:.3}"));
    table.row(
        "TCP connections the server accepted (requests sent)",
        conns(0),
        conns(2),
        conns(4),
        String::new(),
        String::new(),
    );
    table.row(
        "connection reuse %",
        pct(0),
        pct(2),
        pct(4),
        String::new(),
        match reuse(0) {
            Some(r) => format!("≥ 99.9 %: {}", met(r >= 99.9)),
            None => "≥ 99.9 %: not counted (no stub_status)".to_string(),
        },
    );
    table.row(
        "failed requests",
        failures[0].to_string(),
        failures[2].to_string(),
        failures[4].to_string(),
        String::new(),
        String::new(),
    );
    let show = |i: usize| rates[i].iter().map(|r| r.round()).collect::<Vec<_>>();
    println!(
        "http {threads} threads, req/s per round: pool {:?} pool-checkout {:?} ureq {:?} ureq-timeouts {:?} reqwest {:?}",
        show(0),
        show(1),
        show(2),
        show(3),
        show(4),
    );
    let show_cpu = |i: usize| {
        cpus[i]
            .iter()
            .map(|c| (c * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    };
    println!(
        "http {threads} threads, CPU µs per request per round: pool {:?} pool-checkout {:?} ureq {:?} ureq-timeouts {:?} reqwest {:?}",
        show_cpu(0),
        show_cpu(1),
        show_cpu(2),
        show_cpu(3),
        show_cpu(4),
    );
    let _ = manager.shutdown(Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// Item 3: WebSocket echo round trips.

fn ws_manager(port: u16, max: u32) -> PoolManager {
    let mut service = ServiceConfig::new("ws", Server::url(port));
    service.http = None;
    service.websocket = Some(WsPoolConfig {
        max_connections: max,
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    PoolManager::new(ManagerConfig::empty().with_service(service)).expect("manager")
}

/// A bare tungstenite client socket with the pool's buffer settings and `TCP_NODELAY`.
fn bare_ws(
    port: u16,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let defaults = WsPoolConfig::default();
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(defaults.read_buffer_bytes)
        .write_buffer_size(defaults.write_buffer_bytes);
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (socket, _) = tungstenite::client::client_with_config(
        format!("ws://127.0.0.1:{port}/ws"),
        tungstenite::stream::MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .expect("handshake");
    socket
}

fn ws_round_trips(server: &mut Server, table: &mut Table, threads: usize, n: u64, rounds: usize) {
    let manager = ws_manager(server.ws, threads as u32);
    // Warm the pool: every socket opened once.
    drop(
        (0..threads)
            .map(|_| manager.websocket("ws").unwrap())
            .collect::<Vec<_>>(),
    );
    let bare: Vec<_> = (0..threads)
        .map(|_| std::sync::Mutex::new(bare_ws(server.ws)))
        .collect();
    let held: Vec<_> = (0..threads)
        .map(|_| std::sync::Mutex::new(manager.websocket("ws").ok()))
        .collect::<Vec<_>>();
    // `held` took every pooled socket; give them back for the per-message checkout peer by
    // taking them out of the vector when that peer runs.
    let payload = "{\"type\":\"progress\",\"data\":{\"value\":1,\"max\":20}}";
    let echo_ok = |m: &backend_pool::Message| m.as_text() == Some(payload);

    // The echo read, the lease is at a quiet point: `finish` gives the socket back (a lease
    // dropped after sending, unfinished, is closed and replaced).
    let pool_op = |_: &(), _t: usize| -> bool {
        match manager.websocket("ws") {
            Ok(mut g) => {
                let ok = g.send_text(payload).is_ok() && g.read().is_ok_and(|m| echo_ok(&m));
                if ok {
                    g.finish();
                }
                ok
            }
            Err(_) => false,
        }
    };
    let held_op = |_: &(), t: usize| -> bool {
        let mut slot = held[t].lock().unwrap();
        match slot.as_mut() {
            Some(g) => g.send_text(payload).is_ok() && g.read().is_ok_and(|m| echo_ok(&m)),
            None => false,
        }
    };
    let bare_op = |_: &(), t: usize| -> bool {
        let mut ws = bare[t].lock().unwrap();
        if ws.send(tungstenite::Message::text(payload)).is_err() {
            return false;
        }
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => return t.as_str() == payload,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    };
    // Peer 0 needs the pool's sockets idle: park the held guards while it runs.
    let park = |on: bool| {
        for h in &held {
            let mut slot = h.lock().unwrap();
            if on {
                if let Some(guard) = slot.take() {
                    guard.finish();
                }
            } else if slot.is_none() {
                *slot = manager.websocket("ws").ok();
            }
        }
    };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut failures = [0u64; 3];
    let accepted_before = server.accepted().ws;
    for round in 0..=rounds {
        let mut order = [0usize, 1, 2];
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let count = if round == 0 { n / 10 } else { n };
            let (rate, failed) = match i {
                0 => {
                    park(true);
                    run_parallel(threads, count, &(), pool_op)
                }
                1 => {
                    park(false);
                    run_parallel(threads, count, &(), held_op)
                }
                _ => run_parallel(threads, count, &(), bare_op),
            };
            failures[i] += failed;
            if round > 0 {
                rates[i].push(rate);
            }
        }
    }
    park(true);
    let ratio = |i: usize| {
        let mut r: Vec<f64> = rates[i].iter().zip(&rates[2]).map(|(a, b)| a / b).collect();
        median(&mut r)
    };
    let med: Vec<f64> = rates.iter().map(|r| median(&mut r.clone())).collect();
    table.section(&format!(
        "3. WebSocket echo round trips, {threads} threads, 52-byte text (median of {rounds} alternating rounds)"
    ));
    let r0 = ratio(0);
    table.row(
        "round trips/s, checkout per message (peer: bare tungstenite socket per thread)",
        format!("{:.0}", med[0]),
        format!("{:.0}", med[2]),
        String::new(),
        format!("{r0:.3}"),
        format!("≥ 0.95× bare: {}", met(r0 >= 0.95)),
    );
    let r1 = ratio(1);
    table.row(
        "round trips/s, one checkout held per thread (WsGuard send_text + read)",
        format!("{:.0}", med[1]),
        format!("{:.0}", med[2]),
        String::new(),
        format!("{r1:.3}"),
        format!("≥ 0.95× bare: {}", met(r1 >= 0.95)),
    );
    table.row(
        "failed round trips",
        format!("{} / {}", failures[0], failures[1]),
        failures[2].to_string(),
        String::new(),
        String::new(),
        String::new(),
    );
    table.row(
        "TCP connections the server accepted during the rounds (pool and held: one pool)",
        (server.accepted().ws - accepted_before).to_string(),
        String::new(),
        String::new(),
        String::new(),
        format!(
            "≤ {threads}: {}",
            met(server.accepted().ws - accepted_before <= threads)
        ),
    );
    println!(
        "ws {threads} threads: rounds/s pool {:?} held {:?} bare {:?}",
        rates[0].iter().map(|r| r.round()).collect::<Vec<_>>(),
        rates[1].iter().map(|r| r.round()).collect::<Vec<_>>(),
        rates[2].iter().map(|r| r.round()).collect::<Vec<_>>(),
    );
    drop(held);
    let _ = manager.shutdown(Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// Item 4: resident memory per idle connection.

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn memory(server: &mut Server, table: &mut Table) {
    const N: usize = 1000;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut service = ServiceConfig::new("mem", Server::url(server.http));
    service.http = Some(HttpPoolConfig {
        max_connections: N as u32 + 1,
        min_connections: 0,
        ..HttpPoolConfig::default()
    });
    let mut ws_service = ServiceConfig::new("memws", Server::url(server.ws));
    ws_service.http = None;
    ws_service.websocket = Some(WsPoolConfig {
        max_connections: N as u32 + 1,
        min_connections: 0,
        ..WsPoolConfig::default()
    });
    let manager = PoolManager::new(
        ManagerConfig {
            // Keep maintenance away: nothing may be closed while we count.
            maintenance_interval_ms: 3_600_000,
            ..ManagerConfig::empty()
        }
        .with_service(service)
        .with_service(ws_service),
    )
    .expect("manager");
    let http = manager.http("mem").unwrap();
    let url = format!("{}/", Server::url(server.http));
    // One of each first, so one-time allocations are not counted per connection.
    {
        let c = http.checkout().unwrap();
        assert!(ureq_get(c.agent(), &url));
    }
    drop(manager.websocket("memws").unwrap());
    let accepted0 = server.accepted();

    let rss0 = rss_kib();
    let held: Vec<_> = (0..N)
        .map_while(|_| (Instant::now() < deadline).then(|| http.checkout().unwrap()))
        .collect();
    let mut ok = 0;
    for c in &held {
        ok += ureq_get(c.agent(), &url) as usize;
    }
    drop(held);
    let rss1 = rss_kib();
    let held: Vec<_> = (0..N)
        .map_while(|_| (Instant::now() < deadline).then(|| manager.websocket("memws").ok()))
        .flatten()
        .collect();
    let ws_ok = held.len();
    drop(held);
    let rss2 = rss_kib();
    let stats = manager.stats();
    let idle_http = stats.services[0].http.as_ref().unwrap().idle;
    let idle_ws = stats.services[1].websocket.as_ref().unwrap().idle;
    let accepted_mid = server.accepted();

    // Peers: ureq with default buffers (one agent per connection, each keeps its socket) and
    // tungstenite with its default config.
    let agents: Vec<_> = (0..N)
        .map_while(|_| (Instant::now() < deadline).then(|| bare_agent(1, false)))
        .collect();
    let mut ureq_ok = 0;
    for a in &agents {
        ureq_ok += ureq_get(a, &url) as usize;
    }
    let rss3 = rss_kib();
    let sockets: Vec<_> = (0..N)
        .map_while(|_| {
            (Instant::now() < deadline).then(|| {
                tungstenite::connect(format!("ws://127.0.0.1:{}/ws", server.ws))
                    .map(|(s, _)| s)
                    .ok()
            })
        })
        .flatten()
        .collect();
    let tung_ok = sockets.len();
    let rss4 = rss_kib();
    let accepted1 = server.accepted();

    let per = |a: u64, b: u64, n: usize| (b.saturating_sub(a)) as f64 / n.max(1) as f64;
    let (h, w, uh, uw) = (
        per(rss0, rss1, ok),
        per(rss1, rss2, ws_ok),
        per(rss2, rss3, ureq_ok),
        per(rss3, rss4, tung_ok),
    );
    table.section(&format!(
        "4. resident memory per idle connection, {N} connections (VmRSS growth / N; server in a child process)"
    ));
    table.row(
        &format!("HTTP KiB per idle keep-alive connection (pool idle: {idle_http}; peer: ureq defaults, {ureq_ok})"),
        format!("{h:.1}"),
        format!("{uh:.1}"),
        String::new(),
        format!("{:.3}", h / uh),
        format!("≤ 32 KiB: {}", met(h <= 32.0)),
    );
    table.row(
        &format!("WebSocket KiB per idle socket (pool idle: {idle_ws}; peer: tungstenite defaults, {tung_ok})"),
        format!("{w:.1}"),
        format!("{uw:.1}"),
        String::new(),
        format!("{:.3}", w / uw),
        format!("≤ 32 KiB: {}", met(w <= 32.0)),
    );
    table.row(
        "TCP connections the server accepted (HTTP / WebSocket)",
        format!(
            "{} / {}",
            accepted_mid.http - accepted0.http,
            accepted_mid.ws - accepted0.ws
        ),
        format!(
            "{} / {}",
            accepted1.http - accepted_mid.http,
            accepted1.ws - accepted_mid.ws
        ),
        String::new(),
        String::new(),
        String::new(),
    );
    println!("memory: VmRSS {rss0} -> {rss1} (http) -> {rss2} (ws) -> {rss3} (ureq) -> {rss4} (tungstenite) KiB");
    drop(sockets);
    drop(agents);
    let _ = manager.shutdown(Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// Item 5: spike and fairness.

struct Waits {
    waits_ms: Vec<f64>,
    all_served: Duration,
    failed: usize,
}

impl Waits {
    fn median_max(&mut self) -> (f64, f64) {
        let max = self.waits_ms.iter().cloned().fold(0.0, f64::max);
        (median(&mut self.waits_ms), max)
    }
}

/// `callers` threads released at once; each runs `op` (which returns its wait, or `None` on
/// failure). Returns the waits and the time from release until the last caller finished.
fn burst<F>(callers: usize, op: F) -> Waits
where
    F: Fn(Instant) -> Option<Duration> + Sync,
{
    let barrier = Barrier::new(callers + 1);
    let (results, release) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                let (barrier, op) = (&barrier, &op);
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        barrier.wait();
                        let arrived = Instant::now();
                        let wait = op(arrived);
                        (wait, Instant::now())
                    })
                    .expect("spawn")
            })
            .collect();
        barrier.wait();
        let release = Instant::now();
        let results: Vec<(Option<Duration>, Instant)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        (results, release)
    });
    let waits_ms: Vec<f64> = results
        .iter()
        .filter_map(|r| r.0.map(|w| w.as_secs_f64() * 1000.0))
        .collect();
    let end = results.iter().map(|r| r.1).max().unwrap_or(release);
    Waits {
        failed: callers - waits_ms.len(),
        waits_ms,
        all_served: end.saturating_duration_since(release),
    }
}

fn spike(server: &mut Server, table: &mut Table) {
    const CALLERS: usize = 500;
    const MAX: u32 = 20;
    let url = format!("{}/", Server::url(server.slow));
    let mut service = ServiceConfig::new("spike", Server::url(server.slow));
    service.http = Some(HttpPoolConfig {
        max_connections: MAX,
        min_connections: 0,
        ..HttpPoolConfig::default()
    });
    service.wait_timeout_ms = 30_000;
    let manager = PoolManager::new(ManagerConfig::empty().with_service(service)).expect("manager");
    let http = manager.http("spike").unwrap();

    let before = server.accepted().slow;
    let mut pool = burst(CALLERS, |arrived| {
        let conn = http.checkout().ok()?;
        let waited = arrived.elapsed();
        ureq_get(conn.agent(), &url).then_some(waited)
    });
    let pool_total = pool.all_served;
    let pool_conns = server.accepted().slow - before;

    let agent = bare_agent(MAX as usize, true);
    let before = server.accepted().slow;
    let mut bare = burst(CALLERS, |arrived| {
        ureq_get(&agent, &url).then(|| arrived.elapsed())
    });
    let bare_total = bare.all_served;
    let bare_conns = server.accepted().slow - before;

    let (pm, px) = pool.median_max();
    let (bm, bx) = bare.median_max();
    table.section(&format!(
        "5a. spike: {CALLERS} callers at once, max {MAX} connections, 50 ms first-response (connect) delay"
    ));
    table.row(
        "connections opened (peer: shared ureq::Agent, no cap)",
        pool_conns.to_string(),
        bare_conns.to_string(),
        String::new(),
        String::new(),
        format!("≤ {MAX}: {}", met(pool_conns <= MAX as usize)),
    );
    table.row(
        "time from release until all served, ms",
        format!("{:.0}", pool_total.as_secs_f64() * 1000.0),
        format!("{:.0}", bare_total.as_secs_f64() * 1000.0),
        String::new(),
        String::new(),
        String::new(),
    );
    table.row(
        "wait median / max, ms (pool: until checkout; peer: until response)",
        format!("{pm:.1} / {px:.1}"),
        format!("{bm:.1} / {bx:.1}"),
        String::new(),
        String::new(),
        String::new(),
    );
    table.row(
        "max / median wait",
        format!("{:.2}", px / pm.max(1e-9)),
        format!("{:.2}", bx / bm.max(1e-9)),
        String::new(),
        String::new(),
        String::new(),
    );
    table.row(
        "failed callers",
        pool.failed.to_string(),
        bare.failed.to_string(),
        String::new(),
        String::new(),
        String::new(),
    );
    let _ = manager.shutdown(Duration::from_secs(2));
}

fn fairness(server: &mut Server, table: &mut Table) {
    const CALLERS: usize = 1000;
    const MAX: u32 = 20;
    const WORK: Duration = Duration::from_millis(2);
    let url = format!("{}/", Server::url(server.http));
    let manager = http_manager(server.http, MAX);
    let http = manager.http("svc").unwrap();
    // Warm all 20 connections so every caller's work is the same.
    {
        let held: Vec<_> = (0..MAX).map(|_| http.checkout().unwrap()).collect();
        for c in &held {
            ureq_get(c.agent(), &url);
        }
    }
    let before = server.accepted().http;
    let mut w = burst(CALLERS, |arrived| {
        let conn = http.checkout().ok()?;
        let waited = arrived.elapsed();
        let ok = ureq_get(conn.agent(), &url);
        std::thread::sleep(WORK);
        drop(conn);
        ok.then_some(waited)
    });
    let total = w.all_served;
    let conns = server.accepted().http - before;
    let (m, x) = w.median_max();
    let ratio = x / m.max(1e-9);
    table.section(&format!(
        "5b. fairness: {CALLERS} callers at once on {MAX} warm connections, equal work (GET + {} ms hold)",
        WORK.as_millis()
    ));
    table.row(
        "wait until checkout median / max, ms",
        format!("{m:.1} / {x:.1}"),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    table.row(
        "max / median wait",
        format!("{ratio:.2}"),
        String::new(),
        String::new(),
        String::new(),
        format!("≤ 3: {}", met(ratio <= 3.0)),
    );
    table.row(
        "time until all served, ms / new connections / failed callers",
        format!(
            "{:.0} / {conns} / {}",
            total.as_secs_f64() * 1000.0,
            w.failed
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    let _ = manager.shutdown(Duration::from_secs(2));
}
