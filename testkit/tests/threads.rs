//! Stopping a server leaves no thread and no file descriptor behind.
//! (Own test binary: counting the process's threads must not race other tests.)

mod common;

use std::net::TcpStream;
use std::time::Duration;

use backend_pool_testkit::{
    backends, fd_count, rss_kib, thread_count, Fault, Response, TestServer,
};
use common::{wait_until, Conn};

#[test]
fn stop_returns_to_baseline() {
    assert!(rss_kib() > 0);
    let threads_before = thread_count();
    let fds_before = fd_count();
    {
        let server = TestServer::builder()
            .http(|req| {
                if req.path == "/sse" {
                    Response::sse(
                        vec![("e".into(), "x".into()); 50],
                        Duration::from_millis(50),
                    )
                } else {
                    Response::text(200, "hi").after(|ctx| {
                        ctx.sleep(Duration::from_secs(30));
                    })
                }
            })
            .websocket("/ws", |_| {})
            .build()
            .unwrap();
        let comfy = backends::comfyui();
        let mut idle: Vec<Conn> = (0..20).map(|_| Conn::open(server.addr())).collect();
        for c in idle.iter_mut().take(5) {
            assert_eq!(c.request("GET", "/").status, 200);
        }
        let mut sse = Conn::open(server.addr());
        sse.send("GET", "/sse", "", b"");
        let mut wss = Vec::new();
        for _ in 0..5 {
            let s = TcpStream::connect(server.addr()).unwrap();
            wss.push(tungstenite::client(server.ws_url("/ws"), s).unwrap().0);
            let s = TcpStream::connect(comfy.addr()).unwrap();
            wss.push(
                tungstenite::client(comfy.ws_url("/ws?clientId=x"), s)
                    .unwrap()
                    .0,
            );
        }
        server.set_fault(Fault::Stall);
        let mut stalled = Conn::open(server.addr());
        stalled.send("GET", "/stall", "", b"");
        assert!(wait_until(Duration::from_secs(2), || server.requests() == 7));
        assert!(thread_count() > threads_before + 30);

        let t = std::time::Instant::now();
        server.stop();
        comfy.stop();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "stop took {:?}",
            t.elapsed()
        );
    }
    assert!(
        wait_until(Duration::from_secs(2), || thread_count() == threads_before),
        "threads: before {threads_before}, after {}",
        thread_count()
    );
    assert!(
        wait_until(Duration::from_secs(2), || fd_count() <= fds_before),
        "fds: before {fds_before}, after {}",
        fd_count()
    );
}
