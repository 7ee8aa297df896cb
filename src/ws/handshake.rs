//! The WebSocket handshake on a pooled stream, keeping a refusal's evidence.
//!
//! tungstenite's client handshake reads the response in chunks and, when the status is not
//! `101`, fails with the head and only the bytes that came in the same read (often none: a
//! server writes its head and body apart), dropping the stream with the rest of the body.
//! So the handshake here reads through [`UpToHead`], which stops at the head's blank line
//! and keeps what follows. Accepted, the bytes behind the head (frames the server sent at
//! once, as ComfyUI's first `status`) start the socket; refused, the body is read on from
//! there: by its `Content-Length`, chunked, or until the server closes, at most
//! [`StatusBody::LIMIT`] bytes, all within the connect deadline the stream already carries.

use std::io::{self, BufRead, BufReader, Cursor, Read, Write};

use tungstenite::handshake::client::Request;
use tungstenite::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use tungstenite::http::HeaderMap;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{HandshakeError, WebSocket};

use super::{Socket, WsStream};
use crate::error::StatusBody;

/// How a handshake failed.
pub(super) enum Failure {
    /// The server answered with a status other than `101`: its body, at most 64 KiB.
    Refused { status: u16, body: StatusBody },
    /// Anything else: I/O (a passed deadline among it), a malformed or unacceptable answer.
    Error(tungstenite::Error),
}

/// Runs the client handshake for `request` on `stream`; the socket gets `config`.
pub(super) fn handshake(
    request: Request,
    mut stream: WsStream,
    config: WebSocketConfig,
) -> Result<Socket, Failure> {
    let mut rest = Vec::new();
    // Every borrow of `stream` ends with this statement. The socket tungstenite builds on
    // the borrowed stream is dropped unused (a `WebSocket` does no I/O when dropped).
    let refused = match tungstenite::client::client(request, UpToHead::new(&mut stream, &mut rest))
    {
        Ok(_) => None,
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => Some(response),
        Err(HandshakeError::Failure(e)) => return Err(Failure::Error(e)),
        // Only a non-blocking stream interrupts a handshake; this one is blocking.
        Err(HandshakeError::Interrupted(_)) => {
            return Err(Failure::Error(tungstenite::Error::Io(
                io::ErrorKind::TimedOut.into(),
            )))
        }
    };
    match refused {
        None => Ok(WebSocket::from_partially_read(
            stream,
            rest,
            Role::Client,
            Some(config),
        )),
        Some(response) => {
            let status = response.status().as_u16();
            let body = refusal_body(&mut stream, rest, status, response.headers());
            Err(Failure::Refused { status, body })
        }
    }
}

/// A refusal's body: `rest` (what came behind the head), then the stream, up to
/// [`StatusBody::LIMIT`] (and a byte more, to know there was more). A read that fails (the
/// deadline passed) or a body cut short ends it, marked truncated.
fn refusal_body(
    stream: &mut WsStream,
    rest: Vec<u8>,
    status: u16,
    headers: &HeaderMap,
) -> StatusBody {
    // RFC 9112 §6.3: these never have a body, whatever their headers say.
    if status < 200 || status == 204 || status == 304 {
        return StatusBody::new(Vec::new(), false);
    }
    let cap = StatusBody::LIMIT as u64 + 1;
    let mut input = BufReader::new(Cursor::new(rest).chain(stream));
    let chunked = headers.get_all(TRANSFER_ENCODING).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
    });
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let mut bytes = Vec::new();
    let whole = match length {
        _ if chunked => dechunk(&mut input, cap, &mut bytes),
        Some(length) => {
            let read = input.take(length.min(cap)).read_to_end(&mut bytes);
            read.is_ok() && bytes.len() as u64 == length
        }
        // Without a length, the body ends when the server closes.
        None => {
            let read = input.take(cap).read_to_end(&mut bytes);
            read.is_ok() && (bytes.len() as u64) < cap
        }
    };
    StatusBody::new(bytes, !whole)
}

