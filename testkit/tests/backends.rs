//! The mock backends honour the contracts of the real ones that the crate relies on (README: "Presets" and "Running against real backends").

mod common;

use std::net::TcpStream;
use std::time::Duration;

use backend_pool_testkit::backends;
use base64::Engine as _;
use common::Conn;
use serde_json::{json, Value};
use tungstenite::Message;

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
}

/// `(status, content-type, body)`
fn call(method: &str, url: &str, auth: Option<&str>, body: Option<&str>) -> (u16, String, Vec<u8>) {
    let agent = agent();
    let mut resp = match (method, body) {
        ("POST", b) => {
            let mut req = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.send(b.unwrap_or("")).unwrap()
        }
        ("HEAD", _) => agent.head(url).call().unwrap(),
        _ => {
            let mut req = agent.get(url);
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.call().unwrap()
        }
    };
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.body_mut().read_to_vec().unwrap();
    (resp.status().as_u16(), ct, body)
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn comfyui_prompt_lifecycle() {
    let server = backends::comfyui();
    let url = server.http_url();
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(server.ws_url("/ws?clientId=c1"), stream).unwrap();
    let first = ws.read().unwrap().into_text().unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["type"], "status");
    assert_eq!(first["data"]["sid"], "c1");
    assert_eq!(first["data"]["status"]["exec_info"]["queue_remaining"], 0);

    let (status, _, body) = call("GET", &format!("{url}/prompt"), None, None);
    assert_eq!(status, 200);
    assert_eq!(json_of(&body), json!({"exec_info": {"queue_remaining": 0}}));

    let (status, _, body) = call("POST", &format!("{url}/prompt"), None, Some("{}"));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    let req = json!({"prompt": {"1": {"class_type": "Mock"}}, "client_id": "c1"}).to_string();
    let (status, _, body) = call("POST", &format!("{url}/api/prompt"), None, Some(&req));
    assert_eq!(status, 200);
    let reply = json_of(&body);
    let prompt_id = reply["prompt_id"].as_str().unwrap().to_string();
    assert_eq!(prompt_id.len(), 36);
    assert_eq!(reply["number"], 0);
    assert_eq!(reply["node_errors"], json!({}));

    let mut types = Vec::new();
    let mut previews = 0;
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                let ty = v["type"].as_str().unwrap().to_string();
                if ty != "status" {
                    assert_eq!(v["data"]["prompt_id"], prompt_id.as_str(), "{v}");
                }
                types.push(ty.clone());
                if ty == "executing" && v["data"]["node"].is_null() {
                    break;
                }
            }
            Message::Binary(b) => {
                assert_eq!(&b[..8], &[0, 0, 0, 1, 0, 0, 0, 2]);
                previews += 1;
            }
            _ => {}
        }
    }
    assert_eq!(previews, 1);
    let expected = [
        "status",
        "execution_start",
        "executing",
        "progress",
        "progress",
        "progress",
        "progress",
        "executed",
        "execution_success",
        "executing",
    ];
    assert_eq!(types, expected);

    let (_, _, body) = call("GET", &format!("{url}/history/{prompt_id}"), None, None);
    assert_eq!(json_of(&body)[&prompt_id]["status"]["completed"], true);
    let (_, _, body) = call("GET", &format!("{url}/queue"), None, None);
    assert_eq!(json_of(&body)["queue_running"], json!([]));
    let (status, _, body) = call("GET", &format!("{url}/system_stats"), None, None);
    assert_eq!(status, 200);
    assert!(json_of(&body)["devices"].is_array());

    // A mismatching Origin is refused, as ComfyUI does on loopback.
    let mut c = Conn::open(server.addr());
    c.send("GET", "/prompt", "Origin: http://evil.example\r\n", b"");
    assert_eq!(c.read_response(false).unwrap().status, 403);
}

