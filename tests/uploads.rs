//! Request bodies from readers, files and multipart forms (issue 12): streamed with their
//! `Content-Length`, never whole in memory, with upload progress; a reader with the wrong
//! length, or one that fails, stops the request and its connection is closed; a slow reader
//! is bounded by the request's timeouts.
//!
//! What arrives is checked on the server side, byte for byte: the testkit server's request
//! log for small bodies, a raw loopback sink (which compares as it reads and keeps nothing)
//! for a 64 MiB one. Nothing else in this file holds more than a few hundred KiB, so the
//! process's resident memory speaks for the large upload.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{Error, ErrorClass, Form, HealthState, Part, Phase, PoolManager, PoolStats};
use backend_pool_testkit::{rss_kib, Request, Response, TestServer};
use support::{manager, service};

fn http_stats(m: &PoolManager) -> PoolStats {
    m.stats().service("svc").unwrap().http.clone().unwrap()
}

/// A testkit server that keeps the last request it received and answers with its body
/// length.
fn recording_server() -> (TestServer, Arc<Mutex<Option<Request>>>) {
    let last = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&last);
    let server = TestServer::builder()
        .http(move |req| {
            *keep.lock().unwrap() = Some(req.clone());
            Response::text(200, &req.body.len().to_string())
        })
        .build()
        .unwrap();
    (server, last)
}

// ---------------------------------------------------------------------------------------------
// A minimal multipart/form-data parser (RFC 7578), for what the server received.

#[derive(Debug, PartialEq)]
struct Received {
    /// The `Content-Disposition` line as sent (names and file names still escaped).
    disposition: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn parse_multipart(req: &Request) -> Vec<Received> {
    let ct = req.header("content-type").expect("a content type");
    let boundary = ct
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {ct}"));
    let delimiter = format!("--{boundary}").into_bytes();
    let body = &req.body;
    let mut parts = Vec::new();
    let mut at = find(body, &delimiter, 0).expect("a first delimiter");
    assert_eq!(at, 0, "preamble before the first part");
    loop {
        at += delimiter.len();
        if body[at..].starts_with(b"--\r\n") {
            assert_eq!(at + 4, body.len(), "bytes after the close delimiter");
            return parts;
        }
        assert!(body[at..].starts_with(b"\r\n"));
        at += 2;
        let head_end = find(body, b"\r\n\r\n", at).expect("a part head");
        let head = std::str::from_utf8(&body[at..head_end]).unwrap();
        let mut disposition = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(": ").expect("a header line");
            match name.to_ascii_lowercase().as_str() {
                "content-disposition" => disposition = Some(value.to_string()),
                "content-type" => content_type = Some(value.to_string()),
                other => panic!("unexpected part header {other}"),
            }
        }
        let start = head_end + 4;
        let mut end_marker = b"\r\n".to_vec();
        end_marker.extend_from_slice(&delimiter);
        let end = find(body, &end_marker, start).expect("the part's end");
        parts.push(Received {
            disposition: disposition.expect("a disposition"),
            content_type,
            body: body[start..end].to_vec(),
        });
        at = end + 2;
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Every byte value, many times over, in an order that shifts: a binary file.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8).collect()
}

