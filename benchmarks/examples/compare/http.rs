//! Item 2: end-to-end HTTP throughput, the pool against bare ureq (and the other peers).

use super::*;

pub(crate) fn http_manager(port: u16, max: u32) -> PoolManager {
    http_manager_at(&Server::url(port), max)
}

pub(crate) fn http_manager_at(base: &str, max: u32) -> PoolManager {
    let mut service = ServiceConfig::new("svc", base);
    service.http = Some(HttpPoolConfig {
        max_connections: max,
        min_connections: 0,
        ..HttpPoolConfig::default()
    });
    PoolManager::new(ManagerConfig::empty().with_service(service)).expect("manager")
}

/// A bare ureq agent configured like the pool's (same buffers, same idle cap).
pub(crate) fn bare_agent(max_idle: usize, pooled_buffers: bool) -> ureq::Agent {
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
pub(crate) fn timed_agent(max_idle: usize) -> ureq::Agent {
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

pub(crate) fn ureq_get(agent: &ureq::Agent, url: &str) -> bool {
    match agent.get(url).call() {
        Ok(mut r) => r.status() == 200 && r.body_mut().read_to_vec().is_ok(),
        Err(_) => false,
    }
}

/// The HTTP server the throughput sections load: the child's `http` listener, or
/// `COMPARE_HTTP_URL` (e.g. nginx on loopback, `http://127.0.0.1:18080`) whose
/// `/stub_status` page (nginx's `stub_status`), if it has one, counts accepted connections.
pub(crate) enum HttpTarget<'a> {
    Child(&'a mut Server),
    /// The server's URL, and how many `/stub_status` queries (each a connection) were made.
    External(String, usize),
}

impl HttpTarget<'_> {
    pub(crate) fn base(&self) -> String {
        match self {
            HttpTarget::Child(server) => Server::url(server.http),
            HttpTarget::External(url, _) => url.trim_end_matches('/').to_string(),
        }
    }

    /// Connections accepted so far (`None`: the server does not say).
    pub(crate) fn accepted(&mut self) -> Option<usize> {
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

pub(crate) fn http_throughput(
    server: &mut Server,
    table: &mut Table,
    threads: usize,
    n: u64,
    rounds: usize,
) {
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
