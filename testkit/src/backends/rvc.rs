//! Mock rvc-python API server (voice conversion).

use base64::Engine as _;
use serde_json::{json, Value};

use super::{detail, start, UVICORN_KEEP_ALIVE};
use crate::{Request, Response, ServerBuilder, TestServer};

/// A running mock RVC API with uvicorn's 5 s idle keep-alive.
///
/// - `GET /models` → `{"models":["demo"]}`; `POST /models/demo` loads it (404 for
///   other names); `GET /params` → current parameters.
/// - `POST /convert` `{"audio_data":"<base64>"}` → `audio/wav`: a WAV input is
///   returned unchanged ("converted"), other bytes are wrapped as the data chunk
///   of a 16 kHz mono 16-bit WAV (same data length). 400 `{"detail":..}` when
///   the body is not JSON or `audio_data` is missing or not valid base64.
pub fn rvc() -> TestServer {
    start(rvc_builder(), "rvc")
}

/// The builder behind [`rvc`].
pub fn rvc_builder() -> ServerBuilder {
    TestServer::builder()
        .idle_timeout(UVICORN_KEEP_ALIVE)
        .http(handle)
}

fn handle(req: &Request) -> Response {
    let path = req.path_only();
    match (req.method.as_str(), path) {
        ("GET", "/models") => Response::json(200, json!({ "models": ["demo"] })),
        ("POST", "/models/demo") => Response::json(200, json!({ "message": "Model demo loaded" })),
        ("POST", p) if p.starts_with("/models/") => detail(404, "Model not found"),
        ("GET", "/params") => Response::json(
            200,
            json!({"params": {
                "f0method": "rmvpe", "f0up_key": 0, "index_rate": 0.5, "filter_radius": 3,
                "resample_sr": 0, "rms_mix_rate": 1.0, "protect": 0.33
            }}),
        ),
        ("POST", "/convert") => convert(req),
        _ => detail(404, "Not Found"),
    }
}

fn convert(req: &Request) -> Response {
    let Some(b64) = req.json().and_then(|b| {
        b.get("audio_data")
            .and_then(Value::as_str)
            .map(str::to_string)
    }) else {
        return detail(400, "audio_data (base64) is required");
    };
    let Ok(audio) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return detail(400, "audio_data is not valid base64");
    };
    let wav = if is_wav(&audio) {
        audio
    } else {
        wav_from_pcm(&audio)
    };
    Response::bytes(200, "audio/wav", wav)
}

fn is_wav(b: &[u8]) -> bool {
    b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WAVE"
}

/// A 16 kHz mono 16-bit PCM WAV whose data chunk is `pcm`.
pub(crate) fn wav_from_pcm(pcm: &[u8]) -> Vec<u8> {
    let data_len = u32::try_from(pcm.len()).unwrap_or(u32::MAX);
    let rate: u32 = 16_000;
    let mut w = Vec::with_capacity(44 + pcm.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    w.extend_from_slice(pcm);
    w
}

#[cfg(test)]
mod tests {
    #[test]
    fn wraps_pcm() {
        let w = super::wav_from_pcm(&[1, 2, 3, 4]);
        assert!(super::is_wav(&w));
        assert_eq!(w.len(), 48);
        assert_eq!(&w[44..], &[1, 2, 3, 4]);
    }
}