fn temp_file(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("backend-pool-{tag}-{}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_multipart_form_arrives_byte_for_byte() {
    let (server, last) = recording_server();
    let m = manager(service("svc", &server.http_url()));
    let png = binary(300 * 1024 + 7);
    let path = temp_file("render.png", &png);
    let mask = binary(1000);
    let form = Form::new()
        .file("image", &path)
        .unwrap()
        .text("subfolder", "blender renders")
        .text("overwrite", "true")
        .part(
            "mask",
            Part::bytes(mask.clone())
                .file_name("mask.webp")
                .content_type("image/webp"),
        )
        .part("notes", Part::reader(&b"streamed text"[..], 13));
    let sent_len = m
        .http("svc")
        .unwrap()
        .post("/upload/image")
        .header("Content-Type", "text/plain") // replaced: the boundary must be in it
        .send_multipart(form)
        .unwrap()
        .text();
    std::fs::remove_file(&path).unwrap();
    let req = last.lock().unwrap().take().unwrap();
    assert_eq!(req.header("content-length"), Some(sent_len.as_str()));
    assert_eq!(req.header("transfer-encoding"), None);
    let file_name = path.file_name().unwrap().to_str().unwrap();
    let parts = parse_multipart(&req);
    assert_eq!(
        parts,
        [
            Received {
                disposition: format!("form-data; name=\"image\"; filename=\"{file_name}\""),
                content_type: Some("application/octet-stream".into()),
                body: png,
            },
            Received {
                disposition: "form-data; name=\"subfolder\"".into(),
                content_type: None,
                body: b"blender renders".to_vec(),
            },
            Received {
                disposition: "form-data; name=\"overwrite\"".into(),
                content_type: None,
                body: b"true".to_vec(),
            },
            Received {
                disposition: "form-data; name=\"mask\"; filename=\"mask.webp\"".into(),
                content_type: Some("image/webp".into()),
                body: mask,
            },
            Received {
                disposition: "form-data; name=\"notes\"".into(),
                content_type: None,
                body: b"streamed text".to_vec(),
            },
        ]
    );
}

#[test]
fn quotes_and_line_breaks_in_names_are_percent_encoded_as_browsers_do() {
    let (server, last) = recording_server();
    let m = manager(service("svc", &server.http_url()));
    let form = Form::new().text("a\"b\r\nc", "v").part(
        "f",
        Part::bytes(&b"x"[..]).file_name("evil\".png\r\nContent-Type: text/html"),
    );
    m.http("svc")
        .unwrap()
        .post("/upload")
        .send_multipart(form)
        .unwrap();
    let parts = parse_multipart(&last.lock().unwrap().take().unwrap());
    assert_eq!(parts[0].disposition, "form-data; name=\"a%22b%0D%0Ac\"");
    assert_eq!(
        parts[1].disposition,
        "form-data; name=\"f\"; filename=\"evil%22.png%0D%0AContent-Type: text/html\""
    );
    assert_eq!(
        parts[1].content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(parts.len(), 2);
}

#[test]
fn an_invalid_form_or_file_is_rejected_before_checkout() {
    let server = support::http_echo_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    assert_eq!(http.get("/warm").call().unwrap().status(), 200);
    for bad in [
        "image/png\r\nX-Injected: 1",
        "image/png\n",
        "a\0b",
        "imäge/png",
    ] {
        let form = Form::new().part("f", Part::bytes(&b"x"[..]).content_type(bad));
        let err = http.post("/upload").send_multipart(form).unwrap_err();
        assert_eq!(err.class(), ErrorClass::InvalidRequest, "{bad:?}: {err}");
        assert!(err.to_string().contains("part 'f'"), "{err}");
    }
    let missing = std::env::temp_dir().join("backend-pool-no-such-file");
    let err = http.post("/upload").send_file(&missing).unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidRequest, "{err}");
    assert!(err.to_string().contains("no-such-file"), "{err}");
    assert!(Form::new().file("f", &missing).is_err());
    // A directory is named as such on every platform (Windows refuses to open one, with
    // "Access denied", before anything could look at what it is).
    let dir = std::env::temp_dir();
    let err = http.post("/upload").send_file(&dir).unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidRequest, "{err}");
    assert!(
        err.to_string()
            .contains("is a directory, not a regular file"),
        "{err}"
    );
    for err in [
        Form::new().file("f", &dir).unwrap_err(),
        Part::file(&dir).unwrap_err(),
    ] {
        assert!(
            err.to_string()
                .contains("is a directory, not a regular file"),
            "{err}"
        );
    }
    let err = http.head("/upload").send_reader(&b"x"[..], 1).unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidRequest, "{err}");

    assert_eq!(http.get("/after").call().unwrap().text(), "GET /after");
    assert_eq!(
        server.accepted(),
        1,
        "a rejected request disturbed the connection"
    );
    let stats = http_stats(&m);
    assert_eq!(stats.acquisitions, 2);
    assert_eq!(stats.errors.get(ErrorClass::InvalidRequest), 7);
}

