//! Gradio: a queued job's stream does not starve control calls; heartbeats keep a silent job alive.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::ServiceConfig;
use serde_json::{json, Value};

use crate::common::*;
use crate::support::*;

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn gradio_queued_job_streams_to_complete_while_short_calls_still_get_connections() {
    let wan = Backend::get("gradio");
    let mark = wan.mark();
    let m = Arc::new(manager(100, vec![gradio_service("wan2gp", &wan, 2)]));
    let http = m.http("wan2gp").unwrap();
    let submitted = http
        .post("/gradio_api/call/generate")
        .send_json(&json!({"data": ["a cat", 6, 0.5]}))
        .unwrap();
    assert_eq!(submitted.status(), 200, "{}", submitted.text());
    let event_id = submitted.json::<Value>().unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let reader = {
        let http = http.clone();
        thread::spawn(move || {
            let mut s = http
                .get(&format!("/gradio_api/call/generate/{event_id}"))
                .stream(&[])
                .unwrap();
            assert_eq!(s.status(), 200);
            read_sse(&mut s, |e| e.event == "complete" || e.event == "error")
        })
    };
    // Short calls on the same service while the stream holds one connection.
    let (mut short, mut slowest) = (0, Duration::ZERO);
    while !reader.is_finished() {
        let t = Instant::now();
        let r = if short % 2 == 0 {
            http.get("/gradio_api/info")
                .wait_timeout(Duration::from_secs(1))
                .call()
        } else {
            http.head("/").wait_timeout(Duration::from_secs(1)).call()
        };
        expect(r, 200, "").unwrap();
        slowest = slowest.max(t.elapsed());
        short += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let events = reader.join().unwrap().unwrap();
    let took = started.elapsed();
    let generating = events.iter().filter(|e| e.event == "generating").count();
    let last = events.last().unwrap();
    println!(
        "gradio job: {generating} generating events then '{}' after {took:?}; {short} short \
         calls meanwhile, slowest {slowest:?}",
        last.event
    );
    assert_eq!(last.event, "complete", "{events:?}");
    let done: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(done[0]["done"], true);
    assert!(done[0]["video"].as_str().unwrap().ends_with(".mp4"));
    assert!(generating >= 6, "{events:?}");
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    assert!(short >= 10, "only {short} short calls during the job");
    assert!(
        slowest < Duration::from_secs(1),
        "a short call waited {slowest:?}"
    );
    let pool = http_stats(&m, "wan2gp");
    assert_eq!(pool.in_use, 0);
    assert!(pool.connections_created <= 2, "{pool:?}");
    thread::sleep(Duration::from_millis(300));
    let entries = mark.entries();
    assert!(entries
        .iter()
        .any(|a| a.path.starts_with("/gradio_api/call/generate/")));
    assert!(ports(&entries).len() <= 2, "{entries:?}");
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn gradio_twelve_queued_jobs_on_ten_connections_leave_room_for_short_calls() {
    // The wan2gp preset (max 10, wait 60 s) on the real Gradio server. Twelve jobs queue on an
    // event with `concurrency_limit=1`; each job's SSE stream stays open while it waits its
    // turn and while it runs. Short calls must not wait behind them.
    const JOBS: usize = 12;
    const JOB_SECONDS: f64 = 0.8;
    let wan = Backend::get("gradio");
    let mark = wan.mark();
    let config = ServiceConfig {
        url: wan.url.clone(),
        ..ServiceConfig::wan2gp()
    };
    let (max, cap) = {
        let http = config.http.as_ref().unwrap();
        (http.max_connections, http.stream_cap())
    };
    assert_eq!((max, cap), (10, 8));
    let m = Arc::new(manager(100, vec![config]));
    let http = m.http("wan2gp").unwrap();
    let event_ids: Vec<String> = (0..JOBS)
        .map(|i| {
            let r = http
                .post("/gradio_api/call/slow")
                .send_json(&json!({"data": [format!("job {i}"), JOB_SECONDS]}))
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text());
            r.json::<Value>().unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let started = Instant::now();
    let streams: Vec<_> = event_ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let http = http.clone();
            let t = thread::spawn(move || {
                let mut s = http
                    .get(&format!("/gradio_api/call/slow/{id}"))
                    .stream(&[])
                    .map_err(|e| format!("job {i}: {e}"))?;
                let events = read_sse(&mut s, |e| e.event == "complete" || e.event == "error")
                    .map_err(|e| format!("job {i}: {e}"))?;
                let last = events.last().unwrap();
                if last.event != "complete" {
                    return Err(format!("job {i} ended with {events:?}"));
                }
                Ok(last.at)
            });
            // In order, so the queue order and the order of the streams agree.
            thread::sleep(Duration::from_millis(20));
            t
        })
        .collect();
    // Every stream is either open (holding a connection) or waiting for its turn.
    assert!(
        eventually(Duration::from_secs(5), || {
            let p = http_stats(&m, "wan2gp");
            p.in_use + p.waiting >= JOBS
        }),
        "{:?}",
        http_stats(&m, "wan2gp")
    );
    let pool = http_stats(&m, "wan2gp");
    println!(
        "gradio: {JOBS} queued jobs of {JOB_SECONDS} s on max {max} / stream cap {cap}: \
         {} in use, {} waiting",
        pool.in_use, pool.waiting
    );
    // Short calls while the jobs run: each one at once, far below the 60 s wait timeout.
    let mut short = Vec::new();
    while short.len() < 10 {
        let t = Instant::now();
        let r = if short.len() % 2 == 0 {
            http.get("/gradio_api/info").call()
        } else {
            http.head("/").call()
        };
        expect(r, 200, "").unwrap();
        short.push(t.elapsed());
        thread::sleep(Duration::from_millis(200));
    }
    let short_done = started.elapsed();
    let mut finished = Vec::new();
    for t in streams {
        finished.push(t.join().unwrap().unwrap() - started);
    }
    let took = started.elapsed();
    let slowest = short.iter().max().copied().unwrap_or_default();
    println!(
        "gradio: short calls with {JOBS} jobs queued: first {:?}, slowest {slowest:?} (all 10 \
         within {short_done:?}); the jobs finished after {:?} .. {took:?}",
        short[0], finished[0]
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a short call waited {slowest:?} behind the queued jobs: {short:?}"
    );
    assert!(
        short_done < finished[JOBS - 1],
        "the short calls should have run while jobs were still queued"
    );
    // Concurrency 1: the jobs finish one after another.
    assert!(
        took >= Duration::from_secs_f64(JOB_SECONDS * JOBS as f64 * 0.9),
        "{took:?}"
    );
    let pool = http_stats(&m, "wan2gp");
    assert_eq!((pool.in_use, pool.waiting), (0, 0), "{pool:?}");
    assert_eq!(pool.errors.total(), 0, "{pool:?}");
    thread::sleep(Duration::from_millis(300));
    let entries = mark.entries();
    let streamed = entries
        .iter()
        .filter(|a| a.path.starts_with("/gradio_api/call/slow/"))
        .count();
    assert_eq!(streamed, JOBS, "{entries:?}");
    assert!(ports(&entries).len() <= max as usize, "{entries:?}");
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn gradio_heartbeat_keeps_an_18s_silent_job_under_a_16s_read_idle_timeout() {
    // One step of 18 s: nothing but Gradio's 15 s heartbeat on the stream until then. The
    // read-idle timeout (16.5 s) is shorter than the job and longer than the heartbeat period.
    let up = Backend::get("gradio2");
    let m = manager(
        200,
        vec![ServiceConfig {
            read_idle_timeout_ms: 16_500,
            request_timeout_ms: 5_000,
            ..gradio_service("upscaler", &up, 2)
        }],
    );
    let http = m.http("upscaler").unwrap();
    let submitted = http
        .post("/gradio_api/call/generate")
        .send_json(&json!({"data": ["a slow dog", 1, 18.0]}))
        .unwrap();
    let event_id = submitted.json::<Value>().unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let mut s = http
        .get(&format!("/gradio_api/call/generate/{event_id}"))
        .stream(&[])
        .unwrap();
    let events = read_sse(&mut s, |e| e.event == "complete" || e.event == "error")
        .unwrap_or_else(|e| panic!("stream failed after {:?}: {e}", started.elapsed()));
    drop(s);
    let took = started.elapsed();
    let timeline: Vec<_> = events
        .iter()
        .map(|e| format!("{} @{:.1}s", e.event, (e.at - started).as_secs_f64()))
        .collect();
    println!("gradio heartbeat job: {timeline:?}");
    assert!(
        events.iter().any(|e| e.event == "heartbeat"),
        "{timeline:?}"
    );
    assert_eq!(events.last().unwrap().event, "complete", "{timeline:?}");
    assert!(took > Duration::from_secs(17), "{took:?}");
    assert_eq!(m.stats().totals.errors, 0);
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn gradio_takes_a_multipart_upload_and_serves_the_same_bytes_back() {
    use backend_pool::{Form, Part};
    let wan = Backend::get("gradio");
    let m = manager(100, vec![gradio_service("wan2gp", &wan, 2)]);
    let http = m.http("wan2gp").unwrap();
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8)
        .collect();
    let path = std::env::temp_dir().join(format!("bp-upload-{}.png", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let form = Form::new().part("files", Part::file(&path).unwrap()).part(
        "files",
        Part::bytes(&b"second file"[..]).file_name("b \"quoted\".txt"),
    );
    let reply = http
        .post("/gradio_api/upload")
        .send_multipart(form)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text());
    let paths: Vec<String> = reply.json().unwrap();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths[0].ends_with(".png"), "{paths:?}");
    // Served back byte for byte (the path is a server path: percent-encode it as a query
    // would be, `/` included).
    let served = http
        .get(&format!("/gradio_api/file={}", encode_path(&paths[0])))
        .call()
        .unwrap();
    assert_eq!(served.status(), 200, "{}", served.text());
    assert!(
        served.body() == bytes.as_slice(),
        "the file came back different"
    );
    let second = http
        .get(&format!("/gradio_api/file={}", encode_path(&paths[1])))
        .call()
        .unwrap();
    assert_eq!(second.body(), b"second file");
}

/// A server file path as a URL path: each character outside RFC 3986's unreserved set and
/// `/` percent-encoded.
fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn gradio_a_file_uploaded_through_gradio_api_upload_is_passed_to_an_event() {
    use backend_pool::{Form, Part};
    let wan = Backend::get("gradio");
    let m = manager(100, vec![gradio_service("wan2gp", &wan, 2)]);
    let http = m.http("wan2gp").unwrap();
    let bytes: Vec<u8> = (0..200_000u32)
        .map(|i| ((i * 7) ^ (i >> 5)) as u8)
        .collect();
    let path = std::env::temp_dir().join(format!("bp-event-{}.bin", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let form = Form::new().part("files", Part::file(&path).unwrap().file_name("in put.bin"));
    let reply = http.post("/gradio_api/upload").send_multipart(form);
    std::fs::remove_file(&path).unwrap();
    let paths: Vec<String> = reply.unwrap().error_for_status().unwrap().json().unwrap();
    assert_eq!(paths.len(), 1, "{paths:?}");
    // The event gets the server path as a FileData, as Gradio's clients send it.
    let file = json!({"path": paths[0], "meta": {"_type": "gradio.FileData"}});
    let submitted: Value = http
        .post("/gradio_api/call/inspect_file")
        .send_json(&json!({ "data": [file] }))
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .unwrap();
    let event_id = submitted["event_id"].as_str().unwrap();
    let mut s = http
        .get(&format!("/gradio_api/call/inspect_file/{event_id}"))
        .stream(&[])
        .unwrap();
    let events = read_sse(&mut s, |e| e.event == "complete" || e.event == "error").unwrap();
    drop(s);
    let last = events.last().unwrap();
    assert_eq!(last.event, "complete", "{events:?}");
    let seen: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(
        seen,
        json!([{"name": "in put.bin", "size": bytes.len(), "adler32": adler32(&bytes)}]),
        "the event read other bytes than were uploaded"
    );
    assert_eq!(http_stats(&m, "wan2gp").errors.total(), 0);
}

/// zlib's Adler-32 of `data` (what the app's event reports).
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}
