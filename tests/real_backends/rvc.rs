//! RVC: a WAV of a few hundred KB through small buffers.

use std::io::Read;

use serde_json::json;

use crate::common::*;
use crate::support::*;

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn rvc_converts_a_300kb_wav_through_the_pool() {
    let rvc = Backend::get("rvc");
    let m = manager(200, vec![rvc_service(&rvc, 2)]);
    let input = wav(150_000);
    let reply = m
        .http("rvc")
        .unwrap()
        .post("/convert")
        .send_json(&json!({ "audio_data": base64(&input) }))
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("audio/wav"));
    let out = reply.body();
    println!("rvc: {} B in, {} B out", input.len(), out.len());
    assert_eq!(out.len(), input.len());
    assert_eq!(&out[..4], b"RIFF");
    // Samples come back halved.
    for i in (44..out.len()).step_by(2002) {
        let a = i16::from_le_bytes([input[i], input[i + 1]]);
        let b = i16::from_le_bytes([out[i], out[i + 1]]);
        assert_eq!(b, a / 2, "sample at byte {i}");
    }
    let mut bad = m
        .http("rvc")
        .unwrap()
        .post("/convert")
        .header("Content-Type", "application/json")
        .stream(br#"{"audio_data": "not base64!"}"#)
        .unwrap();
    let mut text = String::new();
    bad.read_to_string(&mut text).unwrap();
    assert_eq!(bad.status(), 400, "{text}");
    drop(bad);
    let pool = http_stats(&m, "rvc");
    assert_eq!(pool.errors.total(), 0, "{pool:?}");
    assert!(pool.connections_created <= 2, "{pool:?}");
}
