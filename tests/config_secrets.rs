//! Configuration errors never carry a secret: a bearer token or a `secret_headers` value in a
//! broken file, text or Python dict (JSON) stays out of the error's `Display` and `Debug`,
//! however the configuration is broken, while the error still names the line, the column, the
//! key and what was expected. A configuration saved from a redacted dump (`"<redacted>"` in
//! place of a secret) is refused instead of sending that text as the token.

use backend_pool::{ConfigError, ManagerConfig, PoolManager, Secret, ServiceConfig};
use proptest::prelude::*;

const BASE: &str = "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
const JSON_BASE: &str = r#"{"service": [{"name": "a", "url": "http://127.0.0.1:1", "#;

/// TOML texts that put `secret` in a secret's place and break, each with the line the error
/// must name (1-based).
fn toml_cases(secret: &str) -> Vec<(String, u32)> {
    let s = secret;
    let table = "[service.secret_headers]\n";
    vec![
        // Syntax errors on the token's own line.
        (format!("{BASE}bearer_token = \"{s}\n"), 4),
        (format!("{BASE}bearer_token = \"{s}"), 4),
        (format!("{BASE}bearer_token = {s}\n"), 4),
        (format!("{BASE}bearer_token = \"{s}\"x\n"), 4),
        (format!("{BASE}bearer_token = \"{s}\" x = 1\n"), 4),
        (format!("{BASE}bearer_token = '{s}\n"), 4),
        (format!("{BASE}bearer_token = \"\"\"{s}\n"), 4),
        (format!("{BASE}bearer_token = \"{s}\\q\"\n"), 4),
        (format!("{BASE}bearer_token \"{s}\"\n"), 4),
        (format!("{BASE}bearer_token = \"{s}\",\n"), 4),
        (format!("{BASE}{table}X-Key = \"{s}\n"), 5),
        (format!("{BASE}{table}X-Key = {s}\n"), 5),
        (format!("{BASE}{table}\"X-Key\" = \"{s}\"\"\n"), 5),
        (format!("{BASE}secret_headers = {{ X-Key = \"{s} }}\n"), 4),
        (format!("{BASE}secret_headers = {{ X-Key = \"{s}\" \n"), 4),
        // Wrong types: the value where a table, a list or a number was expected, and the
        // other way round.
        (format!("{BASE}bearer_token = [\"{s}\"]\n"), 4),
        (format!("{BASE}bearer_token = {{ value = \"{s}\" }}\n"), 4),
        (format!("{BASE}secret_headers = \"{s}\"\n"), 4),
        (format!("{BASE}secret_headers = [\"{s}\"]\n"), 4),
        (format!("{BASE}{table}X-Key = [\"{s}\"]\n"), 5),
        (format!("{BASE}{table}X-Key = {{ v = \"{s}\" }}\n"), 5),
        (format!("{BASE}headers = \"{s}\"\n"), 4),
        (format!("{BASE}http = \"{s}\"\n"), 4),
        (format!("{BASE}websocket = \"{s}\"\n"), 4),
        (format!("{BASE}health_interval_ms = \"{s}\"\n"), 4),
        (format!("{BASE}bearer_token_env = [\"{s}\"]\n"), 4),
        (format!("service = \"{s}\"\n"), 1),
        (format!("maintenance_interval_ms = \"{s}\"\n"), 1),
        // Unknown keys whose value is a secret (the key may be shown).
        (format!("{BASE}bearer_tokn = \"{s}\"\n"), 4),
        (format!("{BASE}api_key = \"{s}\"\n"), 4),
        (format!("{BASE}[service.http]\ntoken = \"{s}\"\n"), 5),
        // Duplicate keys.
        (
            format!("{BASE}bearer_token = \"{s}\"\nbearer_token = \"{s}\"\n"),
            5,
        ),
        (
            format!("{BASE}{table}X-Key = \"{s}\"\nX-Key = \"{s}\"\n"),
            6,
        ),
        // A valid secret, and a break elsewhere.
        (
            format!("{BASE}bearer_token = \"{s}\"\nwait_timeout_ms = \"x\"\n"),
            5,
        ),
        (
            format!("{BASE}bearer_token = \"{s}\"\n[service.http]\nmax_connections = -1\n"),
            6,
        ),
        (format!("{BASE}bearer_token = \"{s}\"\nnope\n"), 5),
    ]
}

