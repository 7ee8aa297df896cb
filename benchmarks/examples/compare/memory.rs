//! Item 4: resident memory per idle connection.

use super::*;

pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn memory(server: &mut Server, table: &mut Table) {
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
