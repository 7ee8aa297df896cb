//! Server-sent events: the one parser of `text/event-stream` bodies (LiteLLM's streamed
//! completions, Gradio's job results), over any [`BufRead`], following the WHATWG HTML
//! standard's rules ("Server-sent events", "Parsing an event stream"):
//!
//! * Lines end in CR, LF or CRLF, also mixed and split across reads; one leading UTF-8 byte
//!   order mark is stripped; invalid UTF-8 becomes U+FFFD.
//! * A line is `field: value` (one space after the colon is removed, only one), or a field
//!   name alone (an empty value). The fields are `event` (the type; `"message"` when none),
//!   `data` (several lines are joined with `\n`), `id` (ignored if it holds a NUL; it persists
//!   for the events after it until another `id` changes it), and `retry` (ASCII digits only:
//!   the reconnection time in milliseconds). Other fields are ignored; names are
//!   case-sensitive.
//! * A blank line dispatches the event. An event with no `data` line is not dispatched, and
//!   one the stream ends in before its blank line is discarded.
//! * A line starting with `:` is a comment. Servers send them as heartbeats, to keep a quiet
//!   connection open: they are not events, so the iterator skips them and counts them
//!   ([`Parser::heartbeats`]). A caller has nothing to do on one: any byte that arrives,
//!   heartbeat or not, already restarts the stream's read timeout. (Gradio's own heartbeats
//!   are events, `event: heartbeat`, and are yielded as such.)
//!
//! A hostile or broken server must not make the parser allocate without bound: a line, and the
//! lines of one event together, are held to [`Parser::max_event_bytes`]
//! ([`DEFAULT_MAX_EVENT_BYTES`] unless set). Past it the parser fails with an error naming
//! the limit, and yields nothing more.
//!
//! ```
//! use backend_pool::sse::Events;
//!
//! let body: &[u8] = b": keep-alive\r\nevent: progress\r\ndata: {\"step\": 1}\r\n\r\n\
//!                     data: line one\ndata: line two\nid: 7\n\n";
//! let events = Events::new(body).collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(events[0].event, "progress");
//! assert_eq!(events[0].data, r#"{"step": 1}"#);
//! assert_eq!(events[1].event, "message");
//! assert_eq!(events[1].data, "line one\nline two");
//! assert_eq!(events[1].id, "7");
//! # Ok::<(), backend_pool::sse::Error>(())
//! ```
//!
//! On a stream from the pool, [`StreamingResponse::events`](crate::StreamingResponse::events).

use std::fmt;
use std::io::{self, BufRead};
use std::iter::FusedIterator;
use std::mem;
use std::time::Duration;

/// The bytes a line, and the lines of one event together, may take unless
/// [`Parser::max_event_bytes`] sets another limit: 8 MiB, far above any completion chunk or
/// Gradio result, far below what would hurt Blender.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The event type: the `event` field, or `"message"` when the event has none (or an empty
    /// one).
    pub event: String,
    /// The `data` lines, joined with `\n`.
    pub data: String,
    /// The last event ID: the value of the latest `id` field so far in the stream, in this
    /// event or an earlier one (as a client sends it back in `Last-Event-ID`); empty when
    /// there was none, or the latest was empty.
    pub id: String,
    /// The reconnection time a `retry` field in this event's lines set, if any
    /// ([`Parser::retry`] keeps the latest in the stream).
    pub retry: Option<Duration>,
}

