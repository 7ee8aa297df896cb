//! One accepted TCP connection: the HTTP/1.1 keep-alive loop, fault injection,
//! and the hand-over to the WebSocket loop on upgrade.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::fault::Fault;
use super::request::{ReadOutcome, Reader, Request};
use super::response::{chunk, sse_event, Body, Response, SlowWriter};
use super::shared::{lock, Shared};
use super::sock::Sock;
use super::ws;

/// What a garbage answer looks like under [`Fault::MalformedResponse`].
const MALFORMED: &[u8] = b"HTTX/9.9 banana\r\n\x00\x01 not http at all\r\n\r\n";

/// Deregisters the connection when its thread ends, whatever the reason.
struct ConnGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        if let Some(entry) = lock(&self.shared.conns).remove(&self.id) {
            // Other clones (e.g. a WsHandle kept by a mock) must not keep it open.
            entry.stream.kill();
        }
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves connection `id` until it closes. The connection must already be
/// registered in `shared.conns` and counted in `shared.open`.
pub(crate) fn serve(shared: Arc<Shared>, stream: Arc<Sock>, id: u64) {
    let killed = stream.killed();
    let _guard = ConnGuard {
        shared: &shared,
        id,
    };
    if let Some(d) = shared.config.accept_delay {
        if !shared.sleep(d, Some(killed)) {
            return;
        }
    }
    if stream.set_read_timeout(shared.config.idle_timeout).is_err() {
        return;
    }
    let mut reader = Reader::new(&*stream);
    let mut writer: &Sock = &stream;
    let mut served = 0usize;

    loop {
        if shared.is_stopping() || stream.is_killed() {
            return;
        }
        let head = match reader.read_head() {
            ReadOutcome::Ready(h) => h,
            ReadOutcome::Closed => return,
            ReadOutcome::Malformed => {
                log::debug!("testkit: malformed request head on connection {id}");
                return;
            }
        };

        let upgrade = if ws::is_upgrade(&head) {
            ws::route(&shared, &head)
        } else {
            None
        };
        if let Some(on_open) = upgrade {
            shared.log_request(&head.method, &head.path);
            if apply_fault(&shared, &mut writer, killed).is_none() {
                return;
            }
            let leftover = reader.take_buffered();
            ws::serve(&shared, &stream, leftover, head, id, on_open);
            return;
        }

        if head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        let body = match reader.read_body(&head) {
            ReadOutcome::Ready(b) => b,
            _ => {
                log::debug!("testkit: malformed request body on connection {id}");
                return;
            }
        };
        let req = Request {
            method: head.method,
            path: head.path,
            headers: head.headers,
            body,
            conn_id: id,
        };
        shared.log_request(&req.method, &req.path);
        shared.requests.fetch_add(1, Ordering::SeqCst);
        served += 1;
        let keep_alive = req.wants_keep_alive(head.http10)
            && shared.config.max_requests.map_or(true, |max| served < max);

        let Some(fault) = apply_fault(&shared, &mut writer, killed) else {
            return;
        };

        let mut resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (shared.config.handler)(&req)
        }))
        .unwrap_or_else(|_| Response::text(500, "mock handler panicked"));
        let head_only = req.method.eq_ignore_ascii_case("HEAD");

        let written = match fault {
            Fault::SlowBytes(delay) => {
                let sleep = |d: Duration| shared.sleep(d, Some(killed));
                let mut slow = SlowWriter {
                    inner: &mut writer,
                    delay,
                    sleep: &sleep,
                };
                write_response(&shared, &mut slow, &resp, head_only, keep_alive, killed)
            }
            _ => write_response(&shared, &mut writer, &resp, head_only, keep_alive, killed),
        };
        if let Some(job) = resp.after.take() {
            shared.spawn_task(job);
        }
        if !written || !keep_alive {
            return;
        }
    }
}

/// Applies the fault in force to a request that has just been read: waits out
/// [`Fault::Stall`], and answers the faults that end the connection. Returns the
/// fault to serve the request under, or `None` if the connection must close.
fn apply_fault(shared: &Shared, writer: &mut &Sock, killed: &AtomicBool) -> Option<Fault> {
    let mut fault = shared.fault();
    if fault == Fault::Stall {
        if !shared.wait_while_fault(|f| f == Fault::Stall, killed) {
            return None;
        }
        fault = shared.fault();
    }
    match fault {
        Fault::Refuse | Fault::CloseBeforeResponse => None,
        Fault::MalformedResponse => {
            let _ = writer.write_all(MALFORMED);
            None
        }
        other => Some(other),
    }
}

/// Writes `resp`; returns `false` if the connection broke (or the server stopped).
fn write_response(
    shared: &Shared,
    out: &mut impl Write,
    resp: &Response,
    head_only: bool,
    keep_alive: bool,
    killed: &AtomicBool,
) -> bool {
    let mut ok = out.write_all(&resp.head_bytes(keep_alive)).is_ok();
    if head_only || !ok {
        return ok && out.flush().is_ok();
    }
    let cut = resp.cut.unwrap_or(u64::MAX);
    match &resp.body {
        Body::Fixed(body) => {
            let n = (cut.min(body.len() as u64)) as usize;
            ok = out.write_all(&body[..n]).is_ok();
        }
        Body::Generated { len, fill } => {
            let end = cut.min(*len);
            let mut piece = vec![0u8; 64 * 1024];
            let mut at = 0u64;
            while ok && at < end {
                let n = (end - at).min(piece.len() as u64) as usize;
                fill(at, &mut piece[..n]);
                ok = out.write_all(&piece[..n]).is_ok();
                at += n as u64;
            }
        }
        Body::Sse { events, gap } => {
            for (event, data) in events {
                ok = out.write_all(&chunk(&sse_event(event, data))).is_ok() && out.flush().is_ok();
                if !ok || (!gap.is_zero() && !shared.sleep(*gap, Some(killed))) {
                    return false;
                }
            }
            ok = out.write_all(b"0\r\n\r\n").is_ok();
        }
    }
    if resp.cut.is_some() {
        // The connection closes here, mid-body.
        let _ = out.flush();
        return false;
    }
    ok && out.flush().is_ok()
}
