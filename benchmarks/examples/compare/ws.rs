//! Item 3: WebSocket echo round trips, the pool against bare tungstenite.

use super::*;

pub(crate) fn ws_manager(port: u16, max: u32) -> PoolManager {
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
pub(crate) fn bare_ws(
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

pub(crate) fn ws_round_trips(
    server: &mut Server,
    table: &mut Table,
    threads: usize,
    n: u64,
    rounds: usize,
) {
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
