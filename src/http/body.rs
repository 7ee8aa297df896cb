//! Request bodies streamed from a reader of known length: the length check ([`Exact`]), the
//! upload progress callback ([`Progress`]) and the deadlines a slow reader is held to
//! ([`Upload`]).
//!
//! A body from a reader is sent with `Content-Length`, read in pieces of at most
//! `output_buffer_bytes` straight into the connection's output buffer: it is never held
//! whole in memory. Its length must be right: a reader that ends early would leave the
//! server waiting for bytes that never come, one with more bytes would leave them unread on
//! the connection. Either one, or a reader that fails, stops the request mid-body with
//! [`Error::RequestBody`](crate::Error::RequestBody); ureq then drops the connection, and the
//! pool closes the item, so a server still waiting mid-body never sees another request on it.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use super::request::RequestBuilder;
use super::send::Payload;
use super::Response;
use crate::error::Error;

/// The longest a [`Progress`] callback waits between two calls while bytes flow.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Reads exactly `len` bytes from `inner`: an early end is an `UnexpectedEof` error, a byte
/// past `len` an `InvalidData` error (the reader is read once more at its end to check it
/// ends there). `what` names the reader in those errors.
pub(super) struct Exact<R> {
    inner: R,
    len: u64,
    sent: u64,
    what: Cow<'static, str>,
}

impl<R: Read> Exact<R> {
    pub(super) fn new(inner: R, len: u64, what: impl Into<Cow<'static, str>>) -> Exact<R> {
        let what = what.into();
        Exact {
            inner,
            len,
            sent: 0,
            what,
        }
    }

    /// Bytes yielded so far.
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// The length announced.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Checks that the reader has nothing past its length (for a length of 0, before
    /// anything is sent: ureq reads nothing from an empty body).
    pub(super) fn check_end(&mut self) -> io::Result<()> {
        let mut extra = [0u8; 1];
        loop {
            match self.inner.read(&mut extra) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} has more than the {} bytes announced",
                            self.what, self.len
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.sent;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => break result?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ended after {} of the {} bytes announced",
                    self.what, self.sent, self.len
                ),
            ));
        }
        // A reader that claims more than it was given is broken: never trust it past `want`.
        let n = n.min(want);
        self.sent += n as u64;
        if self.sent == self.len {
            self.check_end()?;
        }
        Ok(n)
    }
}

/// An upload progress callback: `(sent, total)`, at most every `PROGRESS_EVERY` while bytes
/// flow, and once at the end (`sent == total`).
pub(super) struct Progress {
    callback: Box<dyn FnMut(u64, u64) + Send>,
    last: Option<Instant>,
}

impl Progress {
    pub(super) fn new(callback: Box<dyn FnMut(u64, u64) + Send>) -> Progress {
        Progress {
            callback,
            last: None,
        }
    }

