//! Item 5: spike and fairness.

use super::*;

pub(crate) struct Waits {
    pub(crate) waits_ms: Vec<f64>,
    pub(crate) all_served: Duration,
    pub(crate) failed: usize,
}

impl Waits {
    pub(crate) fn median_max(&mut self) -> (f64, f64) {
        let max = self.waits_ms.iter().cloned().fold(0.0, f64::max);
        (median(&mut self.waits_ms), max)
    }
}

/// `callers` threads released at once; each runs `op` (which returns its wait, or `None` on
/// failure). Returns the waits and the time from release until the last caller finished.
pub(crate) fn burst<F>(callers: usize, op: F) -> Waits
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

pub(crate) fn spike(server: &mut Server, table: &mut Table) {
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

pub(crate) fn fairness(server: &mut Server, table: &mut Table) {
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