/// Decodes a chunked body into `out`, at most `cap` bytes; true if it ended (the last chunk
/// read) within them.
fn dechunk(input: &mut impl BufRead, cap: u64, out: &mut Vec<u8>) -> bool {
    loop {
        // The size line: hex digits, perhaps extensions after `;`. Bounded.
        let mut line = Vec::new();
        if input
            .by_ref()
            .take(1024)
            .read_until(b'\n', &mut line)
            .is_err()
            || !line.ends_with(b"\n")
        {
            return false;
        }
        let text = String::from_utf8_lossy(&line);
        let hex = text.split(';').next().unwrap_or("").trim();
        let Ok(size) = u64::from_str_radix(hex, 16) else {
            return false;
        };
        if size == 0 {
            return true;
        }
        let room = cap.saturating_sub(out.len() as u64);
        let want = size.min(room);
        let before = out.len() as u64;
        if input.by_ref().take(want).read_to_end(out).is_err() || out.len() as u64 - before < want {
            return false;
        }
        if want < size || out.len() as u64 >= cap {
            return false;
        }
        let mut end = Vec::new();
        if input.by_ref().take(2).read_until(b'\n', &mut end).is_err() || !end.ends_with(b"\n") {
            return false;
        }
    }
}

/// The stream tungstenite's handshake reads: it ends at the blank line that ends the
/// response head, and keeps the bytes read behind it in `rest`.
struct UpToHead<'a> {
    stream: &'a mut WsStream,
    rest: &'a mut Vec<u8>,
    scan: Scan,
}

/// Where the search for the head's blank line stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Nothing but line breaks yet (a blank line here does not end a head).
    Start,
    /// Inside a line.
    Line,
    /// Just after a line break.
    Break,
    /// Just after a line break and a CR.
    BreakCr,
    /// The head is complete.
    Done,
}

impl<'a> UpToHead<'a> {
    fn new(stream: &'a mut WsStream, rest: &'a mut Vec<u8>) -> Self {
        UpToHead {
            stream,
            rest,
            scan: Scan::Start,
        }
    }
}

impl Read for UpToHead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.scan == Scan::Done {
            // tungstenite stops reading once the head parses, which is here at the latest.
            return Err(io::Error::other(
                "the handshake read past the response head",
            ));
        }
        let n = self.stream.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            self.scan = match (self.scan, b) {
                (Scan::Start, b'\r' | b'\n') => Scan::Start,
                (Scan::Break | Scan::BreakCr, b'\n') => Scan::Done,
                (Scan::Break, b'\r') => Scan::BreakCr,
                (_, b'\n') => Scan::Break,
                _ => Scan::Line,
            };
            if self.scan == Scan::Done {
                self.rest.extend_from_slice(&buf[i + 1..n]);
                return Ok(i + 1);
            }
        }
        Ok(n)
    }
}

impl Write for UpToHead<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let whole = dechunk(&mut BufReader::new(input), 1000, &mut out);
        (out, whole)
    }

    #[test]
    fn chunked_bodies_decode_and_stop_at_the_cap() {
        assert_eq!(
            decode(b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n"),
            (b"hello!".to_vec(), true)
        );
        assert_eq!(decode(b"3\nabc\n0\n\n"), (b"abc".to_vec(), true));
        // Cut short, malformed, or over the cap: what was read, not whole.
        assert_eq!(decode(b"5\r\nhel"), (b"hel".to_vec(), false));
        assert_eq!(decode(b"zz\r\nhello\r\n"), (Vec::new(), false));
        assert!(!decode(b"5\r\nhelloXX0\r\n\r\n").1);
        let mut big = b"7D0\r\n".to_vec(); // 2000 bytes
        big.extend(vec![b'x'; 2000]);
        big.extend(b"\r\n0\r\n\r\n");
        let (out, whole) = decode(&big);
        assert_eq!((out.len(), whole), (1000, false));
        // A size line without an end is not read past 1 KiB.
        assert_eq!(decode(&vec![b'1'; 5000]), (Vec::new(), false));
    }
}
