//! Property tests: no input makes the config parser, the pool manager built from it or the
//! stats renderers panic, and the renderers' output stays well-formed.

use std::sync::OnceLock;
use std::time::Duration;

use backend_pool::{ConfigError, Error, ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig};
use backend_pool_testkit::{Response, TestServer};
use proptest::prelude::*;

/// TOML-ish text built from plausible keys, values and table headers, so the parser gets past
/// the first line often and reaches validation.
fn tomlish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "url",
        "max_connections",
        "min_connections",
        "wait_timeout_ms",
        "health_path",
        "path",
        "client_id_param",
        "keepalive_idle_ms",
        "max_body_bytes",
        "bearer_token",
        "unhealthy_after",
        "ca_file",
        "maintenance_interval_ms",
        "bogus",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z:/.0-9]{0,20}".prop_map(|s| format!("\"{s}\"")),
        Just("\"http://127.0.0.1:1\"".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ];
    let header = prop::sample::select(vec![
        "[[service]]",
        "[service.http]",
        "[service.websocket]",
        "[x]",
        "",
    ]);
    prop::collection::vec((header, key, value), 0..12).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(h, k, v)| format!("{h}\n{k} = {v}\n"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_toml_parser_never_panics(text in tomlish()) {
        let _ = ManagerConfig::from_toml_str(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(text in "\\PC{0,200}") {
        let _ = ManagerConfig::from_toml_str(&text);
        let _ = ManagerConfig::from_json_str(&text);
    }

    #[test]
    fn json_with_random_numbers_never_panics(
        max in any::<i64>(), min in any::<i64>(), wait in any::<i64>(), port in any::<i32>()
    ) {
        let text = format!(
            r#"{{"service":[{{"name":"a","url":"http://127.0.0.1:{port}","wait_timeout_ms":{wait},
               "http":{{"max_connections":{max},"min_connections":{min}}}}}]}}"#
        );
        if let Ok(config) = ManagerConfig::from_json_str(&text) {
            // Whatever validation accepts, the manager builds.
            prop_assert!(PoolManager::new(config).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn stats_render_as_valid_json_and_prometheus(
        names in prop::collection::btree_set("[a-zA-Z0-9_-]{1,12}", 1..5),
        ws in any::<bool>()
    ) {
        let mut config = ManagerConfig { maintenance_interval_ms: 60_000, service: Vec::new() };
        for name in &names {
            let mut s = ServiceConfig::new(name.clone(), "http://127.0.0.1:9");
            if ws {
                s.websocket = Some(Default::default());
            }
            config.service.push(s);
        }
        let m = PoolManager::new(config).unwrap();
        let stats = m.stats();
        let json: serde_json::Value = serde_json::from_str(&stats.to_json()).unwrap();
        prop_assert_eq!(json["services"].as_array().unwrap().len(), names.len());
        for line in stats.to_prometheus().lines() {
            if line.starts_with('#') {
                continue;
            }
            // metric{labels} value — the value parses as a number.
            let (_, value) = line.rsplit_once(' ').unwrap();
            prop_assert!(value.parse::<f64>().is_ok(), "{}", line);
            prop_assert!(line.starts_with("backend_pool_"), "{}", line);
        }
    }
}

/// Every numeric key, where it lives and a range of ordinary values for it (the test's own
/// idea of "ordinary", independent of the crate's bounds; related keys do not overlap, so
/// most cases with no wild value start a manager).
const NUMERIC_KEYS: [(Table, &str, u64, u64); 26] = [
    (Table::Manager, "maintenance_interval_ms", 1, 2000),
    (Table::Service, "health_interval_ms", 1, 60_000),
    (Table::Service, "health_timeout_ms", 1, 5000),
    (Table::Service, "unhealthy_after", 1, 10),
    (Table::Service, "wait_timeout_ms", 1, 5000),
    (Table::Service, "connect_timeout_ms", 1, 5000),
    (Table::Service, "request_timeout_ms", 1, 5000),
    (Table::Service, "read_idle_timeout_ms", 1, 5000),
    (Table::Service, "idle_timeout_ms", 1, 600_000),
    (Table::Service, "max_lifetime_ms", 1, 600_000),
    (Table::Service, "leak_threshold_ms", 1, 600_000),
    (Table::Http, "max_connections", 8, 64),
    (Table::Http, "min_connections", 0, 8),
    (Table::Http, "keepalive_idle_ms", 1, 10_000),
    (Table::Http, "max_body_bytes", 1, 1 << 20),
    (Table::Http, "input_buffer_bytes", 1024, 1 << 20),
    (Table::Http, "output_buffer_bytes", 1024, 1 << 20),
    (Table::Http, "max_header_bytes", 1024, 1 << 20),
    (Table::Http, "max_stream_connections", 1, 8),
    (Table::Ws, "max_connections", 4, 64),
    (Table::Ws, "min_connections", 0, 4),
    (Table::Ws, "pong_timeout_ms", 1, 5000),
    (Table::Ws, "max_message_bytes", 1 << 16, 1 << 20),
    (Table::Ws, "max_frame_bytes", 1, 1 << 16),
    (Table::Ws, "read_buffer_bytes", 1, 1 << 20),
    (Table::Ws, "write_buffer_bytes", 0, 1 << 20),
];

#[derive(Clone, Copy)]
enum Table {
    Manager,
    Service,
    Http,
    Ws,
}

/// Values that break allocators, asserts and narrowing conversions.
fn wild() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            4096,
            4097,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            1 << 30,
            1 << 32,
            1 << 62,
            i64::MAX as u64,
            u64::MAX,
        ])
        .prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
    ]
}