#[test]
fn a_file_and_a_reader_are_sent_with_their_length() {
    let (server, last) = recording_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let data = binary(100_003);
    let path = temp_file("body.bin", &data);
    let reply = http.put("/file").send_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(reply.text(), "100003");
    let req = last.lock().unwrap().take().unwrap();
    assert_eq!(req.header("content-length"), Some("100003"));
    assert_eq!(req.body, data);

    let reply = http
        .post("/reader")
        .header("Content-Type", "application/x-thing")
        .send_reader(&data[..5000], 5000)
        .unwrap();
    assert_eq!(reply.text(), "5000");
    let req = last.lock().unwrap().take().unwrap();
    assert_eq!(req.header("content-type"), Some("application/x-thing"));
    assert_eq!(req.body, &data[..5000]);

    // An empty body: a POST still says `Content-Length: 0`.
    assert_eq!(
        http.post("/empty")
            .send_reader(io::empty(), 0)
            .unwrap()
            .text(),
        "0"
    );
    let req = last.lock().unwrap().take().unwrap();
    assert_eq!(req.header("content-length"), Some("0"));
    assert_eq!(server.accepted(), 1, "every upload reused the connection");
}

/// A reader that fails with `error` after `after` bytes.
struct Failing {
    left: usize,
    error: fn() -> io::Error,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err((self.error)());
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(b'x');
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn a_reader_of_the_wrong_length_or_that_fails_stops_the_request_and_closes_its_connection() {
    let (server, last) = recording_server();
    let m = manager(service("svc", &server.http_url()));
    let http = m.http("svc").unwrap();
    let data = binary(20_000);
    type Upload<'a> = Box<dyn Fn() -> Result<backend_pool::Response, Error> + 'a>;
    let cases: Vec<(&str, u64, io::ErrorKind, Upload<'_>)> = vec![
        (
            "short",
            10_000,
            io::ErrorKind::UnexpectedEof,
            Box::new(|| http.post("/u").send_reader(&data[..10_000], 20_000)),
        ),
        (
            "long",
            19_999,
            io::ErrorKind::InvalidData,
            Box::new(|| http.post("/u").send_reader(&data[..], 19_999)),
        ),
        (
            "failing",
            12_288,
            io::ErrorKind::PermissionDenied,
            Box::new(|| {
                let reader = Failing {
                    left: 12_288,
                    error: || io::Error::new(io::ErrorKind::PermissionDenied, "disk says no"),
                };
                http.post("/u").send_reader(reader, 20_000)
            }),
        ),
        (
            "a part of a form",
            0,
            io::ErrorKind::UnexpectedEof,
            Box::new(|| {
                let form = Form::new().part(
                    "image",
                    Part::reader(io::Cursor::new(data[..100].to_vec()), 101),
                );
                http.post("/u").send_multipart(form)
            }),
        ),
        (
            "empty, said to be",
            0,
            io::ErrorKind::InvalidData,
            Box::new(|| http.post("/u").send_reader(&data[..1], 0)),
        ),
    ];
    let mut accepted = 0;
    for (what, sent, kind, upload) in cases {
        assert_eq!(http.get("/warm").call().unwrap().status(), 200);
        let before = server.accepted();
        accepted = accepted.max(before);
        let err = upload().unwrap_err();
        let Error::RequestBody {
            sent: got, source, ..
        } = &err
        else {
            panic!("{what}: {err:?}");
        };
        assert_eq!(source.kind(), kind, "{what}: {err}");
        if what != "a part of a form" {
            assert_eq!(*got, sent, "{what}: {err}");
        }
        assert_eq!(err.class(), ErrorClass::Other, "{what}");
        assert_eq!(err.phase(), Some(Phase::Send), "{what}");
        let line = err.chain().to_string();
        if what == "failing" {
            assert!(line.contains("disk says no"), "{line}");
        }
        if what == "a part of a form" {
            assert!(line.contains("part 'image'"), "{line}");
        }
        // The connection was not reused: the server, mid-body, never answers on it.
        assert_eq!(http.get("/next").call().unwrap().status(), 200, "{what}");
        let expect_new = usize::from(what != "empty, said to be");
        assert_eq!(
            server.accepted(),
            before + expect_new,
            "{what}: connection reused"
        );
    }
    let _ = accepted;
    // Nothing was delivered as a request with a wrong body.
    let log = server.request_log();
    assert!(log.iter().all(|(_, path)| path != "/u"), "{log:?}");
    drop(last);
    let stats = http_stats(&m);
    assert_eq!(stats.errors.get(ErrorClass::Other), 5);
    assert_eq!(stats.errors.get(ErrorClass::Protocol), 0);
    assert_eq!(stats.errors.get(ErrorClass::Closed), 0);
    assert_eq!(m.health("svc").unwrap().state, HealthState::Healthy);
}

// ---------------------------------------------------------------------------------------------
// Large and slow uploads against a raw sink.

/// A 64 KiB block of varied bytes, each copy stamped with its index in its first 8 bytes:
/// a stream of any length, made and checked at memcpy speed, where a lost, repeated or
/// reordered block shows.
struct Pattern {
    block: Vec<u8>,
    at: u64,
    len: u64,
}

const BLOCK: u64 = 64 * 1024;

impl Pattern {
    fn new(len: u64) -> Pattern {
        Pattern {
            block: binary(BLOCK as usize),
            at: 0,
            len,
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let in_block = (self.at % BLOCK) as usize;
        let n = buf
            .len()
            .min(BLOCK as usize - in_block)
            .min((self.len - self.at) as usize);
        buf[..n].copy_from_slice(&self.block[in_block..in_block + n]);
        let stamp = (self.at / BLOCK).to_le_bytes();
        let stamped = (in_block + n).min(8);
        if in_block < stamped {
            buf[..stamped - in_block].copy_from_slice(&stamp[in_block..stamped]);
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// A raw loopback server that reads each request's `Content-Length` body as it arrives,
/// compares it with `Pattern`, keeps nothing, and answers `200 <bytes> <ok|mismatch>`.
/// `read_body: false` reads heads only and never the body (a server that stalls).
struct Sink {
    url: String,
    connections: Arc<AtomicUsize>,
}

fn sink(read_body: bool) -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::with_capacity(64 * 1024, &stream);
                loop {
                    let mut len = None;
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse::<u64>().ok();
                            }
                        }
                    }
                    if !read_body {
                        thread::sleep(Duration::from_secs(5));
                        return;
                    }
                    let len = len.unwrap_or(0);
                    let mut expected = Pattern::new(len);
                    let (mut got, mut want) = (vec![0; 64 * 1024], vec![0; 64 * 1024]);
                    let (mut left, mut same) = (len, true);
                    while left > 0 {
                        let n = match reader.read(&mut got[..left.min(64 * 1024) as usize]) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        expected.read_exact(&mut want[..n]).unwrap();
                        same &= got[..n] == want[..n];
                        left -= n as u64;
                    }
                    let body = format!("{len} {}", if same { "ok" } else { "mismatch" });
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if (&stream).write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Sink { url, connections }
}

#[test]
fn a_64_mib_upload_is_streamed_in_bounded_memory_with_progress() {
    const LEN: u64 = 64 << 20;
    let sink = sink(true);
    let m = manager(service("svc", &sink.url));
    let http = m.http("svc").unwrap();
    assert_eq!(
        http.post("/warm")
            .send_reader(Pattern::new(10), 10)
            .unwrap()
            .text(),
        "10 ok"
    );
    let before = rss_kib();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let peak = Arc::new(Mutex::new(before));
    let (seen, high) = (Arc::clone(&calls), Arc::clone(&peak));
    let start = Instant::now();
    let reply = http
        .post("/upload")
        .upload_progress(move |sent, total| {
            seen.lock().unwrap().push((sent, total));
            let mut high = high.lock().unwrap();
            *high = (*high).max(rss_kib());
        })
        .send_reader(Pattern::new(LEN), LEN)
        .unwrap();
    let took = start.elapsed();
    assert_eq!(reply.text(), format!("{LEN} ok"));
    let peak = (*peak.lock().unwrap()).max(rss_kib());
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!("64 MiB upload: {took:?}, resident memory growth {growth_mib:.1} MiB");
    assert!(
        growth_mib <= 16.0,
        "resident memory grew {growth_mib:.1} MiB"
    );

    let calls = calls.lock().unwrap();
    assert_eq!(
        calls.last(),
        Some(&(LEN, LEN)),
        "progress ends at the length"
    );
    assert!(calls.iter().all(|&(_, total)| total == LEN));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "not monotonic");
    // At most one call per 100 ms while bytes flow, and the last.
    let most = took.as_millis() as usize / 100 + 2;
    assert!(calls.len() <= most, "{} calls in {took:?}", calls.len());
    assert_eq!(sink.connections.load(Ordering::SeqCst), 1);
}

/// A reader that yields `piece` bytes per read, sleeping `pause` before each.
struct Slow {
    inner: Pattern,
    piece: usize,
    pause: Duration,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        thread::sleep(self.pause);
        let n = buf.len().min(self.piece);
        self.inner.read(&mut buf[..n])
    }
}

