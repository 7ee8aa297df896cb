//! Edges of an HTTP request (issue 9): a caller's path, method or header cannot take a request
//! (and the service's bearer token) off the service's origin or break a pooled connection;
//! failures before a connection exists are connect failures; nothing is sent twice because of
//! a response the server did send; signals (EINTR) never fail a call or stretch its deadline.
//!
//! Hostile servers are scripts of the shared raw server (`support::raw`), which counts what it
//! accepts and receives.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use backend_pool::{Error, ErrorClass, HealthState, Phase, PoolManager, PoolStats, ServiceConfig};
use support::raw::{Peer, RawServer};
use support::{http_echo_server as echo_server, manager, service};

fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn http_stats(m: &PoolManager, name: &str) -> PoolStats {
    m.stats().service(name).unwrap().http.clone().unwrap()
}

fn health(m: &PoolManager, name: &str) -> HealthState {
    m.stats().service(name).unwrap().health.state
}

// ---------------------------------------------------------------------------------------------
// 1. Origin escape: paths, methods and headers are checked before checkout.

fn assert_invalid(result: Result<backend_pool::Response, Error>, what: &str) -> String {
    match result {
        Err(e @ Error::InvalidRequest { .. }) => {
            assert_eq!(e.class(), ErrorClass::InvalidRequest);
            assert_eq!(e.service(), Some("svc"));
            e.to_string()
        }
        other => panic!("{what}: expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn paths_that_leave_the_origin_are_rejected_before_checkout() {
    let server = echo_server();
    let attacker = TcpListener::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let evil = attacker.local_addr().unwrap().port();
    let mut cfg = service("svc", &server.http_url());
    cfg.bearer_token = Some(backend_pool::Secret::new("sk-secret"));
    cfg.unhealthy_after = 1;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();

    let bad: Vec<String> = vec![
        format!("@127.0.0.1:{evil}/x"),
        format!(":{evil}/x"),
        ".evil.test/x".into(),
        format!("//127.0.0.1:{evil}/x"),
        format!("/@127.0.0.1:{evil}/x").replace("/@", "//@"),
        format!("http://127.0.0.1:{evil}/x"),
        format!("\\\\127.0.0.1:{evil}/x"),
        "/x\\y".into(),
        "".into(),
        "x".into(),
        "?x=1".into(),
        "#x".into(),
        "/x#frag".into(),
        "/x?y#frag".into(),
        "/x y".into(),
        "/x\ty".into(),
        "/x\r\nHost: evil.test".into(),
        "/x\nX: y".into(),
        "/x\0".into(),
        "/x\u{7f}".into(),
        "/caf\u{e9}".into(),
        "/\u{ff0f}evil".into(),
        "/%".into(),
        "/%4".into(),
        "/%zz".into(),
        "/%g0".into(),
        "/..".into(),
        "/a/../../b".into(),
        "/./x".into(),
        "/%2e%2e/admin".into(),
        "/%2E./admin".into(),
        "/x?a=<script>".into(),
        "/x\"y".into(),
        "/{x}".into(),
        "/x|y".into(),
        "/x^y".into(),
        "/x`y".into(),
        "/[::1]".into(),
        format!("/{}", "a".repeat(70_000)),
    ];
    for path in &bad {
        let msg = assert_invalid(http.get(path).call(), &format!("{path:?}"));
        assert!(msg.contains("path"), "{path:?}: {msg}");
        assert_invalid(http.post(path).send_bytes(b"{}"), &format!("POST {path:?}"));
        match http.get(path).stream(b"") {
            Err(e) => assert_eq!(e.class(), ErrorClass::InvalidRequest, "{path:?}"),
            Ok(_) => panic!("stream {path:?} was sent"),
        }
    }
    assert!(
        attacker.accept().is_err(),
        "a connection reached the other port"
    );
    assert_eq!(server.accepted(), 0, "a rejected request cost a connection");
    let stats = http_stats(&m, "svc");
    assert_eq!(stats.connections_created, 0);
    assert_eq!(stats.acquisitions, 0, "rejected requests were checked out");
    assert_eq!(
        stats.errors.get(ErrorClass::InvalidRequest),
        3 * bad.len() as u64
    );
    assert_eq!(health(&m, "svc"), HealthState::Healthy);

    // Origin-form paths that look odd but stay on the service are sent as given.
    let good = [
        "/",
        "/x?a=b&c=%20d",
        "/a:b@c",
        "/x?next=/y?z=1",
        "/~u/a-b_c.d!$&'()*+,;=",
        "/%E2%9C%93?q=%2F",
        "/x?",
        "/a//b",
        "/..x/y..",
    ];
    for path in good {
        let r = http.get(path).call().unwrap();
        assert_eq!(r.text(), format!("GET {path}"));
    }
    assert_eq!(server.accepted(), 1);
}

#[test]
fn neither_a_redirect_nor_the_raw_agent_leaves_the_origin() {
    let attacker = TcpListener::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let evil = attacker.local_addr().unwrap().port();
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{evil}/x\r\nContent-Length: 0\r\n\r\n"
    );
    let server = RawServer::start(move |mut p| p.serve(redirect.as_bytes()));
    let mut cfg = service("svc", &server.url());
    cfg.bearer_token = Some(backend_pool::Secret::new("sk-secret"));
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    // A redirect is a response for the caller, not followed.
    let r = http.get("/moved").call().unwrap();
    assert_eq!(r.status(), 302);
    // The raw agent of a pooled connection (feature `unstable-raw`: CI runs this file with
    // it) connects to the service only.
    #[cfg(feature = "unstable-raw")]
    {
        let conn = http.checkout().unwrap();
        let err = conn
            .agent()
            .get(&format!("http://127.0.0.1:{evil}/x"))
            .call()
            .unwrap_err();
        assert!(err.to_string().contains("connects only to"), "{err}");
    }
    assert!(
        attacker.accept().is_err(),
        "a connection reached the other port"
    );
    assert_eq!(server.requests(), 1);
}

#[test]
fn the_service_prefix_stays_in_front_of_the_path() {
    let server = echo_server();
    let m = manager(service("svc", &format!("{}/api/v1", server.http_url())));
    let http = m.http("svc").unwrap();
    assert_eq!(
        http.get("/models").call().unwrap().text(),
        "GET /api/v1/models"
    );
    assert_invalid(http.get("/../admin").call(), "dot segments");
    assert_invalid(http.get("/%2e%2e/admin").call(), "encoded dot segments");
    assert_eq!(server.accepted(), 1);
}

#[test]
fn invalid_methods_and_headers_are_rejected_before_checkout_and_keep_the_connection() {
    let server = echo_server();
    let mut cfg = service("svc", &server.http_url());
    cfg.unhealthy_after = 1;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    // A live keep-alive connection that a rejected request must not disturb.
    assert_eq!(http.get("/warm").call().unwrap().status(), 200);
    assert_eq!(server.accepted(), 1);

    let mut rejected = 0;
    for method in [
        "", "GE T", "G\r\nET", "GET\0", "CONNECT", "FOO", "G(E)T", "GÉT",
    ] {
        let msg = assert_invalid(http.request(method, "/x").call(), method);
        assert!(msg.contains("method"), "{method:?}: {msg}");
        rejected += 1;
    }
    let headers: &[(&str, &str)] = &[
        ("", "v"),
        ("X Y", "v"),
        ("X:Y", "v"),
        ("X\r\nY", "v"),
        ("Ä", "v"),
        ("X-Ok", "a\r\nInjected: yes"),
        ("X-Ok", "a\nb"),
        ("X-Ok", "a\rb"),
        ("X-Ok", "a\0b"),
        ("X-Ok", "a\u{7f}b"),
        ("X-Ok", "caf\u{e9}"),
        ("Host", "evil.test"),
        ("host", "127.0.0.1:1"),
        ("Content-Length", "0"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Upgrade", "websocket"),
        ("TE", "trailers"),
        ("Trailer", "X"),
        ("Keep-Alive", "timeout=5"),
    ];
    for (name, value) in headers {
        let msg = assert_invalid(
            http.post("/x").header(name, value).send_bytes(b"{}"),
            &format!("{name:?}: {value:?}"),
        );
        assert!(msg.contains("header"), "{name:?}: {msg}");
        rejected += 1;
    }
    // A body on HEAD would fail after checkout (the client refuses it): rejected before.
    // Other methods may carry one (GET with a body is unusual, not invalid).
    let msg = assert_invalid(http.head("/x").send_bytes(b"body"), "HEAD with a body");
    assert!(msg.contains("body"), "{msg}");
    rejected += 1;
    for method in ["GET", "DELETE", "OPTIONS"] {
        let r = http.request(method, "/x").send_bytes(b"body").unwrap();
        assert_eq!(r.text(), format!("{method} /x"));
    }

    // Valid ones pass, lower-case methods included; the connection is still the first one.
    let r = http
        .request("patch", "/x")
        .header("X-Tab", "a\tb c")
        .header("x-empty", "")
        .send_bytes(b"{}")
        .unwrap();
    assert_eq!(r.text(), "PATCH /x");
    for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(http.request(method, "/y").call().unwrap().status() == 200);
    }
    assert_eq!(
        server.accepted(),
        1,
        "a rejected request discarded the connection"
    );
    let stats = http_stats(&m, "svc");
    assert_eq!(stats.errors.get(ErrorClass::InvalidRequest), rejected);
    assert_eq!(stats.errors.get(ErrorClass::Protocol), 0);
    assert_eq!(stats.closed.broken, 0);
    assert_eq!(health(&m, "svc"), HealthState::Healthy);
}

#[test]
fn a_request_line_or_header_line_longer_than_the_output_buffer_is_rejected_before_checkout() {
    let server = echo_server();
    let mut cfg = service("svc", &server.http_url());
    cfg.http.as_mut().unwrap().output_buffer_bytes = 4096;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    let long_path = format!("/{}", "p".repeat(5000));
    let msg = assert_invalid(http.get(&long_path).call(), "long path");
    assert!(msg.contains("output_buffer_bytes"), "{msg}");
    let long_value = "v".repeat(5000);
    let msg = assert_invalid(
        http.get("/x").header("X-Long", &long_value).call(),
        "long header",
    );
    assert!(
        msg.contains("output_buffer_bytes") && !msg.contains("vvvv"),
        "{msg}"
    );
    assert_eq!(server.accepted(), 0);

    // With a larger output buffer the same request goes through.
    let mut cfg = service("svc", &server.http_url());
    cfg.http.as_mut().unwrap().output_buffer_bytes = 16 * 1024;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    let r = http
        .get(&long_path)
        .header("X-Long", &long_value)
        .call()
        .unwrap();
    assert_eq!(r.text(), format!("GET {long_path}"));
}

#[test]
fn configured_headers_buffers_and_health_paths_are_checked_when_loaded() {
    let base = || ServiceConfig::new("svc", "http://127.0.0.1:1");
    let rejected = |cfg: ServiceConfig, field: &str| {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
        assert!(!e.contains("sk-"), "a secret value was printed: {e}");
    };
    let mut cfg = base();
    cfg.headers
        .insert("X-Ok".into(), "a\r\nInjected: sk-1".into());
    rejected(cfg, "headers");
    let mut cfg = base();
    cfg.headers.insert("X(bad)".into(), "v".into());
    rejected(cfg, "headers");
    let mut cfg = base();
    cfg.secret_headers
        .insert("X-Api-Key".into(), backend_pool::Secret::new("sk-2\n"));
    rejected(cfg, "headers");
    let mut cfg = base();
    cfg.bearer_token = Some(backend_pool::Secret::new("sk-3\r\nHost: evil"));
    rejected(cfg, "bearer_token");
    for path in ["/health#x", "//evil/x", "/a b", "/../x"] {
        let mut cfg = base();
        cfg.health_path = Some(path.into());
        rejected(cfg, "health_path");
    }
    for (set, field) in [
        (
            (|h: &mut backend_pool::HttpPoolConfig| h.output_buffer_bytes = 0)
                as fn(&mut backend_pool::HttpPoolConfig),
            "output_buffer_bytes",
        ),
        (|h| h.input_buffer_bytes = 1 << 40, "input_buffer_bytes"),
        (|h| h.max_header_bytes = 0, "max_header_bytes"),
    ] {
        let mut cfg = base();
        set(cfg.http.as_mut().unwrap());
        rejected(cfg, field);
    }
    let mut cfg = base();
    cfg.headers.insert("X-Tab".into(), "a\tb".into());
    cfg.health_path = Some("/health?full=1".into());
    cfg.validate().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. Failures before a connection exists are connect failures.

#[test]
fn an_unresolvable_host_is_a_connect_failure_and_fails_fast() {
    let mut cfg = service("svc", "http://no-such-host.invalid:80");
    cfg.unhealthy_after = 2;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    for _ in 0..2 {
        let err = http.get("/x").call().unwrap_err();
        assert_eq!(err.class(), ErrorClass::Connect, "{err:?}");
        assert_eq!(err.phase(), Some(Phase::Connect), "{err:?}");
        assert!(
            err.to_string().contains("no-such-host.invalid")
                || format!("{err:?}").contains("no-such-host.invalid"),
            "the error does not name the host: {err:?}"
        );
    }
    let err = http.get("/x").call().unwrap_err();
    assert!(
        matches!(err, Error::ServiceUnavailable { .. }),
        "no fail-fast: {err:?}"
    );
    let stats = http_stats(&m, "svc");
    assert_eq!(stats.connect_failures, 2);
    assert_eq!(stats.errors.get(ErrorClass::Connect), 2);
    assert_eq!(stats.errors.get(ErrorClass::Protocol), 0);
    assert_eq!(stats.connections_created, 0);
}

/// Runs one `#[ignore]`d test of this binary in a child process with `env` set; the child's
/// output is shown when it fails.
#[cfg(unix)]
fn run_child(test: &str, env: &[(&str, String)]) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(unix)] // RLIMIT_NOFILE; Windows has no per-process limit on sockets
#[test]
fn running_out_of_file_descriptors_is_a_connect_failure_and_fails_fast() {
    let server = echo_server();
    run_child(
        "fd_exhaustion_child",
        &[("BACKEND_POOL_EDGE_URL", server.http_url())],
    );
    assert_eq!(server.accepted(), 0);
}

/// Run by `running_out_of_file_descriptors_is_a_connect_failure_and_fails_fast` in its own
/// process: lowers RLIMIT_NOFILE and uses up every descriptor, then makes calls.
#[cfg(unix)]
#[test]
#[ignore = "runs in a child process of running_out_of_file_descriptors_…"]
fn fd_exhaustion_child() {
    let url = std::env::var("BACKEND_POOL_EDGE_URL").expect("run by the parent test");
    let mut cfg = service("svc", &url);
    cfg.unhealthy_after = 2;
    let m = manager(cfg);
    let http = m.http("svc").unwrap();
    // Lower the soft limit a little above what is open, then use up the rest.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = (open + 32).min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let mut hoard = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hoard.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
        assert!(hoard.len() < 10_000, "the limit did not apply");
    }
    for _ in 0..2 {
        let err = http.get("/x").call().unwrap_err();
        assert_eq!(err.class(), ErrorClass::Connect, "{err:?}");
        assert_eq!(err.phase(), Some(Phase::Connect), "{err:?}");
    }
    let err = http.get("/x").call().unwrap_err();
    assert!(
        matches!(err, Error::ServiceUnavailable { .. }),
        "no fail-fast: {err:?}"
    );
    drop(hoard);
    let stats = http_stats(&m, "svc");
    assert_eq!(stats.connect_failures, 2);
    assert_eq!(stats.errors.get(ErrorClass::Connect), 2);
    assert_eq!(stats.errors.get(ErrorClass::Protocol), 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Nothing is resent because of a response the server did send.

/// A response head of about `bytes` bytes in `lines` header lines.
fn big_head(bytes: usize, lines: usize, body: &str) -> Vec<u8> {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    let per_line = (bytes / lines).max(20);
    for i in 0..lines {
        head.push_str(&format!(
            "X-Filler-{i:04}: {}\r\n",
            "v".repeat(per_line - 17)
        ));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    head.into_bytes()
}

fn one_service(url: &str) -> PoolManager {
    let mut cfg = service("svc", url);
    cfg.unhealthy_after = 1000;
    manager(cfg)
}

#[test]
fn a_response_head_over_the_input_buffer_but_under_the_limit_works() {
    for size in [9 * 1024, 20 * 1024, 60 * 1024] {
        let answer = big_head(size, 20, "fine");
        let server = RawServer::start(move |mut p| p.serve(&answer));
        let m = one_service(&server.url());
        let http = m.http("svc").unwrap();
        for _ in 0..3 {
            let r = http.get("/big").call().unwrap();
            assert_eq!(r.text(), "fine");
            assert!(r.header("X-Filler-0019").is_some());
            let mut s = http.get("/big").stream(b"").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            assert_eq!(body, "fine");
        }
        assert_eq!(server.requests(), 6, "head of {size} bytes");
        assert_eq!(server.accepted(), 1, "head of {size} bytes: not reused");
        let stats = http_stats(&m, "svc");
        assert_eq!(stats.retries, 0);
        assert_eq!(stats.errors.total(), 0);
    }
}

#[test]
fn a_response_head_over_the_limit_is_too_large_and_sent_once() {
    for (size, lines) in [(70 * 1024, 20), (200 * 1024, 4), (3 * 1024, 200)] {
        let answer = big_head(size, lines, "no");
        let server = RawServer::start(move |mut p| p.serve(&answer));
        let m = one_service(&server.url());
        let http = m.http("svc").unwrap();
        let err = http.get("/big").call().unwrap_err();
        assert_eq!(err.class(), ErrorClass::TooLarge, "{size}/{lines}: {err:?}");
        assert!(err.to_string().contains("head"), "{err}");
        assert_eq!(server.requests(), 1, "{size}/{lines}: sent again");
        let err = http.get("/big").stream(b"").unwrap_err();
        assert_eq!(err.class(), ErrorClass::TooLarge, "{err:?}");
        assert_eq!(server.requests(), 2, "{size}/{lines}: stream sent again");
        assert_eq!(http_stats(&m, "svc").retries, 0);
    }
}

#[test]
fn nothing_is_resent_after_any_response_byte() {
    // (what the server does after reading the request, the class expected)
    type Case = (&'static str, fn(&mut Peer), ErrorClass);
    let cases: [Case; 6] = [
        (
            "partial status line, then close",
            |p| {
                p.write(b"HTTP/1.1 2");
            },
            ErrorClass::Closed,
        ),
        (
            "partial head, then close",
            |p| {
                p.write(b"HTTP/1.1 200 OK\r\nContent-Le");
            },
            ErrorClass::Closed,
        ),
        (
            "partial status line, then reset",
            |p| {
                p.write(b"HTTP/1.1 200");
                thread::sleep(Duration::from_millis(100));
                p.reset();
            },
            ErrorClass::Closed,
        ),
        (
            "full head, then reset mid-body",
            |p| {
                p.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nsome of it");
                thread::sleep(Duration::from_millis(100));
                p.reset();
            },
            ErrorClass::Closed,
        ),
        (
            "full head, then close mid-body",
            |p| {
                p.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nsome of it");
            },
            ErrorClass::Closed,
        ),
        (
            "malformed head",
            |p| {
                p.write(b"HTTX/9.9 abc\r\n\r\n");
            },
            ErrorClass::Protocol,
        ),
    ];
    for (what, act, class) in cases {
        let server = RawServer::start(move |mut p| {
            if p.read_request().is_some() {
                act(&mut p);
            }
        });
        let m = one_service(&server.url());
        let http = m.http("svc").unwrap();
        let err = http.get("/once").call().unwrap_err();
        assert_eq!(err.class(), class, "{what}: {err:?}");
        assert_eq!(server.requests(), 1, "{what}: GET sent again");
        // HEAD: the mid-body cases answer a complete head, which HEAD accepts.
        let head = http.head("/once").call();
        assert_eq!(server.requests(), 2, "{what}: HEAD sent again ({head:?})");
        let err = match http.get("/once").stream(b"") {
            Err(e) => e,
            Ok(mut s) => {
                let mut sink = Vec::new();
                let e = s.read_to_end(&mut sink).unwrap_err();
                assert!(what.contains("mid-body"), "{what}: stream opened: {e}");
                drop(s);
                assert_eq!(server.requests(), 3, "{what}: stream sent again");
                continue;
            }
        };
        assert_eq!(err.class(), class, "{what} (stream): {err:?}");
        assert_eq!(server.requests(), 3, "{what}: stream sent again");
        assert_eq!(http_stats(&m, "svc").retries, 0, "{what}");
    }
}

#[test]
fn a_connection_closed_before_any_response_byte_is_retried_once_for_get_only() {
    // Reads the request and closes without a byte: a stale keep-alive connection.
    let server = RawServer::start(|mut p| {
        let _ = p.read_request();
    });
    let m = one_service(&server.url());
    let http = m.http("svc").unwrap();
    let err = http.get("/stale").call().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Closed, "{err:?}");
    assert_eq!(
        server.requests(),
        2,
        "GET is retried once on a fresh connection"
    );
    let err = http.post("/stale").send_bytes(b"{}").unwrap_err();
    assert_eq!(err.class(), ErrorClass::Closed, "{err:?}");
    assert_eq!(server.requests(), 3, "POST is never resent");
    assert_eq!(
        server.accepted(),
        3,
        "the retry did not use a fresh connection"
    );
    assert_eq!(http_stats(&m, "svc").retries, 1);
}

#[test]
fn a_request_without_a_body_says_content_length_only_where_a_body_is_expected() {
    // RFC 9110 §8.6: no Content-Length on a request without content whose method does not
    // anticipate any; a POST, PUT or PATCH without a body says `Content-Length: 0`.
    let (heads_tx, heads) = mpsc::channel::<String>();
    let heads_tx = std::sync::Mutex::new(heads_tx);
    let server = RawServer::start(move |mut p| {
        while let Some(head) = p.read_request() {
            let reply = if head.starts_with("HEAD ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n".to_vec()
            } else {
                ok_response("fine")
            };
            let _ = heads_tx.lock().unwrap().send(head);
            if !p.write(&reply) {
                return;
            }
        }
    });
    let m = one_service(&server.url());
    let http = m.http("svc").unwrap();
    for method in [
        "GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "POST", "PUT", "PATCH",
    ] {
        http.request(method, "/x").call().unwrap();
        let head = heads.recv_timeout(Duration::from_secs(5)).unwrap();
        let length = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().to_string())
        });
        let expected = matches!(method, "POST" | "PUT" | "PATCH").then(|| "0".to_string());
        assert_eq!(length, expected, "{method}: {head}");
    }
    assert_eq!(server.accepted(), 1);
}

