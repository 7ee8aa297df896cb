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
    // The entries written with a preset are the preset (plus what they override).
    let find = |name: &str| config.service.iter().find(|s| s.name == name).unwrap();
    assert_eq!(find("litellm"), &backend_pool::ServiceConfig::litellm());
    assert_eq!(find("wan2gp"), &backend_pool::ServiceConfig::wan2gp());
    let mut rvc = backend_pool::ServiceConfig::rvc();
    rvc.http.as_mut().unwrap().max_body_bytes = 256 << 20;
    assert_eq!(find("rvc"), &rvc);
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
            "needs an HTTP pool, a WebSocket pool or both",
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

// ---------------------------------------------------------------------------------------
// Issue 9: configuration that crashes, or that can never work.
// ---------------------------------------------------------------------------------------

const BASE: &str = "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n";

/// The error for `toml`, which must be `ConfigError::Invalid` on `field`.
fn invalid_field(toml: &str, field: &str) -> String {
    match ManagerConfig::from_toml_str(toml) {
        Ok(c) => panic!("accepted:\n{toml}\n=> {c:?}"),
        Err(e) => {
            match &e {
                ConfigError::Invalid { field: f, .. } => {
                    assert_eq!(f, field, "{toml}\n=> {e}")
                }
                other => panic!("not an Invalid error on {field}:\n{toml}\n=> {other}"),
            }
            e.to_string()
        }
    }
}

#[test]
fn the_reported_absurd_sizes_are_rejected_naming_the_key() {
    for (table, key, value) in [
        ("http", "max_connections", "4294967295"),
        ("http", "input_buffer_bytes", "4611686018427387904"),
        ("http", "output_buffer_bytes", "0"),
        ("websocket", "read_buffer_bytes", "4611686018427387904"),
        ("websocket", "write_buffer_bytes", "18446744073709551615"),
    ] {
        // JSON (a Python dict) carries every value into the struct: validation refuses it.
        let json = format!(
            r#"{{"service":[{{"name":"a","url":"http://127.0.0.1:1","{table}":{{"{key}":{value}}}}}]}}"#
        );
        match ManagerConfig::from_json_str(&json) {
            Err(ConfigError::Invalid { field, reason, .. }) => {
                assert_eq!(field, format!("{table}.{key}"));
                assert!(reason.contains(" to "), "no bounds in: {reason}");
            }
            other => panic!("{json}\n=> {other:?}"),
        }
        // TOML: the same, or a parse error on the key (TOML integers stop at 2^63 - 1).
        let toml = format!("{BASE}[service.{table}]\n{key} = {value}\n");
        let e = ManagerConfig::from_toml_str(&toml).unwrap_err();
        assert!(
            e.to_string().contains(key) && e.to_string().contains("line 5"),
            "{e}"
        );
    }
}

#[test]
fn every_size_and_count_has_an_upper_bound() {
    let huge = "4611686018427387904"; // 2^62: fits every usize / u64 key
    for (table, key) in [
        ("http", "max_body_bytes"),
        ("http", "input_buffer_bytes"),
        ("http", "output_buffer_bytes"),
        ("http", "max_header_bytes"),
        ("websocket", "max_message_bytes"),
        ("websocket", "read_buffer_bytes"),
        ("websocket", "write_buffer_bytes"),
    ] {
        let toml = format!("{BASE}[service.{table}]\n{key} = {huge}\n");
        invalid_field(&toml, &format!("{table}.{key}"));
    }
    // The frame limit, with the message limit raised alongside (frame <= message).
    let toml = format!(
        "{BASE}[service.websocket]\nmax_message_bytes = {huge}\nmax_frame_bytes = {huge}\n"
    );
    let e = ManagerConfig::from_toml_str(&toml).unwrap_err().to_string();
    assert!(
        e.contains("max_message_bytes") || e.contains("max_frame_bytes"),
        "{e}"
    );
    for (table, key) in [
        ("http", "max_connections"),
        ("websocket", "max_connections"),
    ] {
        let toml = format!("{BASE}[service.{table}]\n{key} = 4294967295\n");
        invalid_field(&toml, &format!("{table}.{key}"));
    }
    invalid_field(
        &format!("{BASE}unhealthy_after = 4294967295\n"),
        "unhealthy_after",
    );
    // Lower bounds that can never work: a response head must fit, a request head must fit.
    for key in ["max_header_bytes", "input_buffer_bytes"] {
        let toml = format!("{BASE}[service.http]\n{key} = 10\n");
        invalid_field(&toml, &format!("http.{key}"));
    }
}