fn slow(len: u64, piece: usize, pause_ms: u64) -> Slow {
    Slow {
        inner: Pattern::new(len),
        piece,
        pause: Duration::from_millis(pause_ms),
    }
}

/// A service whose request timeout (per phase; for a streamed body, per stall) is `ms`.
fn request_timeout(url: &str, ms: u64) -> PoolManager {
    let mut cfg = service("svc", url);
    cfg.request_timeout_ms = ms;
    manager(cfg)
}

#[test]
fn a_slow_reader_is_bounded_by_the_total_timeout_and_by_its_stalls() {
    let sink = sink(true);
    // The total deadline, checked after each read of the reader.
    let m = manager(service("svc", &sink.url));
    let start = Instant::now();
    let err = m
        .http("svc")
        .unwrap()
        .post("/upload")
        .total_timeout(Duration::from_millis(300))
        .send_reader(slow(10 << 20, 4096, 20), 10 << 20)
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{err}");
    assert!(
        matches!(err, Error::Timeout { phase: Phase::Send, after, .. } if after == Duration::from_millis(300)),
        "{err:?}"
    );

    // One read that takes longer than the request timeout.
    let m = request_timeout(&sink.url, 300);
    let err = m
        .http("svc")
        .unwrap()
        .post("/upload")
        .send_reader(slow(1 << 20, 4096, 500), 1 << 20)
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { phase: Phase::Send, after, .. } if after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(m.health("svc").unwrap().state, HealthState::Healthy);
}

