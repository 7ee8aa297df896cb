//! Unit tests that need a pool built around its config validation.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use backend_pool_testkit::TestServer;

use super::WsPool;
use crate::config::{ServiceConfig, WsPoolConfig};
use crate::error::ErrorClass;
use crate::service::ServiceContext;

#[test]
fn a_panic_while_connecting_gives_the_permit_back() {
    let server = TestServer::builder()
        .websocket("/ws", |_| {})
        .build()
        .unwrap();
    let config = ServiceConfig::new("ws", server.http_url());
    let core = ServiceContext::new(&config, &config.url).unwrap();
    // tungstenite asserts that its write buffer is below its maximum (usize::MAX): this
    // config makes every handshake panic as it completes. Validation would reject it, so the
    // pool is built around it.
    let config = WsPoolConfig {
        max_connections: 1,
        min_connections: 0,
        write_buffer_bytes: usize::MAX,
        ..WsPoolConfig::default()
    };
    let pool = Arc::new(WsPool::new(Arc::new(core), config));
    for attempt in 0..3 {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pool.checkout(Duration::from_millis(300), None).map(drop)
        }));
        match outcome {
            // Either way the permit must come back: a lost one shows as a pool timeout.
            Err(_panic) => {}
            Ok(Err(e)) => assert_eq!(e.class(), ErrorClass::Connect, "attempt {attempt}: {e}"),
            Ok(Ok(())) => panic!("attempt {attempt}: the handshake did not fail"),
        }
        assert_eq!(pool.state().in_use, 0, "attempt {attempt}");
    }
    let stats = pool.stats();
    assert_eq!(stats.connections_created, 3);
    assert_eq!(stats.connections_open, 0, "{stats:?}");
}