    /// Reports `sent` of `total` if the interval has passed since the last call (or the
    /// upload started), or if it is the end.
    fn tick(&mut self, sent: u64, total: u64, now: Instant) {
        let last = *self.last.get_or_insert(now);
        if sent == total || now.saturating_duration_since(last) >= PROGRESS_EVERY {
            self.last = Some(now);
            (self.callback)(sent, total);
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

/// Why an upload stopped on the caller's side.
#[derive(Debug)]
pub(super) enum Fault {
    /// The reader failed, or its length was wrong.
    Reader(io::Error),
    /// The total deadline passed, or one read of the reader took longer than the stall
    /// limit: `after` is the limit that was exceeded.
    TimedOut { after: Duration },
}

/// A request body from a reader, as ureq reads it: exactly its length, with progress, held
/// to the request's deadlines. A failure is kept in `fault` for the request to report (ureq
/// only sees an I/O error).
///
/// A reader blocked in `read` cannot be interrupted from here: the deadlines are checked
/// after each read returns.
pub(super) struct Upload<'a> {
    body: Exact<&'a mut dyn Read>,
    progress: Option<&'a mut Progress>,
    /// The request's total deadline and its length.
    deadline: Option<(Instant, Duration)>,
    /// The longest one read of the reader may take.
    stall: Duration,
    pub(super) fault: Option<Fault>,
}

impl<'a> Upload<'a> {
    pub(super) fn new(
        body: Exact<&'a mut dyn Read>,
        progress: Option<&'a mut Progress>,
        deadline: Option<(Instant, Duration)>,
        stall: Duration,
    ) -> Upload<'a> {
        Upload {
            body,
            progress,
            deadline,
            stall,
            fault: None,
        }
    }

    /// Bytes read so far, and the length.
    pub(super) fn sent_of(&self) -> (u64, u64) {
        (self.body.sent(), self.body.len())
    }

    fn fail(&mut self, fault: Fault) -> io::Error {
        let e = match &fault {
            Fault::Reader(e) => io::Error::new(e.kind(), e.to_string()),
            Fault::TimedOut { .. } => io::ErrorKind::TimedOut.into(),
        };
        self.fault = Some(fault);
        e
    }
}

impl Read for Upload<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fault.is_some() {
            return Err(io::ErrorKind::Other.into());
        }
        let start = Instant::now();
        let n = match self.body.read(buf) {
            Ok(n) => n,
            Err(e) => return Err(self.fail(Fault::Reader(e))),
        };
        let now = Instant::now();
        if let Some((at, total)) = self.deadline {
            if now >= at {
                return Err(self.fail(Fault::TimedOut { after: total }));
            }
        }
        if now.saturating_duration_since(start) > self.stall {
            let after = self.stall;
            return Err(self.fail(Fault::TimedOut { after }));
        }
        if let Some(progress) = self.progress.as_deref_mut() {
            progress.tick(self.body.sent(), self.body.len(), now);
        }
        Ok(n)
    }
}

/// Bodies from a reader or a file.
impl RequestBuilder {
    /// Sends `len` bytes read from `reader` as the body, with `Content-Length: len`, and
    /// reads the whole response. The body is streamed: read in pieces of at most
    /// `output_buffer_bytes` as the connection takes them, never held whole in memory; see
    /// [`RequestBuilder::upload_progress`] to follow it. Set a `Content-Type` header if the
    /// server wants one.
    ///
    /// Sending the body is bounded by the request's timeouts: at most `request_timeout_ms`
    /// without progress (a write the server does not take, or one read of `reader`: a read
    /// blocked inside `reader` is not interrupted, it is checked when it returns), and
    /// [`RequestBuilder::total_timeout`] if set. The body is read once: it is never sent a
    /// second time, not even after a stale keep-alive connection.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// let wav = std::fs::File::open("voice.wav")?;
    /// let len = wav.metadata()?.len();
    /// let converted = manager
    ///     .http("rvc")?
    ///     .post("/convert_file")
    ///     .header("Content-Type", "audio/wav")
    ///     .send_reader(wav, len)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`RequestBuilder::call`], plus [`Error::RequestBody`] when `reader` fails or
    /// yields fewer or more than `len` bytes: the request stops mid-body and its connection
    /// is closed, never reused. A slow reader past a deadline is an [`Error::Timeout`] of
    /// phase `send`.
    pub fn send_reader(self, reader: impl Read, len: u64) -> Result<Response, Error> {
        self.send_read(reader, len, "the body's reader")
    }

    /// Sends the file at `path` as the body (its length as `Content-Length`), streamed as
    /// [`RequestBuilder::send_reader`] does; the file is opened before a connection is
    /// taken.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`], before any connection is taken, when the file cannot be
    /// opened or is not a regular file; then as [`RequestBuilder::send_reader`] (a file that
    /// changes length while it is sent is an [`Error::RequestBody`]).
    pub fn send_file(self, path: impl AsRef<Path>) -> Result<Response, Error> {
        let path = path.as_ref();
        let (file, len) = match open_file(path) {
            Ok(opened) => opened,
            Err(why) => return Err(self.invalid(why)),
        };
        let what = format!("the file '{}'", path.display());
        self.send_read(file, len, what)
    }