#[test]
fn litellm_contract() {
    let server = backends::litellm("sk-test");
    let url = server.http_url();
    let body =
        json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).to_string();

    let (status, _, reply) = call(
        "POST",
        &format!("{url}/v1/chat/completions"),
        None,
        Some(&body),
    );
    assert_eq!(status, 401);
    assert_eq!(json_of(&reply)["error"]["type"], "auth_error");
    let (status, _, reply) = call(
        "POST",
        &format!("{url}/v1/chat/completions"),
        Some("Bearer wrong"),
        Some(&body),
    );
    assert_eq!(status, 401);
    assert!(!String::from_utf8_lossy(&reply).contains("wrong"));

    let (status, _, reply) = call(
        "POST",
        &format!("{url}/chat/completions"),
        Some("Bearer sk-test"),
        Some(&body),
    );
    assert_eq!(status, 200);
    let v = json_of(&reply);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "hello from mock");

    let stream_body = json!({"model": "mock-gpt", "stream": true, "messages": []}).to_string();
    let (status, ct, reply) = call(
        "POST",
        &format!("{url}/v1/chat/completions"),
        Some("Bearer sk-test"),
        Some(&stream_body),
    );
    assert_eq!(status, 200);
    assert_eq!(ct, "text/event-stream");
    let text = String::from_utf8(reply).unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(content, "hello from mock");

    let (status, _, reply) = call("GET", &format!("{url}/health/liveliness"), None, None);
    assert_eq!((status, reply.as_slice()), (200, &b"\"I'm alive!\""[..]));
    let (status, _, _) = call(
        "GET",
        &format!("{url}/v1/models"),
        Some("Bearer sk-test"),
        None,
    );
    assert_eq!(status, 200);
    assert!(!server.request_log().iter().any(|(_, p)| p == "/health"));
}

#[test]
fn litellm_idle_keep_alive() {
    let server = backends::litellm_with_idle("k", Duration::from_millis(200));
    let mut c = Conn::open(server.addr());
    assert_eq!(c.request("GET", "/health/liveness").status, 200);
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn gradio_contract() {
    let server = backends::gradio();
    let url = server.http_url();
    assert_eq!(call("HEAD", &format!("{url}/"), None, None).0, 200);
    let (_, _, config) = call("GET", &format!("{url}/config"), None, None);
    assert_eq!(json_of(&config)["version"], "5.29.0");
    let (_, _, info) = call("GET", &format!("{url}/gradio_api/info"), None, None);
    assert!(json_of(&info)["named_endpoints"]["/generate"].is_object());

    let (status, _, reply) = call(
        "POST",
        &format!("{url}/gradio_api/call/generate"),
        None,
        Some(r#"{"data":["a cat"]}"#),
    );
    assert_eq!(status, 200);
    let event_id = json_of(&reply)["event_id"].as_str().unwrap().to_string();
    let (status, ct, stream) = call(
        "GET",
        &format!("{url}/gradio_api/call/generate/{event_id}"),
        None,
        None,
    );
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    let text = String::from_utf8(stream).unwrap();
    assert_eq!(text.matches("event: generating").count(), 3);
    assert!(
        text.ends_with("event: complete\ndata: [\"generated: a cat\"]\n\n"),
        "{text}"
    );
    let (_, _, again) = call(
        "GET",
        &format!("{url}/gradio_api/call/generate/{event_id}"),
        None,
        None,
    );
    assert!(String::from_utf8(again)
        .unwrap()
        .starts_with("event: error"));
}

#[test]
fn rvc_contract() {
    let server = backends::rvc();
    let url = server.http_url();
    let (_, _, models) = call("GET", &format!("{url}/models"), None, None);
    assert_eq!(json_of(&models), json!({"models": ["demo"]}));

    let pcm: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pcm);
    let (status, ct, wav) = call(
        "POST",
        &format!("{url}/convert"),
        None,
        Some(&json!({ "audio_data": b64 }).to_string()),
    );
    assert_eq!((status, ct.as_str()), (200, "audio/wav"));
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(&wav[44..], pcm.as_slice());

    let (status, _, _) = call(
        "POST",
        &format!("{url}/convert"),
        None,
        Some(r#"{"audio_data":"@@not base64@@"}"#),
    );
    assert_eq!(status, 400);
    let (status, _, _) = call("POST", &format!("{url}/convert"), None, Some("nope"));
    assert_eq!(status, 400);
}

#[test]
fn generic_contract() {
    let server = backends::generic();
    let url = server.http_url();
    assert_eq!(call("GET", &format!("{url}/health"), None, None).2, b"ok");
    assert_eq!(
        call("GET", &format!("{url}/echo?x=hi%21"), None, None).2,
        b"hi!"
    );
    assert_eq!(
        call("POST", &format!("{url}/echo"), None, Some("{\"a\":1}")).2,
        b"{\"a\":1}"
    );
    let (mut ws, _) = tungstenite::connect(server.ws_url("/ws")).unwrap();
    ws.send(Message::text("yo")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("yo"));

    let secured = backends::generic_with_token("t0k");
    let surl = secured.http_url();
    assert_eq!(call("GET", &format!("{surl}/health"), None, None).0, 200);
    assert_eq!(call("GET", &format!("{surl}/echo?x=1"), None, None).0, 401);
    assert_eq!(
        call("GET", &format!("{surl}/echo?x=1"), Some("Bearer t0k"), None).0,
        200
    );
}
