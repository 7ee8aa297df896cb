//! Configuration loading and validation: every bad input is a typed error naming the problem.

use backend_pool::{ConfigError, ManagerConfig, PoolManager};

fn err(toml: &str) -> String {
    match ManagerConfig::from_toml_str(toml) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/services.toml");
    let config = ManagerConfig::from_file(path).unwrap();
    assert!(config.service.len() >= 5);
    let names: Vec<_> = config.service.iter().map(|s| s.name.as_str()).collect();
    for known in ["comfyui", "litellm", "wan2gp", "rvc"] {
        assert!(names.contains(&known), "{names:?}");
    }
    PoolManager::new(config).unwrap();
}

#[test]
fn unknown_keys_are_rejected_with_key_and_line() {
    let e = err("[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nmax_conections = 3\n");
    assert!(e.contains("max_conections") && e.contains("line 4"), "{e}");
    let e =
        err("[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[service.http]\nmin = 1\n");
    assert!(e.contains("`min`") && e.contains("line 5"), "{e}");
}

#[test]
fn sizes_urls_schemes_and_names_are_checked() {
    let base = "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
    let cases = [
        (
            format!("{base}[service.http]\nmax_connections = 0\n"),
            "http.max_connections",
        ),
        (
            format!("{base}[service.http]\nmax_connections = 2\nmin_connections = 3\n"),
            "above max_connections",
        ),
        (
            format!("{base}[service.websocket]\nmax_connections = 1\nmin_connections = 2\n"),
            "websocket.min_connections",
        ),
        (
            "[[service]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1\"\n".to_string(),
            "http://",
        ),
        (
            "[[service]]\nname = \"a\"\nurl = \"http://:80\"\n".to_string(),
            "url",
        ),
        (
            "[[service]]\nname = \"a b\"\nurl = \"http://h\"\n".to_string(),
            "name",
        ),
        (format!("{base}{base}"), "more than once"),
        (format!("{base}wait_timeout_ms = 0\n"), "wait_timeout_ms"),
        (
            format!("{base}wait_timeout_ms = 999999999999999\n"),
            "7 days",
        ),
        (format!("{base}health_path = \"health\"\n"), "health_path"),
        (
            "[[service]]\nname = \"a\"\nurl = \"http://h\"\nhttp = false\n".to_string(),
            "invalid",
        ),
    ];
    for (toml, needle) in cases {
        let e = err(&toml);
        assert!(e.contains(needle), "{toml}\n=> {e}");
    }
}

#[test]
fn negative_sizes_are_parse_errors_not_panics() {
    let e = err(
        "[[service]]\nname = \"a\"\nurl = \"http://h\"\n[service.http]\nmax_connections = -1\n",
    );
    assert!(e.contains("max_connections") || e.contains("line 5"), "{e}");
}

#[test]
fn json_works_and_reports_position() {
    let ok = ManagerConfig::from_json_str(
        r#"{"service": [{"name": "a", "url": "http://127.0.0.1:1", "websocket": {"path": "/ws"}}]}"#,
    )
    .unwrap();
    assert!(ok.service[0].websocket.is_some());
    let e = ManagerConfig::from_json_str(r#"{"service": [{"name": "a", "nope": 1}]}"#).unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }));
    assert!(
        e.to_string().contains("nope") && e.to_string().contains("line 1"),
        "{e}"
    );
}

#[test]
fn a_missing_file_names_the_path() {
    let e = ManagerConfig::from_file("/nonexistent/services.toml").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/services.toml"));
}

#[test]
fn a_bad_ca_file_is_a_config_error() {
    let mut c = backend_pool::ServiceConfig::new("tls", "https://127.0.0.1:1");
    c.ca_file = Some("/nonexistent/ca.pem".into());
    let e = PoolManager::new(ManagerConfig::empty().with_service(c)).unwrap_err();
    assert!(e.to_string().contains("invalid configuration"));
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert!(
        source.contains("ca_file") && source.contains("/nonexistent/ca.pem"),
        "{source}"
    );
}