/// Why the events of a stream stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading the stream failed (a read timeout is `ErrorKind::TimedOut`).
    Io(io::Error),
    /// A line is longer than the limit.
    LineTooLong {
        /// The limit, in bytes ([`Parser::max_event_bytes`]).
        limit: usize,
    },
    /// The `data` and `event` lines of one event are longer, together, than the limit.
    EventTooLarge {
        /// The limit, in bytes ([`Parser::max_event_bytes`]).
        limit: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(_) => f.write_str("reading a server-sent event stream failed"),
            Error::LineTooLong { limit } => write!(
                f,
                "a server-sent event stream has a line longer than {limit} bytes \
                 (max_event_bytes): the stream was abandoned"
            ),
            Error::EventTooLarge { limit } => write!(
                f,
                "a server-sent event is longer than {limit} bytes (max_event_bytes): the stream \
                 was abandoned"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    /// An I/O error as it was; a limit as `ErrorKind::InvalidData`.
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// The parser's state, apart from the reader: what [`Events`] holds beside its reader, and
/// what a caller keeps when the reader is shared (read between events by other means).
#[derive(Clone, Debug)]
pub struct Parser {
    max_event_bytes: usize,
    /// The line read so far, when a read ended inside it.
    line: Vec<u8>,
    /// The last line ended with CR: an LF that comes next belongs to it.
    after_cr: bool,
    /// The first line is done (a byte order mark is stripped only from it).
    started: bool,
    /// The event type buffer.
    event: String,
    /// The data buffer: each `data` value followed by `\n`.
    data: String,
    last_id: String,
    /// A `retry` in the current event's lines.
    event_retry: Option<Duration>,
    retry: Option<Duration>,
    heartbeats: u64,
    /// An error ended the stream: nothing more is read.
    failed: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            line: Vec::new(),
            after_cr: false,
            started: false,
            event: String::new(),
            data: String::new(),
            last_id: String::new(),
            event_retry: None,
            retry: None,
            heartbeats: 0,
            failed: false,
        }
    }

    /// Sets the limit on the bytes of one line, and of the `data` and `event` lines of one
    /// event together (builder style). Defaults to [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn max_event_bytes(mut self, limit: usize) -> Parser {
        self.max_event_bytes = limit;
        self
    }

    /// The last event ID so far (empty when none): what a reconnecting client sends as
    /// `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// The latest reconnection time the stream set (`retry`), if any; also from the lines of
    /// an event that was not dispatched.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The comment lines (heartbeats) read so far.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats
    }

    /// Reads `reader` up to the next event: `Ok(None)` at the end of the stream (an event the
    /// stream ends in is discarded). An interrupted read is resumed.
    ///
    /// # Errors
    /// [`Error::Io`] when reading fails, [`Error::LineTooLong`] or [`Error::EventTooLarge`]
    /// past the limit. After an error the parser's place in the stream is lost: every later
    /// call returns `Ok(None)`.
    pub fn next_event<R: BufRead + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<Event>, Error> {
        if self.failed {
            return Ok(None);
        }
        let next = self.read_event(reader);
        if next.is_err() {
            self.failed = true;
            self.line = Vec::new();
            self.data = String::new();
        }
        next
    }

    fn read_event<R: BufRead + ?Sized>(&mut self, reader: &mut R) -> Result<Option<Event>, Error> {
        loop {
            let buf = match reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            };
            if buf.is_empty() {
                self.discard();
                return Ok(None);
            }
            let start = usize::from(mem::take(&mut self.after_cr) && buf[0] == b'\n');
            let Some(len) = buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.extend_line(&buf[start..])?;
                let n = buf.len();
                reader.consume(n);
                continue;
            };
            let end = start + len;
            self.after_cr = buf[end] == b'\r';
            let event = if self.line.is_empty() {
                self.check_line(len)?;
                self.line_done(&buf[start..end])?
            } else {
                self.extend_line(&buf[start..end])?;
                let line = mem::take(&mut self.line);
                let event = self.line_done(&line);
                self.line = line;
                self.line.clear();
                event?
            };
            reader.consume(end + 1);
            if event.is_some() {
                return Ok(event);
            }
        }
    }

    fn check_line(&self, len: usize) -> Result<(), Error> {
        if len > self.max_event_bytes {
            return Err(Error::LineTooLong {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.check_line(self.line.len() + bytes.len())?;
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// One whole line, without its line ending.
    fn line_done(&mut self, mut line: &[u8]) -> Result<Option<Event>, Error> {
        if !mem::replace(&mut self.started, true) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            self.heartbeats += 1;
            return Ok(None);
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"event" => {
                self.check_event(value.len())?;
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            b"data" => {
                self.check_event(value.len() + 1)?;
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.push_str(&String::from_utf8_lossy(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().fold(0u64, |ms, d| {
                    ms.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(Duration::from_millis(ms));
                self.event_retry = self.retry;
            }
            _ => {}
        }
        Ok(None)
    }

    /// The event buffers may grow by `more` bytes.
    fn check_event(&self, more: usize) -> Result<(), Error> {
        if self.event.len() + self.data.len() + more > self.max_event_bytes {
            return Err(Error::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// A blank line: the event, if it has data; the buffers are reset either way.
    fn dispatch(&mut self) -> Option<Event> {
        let retry = self.event_retry.take();
        if self.data.is_empty() {
            self.event.clear();
            return None;
        }
        self.data.pop(); // the `\n` after the last line
        let event = match self.event.is_empty() {
            true => "message".to_string(),
            false => mem::take(&mut self.event),
        };
        Some(Event {
            event,
            data: mem::take(&mut self.data),
            id: self.last_id.clone(),
            retry,
        })
    }

    /// The end of the stream: a partial line and an undispatched event are dropped.
    fn discard(&mut self) {
        self.line.clear();
        self.after_cr = false;
        self.event.clear();
        self.data.clear();
        self.event_retry = None;
    }
}

/// The events of a stream, as an iterator: a reader and its [`Parser`]. It ends at the end of
/// the stream, and after the first error.
///
/// ```
/// use backend_pool::sse::{Error, Events};
///
/// let hostile = std::io::BufReader::new(std::io::repeat(b'x')); // one endless line
/// let mut events = Events::new(hostile).max_event_bytes(64 * 1024);
/// assert!(matches!(events.next(), Some(Err(Error::LineTooLong { limit: 65536 }))));
/// assert!(events.next().is_none());
/// ```
#[derive(Debug)]
pub struct Events<R> {
    reader: R,
    parser: Parser,
}

impl<R: BufRead> Events<R> {
    /// The events of `reader`, read from where it is.
    pub fn new(reader: R) -> Events<R> {
        Events {
            reader,
            parser: Parser::new(),
        }
    }

    /// Sets the limit on a line and on an event (builder style): see
    /// [`Parser::max_event_bytes`]. Defaults to [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn max_event_bytes(mut self, limit: usize) -> Events<R> {
        self.parser = self.parser.max_event_bytes(limit);
        self
    }

    /// The parser: the last event ID, the reconnection time, the heartbeats seen.
    pub fn parser(&self) -> &Parser {
        &self.parser
    }

    /// The reader.
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    /// The reader, to read the rest of the stream by other means. The bytes of a line the
    /// parser had begun (when a read ended inside it) are not in it.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

impl<R: BufRead> Iterator for Events<R> {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.parser.next_event(&mut self.reader).transpose()
    }
}

impl<R: BufRead> FusedIterator for Events<R> {}

#[cfg(test)]
mod tests;