    fn send_read(
        self,
        mut reader: impl Read,
        len: u64,
        what: impl Into<Cow<'static, str>>,
    ) -> Result<Response, Error> {
        let what = what.into();
        if len == 0 {
            let mut body = Exact::new(&mut reader, 0, what);
            // Nothing is read from an empty body while it is sent: check it is empty now.
            if let Err(source) = body.check_end() {
                let err = Error::RequestBody {
                    service: self.pool.core.name.clone(),
                    sent: 0,
                    len: 0,
                    source,
                };
                self.pool.counters().error(err.class());
                return Err(err);
            }
            return self.send_bytes(&[]);
        }
        self.send_payload(Payload::Reader {
            reader: &mut reader,
            len,
            what,
        })
    }
}

/// Opens a file to send: the file and its length, or why not.
///
/// What the path names is looked at before it is opened: Windows refuses to open a
/// directory ("Access denied"), which would hide the real problem. The opened file is looked
/// at again (the path may have changed in between).
pub(super) fn open_file(path: &Path) -> Result<(std::fs::File, u64), String> {
    let cannot = |e: io::Error| format!("cannot read the file '{}': {e}", path.display());
    let not_a_file = |meta: &std::fs::Metadata| {
        let what = if meta.is_dir() {
            "a directory, not a regular file"
        } else {
            "not a regular file"
        };
        format!("'{}' is {what}", path.display())
    };
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(not_a_file(&meta));
        }
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_a_file(&meta));
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `r` to its end in pieces of `chunk`.
    fn drain(mut r: impl Read, chunk: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            match r.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn an_exact_reader_yields_its_length_and_refuses_a_wrong_one() {
        let data = b"0123456789";
        assert_eq!(drain(Exact::new(&data[..], 10, "r"), 3).unwrap(), data);
        let short = drain(Exact::new(&data[..], 12, "r"), 4).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            short.to_string(),
            "r ended after 10 of the 12 bytes announced"
        );
        let long = drain(Exact::new(&data[..], 9, "r"), 4).unwrap_err();
        assert_eq!(long.kind(), io::ErrorKind::InvalidData);
        assert_eq!(long.to_string(), "r has more than the 9 bytes announced");
        assert_eq!(drain(Exact::new(&data[..0], 0, "r"), 4).unwrap(), b"");
    }

    /// A reader that says it read more than the buffer it was lent.
    struct Liar;
    impl Read for Liar {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 10)
        }
    }

    #[test]
    fn a_reader_that_overstates_a_read_is_held_to_the_buffer() {
        let mut exact = Exact::new(Liar, 100, "liar");
        let mut buf = [0u8; 8];
        assert_eq!(exact.read(&mut buf).unwrap(), 8);
        assert_eq!(exact.sent(), 8);
    }

    #[test]
    fn progress_is_reported_at_most_every_interval_and_at_the_end() {
        let calls = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&calls);
        let mut progress = Progress::new(Box::new(move |s, t| seen.lock().push((s, t))));
        let t0 = Instant::now();
        progress.tick(10, 100, t0);
        progress.tick(20, 100, t0 + PROGRESS_EVERY / 2);
        progress.tick(30, 100, t0 + PROGRESS_EVERY);
        progress.tick(40, 100, t0 + PROGRESS_EVERY + PROGRESS_EVERY / 2);
        progress.tick(100, 100, t0 + PROGRESS_EVERY + PROGRESS_EVERY / 2);
        assert_eq!(*calls.lock(), [(30, 100), (100, 100)]);
    }

    #[test]
    fn an_upload_keeps_the_reader_fault_and_the_deadline_that_passed() {
        let mut data = &b"abc"[..];
        let body = Exact::new(&mut data as &mut dyn Read, 5, "r");
        let mut up = Upload::new(body, None, None, Duration::from_secs(60));
        assert!(drain(&mut up, 2).is_err());
        assert!(
            matches!(&up.fault, Some(Fault::Reader(e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
        assert_eq!(up.sent_of(), (3, 5));

        let mut data = &b"abc"[..];
        let body = Exact::new(&mut data as &mut dyn Read, 3, "r");
        let past = Some((Instant::now(), Duration::from_millis(300)));
        let mut up = Upload::new(body, None, past, Duration::from_secs(60));
        assert!(drain(&mut up, 2).is_err());
        assert!(
            matches!(up.fault, Some(Fault::TimedOut { after }) if after == Duration::from_millis(300))
        );
    }
}
