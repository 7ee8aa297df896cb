//! WebSocket behaviour of `TestServer`: upgrade, echo, broadcast, pings, kills.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use backend_pool_testkit::{Fault, TestServer};
use common::{wait_until, Conn};
use tungstenite::{Error, Message, WebSocket};

fn server() -> TestServer {
    TestServer::builder()
        .websocket("/ws", |h| {
            let who = h.query_param("clientId").unwrap_or_default();
            h.send_text(&format!("hello {who}"));
        })
        .build()
        .unwrap()
}

fn connect(server: &TestServer, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tungstenite::client(server.ws_url(path), stream).unwrap().0
}

fn read_text(ws: &mut WebSocket<TcpStream>) -> String {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Binary(_) => panic!("unexpected binary"),
            _ => {}
        }
    }
}

fn is_timeout(e: &Error) -> bool {
    matches!(e, Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

#[test]
fn upgrade_echo_broadcast_close() {
    let server = server();
    let mut a = connect(&server, "/ws?clientId=a%20b");
    assert_eq!(read_text(&mut a), "hello a b");
    a.send(Message::text("echo me")).unwrap();
    assert_eq!(read_text(&mut a), "echo me");
    a.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(a.read().unwrap(), Message::binary(vec![1u8, 2, 3]));

    let mut b = connect(&server, "/ws?clientId=b");
    assert_eq!(read_text(&mut b), "hello b");
    assert_eq!(server.ws_accepted(), 2);
    assert_eq!(server.accepted(), 2);
    let clients = server.ws_clients();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[1].query_param("clientId").as_deref(), Some("b"));
    assert_eq!(server.broadcast("to all"), 2);
    assert_eq!(read_text(&mut a), "to all");
    assert_eq!(read_text(&mut b), "to all");

    // Plain HTTP still works on the same port.
    assert_eq!(Conn::open(server.addr()).request("GET", "/").status, 200);
    assert!(server
        .request_log()
        .contains(&("GET".into(), "/ws?clientId=b".into())));

    // A clean close from the client is answered.
    a.close(None).unwrap();
    loop {
        match a.read() {
            Ok(_) => {}
            Err(Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(wait_until(Duration::from_secs(2), || server
        .ws_clients()
        .len()
        == 1));

    // kill_connections drops the socket without a close frame.
    server.kill_connections();
    assert!(b.read().is_err());
    assert!(wait_until(Duration::from_secs(2), || server.open() == 0));
    assert!(!clients[1].send_text("gone"));
}

#[test]
fn pings_answered_unless_ignored() {
    let server = server();
    let mut ws = connect(&server, "/ws");
    assert_eq!(read_text(&mut ws), "hello ");
    ws.send(Message::Ping(b"p1".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"p1".to_vec().into()));

    server.set_fault(Fault::WsIgnorePings);
    // Server-initiated sends still flow.
    assert_eq!(server.broadcast("still here"), 1);
    assert_eq!(read_text(&mut ws), "still here");
    ws.send(Message::Ping(b"p2".to_vec().into())).unwrap();
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let err = ws.read().unwrap_err();
    assert!(is_timeout(&err), "expected no pong, got {err}");

    // Once the fault clears, the held-back ping is answered.
    server.set_fault(Fault::None);
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"p2".to_vec().into()));
}

#[test]
fn concurrent_sends_do_not_interleave() {
    let server = server();
    let mut ws = connect(&server, "/ws");
    assert_eq!(read_text(&mut ws), "hello ");
    let handle = server.ws_clients().pop().unwrap();
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let h = handle.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    assert!(h.send_text(&format!("srv{t}-{i}-{}", "x".repeat(i * 10))));
                }
            })
        })
        .collect();
    for i in 0..200 {
        ws.send(Message::text(format!("cli-{i}"))).unwrap();
    }
    let mut got = 0;
    while got < 600 {
        let t = read_text(&mut ws);
        assert!(t.starts_with("srv") || t.starts_with("cli-"), "{t}");
        got += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
}

#[test]
fn bad_upgrade_is_rejected() {
    let server = server();
    let mut c = Conn::open(server.addr());
    c.send(
        "GET",
        "/ws",
        "Connection: Upgrade\r\nUpgrade: websocket\r\n",
        b"",
    );
    assert_eq!(c.read_response(false).unwrap().status, 400);
    assert_eq!(server.ws_accepted(), 0);
}

#[test]
fn faults_apply_to_handshake() {
    let server = server();
    server.set_fault(Fault::CloseBeforeResponse);
    let s = TcpStream::connect(server.addr()).unwrap();
    assert!(tungstenite::client(server.ws_url("/ws"), s).is_err());
    assert_eq!(server.ws_accepted(), 0);
    server.set_fault(Fault::None);
    let mut ws = connect(&server, "/ws");
    assert_eq!(read_text(&mut ws), "hello ");
    assert_eq!(server.ws_accepted(), 1);
}