/// A whole configuration as JSON: every numeric key ordinary, then up to three set wild.
fn numeric_config() -> impl Strategy<Value = serde_json::Value> {
    let ordinary: Vec<_> = NUMERIC_KEYS.iter().map(|&(_, _, lo, hi)| lo..=hi).collect();
    (
        ordinary,
        prop::collection::vec((0..NUMERIC_KEYS.len(), wild()), 0..=3),
    )
        .prop_map(|(values, wild)| {
            let mut values: Vec<serde_json::Value> =
                values.into_iter().map(serde_json::Value::from).collect();
            for (i, v) in wild {
                values[i] = v;
            }
            let (mut manager, mut service, mut http, mut ws) = (
                serde_json::Map::new(),
                serde_json::Map::new(),
                serde_json::Map::new(),
                serde_json::Map::new(),
            );
            for ((table, key, _, _), value) in NUMERIC_KEYS.iter().zip(values) {
                let map = match table {
                    Table::Manager => &mut manager,
                    Table::Service => &mut service,
                    Table::Http => &mut http,
                    Table::Ws => &mut ws,
                };
                map.insert(key.to_string(), value);
            }
            service.insert("name".into(), "a".into());
            service.insert("url".into(), server().http_url().into());
            service.insert("http".into(), http.into());
            service.insert("websocket".into(), ws.into());
            manager.insert(
                "service".into(),
                vec![serde_json::Value::from(service)].into(),
            );
            manager.into()
        })
}

/// One loopback server for every case: `ok` to any request, a WebSocket echo on `/ws`.
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        TestServer::builder()
            .http(|_| Response::text(200, "ok"))
            .websocket("/ws", |_| {})
            .build()
            .unwrap()
    })
}

/// Builds a manager, makes one request and one WebSocket round trip, shuts down. Errors are
/// fine (a 2-byte body limit, a 1 ms timeout); a panic or an abort is not.
fn exercise(config: ManagerConfig) {
    let Ok(m) = PoolManager::new(config) else {
        return;
    };
    if let Ok(http) = m.http("a") {
        let _ = http.get("/").call();
    }
    if let Ok(mut ws) = m.websocket_wait("a", Duration::from_secs(2)) {
        if ws.send(backend_pool::Message::text("hi")).is_ok() {
            let _ = ws.read();
        }
    }
    m.shutdown(Duration::from_secs(5)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_numeric_value_makes_the_manager_panic_or_abort(config in numeric_config()) {
        let text = config.to_string();
        match ManagerConfig::from_json_str(&text) {
            Ok(config) => exercise(config),
            Err(ConfigError::Parse { .. }) => {} // negative, or too large for the key's type
            Err(e @ ConfigError::Invalid { .. }) => {
                // A bound names its key.
                let field = match &e { ConfigError::Invalid { field, .. } => field.clone(), _ => unreachable!() };
                prop_assert!(NUMERIC_KEYS.iter().any(|(_, key, _, _)| field.ends_with(key)), "{}", e);
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}

/// The values reported in issue 9, set in code (no file), each on its own: the manager
/// refuses to start and names the key, instead of aborting in an allocation or panicking in
/// ureq / tungstenite / r2d2.
#[test]
fn the_reported_values_are_refused_by_the_manager_not_fatal() {
    type Set = fn(&mut ServiceConfig);
    let cases: [(&str, Set); 5] = [
        ("http.max_connections", |s| {
            s.http.as_mut().unwrap().max_connections = u32::MAX
        }),
        ("http.input_buffer_bytes", |s| {
            s.http.as_mut().unwrap().input_buffer_bytes = 1 << 62
        }),
        ("http.output_buffer_bytes", |s| {
            s.http.as_mut().unwrap().output_buffer_bytes = 0
        }),
        ("websocket.read_buffer_bytes", |s| {
            s.websocket.as_mut().unwrap().read_buffer_bytes = 1 << 62
        }),
        ("websocket.write_buffer_bytes", |s| {
            s.websocket.as_mut().unwrap().write_buffer_bytes = usize::MAX
        }),
    ];
    for (field, set) in cases {
        let mut s = ServiceConfig::new("a", server().http_url());
        s.websocket = Some(WsPoolConfig::default());
        set(&mut s);
        let config = ManagerConfig::empty().with_service(s);
        match PoolManager::new(config.clone()) {
            Err(Error::Config(ConfigError::Invalid { field: f, .. })) => assert_eq!(f, field),
            Err(e) => panic!("{field}: unexpected error {e}"),
            Ok(m) => {
                exercise_started(&m);
                panic!("{field}: accepted");
            }
        }
    }
}

fn exercise_started(m: &PoolManager) {
    let _ = m.http("a").and_then(|h| h.get("/").call());
    let _ = m.websocket("a");
}