/// JSON texts (what the Python bindings send for a dict) that carry `secret` and break.
fn json_cases(secret: &str) -> Vec<String> {
    let s = secret;
    vec![
        format!(r#"{JSON_BASE}"bearer_token": "{s}}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_token": "{s}"#),
        format!(r#"{JSON_BASE}"bearer_token": {s}}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_token": "{s}"x}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_token": "{s}" "x"}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_token": "{s}\q"}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_token": ["{s}"]}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_token": {{"v": "{s}"}}}}]}}"#),
        format!(r#"{JSON_BASE}"secret_headers": "{s}"}}]}}"#),
        format!(r#"{JSON_BASE}"secret_headers": ["{s}"]}}]}}"#),
        format!(r#"{JSON_BASE}"secret_headers": {{"X-Key": ["{s}"]}}}}]}}"#),
        format!(r#"{JSON_BASE}"secret_headers": {{"X-Key": "{s}"]}}]}}"#),
        format!(r#"{JSON_BASE}"headers": "{s}"}}]}}"#),
        format!(r#"{JSON_BASE}"http": "{s}"}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_tokn": "{s}"}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_token": "{s}", "bearer_token": "{s}"}}]}}"#),
        format!(r#"{JSON_BASE}"bearer_token": "{s}", "wait_timeout_ms": "x"}}]}}"#),
        format!(r#"{{"service": "{s}"}}"#),
        format!(
            r#"{{"service": [{{"name": "a", "url": "http://127.0.0.1:1", "bearer_token": "{s}"}}], "x": 1"#
        ),
    ]
}

/// The error's `Display` and `Debug`, checked to carry neither `secret` nor its distinctive
/// tail.
fn assert_hidden(e: &ConfigError, secret: &str, text: &str) -> String {
    let shown = format!("{e}\n{e:?}");
    let tail = &secret[secret.len() - 8..];
    assert!(
        !shown.contains(secret) && !shown.contains(tail),
        "the error shows the secret:\n{text}\n=> {shown}"
    );
    shown
}

const SECRET: &str = "zqSECRET-sk-7f3a9c2e41b8";

#[test]
fn a_broken_toml_line_with_a_secret_keeps_it_out_of_the_error() {
    for (text, line) in toml_cases(SECRET) {
        let e = ManagerConfig::from_toml_str(&text).expect_err(&text);
        assert_hidden(&e, SECRET, &text);
        let at = e
            .location()
            .unwrap_or_else(|| panic!("no location: {text}\n=> {e}"));
        assert_eq!(at.line, line, "{text}\n=> {e}");
        assert!(
            e.to_string().contains(&format!("line {line}")),
            "{text}\n=> {e}"
        );
    }
}

#[test]
fn a_broken_json_config_with_a_secret_keeps_it_out_of_the_error() {
    for pretty in json_cases(SECRET) {
        // As written by hand, and as Python's json.dumps(separators=(",", ":")) sends a dict.
        let compact = pretty.replace(": ", ":").replace(", ", ",");
        for text in [pretty, compact] {
            let e = ManagerConfig::from_json_str(&text).expect_err(&text);
            assert_hidden(&e, SECRET, &text);
            assert!(e.location().is_some(), "{text}\n=> {e}");
        }
    }
}

#[test]
fn a_broken_file_with_a_secret_keeps_it_out_of_the_error() {
    let dir = std::env::temp_dir().join(format!("backend-pool-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("services.toml");
    std::fs::write(&path, format!("{BASE}bearer_token = \"{SECRET}\n")).unwrap();
    let e = ManagerConfig::from_file(&path).unwrap_err();
    let shown = assert_hidden(&e, SECRET, "file");
    assert!(shown.contains("services.toml"), "{shown}");
    let json = dir.join("services.json");
    std::fs::write(
        &json,
        format!(r#"{JSON_BASE}"secret_headers": "{SECRET}"}}]}}"#),
    )
    .unwrap();
    let e = ManagerConfig::from_file(&json).unwrap_err();
    let shown = assert_hidden(&e, SECRET, "json file");
    assert!(shown.contains("services.json"), "{shown}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Parse errors stay useful: the line, the column, the key and what was expected.
#[test]
fn parse_errors_name_line_column_key_and_what_was_expected() {
    // (text, line, column, what the message must name)
    let cases = [
        // A missing closing quote: the key of the line, the place after the value.
        (
            format!("{BASE}bearer_token = \"{SECRET}\n"),
            4,
            17 + SECRET.len(),
            &["service.bearer_token", "invalid basic string"][..],
        ),
        // An unquoted value: the key, and that a quote was expected.
        (
            format!("{BASE}[service.secret_headers]\nX-Key = {SECRET}\n"),
            5,
            9,
            &["service.secret_headers.X-Key", "expected `\"`"][..],
        ),
        // A string where a table was expected.
        (
            format!("{BASE}secret_headers = \"{SECRET}\"\n"),
            4,
            18,
            &["service.secret_headers", "string", "expected a map"][..],
        ),
        // A list where a string was expected, inside a table.
        (
            format!("{BASE}[service.secret_headers]\nX-Key = [\"{SECRET}\"]\n"),
            5,
            9,
            &[
                "service.secret_headers.X-Key",
                "sequence",
                "expected a string",
            ][..],
        ),
        // Unknown key: its name is shown, its value is not.
        (
            format!("{BASE}bearer_tokn = \"{SECRET}\"\n"),
            4,
            1,
            &["unknown field `bearer_tokn`", "`bearer_token`"][..],
        ),
        // Duplicate key.
        (
            format!("{BASE}bearer_token = \"{SECRET}\"\nbearer_token = \"{SECRET}\"\n"),
            5,
            1,
            &["duplicate key `bearer_token`"][..],
        ),
        // A number out of range keeps its key.
        (
            format!("{BASE}[service.http]\nmax_connections = -1\n"),
            5,
            19,
            &["service.http.max_connections", "expected u32"][..],
        ),
    ];
    for (text, line, column, needles) in cases {
        let e = ManagerConfig::from_toml_str(&text).unwrap_err();
        let shown = assert_hidden(&e, SECRET, &text);
        assert!(matches!(e, ConfigError::Parse { .. }), "{shown}");
        let at = e.location().unwrap();
        assert_eq!((at.line, at.column as usize), (line, column), "{shown}");
        let display = e.to_string();
        assert!(
            display.contains(&format!("line {line}, column {column}")),
            "{display}"
        );
        for needle in needles {
            assert!(
                display.contains(needle),
                "{needle} missing:\n{text}\n=> {display}"
            );
        }
        // One line: the source text is not quoted under it.
        assert!(!display.contains('\n'), "{display}");
    }
    // JSON, pretty and compact: the key and what was expected too.
    let json = [
        (
            format!(r#"{JSON_BASE}"secret_headers": "{SECRET}"}}]}}"#),
            "key `service.secret_headers`: invalid type: string, expected a map",
        ),
        (
            format!(r#"{JSON_BASE}"bearer_token": ["{SECRET}"]}}]}}"#),
            "key `service.bearer_token`: invalid type: sequence, expected a string",
        ),
        (
            format!(r#"{JSON_BASE}"secret_headers": {{"X-Key": {{"v": "{SECRET}"}}}}}}]}}"#),
            "key `service.secret_headers.X-Key`: invalid type: map, expected a string",
        ),
        (
            format!(r#"{JSON_BASE}"secret_headers": {{"X-Key": "{SECRET}"]}}]}}"#),
            "key `service.secret_headers.X-Key`: expected `,` or `}`",
        ),
        (
            format!(r#"{JSON_BASE}"bearer_token": "{SECRET}}}]}}"#),
            "key `service.bearer_token`: EOF while parsing a string",
        ),
    ];
    for (pretty, want) in json {
        let compact = pretty.replace(": ", ":").replace(", ", ",");
        for text in [pretty, compact] {
            let e = ManagerConfig::from_json_str(&text).unwrap_err();
            let shown = assert_hidden(&e, SECRET, &text);
            assert!(shown.contains(want), "{want} missing:\n{text}\n=> {shown}");
            assert!(shown.contains("line 1, column"), "{shown}");
        }
    }
}

/// Values that are not secrets are still named by the rules that reject them.
#[test]
fn non_secret_values_are_still_shown_by_the_rules() {
    let e =
        ManagerConfig::from_toml_str("[[service]]\nname = \"a\"\nurl = \"ftp://bad.example\"\n")
            .unwrap_err();
    assert!(e.to_string().contains("ftp://bad.example"), "{e}");
}

/// The rules that echo a value keep out the parts of it that are secrets in practice: a URL's
/// credentials and query (where API keys go), and a "variable name" that is the token pasted
/// into `bearer_token_env`.
#[test]
fn rules_do_not_echo_secrets_put_in_the_wrong_key() {
    let svc = |line: String| format!("[[service]]\nname = \"a\"\n{line}\n");
    for (text, field, shown) in [
        (svc(format!("url = \"http://user:{SECRET}@127.0.0.1:1\"")), "url", "127.0.0.1:1"),
        (svc(format!("url = \"http://{SECRET}@127.0.0.1:1/v1\"")), "url", "/v1"),
        (svc(format!("url = \"http://127.0.0.1:1/v1?api_key={SECRET}\"")), "url", "127.0.0.1:1/v1"),
        (svc(format!("url = \"http://127.0.0.1:1/#{SECRET}\"")), "url", "127.0.0.1:1"),
        (svc(format!("url = \"ftp://u:{SECRET}@h/?k={SECRET}\"")), "url", "ftp://"),
        (svc(format!("url = \"http://u:{SECRET}@h:0\"")), "url", "url"),
        (
            svc(format!("url = \"http://127.0.0.1:1\"\n[service.headers]\nX-Api-Key = \"{SECRET}\\n\"")),
            "headers",
            "X-Api-Key",
        ),
        (
            svc(format!("url = \"http://127.0.0.1:1\"\n[service.headers]\nAuthorization = \"Bearer {SECRET}\\r\\n\"")),
            "headers",
            "Authorization",
        ),
        (
            svc(format!("url = \"http://127.0.0.1:1\"\nbearer_token_env = \"{SECRET}==\"")),
            "bearer_token_env",
            "environment variable",
        ),
    ] {
        let e = ManagerConfig::from_toml_str(&text).expect_err(&text);
        let shown_text = assert_hidden(&e, SECRET, &text);
        match &e {
            ConfigError::Invalid { field: f, .. } => assert_eq!(f, field, "{shown_text}"),
            other => panic!("not Invalid: {other}"),
        }
        assert!(e.to_string().contains(shown), "{shown} missing: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// A configuration written out holds "<redacted>" in place of each secret.
// ---------------------------------------------------------------------------------------

fn with_secrets() -> ServiceConfig {
    let mut s = ServiceConfig::new("llm", "http://127.0.0.1:4000");
    s.bearer_token = Some(Secret::new(SECRET));
    s
}

fn assert_redacted_dump_refused(e: &ConfigError, field: &str) {
    let shown = format!("{e}");
    match e {
        ConfigError::Invalid { field: f, .. } => assert_eq!(f, field, "{shown}"),
        other => panic!("not Invalid on {field}: {other}"),
    }
    assert!(shown.contains("redacted dump"), "{shown}");
    assert!(shown.contains("again"), "{shown}");
    if field == "bearer_token" {
        assert!(shown.contains("bearer_token_env"), "{shown}");
    }
}

#[test]
fn a_config_saved_from_a_redacted_dump_is_refused_naming_the_key() {
    let config = ManagerConfig::empty().with_service(with_secrets());
    // TOML round trip.
    let text = toml::to_string(&config).unwrap();
    assert!(
        text.contains("<redacted>") && !text.contains(SECRET),
        "{text}"
    );
    let e = ManagerConfig::from_toml_str(&text).unwrap_err();
    assert_redacted_dump_refused(&e, "bearer_token");
    let line = text
        .lines()
        .position(|l| l.starts_with("bearer_token"))
        .unwrap()
        + 1;
    assert_eq!(e.location().unwrap().line as usize, line, "{e}\n{text}");
    // JSON round trip (what a Python dict saved from a dump sends).
    let text = serde_json::to_string_pretty(&config).unwrap();
    let e = ManagerConfig::from_json_str(&text).unwrap_err();
    assert_redacted_dump_refused(&e, "bearer_token");
    // A secret header, the same; the error names the header.
    let mut s = ServiceConfig::new("llm", "http://127.0.0.1:4000");
    s.secret_headers
        .insert("X-Api-Key".into(), Secret::new(SECRET));
    let text = toml::to_string(&ManagerConfig::empty().with_service(s)).unwrap();
    let e = ManagerConfig::from_toml_str(&text).unwrap_err();
    assert_redacted_dump_refused(&e, "secret_headers");
    assert!(e.to_string().contains("X-Api-Key"), "{e}");
}

#[test]
fn a_redacted_placeholder_built_in_code_is_refused_at_start() {
    let mut s = ServiceConfig::new("llm", "http://127.0.0.1:4000");
    s.bearer_token = Some(Secret::new("<redacted>"));
    assert_redacted_dump_refused(&s.validate().unwrap_err(), "bearer_token");
    let e = PoolManager::new(ManagerConfig::empty().with_service(s)).unwrap_err();
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert!(
        source.contains("bearer_token") && source.contains("redacted"),
        "{source}"
    );
    let mut s = ServiceConfig::new("llm", "http://127.0.0.1:4000");
    s.secret_headers
        .insert("X-Key".into(), Secret::new("<redacted>"));
    assert_redacted_dump_refused(&s.validate().unwrap_err(), "secret_headers");
}

// ---------------------------------------------------------------------------------------
// Property: any secret, any shape of breakage.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_broken_config_shows_its_secret(
        tail in "[A-Za-z0-9_.~+/=-]{8,40}",
        case in 0usize..64,
    ) {
        let secret = format!("zqSECRET{tail}");
        let toml = toml_cases(&secret);
        let (text, _) = &toml[case % toml.len()];
        let e = ManagerConfig::from_toml_str(text).expect_err(text);
        assert_hidden(&e, &secret, text);
        let json = json_cases(&secret);
        let text = &json[case % json.len()];
        let e = ManagerConfig::from_json_str(text).expect_err(text);
        assert_hidden(&e, &secret, text);
    }
}

/// A valid configuration carrying `secret` as its bearer token and a secret header, in TOML
/// and in JSON.
fn valid_texts(secret: &str) -> [String; 2] {
    [
        format!("{BASE}bearer_token = \"{secret}\"\n[service.secret_headers]\nX-Key = \"{secret}\"\n"),
        format!(
            "{JSON_BASE}\"bearer_token\": \"{secret}\",\n \"secret_headers\": {{\"X-Key\": \"{secret}\"}}}}]}}"
        ),
    ]
}

/// The characters the edits insert: TOML's and JSON's syntax, a space, a letter.
const EDITS: [char; 15] = [
    '"', '\'', '=', '[', ']', '{', '}', ',', '.', ':', '#', '\n', ' ', 'x', '\\',
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// One to three random edits anywhere in a valid file (a character inserted or deleted,
    /// the text cut short): whatever the error, it does not show the secret.
    #[test]
    fn no_edits_of_a_valid_config_make_its_error_show_the_secret(
        tail in "[A-Za-z0-9_.~+/=-]{8,24}",
        json in any::<bool>(),
        edits in prop::collection::vec(
            (0usize..3, any::<prop::sample::Index>(), prop::sample::select(EDITS.to_vec())),
            1..4,
        ),
    ) {
        let secret = format!("zqSECRET{tail}");
        let mut text = valid_texts(&secret)[usize::from(json)].clone();
        for (edit, at, ch) in edits {
            let at = at.index(text.len() + 1);
            match edit {
                0 => text.insert(at, ch),
                1 if at < text.len() => {
                    text.remove(at);
                }
                1 => {}
                _ => text.truncate(at.max(1)),
            }
        }
        let parsed = if json {
            ManagerConfig::from_json_str(&text)
        } else {
            ManagerConfig::from_toml_str(&text)
        };
        if let Err(e) = parsed {
            assert_hidden(&e, &secret, &text);
        }
    }
}

/// Every single edit of the valid texts (each position: each syntax character inserted, the
/// character deleted, the text cut there).
#[test]
fn every_single_edit_of_a_valid_config_keeps_the_secret_out_of_its_error() {
    let mut errors = 0;
    for (json, valid) in valid_texts(SECRET).iter().enumerate() {
        for at in 0..=valid.len() {
            let mut texts: Vec<String> = EDITS
                .iter()
                .map(|&c| {
                    let mut t = valid.clone();
                    t.insert(at, c);
                    t
                })
                .collect();
            if at < valid.len() {
                let mut t = valid.clone();
                t.remove(at);
                texts.push(t);
            }
            texts.push(valid[..at].to_string());
            for text in texts {
                let parsed = if json == 1 {
                    ManagerConfig::from_json_str(&text)
                } else {
                    ManagerConfig::from_toml_str(&text)
                };
                if let Err(e) = parsed {
                    assert_hidden(&e, SECRET, &text);
                    errors += 1;
                }
            }
        }
    }
    assert!(errors > 1000, "{errors}");
}