#[test]
fn a_response_head_limit_above_the_read_buffer_is_accepted() {
    // The read buffer grows while a long response head arrives (up to `max_header_bytes`) and
    // shrinks back: the limit may exceed the buffer, as the defaults do.
    let toml =
        format!("{BASE}[service.http]\ninput_buffer_bytes = 8192\nmax_header_bytes = 65536\n");
    ManagerConfig::from_toml_str(&toml).unwrap();
    let d = backend_pool::HttpPoolConfig::default();
    assert!(d.max_header_bytes > d.input_buffer_bytes);
}

#[test]
fn configured_headers_must_fit_in_the_write_buffer() {
    let toml = format!(
        "{BASE}[service.http]\noutput_buffer_bytes = 4096\n[service.headers]\nX-Long = \"{}\"\n",
        "v".repeat(5000)
    );
    let e = invalid_field(&toml, "http.output_buffer_bytes");
    assert!(e.contains("X-Long") || e.contains("headers"), "{e}");
}

#[test]
fn the_largest_accepted_values_build_a_manager_that_works() {
    use backend_pool_testkit::{Response, TestServer};
    let server = TestServer::builder()
        .http(|_| Response::text(200, "ok"))
        .websocket("/ws", |_| {})
        .build()
        .unwrap();
    let mut c = backend_pool::ServiceConfig::new("a", server.http_url());
    let http = c.http.as_mut().unwrap();
    http.max_connections = 4096;
    http.max_body_bytes = 4 << 30;
    http.input_buffer_bytes = 16 << 20;
    http.output_buffer_bytes = 16 << 20;
    http.max_header_bytes = (16 << 20) - 1;
    c.unhealthy_after = 1000;
    c.websocket = Some(backend_pool::WsPoolConfig {
        max_connections: 4096,
        max_message_bytes: 1 << 30,
        max_frame_bytes: 1 << 30,
        read_buffer_bytes: 16 << 20,
        write_buffer_bytes: 16 << 20,
        ..Default::default()
    });
    let m = PoolManager::new(ManagerConfig::empty().with_service(c)).unwrap();
    assert_eq!(m.http("a").unwrap().get("/").call().unwrap().status(), 200);
    let mut ws = m.websocket("a").unwrap();
    ws.send(backend_pool::Message::text("hi")).unwrap();
    drop(ws);
    m.shutdown(std::time::Duration::from_secs(2)).unwrap();
}

#[test]
fn strings_no_request_could_carry_are_rejected_naming_the_key() {
    let svc = |extra: &str| format!("[[service]]\nname = \"a\"\n{extra}\n");
    let url = "url = \"http://127.0.0.1:1\"";
    for (toml, field) in [
        (svc("url = \"http://127.0.0.1:1/a b\""), "url"),
        (svc("url = \"http://127.0.0.1:1/a\\tb\""), "url"),
        (svc("url = \"http://bücher.example\""), "url"),
        (svc("url = \"http://127.0.0.1:+80\""), "url"),
        (svc("url = \"http://[fe80::1%eth0]:80\""), "url"),
        (svc("url = \"http://[nonsense]:80\""), "url"),
        (svc("url = \"http://a:b@127.0.0.1\""), "url"),
        (svc("url = \"http://127.0.0.1:1/%zz\""), "url"),
        (svc(&format!("{url}\nhealth_path = \"/a b\"")), "health_path"),
        (svc(&format!("{url}\nhealth_path = \"/a#b\"")), "health_path"),
        (
            svc(&format!("{url}\n[service.websocket]\npath = \"/w s\"")),
            "websocket.path",
        ),
        (
            svc(&format!("{url}\n[service.websocket]\nclient_id_param = \"a b\"")),
            "websocket.client_id_param",
        ),
        (
            svc(&format!("{url}\n[service.websocket]\nclient_id_param = \"a=b\"")),
            "websocket.client_id_param",
        ),
        (
            svc(&format!("{url}\n[service.websocket]\nclient_id_param = \"\"")),
            "websocket.client_id_param",
        ),
        (
            svc(&format!("{url}\n[service.headers]\n\"X-A\" = \"v\\r\\nX-Evil: 1\"")),
            "headers",
        ),
        (
            svc(&format!("{url}\n[service.headers]\n\"X-A\" = \"v\\nw\"")),
            "headers",
        ),
        (
            svc(&format!("{url}\n[service.headers]\n\"X-A\" = \"caf\u{e9}\"")),
            "headers",
        ),
        (
            svc(&format!("{url}\n[service.headers]\n\"X(A)\" = \"v\"")),
            "headers",
        ),
        (
            svc(&format!("{url}\n[service.headers]\n\"X A\" = \"v\"")),
            "headers",
        ),
        (
            svc(&format!("{url}\n[service.headers]\n\"Content-Length\" = \"3\"")),
            "headers",
        ),
        (
            svc(&format!("{url}\n[service.headers]\n\"X-A\" = \"1\"\n\"x-a\" = \"2\"")),
            "headers",
        ),
        (
            svc(&format!(
                "{url}\n[service.headers]\n\"X-A\" = \"1\"\n[service.secret_headers]\n\"x-a\" = \"2\""
            )),
            "secret_headers",
        ),
        (
            svc(&format!("{url}\nbearer_token = \"t\"\n[service.headers]\nAuthorization = \"Basic x\"")),
            "headers",
        ),
        (svc(&format!("{url}\nbearer_token = \"tok\\r\\nX: y\"")), "bearer_token"),
        (svc(&format!("{url}\nbearer_token = \"\"")), "bearer_token"),
        (svc(&format!("{url}\nbearer_token_env = \"A=B\"")), "bearer_token_env"),
        (svc(&format!("{url}\nbearer_token_env = \"\"")), "bearer_token_env"),
        (svc(&format!("{url}\nca_file = \"/etc/hostname\"")), "ca_file"),
    ] {
        invalid_field(&toml, field);
    }
}

