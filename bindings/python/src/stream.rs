//! `StreamingResponse`: a response whose body is read as it arrives (its iterators are in
//! `read.rs`).
//!
//! Every read runs detached from the interpreter, on the stream's [`Slot`]: one thread reads
//! at a time; `cancel()` and `close()` work from any thread without waiting for it (the
//! stream's own token, linked to the caller's if any, sits outside the lock the reader holds).

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use backend_pool::sse::Parser;
use backend_pool::StreamingResponse;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::cancel::CallToken;
use crate::errors::stream_io;
use crate::read::{binary_line, read_up_to, ByteChunks, Events, Lines};
use crate::response::{find_header, headers_object, reason_phrase, status_error, PyResponse};
use crate::slot::{closed_suffix, Slot};

/// What `raise_for_status()` reads of an error's body for its `.response`.
const STATUS_BODY_BYTES: u64 = 1024 * 1024;

/// The body, publishing the core's count of the bytes read from it
/// (`StreamingResponse::bytes_read`) after each read, for `num_bytes_downloaded` to read
/// without the slot's lock (a read may hold it for minutes).
pub(crate) struct StreamBody {
    stream: StreamingResponse,
    /// Shared with the pyclass.
    read: Arc<AtomicU64>,
}

impl StreamBody {
    fn publish(&self) {
        self.read.store(self.stream.bytes_read(), Relaxed);
    }
}

impl Read for StreamBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.publish();
        Ok(n)
    }
}

impl BufRead for StreamBody {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.stream.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.stream.consume(amt);
        self.publish();
    }
}

/// The body and what reading it keeps between calls, under the slot's lock.
pub(crate) struct Reader {
    pub body: StreamBody,
    /// The core's SSE parser (`backend_pool::sse`): its state (a line begun, the last event
    /// ID) lives here between calls, shared by every `iter_sse()` of the stream.
    /// `StreamingResponse::events()` borrows the stream for one iterator's life, which a
    /// Python iterator cannot hold across calls.
    pub parser: Parser,
    /// The last line `iter_lines()` returned ended in CR: an LF next belongs to it.
    pub after_cr: bool,
    /// `iter_bytes()`'s buffer, reused.
    pub chunk: Vec<u8>,
}

/// A response whose body is read as it arrives. Holds its pooled connection until closed
/// (or exhausted and closed, or garbage-collected).
#[pyclass(frozen, name = "StreamingResponse", module = "backend_pool")]
pub(crate) struct PyStreamingResponse {
    status: u16,
    headers: Vec<(String, String)>,
    headers_object: PyOnceLock<Py<PyAny>>,
    service: String,
    /// `METHOD /path?query`, for the status error's message.
    line: String,
    downloaded: Arc<AtomicU64>,
    cancel: CallToken,
    inner: Arc<Slot<Reader>>,
}

impl PyStreamingResponse {
    /// `cancel` is the token the request was sent with.
    pub(crate) fn new(
        service: &str,
        line: String,
        r: StreamingResponse,
        cancel: CallToken,
    ) -> Self {
        let status = r.status();
        let headers = r.headers().to_vec();
        let downloaded = Arc::new(AtomicU64::new(r.bytes_read()));
        let reader = Reader {
            body: StreamBody {
                stream: r,
                read: Arc::clone(&downloaded),
            },
            parser: Parser::new(),
            after_cr: false,
            chunk: Vec::new(),
        };
        // A cancelled stream's connection is closed when it drops (the core's `Drop`).
        let inner = Arc::new(Slot::new(reader, drop));
        let slot = Arc::downgrade(&inner);
        cancel.on_cancel(move || {
            if let Some(slot) = slot.upgrade() {
                slot.close(drop, || ());
            }
        });
        PyStreamingResponse {
            status,
            headers,
            headers_object: PyOnceLock::new(),
            service: service.to_string(),
            line,
            downloaded,
            cancel,
            inner,
        }
    }

    /// The service that answered.
    pub(crate) fn service_name(&self) -> &str {
        &self.service
    }

    /// Runs `f` on the open stream with the interpreter detached. A cancelled stream is
    /// closed after its read fails.
    pub(crate) fn with_reader<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Reader) -> io::Result<T> + Send,
    ) -> PyResult<T> {
        let cancel = &self.cancel;
        let result = py.detach(|| self.inner.use_with(f, || cancel.is_cancelled()));
        match result {
            None => Err(PyValueError::new_err("I/O operation on a closed stream")),
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(stream_io(&self.service, e)),
        }
    }

    fn next_line(&self, py: Python<'_>) -> PyResult<Option<Vec<u8>>> {
        self.with_reader(py, |r| binary_line(&mut r.body))
    }
}

#[pymethods]
impl PyStreamingResponse {
    /// The status code.
    #[getter]
    fn status_code(&self) -> u16 {
        self.status
    }

    /// The status code (an alias of `status_code`).
    #[getter]
    fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase of the status code ("Not Found"); empty for an unknown code.
    #[getter]
    fn reason_phrase(&self, py: Python<'_>) -> String {
        reason_phrase(py, self.status)
    }

