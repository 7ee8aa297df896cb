//! LiteLLM: the bearer key, streaming, the liveliness probe, and the key never leaks.

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use backend_pool::{ErrorClass, HealthState, Secret, ServiceConfig};
use serde_json::Value;

use crate::common::*;
use crate::support::*;

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn litellm_bearer_key_streaming_liveliness_probe_and_the_key_never_leaks() {
    let lite = Backend::get("litellm");
    let key = litellm_key();
    let logs = capture_logs();
    let mark = lite.mark();
    let wrong = "sk-wrong-key-0000";
    // Accepts connections (the kernel's backlog) but never answers: a deterministic timeout
    // for a service that carries the key.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let m = manager(
        100,
        vec![
            ServiceConfig {
                health_interval_ms: 300,
                ..litellm_service("litellm", &lite, 4)
            },
            ServiceConfig {
                health_path: None,
                bearer_token: None,
                ..litellm_service("nokey", &lite, 2)
            },
            ServiceConfig {
                health_path: None,
                bearer_token: Some(Secret::new(wrong)),
                ..litellm_service("wrongkey", &lite, 2)
            },
            ServiceConfig {
                health_path: None,
                ..litellm_service(
                    "silent",
                    &Backend {
                        url: silent_url.clone(),
                        ..lite.clone()
                    },
                    2,
                )
            },
            // Nothing listens on port 9: connect errors of a service that carries the key.
            // One probe at the first tick, the next in 60 s: two calls reach the server.
            ServiceConfig {
                health_interval_ms: 60_000,
                unhealthy_after: 3,
                ..litellm_service(
                    "dead",
                    &Backend {
                        url: "http://127.0.0.1:9".into(),
                        ..lite.clone()
                    },
                    2,
                )
            },
        ],
    );
    let llm = m.http("litellm").unwrap();
    assert!(eventually(Duration::from_secs(5), || m
        .health("litellm")
        .unwrap()
        .last_check_unix_ms
        .is_some()));

    // A chat completion with the bearer key.
    let reply = llm
        .post("/v1/chat/completions")
        .send_json(&chat_body(false))
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text());
    let v: Value = reply.json().unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello from mock");

    // Streaming, read to [DONE], then the body to its end.
    let body = serde_json::to_vec(&chat_body(true)).unwrap();
    let mut stream = llm
        .post("/v1/chat/completions")
        .header("Content-Type", "application/json")
        .stream(&body)
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    let events = read_sse(&mut stream, |e| e.data == "[DONE]").unwrap();
    drop(stream);
    let content: String = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    println!("stream: {} chunks, content {content:?}", events.len());
    assert_eq!(content, "hello from mock");
    assert!(events.len() >= 3);
    // The stream's connection went back to the pool: the next call reuses it.
    let before = http_stats(&m, "litellm").connections_created;
    expect(llm.get("/v1/models").call(), 200, "mock-gpt").unwrap();
    assert_eq!(http_stats(&m, "litellm").connections_created, before);

    // Missing and wrong keys are answered, not errors; error_for_status turns them into one.
    let no_key = m.http("nokey").unwrap().get("/v1/models").call().unwrap();
    assert_eq!(no_key.status(), 401, "{}", no_key.text());
    let bad_key = m
        .http("wrongkey")
        .unwrap()
        .get("/v1/models")
        .call()
        .unwrap();
    assert_eq!(bad_key.status(), 400, "{}", bad_key.text());
    let status_err = no_key.error_for_status().unwrap_err();
    // A timeout and connect errors while the key is configured.
    let timeout_err = m
        .http("silent")
        .unwrap()
        .post("/v1/chat/completions")
        .total_timeout(Duration::from_millis(300))
        .send_json(&chat_body(false))
        .unwrap_err();
    assert!(timeout_err.is_timeout(), "{timeout_err:?}");
    let dead = m.http("dead").unwrap();
    let connect_err = dead.get("/v1/models").call().unwrap_err();
    assert_eq!(connect_err.class(), ErrorClass::Connect, "{connect_err:?}");
    let again = dead
        .post("/v1/chat/completions")
        .send_json(&chat_body(false));
    assert_eq!(again.unwrap_err().class(), ErrorClass::Connect);
    assert!(eventually(Duration::from_secs(3), || m
        .health("dead")
        .unwrap()
        .state
        == HealthState::Unhealthy));
    let unavailable = dead.get("/v1/models").call().unwrap_err();
    assert_eq!(
        unavailable.class(),
        ErrorClass::Unavailable,
        "{unavailable:?}"
    );
    thread::sleep(Duration::from_millis(1500)); // a few more probes

    let mut exposed = Vec::new();
    for e in [&status_err, &timeout_err, &connect_err, &unavailable] {
        exposed.push(format!("{e}"));
        exposed.push(format!("{e:?}"));
        exposed.push(e.chain().to_string());
    }
    let stats = m.stats();
    exposed.push(stats.to_json());
    exposed.push(stats.to_prometheus());
    exposed.push(format!("{stats:?}"));
    exposed.push(format!("{m:?} {llm:?} {reply:?}"));
    exposed.push(format!("{:?}", litellm_service("litellm", &lite, 4)));
    exposed.push(serde_json::to_string(&litellm_service("litellm", &lite, 4)).unwrap());
    for name in ["litellm", "dead", "wrongkey"] {
        exposed.push(format!("{:?}", m.health(name).unwrap()));
    }
    m.shutdown(Duration::from_secs(2)).unwrap();
    drop(m);
    log::set_max_level(log::LevelFilter::Off);
    let records = logs.take();
    println!(
        "{} log records captured (every crate, trace level)",
        records.len()
    );
    assert!(
        records.iter().any(|r| r.contains("backend_pool")),
        "the capturing logger saw nothing from the crate: {records:?}"
    );
    let mut leaking: BTreeMap<String, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| r.contains("sk-")) {
        let mut w = r.split(' ');
        let key = format!("{} {}", w.next().unwrap_or(""), w.next().unwrap_or(""));
        *leaking.entry(key).or_default() += 1;
    }
    println!("records containing 'sk-': {leaking:?}");
    // Known, outside this crate: ureq-proto's TRACE records hex-dump the raw request bytes,
    // Authorization header included (ureq redacts it at DEBUG). Everything else must be clean:
    // the crate's own records at every level, every crate's records at DEBUG and above.
    let wire_dumps = records
        .iter()
        .filter(|r| r.starts_with("TRACE ureq_proto"))
        .count();
    if leaking.keys().any(|k| k.starts_with("TRACE ureq_proto")) {
        println!(
            "WARNING: ureq-proto's TRACE wire dumps ({wire_dumps} records) carry the bearer key: \
             never enable TRACE for the ureq_proto target"
        );
    }
    exposed.extend(
        records
            .into_iter()
            .filter(|r| !r.starts_with("TRACE ureq_proto")),
    );
    for text in &exposed {
        assert!(
            !text.contains(&key) && !text.contains(wrong),
            "the key leaked: {text}"
        );
    }

    thread::sleep(Duration::from_millis(300));
    let entries = mark.entries();
    let probes = entries
        .iter()
        .filter(|a| a.path == "/health/liveliness")
        .count();
    let bad: Vec<_> = entries
        .iter()
        .filter(|a| a.path == "/health" || a.path.starts_with("/health?"))
        .collect();
    println!(
        "litellm access log: {} requests, {probes} GET /health/liveliness, {} GET /health",
        entries.len(),
        bad.len()
    );
    assert!(probes >= 3, "the liveliness probe ran {probes} times");
    assert!(
        entries
            .iter()
            .filter(|a| a.path == "/health/liveliness")
            .all(|a| a.method == "GET" && a.status == 200),
        "{entries:?}"
    );
    assert!(bad.is_empty(), "GET /health was called: {bad:?}");
}