#[test]
fn secret_values_are_never_printed_in_errors() {
    let toml = format!(
        "{BASE}bearer_token = \"sk-very-secret\\r\\n\"\n[service.secret_headers]\n\"X-Key\" = \"hidden-value\\n\"\n"
    );
    let e = ManagerConfig::from_toml_str(&toml).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("sk-very-secret") && !text.contains("hidden-value"),
        "{text}"
    );
    let toml = format!("{BASE}[service.secret_headers]\n\"X-Key\" = \"hidden-value\\n\"\n");
    let e = invalid_field(&toml, "secret_headers");
    assert!(e.contains("X-Key") && !e.contains("hidden-value"), "{e}");
}

#[test]
fn a_bearer_token_from_the_environment_is_checked_at_start_without_printing_it() {
    let var = "BACKEND_POOL_TEST_TOKEN_WITH_NEWLINE";
    std::env::set_var(var, "sk-env-secret\r\nX-Evil: 1");
    let mut c = backend_pool::ServiceConfig::new("a", "http://127.0.0.1:1");
    c.bearer_token_env = Some(var.into());
    let config = ManagerConfig::empty().with_service(c);
    config.validate().unwrap(); // the value is read when the manager starts
    let e = PoolManager::new(config).unwrap_err();
    let source = std::error::Error::source(&e).unwrap();
    let text = format!("{e} {source} {e:?}");
    assert!(text.contains(var), "{text}");
    assert!(text.contains("bearer_token_env"), "{text}");
    assert!(!text.contains("sk-env-secret"), "{text}");
    std::env::remove_var(var);
}

#[test]
fn a_bearer_token_from_the_environment_must_fit_in_a_request_head() {
    let var = "BACKEND_POOL_TEST_TOKEN_TOO_LONG";
    std::env::set_var(var, "k".repeat(5000));
    let mut c = backend_pool::ServiceConfig::new("a", "http://127.0.0.1:1");
    c.bearer_token_env = Some(var.into());
    let e = PoolManager::new(ManagerConfig::empty().with_service(c.clone())).unwrap_err();
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert!(
        source.contains("http.output_buffer_bytes") && source.contains(var),
        "{source}"
    );
    assert!(!source.contains("kkkk"), "{source}");
    // Raised to fit: the manager starts.
    c.http.as_mut().unwrap().output_buffer_bytes = 8192;
    PoolManager::new(ManagerConfig::empty().with_service(c.clone())).unwrap();
    // A value that is not UTF-8 is not a token either.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::env::set_var(var, std::ffi::OsStr::from_bytes(b"sk-\xff\xfe"));
        let e = PoolManager::new(ManagerConfig::empty().with_service(c)).unwrap_err();
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(
            source.contains("bearer_token_env") && source.contains(var),
            "{source}"
        );
    }
    std::env::remove_var(var);
}