    /// True for a status below 400.
    #[getter]
    fn ok(&self) -> bool {
        self.status < 400
    }

    /// The headers, a read-only case-insensitive mapping (`backend_pool.Headers`).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        headers_object(py, &self.headers_object, &self.headers)
    }

    /// The first header called `name` (any case), or `default`.
    #[pyo3(signature = (name, default=None))]
    fn header(&self, name: &str, default: Option<String>) -> Option<String> {
        find_header(&self.headers, name)
            .map(str::to_string)
            .or(default)
    }

    /// The service that answered.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// True once closed (or cancelled).
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The bytes of the body read so far (by every method and iterator; a bounded read-ahead
    /// buffered below them is not counted until read).
    #[getter]
    fn num_bytes_downloaded(&self) -> u64 {
        self.downloaded.load(Relaxed)
    }

    /// For a 4xx / 5xx status: reads the body (its first MiB), closes the stream and raises
    /// `HTTPStatusError`, whose `.response` is a whole `Response` with that body. Returns the
    /// stream otherwise, unread. The status error is counted under `status` once, by the
    /// core's `error_for_status` as the stream closes; a stream closed before (or a second
    /// raise) raises with the status alone, not counted again.
    fn raise_for_status(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        let this = slf.get();
        if this.status < 400 {
            return Ok(slf);
        }
        // A stream closed already: the status alone. A read that fails raises its own error.
        let body = if this.inner.is_closed() {
            Vec::new()
        } else {
            this.with_reader(py, |r| read_up_to(&mut r.body, Some(STATUS_BODY_BYTES)))?
        };
        // Closed through the core's status error: it counts the failure (reading at most
        // 64 KiB more of a longer body), then the stream drops as any other.
        py.detach(|| {
            let end = |r: Reader| drop(r.body.stream.error_for_status());
            this.inner.close(end, || this.cancel.cancel())
        });
        let response = PyResponse::from_parts(
            py,
            &this.service,
            this.line.clone(),
            this.status,
            this.headers.clone(),
            &body,
        );
        Err(status_error(Py::new(py, response)?))
    }

    /// Reads up to `size` bytes (all that is left for a negative size); `b""` at the end.
    // pyo3 renders a negative default as `...` in `__text_signature__`: spelled out.
    #[pyo3(signature = (size=-1), text_signature = "($self, size=-1)")]
    fn read<'py>(&self, py: Python<'py>, size: i64) -> PyResult<Bound<'py, PyBytes>> {
        let size = u64::try_from(size).ok();
        let bytes = self.with_reader(py, |r| read_up_to(&mut r.body, size))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Reads one line, with its line ending; `b""` at the end.
    fn readline<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.next_line(py)?.unwrap_or_default();
        Ok(PyBytes::new(py, &line))
    }

    /// Lines as `bytes` with their line endings, like a binary file.
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(self.next_line(py)?.map(|l| PyBytes::new(py, &l)))
    }

    /// An iterator over the body as `bytes`: as it arrives (chunks of at most 64 KiB) without
    /// a `chunk_size`; chunks of exactly `chunk_size` bytes (the last may be shorter) with one.
    #[pyo3(signature = (chunk_size=None))]
    fn iter_bytes(slf: Py<Self>, chunk_size: Option<usize>) -> PyResult<ByteChunks> {
        if chunk_size == Some(0) {
            return Err(PyValueError::new_err("chunk_size must be at least 1"));
        }
        Ok(ByteChunks::new(slf, chunk_size))
    }

    /// An iterator over the body's lines as `str` without their endings (LF, CRLF or CR),
    /// decoded as UTF-8 (invalid bytes replaced).
    fn iter_lines(slf: Py<Self>) -> Lines {
        Lines::new(slf)
    }

    /// An iterator over the body's server-sent events as `ServerSentEvent`s, read by the
    /// core's parser (`backend_pool::sse`, the WHATWG rules): comments (heartbeats) are
    /// skipped; an event the stream ends in before its blank line is dropped.
    fn iter_sse(slf: Py<Self>) -> Events {
        Events::new(slf)
    }

    /// Closes the stream: the connection is reused if the body was read to its end, closed
    /// otherwise. Never waits for a thread blocked reading the stream: that read is
    /// cancelled (it raises `Cancelled`) and the connection closed. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close(drop, || self.cancel.cancel()));
    }

    /// Cancels the stream from any thread: a read blocked on it (waiting for body bytes or
    /// the next event) raises `Cancelled` at once, and so does every later read; the
    /// connection is closed, never reused. The token given to `stream()` (if any) is not
    /// cancelled. Idempotent.
    fn cancel(&self, py: Python<'_>) {
        py.detach(|| {
            self.cancel.cancel();
            self.inner.close(drop, || ());
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        format!(
            "<StreamingResponse [{}] service='{}'{}>",
            self.status,
            self.service,
            closed_suffix(self.inner.is_closed())
        )
    }
}

impl Drop for PyStreamingResponse {
    fn drop(&mut self) {
        let inner = self.inner.take();
        if inner.is_some() {
            Python::attach(|py| py.detach(|| drop(inner)));
        }
    }
}
