//! Parsed HTTP/1.1 requests and the parser that reads them off a socket.

use std::io::{self, Read};

/// Largest request head (request line + headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (RVC uploads whole WAV files).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// One HTTP request as received by a [`TestServer`](crate::TestServer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method as sent, e.g. `GET`.
    pub method: String,
    /// Path plus query string exactly as sent in the request line.
    pub path: String,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked if it was sent with `Transfer-Encoding: chunked`.
    pub body: Vec<u8>,
    /// Id of the TCP connection the request arrived on (increasing per server).
    pub conn_id: u64,
}

impl Request {
    /// First header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Path without the query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// First query parameter called `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(&self.path, name)
    }

    /// Body parsed as JSON, if it is valid JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether the client asked to keep the connection open after this request.
    pub(crate) fn wants_keep_alive(&self, http10: bool) -> bool {
        let conn = self.header("connection").unwrap_or("").to_ascii_lowercase();
        let tokens = || conn.split(',').map(str::trim);
        if tokens().any(|t| t == "close") {
            return false;
        }
        !http10 || tokens().any(|t| t == "keep-alive")
    }
}

/// First query parameter `name` of `target` (a path with optional `?query`).
pub(crate) fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (as space); invalid escapes are kept verbatim.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The head of a request: everything up to the blank line.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub path: String,
    pub http10: bool,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the header `name` contains the comma-separated token `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Outcome of waiting for the next request head.
pub(crate) enum ReadOutcome<T> {
    /// A complete item.
    Ready(T),
    /// The peer closed (or the read timed out / failed) before a single byte of a new request.
    Closed,
    /// The bytes received are not valid HTTP, or the stream ended mid-message.
    Malformed,
}

/// A socket reader with a carry-over buffer (bytes read past the current message).
pub(crate) struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            buf: Vec::new(),
        }
    }

    /// Bytes read from the socket but not yet consumed.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Reads more bytes into the buffer; `Ok(0)` on EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.inner.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one request head.
    pub fn read_head(&mut self) -> ReadOutcome<Head> {
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            // Do not keep a large upload's buffer alive on an idle connection.
            self.buf = Vec::new();
        }
        let mut searched: usize = 0;
        loop {
            if let Some(pos) = find(&self.buf[searched.saturating_sub(3)..], b"\r\n\r\n") {
                let end = searched.saturating_sub(3) + pos + 4;
                let head: Vec<u8> = self.buf.drain(..end).collect();
                return match parse_head(&head) {
                    Some(h) => ReadOutcome::Ready(h),
                    None => ReadOutcome::Malformed,
                };
            }
            searched = self.buf.len();
            if self.buf.len() > MAX_HEAD {
                return ReadOutcome::Malformed;
            }
            let was_empty = self.buf.is_empty();
            match self.fill() {
                Ok(0) | Err(_) if was_empty => return ReadOutcome::Closed,
                Ok(0) | Err(_) => return ReadOutcome::Malformed,
                Ok(_) => {}
            }
        }
    }

    /// Reads the body that belongs to `head`.
    pub fn read_body(&mut self, head: &Head) -> ReadOutcome<Vec<u8>> {
        if head.has_token("transfer-encoding", "chunked") {
            return self.read_chunked();
        }
        let len = match head.header("content-length") {
            None => 0,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n <= MAX_BODY => n,
                _ => return ReadOutcome::Malformed,
            },
        };
        match self.read_exact_buf(len) {
            Some(body) => ReadOutcome::Ready(body),
            None => ReadOutcome::Malformed,
        }
    }

    fn read_exact_buf(&mut self, len: usize) -> Option<Vec<u8>> {
        while self.buf.len() < len {
            match self.fill() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        Some(self.buf.drain(..len).collect())
    }

    fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return String::from_utf8(line[..pos].to_vec()).ok();
            }
            if self.buf.len() > MAX_HEAD {
                return None;
            }
            match self.fill() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn read_chunked(&mut self) -> ReadOutcome<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let Some(line) = self.read_line() else {
                return ReadOutcome::Malformed;
            };
            let size_str = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_str, 16) else {
                return ReadOutcome::Malformed;
            };
            if size == 0 {
                // Trailers until the blank line.
                loop {
                    match self.read_line() {
                        Some(l) if l.is_empty() => return ReadOutcome::Ready(body),
                        Some(_) => {}
                        None => return ReadOutcome::Malformed,
                    }
                }
            }
            if body.len() + size > MAX_BODY {
                return ReadOutcome::Malformed;
            }
            let Some(data) = self.read_exact_buf(size + 2) else {
                return ReadOutcome::Malformed;
            };
            if &data[size..] != b"\r\n" {
                return ReadOutcome::Malformed;
            }
            body.extend_from_slice(&data[..size]);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let version = parts.next()?;
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_alphabetic())
        || path.is_empty()
    {
        return None;
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return None,
    };
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.contains(' ') {
            return None;
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Some(Head {
        method,
        path,
        http10,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query() {
        assert_eq!(
            query_param("/ws?clientId=a%20b&x=1", "clientId").as_deref(),
            Some("a b")
        );
        assert_eq!(query_param("/e?x=1+2", "x").as_deref(), Some("1 2"));
        assert_eq!(query_param("/e?flag", "flag").as_deref(), Some(""));
        assert_eq!(query_param("/e", "x"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn parses_chunked_body() {
        let raw = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\nGET";
        let mut r = Reader::new(&raw[..]);
        let ReadOutcome::Ready(head) = r.read_head() else {
            panic!("head")
        };
        let ReadOutcome::Ready(body) = r.read_body(&head) else {
            panic!("body")
        };
        assert_eq!(body, b"abcde");
        assert_eq!(r.take_buffered(), b"GET");
    }

    #[test]
    fn rejects_garbage() {
        let mut r = Reader::new(&b"\x16\x03\x01 nonsense\r\n\r\n"[..]);
        assert!(matches!(r.read_head(), ReadOutcome::Malformed));
        let mut r = Reader::new(&b""[..]);
        assert!(matches!(r.read_head(), ReadOutcome::Closed));
    }
}
