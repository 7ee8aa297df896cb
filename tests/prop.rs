//! Property tests: no input makes the config parser or the stats renderers panic, and the
//! renderers' output stays well-formed.

use backend_pool::{ManagerConfig, PoolManager, ServiceConfig};
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
