//! Reading a stream's body: lines (LF, or LF / CRLF / CR), chunks, server-sent events, and
//! the Python iterators over them (`iter_bytes`, `iter_lines`, `iter_sse` with
//! `ServerSentEvent`). Each step runs through [`PyStreamingResponse::with_reader`], detached
//! from the interpreter.

use std::io::{self, BufRead, Read};

use backend_pool::sse::DEFAULT_MAX_EVENT_BYTES;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::errors::LineTooLong;
use crate::json_loads;
use crate::stream::PyStreamingResponse;

/// The longest line `iter_lines()`, `readline()` and line iteration return; a longer one
/// raises `TooLarge` (a server must not make Blender allocate without bound). The SSE
/// parser's limit on an event, for the same reason.
const MAX_LINE_BYTES: usize = DEFAULT_MAX_EVENT_BYTES;
/// The largest chunk `iter_bytes()` yields without a `chunk_size`.
const CHUNK_BYTES: usize = 64 * 1024;

/// One line with its `\n` (the last may have none); None at the end.
pub(crate) fn binary_line(body: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = match body.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (n, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + n > MAX_LINE_BYTES {
            return Err(LineTooLong::error(MAX_LINE_BYTES));
        }
        line.extend_from_slice(&buf[..n]);
        body.consume(n);
        if done {
            return Ok(Some(line));
        }
    }
}

/// One line without its ending, which is LF, CRLF or CR (a CRLF split across reads is one
/// ending); None at the end.
fn text_line(body: &mut impl BufRead, after_cr: &mut bool) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut started = false;
    loop {
        let buf = match body.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            *after_cr = false;
            return Ok(started.then_some(line));
        }
        let skip = usize::from(std::mem::take(after_cr) && buf[0] == b'\n');
        let rest = &buf[skip..];
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(at) => {
                if line.len() + at > MAX_LINE_BYTES {
                    return Err(LineTooLong::error(MAX_LINE_BYTES));
                }
                line.extend_from_slice(&rest[..at]);
                *after_cr = rest[at] == b'\r';
                body.consume(skip + at + 1);
                return Ok(Some(line));
            }
            None => {
                if line.len() + rest.len() > MAX_LINE_BYTES {
                    return Err(LineTooLong::error(MAX_LINE_BYTES));
                }
                started |= !rest.is_empty();
                line.extend_from_slice(rest);
                let n = buf.len();
                body.consume(n);
            }
        }
    }
}

/// Up to `size` bytes (all that is left for None), fewer only at the end.
pub(crate) fn read_up_to(body: &mut impl Read, size: Option<u64>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match size {
        None => body.read_to_end(&mut buf)?,
        Some(n) => body.take(n).read_to_end(&mut buf)?,
    };
    Ok(buf)
}

/// Iterator over a stream's body as `bytes`.
#[pyclass(frozen, module = "backend_pool")]
pub(crate) struct ByteChunks {
    stream: Py<PyStreamingResponse>,
    size: Option<usize>,
}

impl ByteChunks {
    pub(crate) fn new(stream: Py<PyStreamingResponse>, size: Option<usize>) -> Self {
        ByteChunks { stream, size }
    }
}

#[pymethods]
impl ByteChunks {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let size = self.size;
        let stream = self.stream.get();
        let chunk = match size {
            Some(n) => stream.with_reader(py, |r| read_up_to(&mut r.body, Some(n as u64)))?,
            None => stream.with_reader(py, |r| {
                // One read: what the connection has now (after what is buffered), at most
                // CHUNK_BYTES.
                r.chunk.resize(CHUNK_BYTES, 0);
                let n = loop {
                    match r.body.read(&mut r.chunk) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other?,
                    }
                };
                Ok(r.chunk[..n].to_vec())
            })?,
        };
        Ok((!chunk.is_empty()).then(|| PyBytes::new(py, &chunk)))
    }
}

/// Iterator over a stream's lines as `str`.
#[pyclass(frozen, module = "backend_pool")]
pub(crate) struct Lines {
    stream: Py<PyStreamingResponse>,
}

impl Lines {
    pub(crate) fn new(stream: Py<PyStreamingResponse>) -> Self {
        Lines { stream }
    }
}

#[pymethods]
impl Lines {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let line = self
            .stream
            .get()
            .with_reader(py, |r| text_line(&mut r.body, &mut r.after_cr))?;
        Ok(line.map(|l| String::from_utf8_lossy(&l).into_owned()))
    }
}

/// Iterator over a stream's server-sent events.
#[pyclass(frozen, module = "backend_pool")]
pub(crate) struct Events {
    stream: Py<PyStreamingResponse>,
}

impl Events {
    pub(crate) fn new(stream: Py<PyStreamingResponse>) -> Self {
        Events { stream }
    }
}

#[pymethods]
impl Events {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyServerSentEvent>> {
        let stream = self.stream.get();
        let next = stream.with_reader(py, |r| Ok(r.parser.next_event(&mut r.body)?))?;
        Ok(next.map(|ev| PyServerSentEvent {
            event: ev.event,
            data: ev.data,
            id: ev.id,
            retry: ev
                .retry
                .map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
            service: stream.service_name().to_string(),
        }))
    }
}

/// One server-sent event, as httpx-sse's `ServerSentEvent`.
#[pyclass(frozen, name = "ServerSentEvent", module = "backend_pool")]
pub(crate) struct PyServerSentEvent {
    event: String,
    data: String,
    id: String,
    retry: Option<u64>,
    service: String,
}

#[pymethods]
impl PyServerSentEvent {
    /// The event type: the `event` field, or `"message"` when the event has none.
    #[getter]
    fn event(&self) -> &str {
        &self.event
    }

    /// The `data` lines, joined with `"\n"`.
    #[getter]
    fn data(&self) -> &str {
        &self.data
    }

    /// The last event ID so far in the stream (an `id` field of this event or an earlier
    /// one); `""` when there is none.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// The reconnection time in milliseconds a `retry` field of this event set, or None.
    #[getter]
    fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// `data` decoded as JSON; raises `JsonError` (a `ValueError`).
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_loads(py, PyString::new(py, &self.data).as_any(), &self.service)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let repr = |s: &str| -> PyResult<String> { Ok(PyString::new(py, s).repr()?.to_string()) };
        let retry = self.retry.map_or("None".to_string(), |r| r.to_string());
        Ok(format!(
            "ServerSentEvent(event={}, data={}, id={}, retry={retry})",
            repr(&self.event)?,
            repr(&self.data)?,
            repr(&self.id)?
        ))
    }
}