#[test]
fn a_connection_the_server_spoiled_after_a_response_is_not_reused() {
    // (what the server does after a complete response on the first connection)
    type Case = (&'static str, fn(&mut Peer));
    let cases: [Case; 2] = [
        ("sends bytes nobody asked for", |p| {
            p.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra");
        }),
        ("closes without saying so", |p| {
            p.shutdown();
        }),
    ];
    for (what, spoil) in cases {
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = RawServer::start(move |mut p| {
            let first = accepted.fetch_add(1, Ordering::Relaxed) == 0;
            while p.read_request().is_some() {
                p.write(&ok_response("fine"));
                if first {
                    spoil(&mut p);
                    // Keep the first connection open (and useless) a while.
                    thread::sleep(Duration::from_millis(500));
                    return;
                }
            }
        });
        let m = one_service(&server.url());
        let http = m.http("svc").unwrap();
        assert_eq!(http.get("/first").call().unwrap().text(), "fine", "{what}");
        // Let the spoiling bytes or the FIN reach the client.
        thread::sleep(Duration::from_millis(100));
        // A POST is never resent: it must go on a fresh connection from the start.
        let r = http.post("/second").send_bytes(b"{}");
        assert_eq!(r.map(|r| r.text()).ok().as_deref(), Some("fine"), "{what}");
        assert_eq!(server.accepted(), 2, "{what}");
        assert_eq!(server.requests(), 2, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. EINTR: signals delivered to the calling thread neither fail a call nor stretch its
// deadline.

#[cfg(unix)]
mod eintr {
    use super::support::raw::content_length;
    use super::support::signals::{current_thread, install_handler, Interrupter};
    use super::*;
    use std::io::{BufRead, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    const EVERY: Duration = Duration::from_millis(2);

    /// Runs `call` on a fresh thread that receives SIGUSR1 every `EVERY`; gives up (the test
    /// fails) if the call does not return within `limit`.
    fn interrupted<T: Send + 'static>(
        limit: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> (T, Duration, u64) {
        install_handler();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let signals = Interrupter::start(current_thread(), EVERY);
            let started = Instant::now();
            let out = call();
            let took = started.elapsed();
            let sent = signals.stop();
            let _ = tx.send((out, took, sent));
        });
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| panic!("the call did not return within {limit:?}"))
    }

    /// The signals really interrupt blocking socket calls: a raw read fails with EINTR.
    #[test]
    fn the_interrupter_really_interrupts_a_blocked_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (kinds, _, sent) = interrupted(Duration::from_secs(5), move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut kinds = Vec::new();
            for _ in 0..3 {
                kinds.push(s.read(&mut [0; 8]).unwrap_err().kind());
            }
            kinds
        });
        assert!(sent > 0);
        assert!(
            kinds.contains(&std::io::ErrorKind::Interrupted),
            "no EINTR seen: {kinds:?}"
        );
    }

    fn slow_service(url: &str, timeout_ms: u64) -> PoolManager {
        let mut cfg = service("svc", url);
        cfg.request_timeout_ms = timeout_ms;
        cfg.read_idle_timeout_ms = timeout_ms;
        cfg.connect_timeout_ms = timeout_ms;
        cfg.unhealthy_after = 1000;
        manager(cfg)
    }

    #[test]
    fn a_slow_head_body_and_stream_survive_signals() {
        // Head after 150 ms, then the body in five pieces 60 ms apart (chunked).
        let server = RawServer::start(|mut p| {
            while p.read_request().is_some() {
                thread::sleep(Duration::from_millis(150));
                p.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                for i in 0..5 {
                    thread::sleep(Duration::from_millis(60));
                    p.write(format!("7\r\nline {i}\n\r\n").as_bytes());
                }
                p.write(b"0\r\n\r\n");
            }
        });
        let m = Arc::new(slow_service(&server.url(), 2_000));
        let m2 = Arc::clone(&m);
        let ((whole, streamed), took, sent) = interrupted(Duration::from_secs(8), move || {
            let http = m2.http("svc").unwrap();
            let whole = http.get("/slow").call().map(|r| r.text());
            let streamed = http.get("/slow").stream(b"").map(|s| {
                s.lines()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            });
            (whole, streamed)
        });
        assert!(sent > 50, "only {sent} signals in {took:?}");
        assert_eq!(whole.unwrap(), "line 0\nline 1\nline 2\nline 3\nline 4\n");
        assert_eq!(streamed.unwrap().unwrap().len(), 5);
        assert_eq!(server.requests(), 2);
        assert_eq!(http_stats(&m, "svc").errors.total(), 0);
    }

    #[test]
    fn a_large_body_sent_to_a_slow_reader_survives_signals() {
        // Reads the request slowly (64 KiB every 5 ms), then answers.
        let server = RawServer::start(|mut p| loop {
            let Some(head) = p.read_request_head_only() else {
                return;
            };
            let len = content_length(&head);
            let mut left = len;
            let mut buf = vec![0; 64 * 1024];
            while left > 0 {
                thread::sleep(Duration::from_millis(5));
                let n = p.read(&mut buf[..left.min(64 * 1024)]).unwrap_or(0);
                if n == 0 {
                    return;
                }
                left -= n;
            }
            p.write(&ok_response(&len.to_string()));
        });
        let m = Arc::new(slow_service(&server.url(), 5_000));
        let m2 = Arc::clone(&m);
        let (result, _, sent) = interrupted(Duration::from_secs(9), move || {
            let body = vec![7u8; 4 << 20];
            m2.http("svc")
                .unwrap()
                .post("/upload")
                .send_bytes(&body)
                .map(|r| r.text())
        });
        assert!(sent > 20);
        assert_eq!(result.unwrap(), (4 << 20).to_string());
    }

    #[test]
    fn signals_do_not_stretch_the_send_deadline() {
        // Reads the head, then never reads the body: the client's send blocks.
        let server = RawServer::start(|mut p| {
            let _ = p.read_request_head_only();
            thread::sleep(Duration::from_secs(6));
        });
        let m = Arc::new(slow_service(&server.url(), 400));
        let m2 = Arc::clone(&m);
        let (result, took, _) = interrupted(Duration::from_secs(5), move || {
            let body = vec![7u8; 32 << 20];
            m2.http("svc")
                .unwrap()
                .post("/upload")
                .send_bytes(&body)
                .map(|r| r.status())
        });
        let err = result.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Timeout, "{err:?}");
        assert_eq!(err.phase(), Some(Phase::Send), "{err:?}");
        assert!(
            took < Duration::from_secs(3),
            "deadline stretched: {took:?}"
        );
    }

    #[test]
    fn signals_do_not_stretch_the_response_deadline() {
        let server = RawServer::start(|mut p| {
            let _ = p.read_request();
            thread::sleep(Duration::from_secs(6));
        });
        let m = Arc::new(slow_service(&server.url(), 400));
        let m2 = Arc::clone(&m);
        let (result, took, _) = interrupted(Duration::from_secs(5), move || {
            m2.http("svc")
                .unwrap()
                .get("/stall")
                .call()
                .map(|r| r.status())
        });
        let err = result.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Timeout, "{err:?}");
        assert!(
            took < Duration::from_secs(3),
            "deadline stretched: {took:?}"
        );
    }

    #[test]
    fn a_connect_that_waits_for_the_backlog_survives_signals() {
        // A listener with a backlog of one, kept full: the next SYN is dropped and the
        // connect waits for its retransmission (about 1 s), which succeeds once the server
        // accepts. Signals land in that wait.
        let listener = small_backlog_listener();
        let port = listener.local_addr().unwrap().port();
        let addr = listener.local_addr().unwrap();
        let fillers: Vec<TcpStream> = (0..3)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok())
            .collect();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            listener.set_nonblocking(false).unwrap();
            for mut peer in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                thread::spawn(move || {
                    let _ = peer.set_read_timeout(Some(Duration::from_secs(8)));
                    let mut p = Peer::new(peer.try_clone().unwrap());
                    p.serve(&ok_response("up"));
                    let _ = peer.flush();
                });
            }
        });
        let m = Arc::new(slow_service(&format!("http://127.0.0.1:{port}"), 4_000));
        let m2 = Arc::clone(&m);
        let (result, took, sent) = interrupted(Duration::from_secs(9), move || {
            m2.http("svc").unwrap().get("/").call().map(|r| r.text())
        });
        drop(fillers);
        assert!(sent > 10);
        assert!(
            took >= Duration::from_millis(250),
            "the connect did not wait for the backlog ({took:?}): the test proves nothing"
        );
        assert_eq!(result.unwrap(), "up");
    }

    /// https: a server that waits before the handshake and before its (large) head, so the
    /// signals land in the TLS handshake, in a TLS read and across a head that outgrows the
    /// input buffer.
    #[test]
    fn https_survives_signals_and_heads_over_the_input_buffer() {
        let (port, pem, accepted) = slow_tls_server(big_head(20 * 1024, 20, "secure"));
        let mut cfg = service("svc", &format!("https://127.0.0.1:{port}"));
        cfg.ca_file = Some(pem);
        let m = Arc::new(manager(cfg));
        let m2 = Arc::clone(&m);
        let (texts, _, sent) = interrupted(Duration::from_secs(9), move || {
            let http = m2.http("svc").unwrap();
            (0..3)
                .map(|_| http.get("/tls").call().map(|r| r.text()))
                .collect::<Vec<_>>()
        });
        assert!(sent > 50);
        for text in texts {
            assert_eq!(text.unwrap(), "secure");
        }
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "the connection was not reused"
        );
        assert_eq!(http_stats(&m, "svc").errors.total(), 0);
    }

    /// A TLS server on 127.0.0.1 that sleeps 150 ms before the handshake and before each
    /// answer. Returns its port, the path of its certificate's PEM and its accept count.
    fn slow_tls_server(answer: Vec<u8>) -> (u16, String, Arc<AtomicUsize>) {
        let (config, pem) = support::self_signed(&["127.0.0.1"], "http-edges");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let answer = Arc::new(answer);
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                let (config, answer) = (Arc::clone(&config), Arc::clone(&answer));
                thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(8)));
                    thread::sleep(Duration::from_millis(150));
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut reader = std::io::BufReader::new(rustls::StreamOwned::new(conn, tcp));
                    loop {
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => {}
                            }
                        }
                        thread::sleep(Duration::from_millis(150));
                        let out = reader.get_mut();
                        if out.write_all(&answer).and_then(|()| out.flush()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, pem.display().to_string(), accepted)
    }

    fn small_backlog_listener() -> TcpListener {
        use std::os::fd::FromRawFd;
        #[allow(unsafe_code)]
        // SAFETY: a fresh socket bound to 127.0.0.1:0 and listening; ownership passes to
        // the TcpListener.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            assert_eq!(
                libc::bind(
                    fd,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ),
                0
            );
            assert_eq!(libc::listen(fd, 0), 0);
            TcpListener::from_raw_fd(fd)
        }
    }
}