#[test]
fn an_upload_longer_than_the_request_timeout_goes_through_while_it_moves() {
    // 40 reads of 4 KiB (the output buffer), 25 ms apart: about a second, past a 300 ms
    // request timeout.
    let sink = sink(true);
    let m = request_timeout(&sink.url, 300);
    let len = 40 * 4096;
    let start = Instant::now();
    let reply = m
        .http("svc")
        .unwrap()
        .post("/upload")
        .send_reader(slow(len, 4096, 25), len)
        .unwrap();
    assert!(start.elapsed() > Duration::from_millis(300));
    assert_eq!(reply.text(), format!("{len} ok"));
}

#[test]
fn an_upload_the_server_does_not_take_times_out_in_the_send_phase() {
    let sink = sink(false);
    let m = request_timeout(&sink.url, 300);
    let start = Instant::now();
    let err = m
        .http("svc")
        .unwrap()
        .post("/upload")
        .send_reader(Pattern::new(64 << 20), 64 << 20)
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "{err}");
    assert!(
        matches!(err, Error::Timeout { phase: Phase::Send, after, .. } if after == Duration::from_millis(300)),
        "{err:?}"
    );
}

#[test]
fn progress_is_reported_for_bytes_in_memory_too() {
    let (server, last) = recording_server();
    let m = manager(service("svc", &server.http_url()));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let body = binary(50_000);
    let reply = m
        .http("svc")
        .unwrap()
        .post("/bytes")
        .upload_progress(move |sent, total| seen.lock().unwrap().push((sent, total)))
        .send_bytes(&body)
        .unwrap();
    assert_eq!(reply.text(), "50000");
    assert_eq!(last.lock().unwrap().take().unwrap().body, body);
    assert_eq!(calls.lock().unwrap().last(), Some(&(50_000, 50_000)));
}

#[test]
fn a_cancelled_upload_stops_in_the_send_phase() {
    let sink = sink(false);
    let m = manager(service("svc", &sink.url));
    let token = backend_pool::CancelToken::new();
    let canceller = {
        let token = token.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            token.cancel();
        })
    };
    let start = Instant::now();
    let err = m
        .http("svc")
        .unwrap()
        .post("/upload")
        .cancel_on(&token)
        .send_reader(Pattern::new(64 << 20), 64 << 20)
        .unwrap_err();
    canceller.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(2), "{err}");
    assert!(
        matches!(
            err,
            Error::Cancelled {
                phase: Phase::Send,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(http_stats(&m).errors.get(ErrorClass::Cancelled), 1);
}
