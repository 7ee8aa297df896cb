//! `multipart/form-data` bodies: [`Form`] and its [`Part`]s, sent streamed with a known
//! length by [`RequestBuilder::send_multipart`] (ComfyUI's `POST /upload/image`, Gradio's
//! `POST /gradio_api/upload`).
//!
//! # Why a writer of our own
//!
//! ureq 3's `multipart` sits in its `unversioned` module (no semver: it may change in any
//! patch release, and `Cargo.toml` pins ureq exactly because of what already uses that
//! module), and it sends the form chunked. The blocking multipart crates pull in their own
//! MIME and random-number stacks. What a client needs is small (urllib3's `filepost.py` is
//! 89 lines): a boundary, one head per part, the bytes, and the sum of their lengths up
//! front, so the body goes out with `Content-Length` (no chunked framing, which some upload
//! handlers refuse or buffer whole).
//!
//! # Encoding (WHATWG HTML, "multipart/form-data encoding algorithm")
//!
//! * Field names and file names are sent in double quotes, as UTF-8, with `"`, CR and LF
//!   percent-encoded (`%22`, `%0D`, `%0A`), as browsers do; nothing else is escaped.
//! * A part with a file name and no content type is sent as `application/octet-stream`; a
//!   part without a file name is a plain field, with a content type only if given. A content
//!   type must be a valid header value (no CR, LF or other controls): else the request is
//!   refused before a connection is taken.
//! * The boundary is `----backend-pool-` and 32 hex digits (128 bits from std's randomly
//!   keyed hasher, over a counter, the clock and the process id); it is not searched for in
//!   the parts, which are streamed: a collision with 128 random bits is not a practical
//!   concern.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use super::body::{open_file, Exact};
use super::request::RequestBuilder;
use super::send::Payload;
use super::validate::header_value;
use super::{Response, StreamingResponse};
use crate::error::Error;

/// A `multipart/form-data` body being built: text fields and file parts, in order.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use backend_pool::{Form, Part};
/// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
///
/// let form = Form::new()
///     .file("image", "render.png")? // file name and content type from the path
///     .text("subfolder", "blender")
///     .text("overwrite", "true")
///     .part("mask", Part::bytes(vec![0u8; 16]).file_name("mask.png").content_type("image/png"));
/// let uploaded: serde_json::Value = manager
///     .http("comfyui")?
///     .post("/upload/image")
///     .send_multipart(form)?
///     .json()?;
/// # Ok(()) }
/// ```
#[derive(Default)]
#[must_use = "a form does nothing until it is sent"]
pub struct Form {
    parts: Vec<(String, Part)>,
}

/// One part of a [`Form`]: its bytes (in memory, from a reader of known length, or from a
/// file), an optional file name and an optional content type.
#[must_use = "a part does nothing until it is added to a form"]
pub struct Part {
    source: Source,
    file_name: Option<String>,
    content_type: Option<String>,
}

enum Source {
    Bytes(Vec<u8>),
    Reader {
        reader: Box<dyn Read + Send>,
        len: u64,
    },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Reader { len, .. } => *len,
        }
    }
}

impl Form {
    /// An empty form.
    pub fn new() -> Form {
        Form::default()
    }

    /// Adds a text field.
    pub fn text(self, name: &str, value: &str) -> Form {
        self.part(name, Part::text(value))
    }

    /// Adds the file at `path` as a file part (see [`Part::file`]).
    ///
    /// # Errors
    /// When the file cannot be opened or is not a regular file.
    pub fn file(self, name: &str, path: impl AsRef<Path>) -> io::Result<Form> {
        Ok(self.part(name, Part::file(path)?))
    }

    /// Adds `part` under the field name `name` (a name may repeat: each part is sent).
    pub fn part(mut self, name: &str, part: Part) -> Form {
        self.parts.push((name.to_string(), part));
        self
    }

