//! ComfyUI over aiohttp: prompt progress on a pooled socket, draining idle sockets, a restart
//! mid-job.

use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{ErrorClass, HealthState, ServiceConfig};
use serde_json::Value;

use crate::common::*;
use crate::support::*;

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn comfyui_prompt_progress_over_a_pooled_websocket_until_executing_null() {
    let comfy = Backend::get("comfyui");
    let m = manager(200, vec![comfy_service(&comfy, 2, 2, 1)]);
    let mut ws = m.websocket("comfyui").unwrap();
    let client_id = ws.client_id().unwrap().to_string();
    assert!(client_id.starts_with("bp-"), "{client_id}");
    let prompt_id = submit_prompt(&m, &client_id, 5, 0.05).unwrap();
    let run = follow_prompt(&mut ws, &prompt_id).unwrap();
    println!("comfyui run: {run:?}");
    assert_eq!(run.progress, [1, 2, 3, 4, 5]);
    assert_eq!(run.previews, 1, "one binary PNG preview frame");
    let ours: Vec<_> = run.events.iter().filter(|e| *e != "status").collect();
    assert_eq!(
        ours.first().map(|s| s.as_str()),
        Some("execution_start"),
        "{ours:?}"
    );
    for kind in ["executed", "execution_success"] {
        assert!(ours.iter().any(|e| *e == kind), "no {kind}: {ours:?}");
    }
    ws.finish();
    let history: Value = m
        .http("comfyui")
        .unwrap()
        .get(&format!("/history/{prompt_id}"))
        .call()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        history[&prompt_id]["status"]["completed"], true,
        "{history}"
    );
    // The same socket serves the next job.
    let again = comfy_job(&m, 2, 0.01).unwrap();
    assert_eq!(again.progress, [1, 2]);
    let ws = ws_stats(&m, "comfyui");
    assert_eq!(ws.errors.total(), 0, "{ws:?}");
    assert!(ws.connections_created <= 2, "{ws:?}");
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn comfyui_idle_pooled_socket_is_drained_of_status_broadcasts_and_reads_fresh_messages_only() {
    const PROMPTS: usize = 20;
    let comfy = Backend::get("comfyui");
    let m = manager(100, vec![comfy_service(&comfy, 2, 2, 0)]);
    // Socket A: opened, first message read, then left idle in the pool.
    let mut a = m.websocket("comfyui").unwrap();
    let a_id = a.client_id().unwrap().to_string();
    let a_port = local_port(&a);
    let first: Value = a.read_json().unwrap();
    assert_eq!(first["type"], "status");
    assert_eq!(first["data"]["sid"], a_id.as_str());
    let mut b = m.websocket("comfyui").unwrap();
    a.finish(); // it only read: nothing of this lease is running
                // A control socket outside the pool that nobody reads: its queue shows what an undrained
                // idle socket would hold.
    let ws_url = comfy.url.replace("http://", "ws://") + "/ws?clientId=control-unread";
    let (control, _) = tungstenite::connect(ws_url).unwrap();
    let control_port = match control.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s.local_addr().unwrap().port(),
        _ => unreachable!(),
    };
    let b_id = b.client_id().unwrap().to_string();
    let (mut broadcasts, mut max_a_queue) = (0, 0);
    for _ in 0..PROMPTS {
        let pid = submit_prompt(&m, &b_id, 1, 0.01).unwrap();
        let run = follow_prompt(&mut b, &pid).unwrap();
        broadcasts += run.events.iter().filter(|e| *e == "status").count();
        max_a_queue = max_a_queue.max(recv_queue(a_port).expect("socket A is open"));
    }
    thread::sleep(Duration::from_millis(500)); // a few maintenance ticks
    let a_queue = recv_queue(a_port).expect("socket A is open");
    let control_queue = recv_queue(control_port).unwrap();
    println!(
        "{PROMPTS} prompts, {broadcasts} status broadcasts seen by the busy socket; idle pooled \
         socket receive queue now {a_queue} B (max seen {max_a_queue} B); unread control \
         socket {control_queue} B"
    );
    assert!(
        control_queue > 0,
        "the server broadcast nothing to idle sockets"
    );
    assert_eq!(a_queue, 0, "the idle pooled socket was not drained");

    // Leasing again (B is still out) gives A back: nothing stale is waiting on it.
    let mut a = m.websocket("comfyui").unwrap();
    assert_eq!(a.client_id(), Some(a_id.as_str()), "LIFO: the idle socket");
    let stale = a.read_timeout(Duration::from_millis(300));
    assert!(
        matches!(&stale, Err(e) if e.is_timeout()),
        "a stale message was waiting: {stale:?}"
    );
    // The timeout left the socket usable; what it reads now is fresh.
    let pid = submit_prompt(&m, &a_id, 1, 0.01).unwrap();
    let next: Value = a.read_json().unwrap();
    let fresh = (next["type"] == "status"
        && next["data"]["status"]["exec_info"]["queue_remaining"].as_u64() >= Some(1))
        || next["data"]["prompt_id"] == pid.as_str();
    assert!(fresh, "first message after the lease is stale: {next}");
    let run = follow_prompt(&mut a, &pid).unwrap();
    assert_eq!(run.progress, [1]);
    drop((a, b, control));
    let ws = ws_stats(&m, "comfyui");
    assert_eq!(ws.connections_created, 2, "{ws:?}");
    assert_eq!(
        ws.errors.total(),
        1,
        "only the deliberate read timeout: {ws:?}"
    );
    assert_eq!(ws.closed.health + ws.closed.broken, 0, "{ws:?}");
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn comfyui_restarted_mid_job_dead_sockets_are_detected_and_the_next_job_works() {
    let comfy = Backend::get("comfyui");
    let m = manager(
        100,
        vec![ServiceConfig {
            health_interval_ms: 500,
            health_timeout_ms: 500,
            ..comfy_service(&comfy, 2, 3, 2)
        }],
    );
    // One socket leased for a long job, one idle in the pool (the minimum is 2 open).
    let mut ws = m.websocket("comfyui").unwrap();
    assert!(eventually(Duration::from_secs(3), || ws_stats(
        &m, "comfyui"
    )
    .idle
        >= 1));
    expect(m.http("comfyui").unwrap().get("/prompt").call(), 200, "").unwrap();
    let cid = ws.client_id().unwrap().to_string();
    let pid = submit_prompt(&m, &cid, 200, 0.05).unwrap();
    loop {
        let v: Value = ws.read_json().unwrap();
        if v["type"] == "progress" && v["data"]["prompt_id"] == pid.as_str() {
            break;
        }
    }
    let _restore = RestoreOnDrop(vec![comfy.clone()]);
    let killed = Instant::now();
    comfy.kill();
    let err = loop {
        match ws.read_timeout(Duration::from_secs(5)) {
            Ok(_) => continue, // what arrived before the kill
            Err(e) => break e,
        }
    };
    println!(
        "leased socket after the kill: {:?} {err} ({err:?}) after {:?}",
        err.class(),
        killed.elapsed()
    );
    assert!(!err.is_timeout(), "a dead peer read as a timeout: {err:?}");
    assert!(
        matches!(err.class(), ErrorClass::Closed | ErrorClass::Protocol),
        "{err:?}"
    );
    drop(ws);
    // The idle socket: the maintenance thread finds it dead.
    assert!(
        eventually(Duration::from_secs(3), || ws_stats(&m, "comfyui")
            .closed
            .health
            >= 1),
        "{:?}",
        ws_stats(&m, "comfyui")
    );
    let down = m.health("comfyui").unwrap();
    println!("health while down: {down:?}");
    assert_ne!(down.state, HealthState::Healthy);

    comfy.start();
    let restarted = Instant::now();
    assert!(eventually(Duration::from_secs(10), || m
        .health("comfyui")
        .unwrap()
        .state
        == HealthState::Healthy));
    let run = comfy_job(&m, 3, 0.02).unwrap();
    println!(
        "after the restart: healthy and a job done in {:?}; ws stats {:?}",
        restarted.elapsed(),
        ws_stats(&m, "comfyui")
    );
    assert_eq!(run.progress, [1, 2, 3]);
    let ws = ws_stats(&m, "comfyui");
    assert!(ws.closed.broken >= 1, "{ws:?}");
    assert!(ws.connections_created >= 3, "{ws:?}");
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn comfyui_takes_a_streamed_multipart_upload_and_serves_views_by_query() {
    use backend_pool::{Form, Part};
    let comfy = Backend::get("comfyui");
    let m = manager(100, vec![comfy_service(&comfy, 2, 1, 0)]);
    let http = m.http("comfyui").unwrap();
    // A binary "render": every byte value, streamed from a reader with its length.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..200_000u32).map(|i| (i ^ (i >> 8)) as u8));
    let len = png.len() as u64;
    let form = Form::new()
        .part(
            "image",
            Part::reader(std::io::Cursor::new(png), len)
                .file_name("bp render.png")
                .content_type("image/png"),
        )
        .text("subfolder", "backend-pool")
        .text("type", "input");
    let last = std::sync::Arc::new(std::sync::Mutex::new((0, 0)));
    let seen = std::sync::Arc::clone(&last);
    let uploaded: Value = http
        .post("/upload/image")
        .upload_progress(move |sent, total| *seen.lock().unwrap() = (sent, total))
        .send_multipart(form)
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(uploaded["name"], "bp render.png", "{uploaded}");
    assert_eq!(uploaded["size"], len, "{uploaded}");
    assert_eq!(uploaded["subfolder"], "backend-pool", "{uploaded}");
    assert_eq!(uploaded["type"], "input", "{uploaded}");
    // The form's whole length: the parts plus their heads.
    let (sent, total) = *last.lock().unwrap();
    assert!(sent == total && total > len, "{sent} of {total}");
    let view = http
        .get("/view")
        .query("filename", "bp render.png")
        .query("subfolder", "backend-pool")
        .query("type", "input")
        .call()
        .unwrap();
    assert_eq!(view.status(), 200);
    assert_eq!(view.header("content-type"), Some("image/png"));
    assert_eq!(http_stats(&m, "comfyui").errors.total(), 0);
}

/// A valid 4×4 RGB PNG (what `tiny_png(4, 4, (255, 128, 0))` of the stand-in writes).
const PNG_4X4: [u8; 73] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x08, 0x02, 0x00, 0x00, 0x00, 0x26, 0x93, 0x09,
    0x29, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xdf, 0xc0, 0x00,
    0x47, 0x0c, 0xc4, 0x71, 0x00, 0x7e, 0xa2, 0x17, 0xf1, 0x5d, 0xa1, 0x60, 0x05, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn comfyui_a_prompt_loads_an_uploaded_png_and_one_never_uploaded_is_a_400_read_from_the_status_error(
) {
    use backend_pool::Form;
    use serde_json::json;
    let comfy = Backend::get("comfyui");
    let m = manager(100, vec![comfy_service(&comfy, 2, 1, 0)]);
    let http = m.http("comfyui").unwrap();
    // A subfolder no earlier run used: the server keeps what was uploaded.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let subfolder = format!("bp-{}-{nanos}", std::process::id());
    let graph = |image: &str| {
        json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bp"}},
        })
    };

    // Not uploaded yet: ComfyUI's 400, its reasons read through the status error.
    let image = format!("{subfolder}/render.png");
    let err = http
        .post("/prompt")
        .send_json(&json!({ "prompt": graph(&image) }))
        .unwrap()
        .error_for_status()
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert_eq!(err.class(), ErrorClass::Status);
    assert!(err.to_string().contains("HTTP 400 Bad Request"), "{err}");
    let why: Value = err.json().unwrap();
    assert_eq!(
        why["error"]["type"], "prompt_outputs_failed_validation",
        "{why}"
    );
    let node = &why["node_errors"]["1"];
    assert_eq!(node["class_type"], "LoadImage", "{why}");
    assert_eq!(node["dependent_outputs"], json!(["2"]), "{why}");
    assert_eq!(
        node["errors"][0]["type"], "custom_validation_failed",
        "{why}"
    );
    assert_eq!(
        node["errors"][0]["details"],
        format!("image - Invalid image file: {image}"),
        "{why}"
    );

    // Uploaded from a file (multipart, streamed): the same prompt now runs.
    let path = std::env::temp_dir().join(format!("{subfolder}-render.png"));
    std::fs::write(&path, PNG_4X4).unwrap();
    let form = Form::new()
        .part(
            "image",
            backend_pool::Part::file(&path)
                .unwrap()
                .file_name("render.png"),
        )
        .text("subfolder", &subfolder)
        .text("type", "input");
    let uploaded = http.post("/upload/image").send_multipart(form);
    std::fs::remove_file(&path).unwrap();
    let uploaded: Value = uploaded
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        uploaded,
        json!({"name": "render.png", "subfolder": subfolder, "type": "input", "size": PNG_4X4.len()})
    );
    let mut ws = m.websocket("comfyui").unwrap();
    let client_id = ws.client_id().unwrap().to_string();
    let queued: Value = http
        .post("/prompt")
        .send_json(&json!({
            "prompt": graph(&image),
            "client_id": client_id,
            "extra_data": {"mock_step_seconds": 0.01},
        }))
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(queued["node_errors"], json!({}), "{queued}");
    let prompt_id = queued["prompt_id"].as_str().unwrap().to_string();
    let run = follow_prompt(&mut ws, &prompt_id).unwrap();
    ws.finish();
    assert!(run.events.iter().any(|e| e == "executed"), "{run:?}");
    let history: Value = http
        .get(&format!("/history/{prompt_id}"))
        .call()
        .unwrap()
        .json()
        .unwrap();
    let entry = &history[&prompt_id];
    assert_eq!(entry["status"]["completed"], true, "{history}");
    assert_eq!(
        entry["outputs"]["1"]["images"][0],
        json!({"filename": "render.png", "subfolder": subfolder, "type": "input"}),
        "the LoadImage node's output names the upload: {history}"
    );
    let pool = http_stats(&m, "comfyui");
    assert_eq!(pool.errors.get(ErrorClass::Status), 1, "{pool:?}");
    assert_eq!(pool.errors.total(), 1, "{pool:?}");
}