/// A file in a directory of its own, removed when dropped.
struct TempFile {
    path: std::path::PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn temp_file(name: &str, text: &str) -> TempFile {
    let dir =
        std::env::temp_dir().join(format!("backend-pool-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    TempFile { path }
}

#[test]
fn validation_errors_in_a_file_name_the_file_and_line() {
    let toml = "maintenance_interval_ms = 1000\n\n[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\n[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1:2\"\n[service.http]\nmin_connections = 1\nmax_connections = 0\n";
    let path = temp_file("line.toml", toml);
    let e = ManagerConfig::from_file(&path.path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http.max_connections") && e.contains("line 12"),
        "{e}"
    );
    assert!(e.contains("line.toml"), "{e}");
    // From text: the line, no file.
    let e = ManagerConfig::from_toml_str(toml).unwrap_err().to_string();
    assert!(e.contains("line 12"), "{e}");
    // A key left out (its default breaks a rule with a key given): the table's line.
    let toml = format!("{BASE}\n[service.websocket]\nmax_connections = 1\n");
    let e = ManagerConfig::from_toml_str(&toml).unwrap_err().to_string();
    assert!(
        e.contains("websocket.min_connections") && e.contains("line 5"),
        "{e}"
    );
    // A header: the header's own line.
    let toml = format!("{BASE}[service.headers]\nok = \"1\"\n\"bad name\" = \"2\"\n");
    let e = ManagerConfig::from_toml_str(&toml).unwrap_err().to_string();
    assert!(e.contains("line 6"), "{e}");
    // Duplicate names: the second one.
    let e = ManagerConfig::from_toml_str(&format!("{BASE}{BASE}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than once") && e.contains("line 5"), "{e}");
    // The manager's own key.
    let e = ManagerConfig::from_toml_str("\nmaintenance_interval_ms = 0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn validation_errors_in_json_name_the_line_and_column() {
    let json = "{\n  \"service\": [\n    {\"name\": \"a\", \"url\": \"http://127.0.0.1:1\"},\n    {\"name\": \"b\", \"url\": \"http://127.0.0.1:2\",\n     \"http\": {\"max_connections\": 0}}\n  ]\n}\n";
    let e = ManagerConfig::from_json_str(json).unwrap_err().to_string();
    assert!(
        e.contains("http.max_connections") && e.contains("line 5"),
        "{e}"
    );
    // One line, as the Python bindings send a dict: the column points at the key.
    let json =
        r#"{"service":[{"name":"a","url":"http://127.0.0.1:1","http":{"max_connections":0}}]}"#;
    let e = ManagerConfig::from_json_str(json).unwrap_err().to_string();
    let column = json.find("\"max_connections\"").unwrap() + 1;
    assert!(
        e.contains("line 1") && e.contains(&format!("column {column}")),
        "{e}"
    );
    let path = temp_file("line.json", json);
    let e = ManagerConfig::from_file(&path.path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line.json"), "{e}");
}

#[test]
fn a_preset_in_a_file_supplies_the_defaults() {
    let config = ManagerConfig::from_toml_str(
        "[[service]]\nname = \"comfy2\"\npreset = \"comfyui\"\nurl = \"http://127.0.0.1:8189\"\n[service.websocket]\nmax_connections = 3\n",
    )
    .unwrap();
    let s = &config.service[0];
    let ws = s.websocket.as_ref().unwrap();
    assert_eq!(s.name, "comfy2");
    assert_eq!(s.url, "http://127.0.0.1:8189");
    assert_eq!(ws.max_connections, 3);
    assert_eq!(ws.client_id_param.as_deref(), Some("clientId"));
    assert_eq!(ws.min_connections, 1);
    assert_eq!(s.health_path.as_deref(), Some("/prompt"));
    assert_eq!(s.health_interval_ms, 30_000);
    // Only the preset: its name and URL too.
    let config = ManagerConfig::from_toml_str("[[service]]\npreset = \"litellm\"\n").unwrap();
    let expected = backend_pool::ServiceConfig::litellm();
    assert_eq!(config.service[0], expected);
    // JSON, as a Python dict arrives.
    let config = ManagerConfig::from_json_str(
        r#"{"service":[{"preset":"wan2gp","url":"http://127.0.0.1:7861","http":{"max_connections":4}}]}"#,
    )
    .unwrap();
    let s = &config.service[0];
    assert_eq!(
        (s.name.as_str(), s.read_idle_timeout_ms),
        ("wan2gp", 120_000)
    );
    assert_eq!(s.http.as_ref().unwrap().max_connections, 4);
    assert_eq!(s.health_path.as_deref(), Some("/"));
}

#[test]
fn an_unknown_preset_lists_the_known_ones() {
    let e = ManagerConfig::from_toml_str(
        "[[service]]\nname = \"x\"\npreset = \"comfy\"\nurl = \"http://h\"\n",
    )
    .unwrap_err()
    .to_string();
    for known in ["comfyui", "litellm", "wan2gp", "rvc"] {
        assert!(e.contains(known), "{e}");
    }
    assert!(e.contains("comfy") && e.contains("line 3"), "{e}");
}

#[test]
fn a_websocket_only_service_can_be_written_in_a_file() {
    let config = ManagerConfig::from_toml_str(
        "[[service]]\nname = \"ws\"\nurl = \"http://127.0.0.1:1\"\nhttp = false\n[service.websocket]\npath = \"/events\"\n",
    )
    .unwrap();
    assert!(config.service[0].http.is_none());
    assert_eq!(
        config.service[0].websocket.as_ref().unwrap().path,
        "/events"
    );
    // A preset's pool can be switched off as well.
    let config =
        ManagerConfig::from_toml_str("[[service]]\npreset = \"comfyui\"\nhttp = false\n").unwrap();
    assert!(config.service[0].http.is_none() && config.service[0].websocket.is_some());
    // The preset's health probe went with its HTTP pool; one without a pool is refused.
    assert_eq!(config.service[0].health_path, None);
    invalid_field(
        "[[service]]\nname = \"ws\"\nurl = \"http://h\"\nhttp = false\nhealth_path = \"/x\"\n[service.websocket]\n",
        "health_path",
    );
    let config =
        ManagerConfig::from_toml_str("[[service]]\npreset = \"comfyui\"\nwebsocket = false\n")
            .unwrap();
    assert!(config.service[0].websocket.is_none());
    // JSON says the same with false or null.
    let config = ManagerConfig::from_json_str(
        r#"{"service":[{"name":"ws","url":"http://h","http":false,"websocket":{}}]}"#,
    )
    .unwrap();
    assert!(config.service[0].http.is_none());
    // A config written out reads back the same (None is written as false).
    let text = toml::to_string(&config).unwrap();
    assert_eq!(ManagerConfig::from_toml_str(&text).unwrap(), config);
}

#[test]
fn the_presets_follow_the_backends() {
    use backend_pool::ServiceConfig;
    let litellm = ServiceConfig::litellm();
    assert_eq!(litellm.idle_timeout_ms, 600_000);
    assert_eq!(litellm.health_path.as_deref(), Some("/health/liveliness"));
    assert_eq!(
        ServiceConfig::comfyui().health_path.as_deref(),
        Some("/prompt")
    );
    let wan = ServiceConfig::wan2gp();
    assert_eq!(wan.health_path.as_deref(), Some("/"));
    assert!(wan.read_idle_timeout_ms > 15_000);
    assert_eq!(ServiceConfig::rvc().health_path.as_deref(), Some("/models"));
}

/// One machine written two ways is one endpoint listed twice: a trailing slash, the default
/// port spelled out, a host name in capitals. Different ports, prefixes or schemes are not.
#[test]
fn urls_naming_one_machine_twice_are_rejected_however_spelled() {
    let urls = |list: &str| format!("[[service]]\nname = \"c\"\nurls = [{list}]\n");
    for list in [
        r#""http://127.0.0.1:8188", "http://127.0.0.1:8188""#,
        r#""http://127.0.0.1:8188", "http://127.0.0.1:8188/""#,
        r#""http://gpu1", "http://gpu1:80""#,
        r#""https://gpu1/api", "https://GPU1:443/api/""#,
    ] {
        let e = err(&urls(list));
        assert!(
            e.contains("urls[1]") && e.contains("same endpoint as urls[0]"),
            "{list}: {e}"
        );
    }
    for list in [
        r#""http://gpu1:8188", "http://gpu1:8189""#,
        r#""http://gpu1:8188/a", "http://gpu1:8188/b""#,
        r#""http://gpu1", "https://gpu1:80""#,
    ] {
        ManagerConfig::from_toml_str(&urls(list)).unwrap_or_else(|e| panic!("{list}: {e}"));
    }
}