    /// The form as a streamed body: its bytes and their length, and the `Content-Type`
    /// header that names its boundary. Fails on a content type that is not a valid header
    /// value, or a length past `u64`.
    fn encode(self) -> Result<Encoded, String> {
        let boundary = boundary();
        let mut segments = Vec::with_capacity(self.parts.len() * 2 + 1);
        let mut len: u64 = 0;
        let mut add = |n: usize, extra: u64| {
            len.checked_add(n as u64)
                .and_then(|l| l.checked_add(extra))
                .map(|l| len = l)
                .ok_or_else(|| "the form is longer than 2^64 bytes".to_string())
        };
        for (name, part) in self.parts {
            let mut head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"");
            escape_into(&mut head, &name);
            head.push('"');
            if let Some(file_name) = &part.file_name {
                head.push_str("; filename=\"");
                escape_into(&mut head, file_name);
                head.push('"');
            }
            head.push_str("\r\n");
            let content_type = match (&part.content_type, &part.file_name) {
                (Some(ct), _) => Some(ct.as_str()),
                (None, Some(_)) => Some("application/octet-stream"),
                (None, None) => None,
            };
            if let Some(ct) = content_type {
                if let Err(why) = header_value(ct) {
                    return Err(format!("part '{name}' has a content type with {why}"));
                }
                head.push_str("Content-Type: ");
                head.push_str(ct);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            // The part's bytes, then the CRLF that ends them.
            add(head.len(), part.source.len().saturating_add(2))?;
            if part.source.len() == u64::MAX {
                return Err(format!("part '{name}' is longer than 2^64 bytes"));
            }
            segments.push(Segment::Bytes(io::Cursor::new(head.into_bytes())));
            let what = format!("part '{name}'");
            segments.push(match part.source {
                Source::Bytes(bytes) => Segment::Bytes(io::Cursor::new(bytes)),
                Source::Reader { reader, len } => Segment::Reader(Exact::new(reader, len, what)),
            });
            segments.push(Segment::Bytes(io::Cursor::new(b"\r\n".to_vec())));
        }
        let close = format!("--{boundary}--\r\n");
        add(close.len(), 0)?;
        segments.push(Segment::Bytes(io::Cursor::new(close.into_bytes())));
        Ok(Encoded {
            segments,
            at: 0,
            len,
            content_type: format!("multipart/form-data; boundary={boundary}"),
        })
    }
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.parts.iter().map(|(name, part)| (name, part)))
            .finish()
    }
}

impl Part {
    /// A text field's value.
    pub fn text(value: &str) -> Part {
        Part::bytes(value.as_bytes().to_vec())
    }

    /// Bytes in memory.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Part {
        Part::new(Source::Bytes(bytes.into()))
    }

    /// Exactly `len` bytes from `reader`, streamed when the form is sent (a reader that
    /// yields fewer or more fails the request with [`Error::RequestBody`]).
    pub fn reader(reader: impl Read + Send + 'static, len: u64) -> Part {
        Part::new(Source::Reader {
            reader: Box::new(reader),
            len,
        })
    }

    /// The file at `path`, opened now and streamed when the form is sent; its file name is
    /// the path's last component and its content type is guessed from the extension
    /// (`png`, `jpg`, `webp`, `wav`, `mp4`, … else `application/octet-stream`). Both can be
    /// replaced.
    ///
    /// # Errors
    /// When the file cannot be opened or is not a regular file.
    pub fn file(path: impl AsRef<Path>) -> io::Result<Part> {
        let path = path.as_ref();
        let (file, len) = open_file(path).map_err(io::Error::other)?;
        let mut part = Part::reader(file, len);
        part.file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        part.content_type = Some(guess_content_type(path).to_string());
        Ok(part)
    }

    /// The file name sent with the part (which makes it a file part).
    pub fn file_name(mut self, name: &str) -> Part {
        self.file_name = Some(name.to_string());
        self
    }

    /// The part's content type (checked when the form is sent: a valid header value).
    pub fn content_type(mut self, content_type: &str) -> Part {
        self.content_type = Some(content_type.to_string());
        self
    }

    fn new(source: Source) -> Part {
        Part {
            source,
            file_name: None,
            content_type: None,
        }
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field("len", &self.source.len())
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// `multipart/form-data` bodies.
impl RequestBuilder {
    /// Sends `form` as a `multipart/form-data` body and reads the whole response. The body
    /// is streamed with its `Content-Length` computed up front; its `Content-Type` (with the
    /// boundary) replaces any the caller set. Timeouts, progress and the length check are
    /// those of [`RequestBuilder::send_reader`] (the whole body, and each part from a reader
    /// or file, must have its stated length).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`], before any connection is taken, for a part's content type
    /// that is not a valid header value; then as [`RequestBuilder::send_reader`].
    pub fn send_multipart(self, form: Form) -> Result<Response, Error> {
        let (this, mut body) = self.multipart(form)?;
        let len = body.len;
        this.send_payload(Payload::Reader {
            reader: &mut body,
            len,
            what: Cow::Borrowed("the multipart form"),
        })
    }

    /// Sends `form` as [`RequestBuilder::send_multipart`] does, and returns the response
    /// with its body unread, as [`RequestBuilder::stream`] does (its stream cap, its wait
    /// for a turn); the form is sent once, never again on a fresh connection.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// use backend_pool::{Form, Part};
    ///
    /// let form = Form::new().part("file", Part::file("voice.wav")?);
    /// let mut reply = manager.http("rvc")?.post("/convert_file").stream_multipart(form)?;
    /// let mut wav = Vec::new();
    /// std::io::copy(&mut reply, &mut wav)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`RequestBuilder::send_multipart`] and [`RequestBuilder::stream`].
    pub fn stream_multipart(self, form: Form) -> Result<StreamingResponse, Error> {
        let (this, mut body) = self.multipart(form)?;
        let len = body.len;
        this.stream_payload(Payload::Reader {
            reader: &mut body,
            len,
            what: Cow::Borrowed("the multipart form"),
        })
    }

    /// The form encoded (checked: an invalid one is counted and costs no connection), and
    /// this request with its `Content-Type` (the boundary) in place of any the caller set.
    fn multipart(mut self, form: Form) -> Result<(RequestBuilder, Encoded), Error> {
        let mut body = match form.encode() {
            Ok(body) => body,
            Err(why) => return Err(self.invalid(why)),
        };
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        let content_type = std::mem::take(&mut body.content_type);
        Ok((self.header("Content-Type", &content_type), body))
    }
}

/// A form as it is sent: heads and CRLFs in memory, parts from their readers, in order.
struct Encoded {
    segments: Vec<Segment>,
    /// The segment being read.
    at: usize,
    len: u64,
    content_type: String,
}

enum Segment {
    Bytes(io::Cursor<Vec<u8>>),
    Reader(Exact<Box<dyn Read + Send>>),
}

impl Read for Encoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(segment) = self.segments.get_mut(self.at) {
            let n = match segment {
                Segment::Bytes(bytes) => bytes.read(buf)?,
                Segment::Reader(reader) => reader.read(buf)?,
            };
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // Done with it: free a part's memory (or close its file) as soon as it is sent.
            self.segments[self.at] = Segment::Bytes(io::Cursor::new(Vec::new()));
            self.at += 1;
        }
        Ok(0)
    }
}

/// Appends `name` with `"`, CR and LF percent-encoded (WHATWG HTML).
fn escape_into(out: &mut String, name: &str) {
    for c in name.chars() {
        match c {
            '"' => out.push_str("%22"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
}

/// A boundary no part is expected to contain: 128 random bits in hex.
fn boundary() -> String {
    use std::fmt::Write;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut out = String::from("----backend-pool-");
    for half in 0u8..2 {
        // Each `RandomState` is keyed from the OS's randomness (then stepped per instance).
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u8(half);
        let _ = write!(out, "{:016x}", h.finish());
    }
    out
}

/// A content type from a file's extension, for the media an add-on uploads.
fn guess_content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "exr" => "image/x-exr",
        "tif" | "tiff" => "image/tiff",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "json" => "application/json",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(form: Form) -> (Vec<u8>, u64, String) {
        let mut body = form.encode().unwrap();
        let mut out = Vec::new();
        body.read_to_end(&mut out).unwrap();
        (out, body.len, body.content_type)
    }

    #[test]
    fn a_form_is_encoded_with_its_exact_length() {
        let form = Form::new()
            .text("subfolder", "a b")
            .part("image", Part::bytes(&b"\x89PNG\0"[..]).file_name("x.png"))
            .part(
                "mask",
                Part::reader(&b"01234"[..], 5).content_type("image/png"),
            );
        let (bytes, len, content_type) = encode(form);
        assert_eq!(bytes.len() as u64, len);
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        assert_eq!(boundary.len(), 17 + 32);
        let expected = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"subfolder\"\r\n\r\na b\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n\u{89}PNG\0\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"mask\"\r\n\
             Content-Type: image/png\r\n\r\n01234\r\n--{b}--\r\n",
            b = boundary
        );
        let expected: Vec<u8> = expected
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap())
            .collect();
        assert_eq!(bytes, expected);
        let (empty, len, _) = encode(Form::new());
        assert_eq!((empty.len(), len), (2 + 49 + 4, 55));
        assert!(empty.starts_with(b"------backend-pool-") && empty.ends_with(b"--\r\n"));
        assert_ne!(boundary, super::boundary(), "two forms, one boundary");
    }
}
