//! HTTP: request preparation, `Response`, `StreamingResponse` and its iterators.

use std::io::{BufRead, Read};
use std::sync::Arc;

use backend_pool::sse::Parser;
use backend_pool::{CancelToken, HttpClient, RequestBuilder, StreamingResponse};
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};

use crate::cancel::CallToken;
use crate::errors::{stream_io, Raised};
use crate::slot::{closed_suffix, Slot};
use crate::{json_dumps, json_loads, seconds};

/// A request body, borrowed from Python bytes while the interpreter is detached.
pub(crate) struct Body<'py>(Option<Bound<'py, PyBytes>>);

impl Body<'_> {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |b| b.as_bytes())
    }
}

/// Builds a request from Python arguments; nothing is sent.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare<'py>(
    py: Python<'py>,
    client: &HttpClient,
    method: &str,
    path: &str,
    json: Option<&Bound<'py, PyAny>>,
    data: Option<&Bound<'py, PyAny>>,
    headers: Option<&Bound<'py, PyAny>>,
    timeout: Option<f64>,
    wait_timeout: Option<f64>,
    cancel: Option<&CancelToken>,
) -> PyResult<(RequestBuilder, Body<'py>)> {
    let mut req = client.request(method, path);
    if let Some(token) = cancel {
        req = req.cancel_on(token);
    }
    let mut has_content_type = false;
    if let Some(h) = headers {
        for (name, value) in header_pairs(h)? {
            has_content_type |= name.eq_ignore_ascii_case("content-type");
            req = req.header(&name, &value);
        }
    }
    if let Some(t) = timeout {
        req = req.total_timeout(seconds(t, "timeout")?);
    }
    if let Some(t) = wait_timeout {
        req = req.wait_timeout(seconds(t, "wait_timeout")?);
    }
    let body = match (json, data) {
        (Some(_), Some(_)) => {
            return Err(PyTypeError::new_err("pass either json= or data=, not both"))
        }
        (Some(value), None) => {
            if !has_content_type {
                req = req.header("Content-Type", "application/json");
            }
            let text = json_dumps(py, value)?;
            Some(PyBytes::new(py, text.as_bytes()))
        }
        (None, Some(d)) => Some(to_bytes(py, d)?),
        (None, None) => None,
    };
    Ok((req, Body(body)))
}

fn header_pairs(h: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    if let Ok(d) = h.cast::<PyDict>() {
        d.iter()
            .map(|(k, v)| Ok((k.extract::<String>()?, v.extract::<String>()?)))
            .collect()
    } else {
        h.extract::<Vec<(String, String)>>().map_err(|_| {
            PyTypeError::new_err("headers must be a dict or a list of (name, value) pairs of str")
        })
    }
}

fn to_bytes<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(b.clone());
    }
    if let Ok(s) = data.cast::<PyString>() {
        return Ok(PyBytes::new(py, s.to_str()?.as_bytes()));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(PyBytes::new(py, &b.to_vec()));
    }
    // memoryview and other buffer objects: bytes(data).
    py.import("builtins")?
        .getattr("bytes")?
        .call1((data,))?
        .cast_into::<PyBytes>()
        .map_err(|_| PyTypeError::new_err("data must be bytes, str or a buffer"))
}

/// Headers as a dict: lowercase names, repeated headers joined with ", ".
fn headers_dict<'py>(py: Python<'py>, pairs: &[(String, String)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in pairs {
        let k = k.to_ascii_lowercase();
        match d.get_item(&k)? {
            Some(old) => d.set_item(&k, format!("{}, {v}", old.extract::<String>()?))?,
            None => d.set_item(&k, v)?,
        }
    }
    Ok(d)
}

fn find_header<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn status_error(service: &str, status: u16) -> PyErr {
    let err = Raised {
        class: "HTTPStatusError",
        message: format!(
            "service '{service}': HTTP status {status} (while receiving the response)"
        ),
        service: Some(service),
        phase: Some("receive"),
        error_class: "protocol",
    }
    .into_pyerr();
    Python::attach(|py| {
        let _ = err.value(py).setattr("status", status);
    });
    err
}

/// A whole response: `status`, `headers`, `content`, `text`, `json()`.
#[pyclass(frozen, name = "Response", module = "backend_pool")]
pub(crate) struct PyResponse {
    status: u16,
    headers: Vec<(String, String)>,
    content: Py<PyBytes>,
    service: String,
}

impl PyResponse {
    pub(crate) fn new(py: Python<'_>, service: &str, r: backend_pool::Response) -> Self {
        PyResponse {
            status: r.status(),
            headers: r.headers().to_vec(),
            content: PyBytes::new(py, r.body()).unbind(),
            service: service.to_string(),
        }
    }
}

#[pymethods]
impl PyResponse {
    /// The status code.
    #[getter]
    fn status(&self) -> u16 {
        self.status
    }

    /// True for a status below 400.
    #[getter]
    fn ok(&self) -> bool {
        self.status < 400
    }

    /// The headers: lowercase names, repeated headers joined with ", ".
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        headers_dict(py, &self.headers)
    }

    /// The first header called `name` (any case), or `default`.
    #[pyo3(signature = (name, default=None))]
    fn header(&self, name: &str, default: Option<String>) -> Option<String> {
        find_header(&self.headers, name)
            .map(str::to_string)
            .or(default)
    }

    /// The body bytes.
    #[getter]
    fn content(&self, py: Python<'_>) -> Py<PyBytes> {
        self.content.clone_ref(py)
    }

    /// The body decoded as UTF-8 (invalid bytes replaced).
    #[getter]
    fn text(&self, py: Python<'_>) -> String {
        String::from_utf8_lossy(self.content.bind(py).as_bytes()).into_owned()
    }

    /// The service that answered.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// The body decoded as JSON.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_loads(py, self.content.bind(py).as_any(), &self.service)
    }

    /// Raises `HTTPStatusError` for a 4xx / 5xx status; returns the response otherwise.
    fn raise_for_status(slf: Py<Self>) -> PyResult<Py<Self>> {
        let (status, service) = (slf.get().status, slf.get().service.clone());
        if status >= 400 {
            return Err(status_error(&service, status));
        }
        Ok(slf)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<Response [{}] service='{}' {} bytes>",
            self.status,
            self.service,
            self.content.bind(py).as_bytes().len()
        )
    }
}

/// A response whose body is read as it arrives: `read`, `readline`, iteration over lines,
/// `iter_lines`, `iter_chunks`, `iter_events` (server-sent events). Holds its pooled
/// connection until closed (or exhausted and closed, or garbage-collected).
///
/// One thread reads at a time; `cancel()` and `close()` work from any thread without
/// waiting for it: the stream's own token (linked to the caller's, if any) sits outside the
/// lock the reader holds (see `slot.rs`).
#[pyclass(frozen, name = "StreamingResponse", module = "backend_pool")]
pub(crate) struct PyStreamingResponse {
    status: u16,
    headers: Vec<(String, String)>,
    service: String,
    cancel: CallToken,
    inner: Arc<Slot<StreamingResponse>>,
}

impl PyStreamingResponse {
    /// `cancel` is the token the request was sent with.
    pub(crate) fn new(service: &str, r: StreamingResponse, cancel: CallToken) -> Self {
        let status = r.status();
        let headers = r.headers().to_vec();
        // A cancelled stream's connection is closed when it drops (the core's `Drop`).
        let inner = Arc::new(Slot::new(r, drop));
        let slot = Arc::downgrade(&inner);
        cancel.on_cancel(move || {
            if let Some(slot) = slot.upgrade() {
                slot.close(drop, || ());
            }
        });
        PyStreamingResponse {
            status,
            headers,
            service: service.to_string(),
            cancel,
            inner,
        }
    }

    /// Runs `f` on the open stream with the interpreter detached. A cancelled stream is
    /// closed after its read fails.
    fn with_stream<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut StreamingResponse) -> std::io::Result<T> + Send,
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
        self.with_stream(py, |s| {
            let mut buf = Vec::new();
            let n = s.read_until(b'\n', &mut buf)?;
            Ok((n > 0).then_some(buf))
        })
    }
}

fn strip_eol(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

#[pymethods]
impl PyStreamingResponse {
    /// The status code.
    #[getter]
    fn status(&self) -> u16 {
        self.status
    }

    /// True for a status below 400.
    #[getter]
    fn ok(&self) -> bool {
        self.status < 400
    }

    /// The headers: lowercase names, repeated headers joined with ", ".
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        headers_dict(py, &self.headers)
    }

    /// Any header by name (any case), or `default`.
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

    /// Reads up to `size` bytes (all that is left for a negative size); `b""` at the end.
    // pyo3 renders a negative default as `...` in `__text_signature__`: spelled out.
    #[pyo3(signature = (size=-1), text_signature = "($self, size=-1)")]
    fn read<'py>(&self, py: Python<'py>, size: i64) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.with_stream(py, |s| {
            let mut buf = Vec::new();
            if size < 0 {
                s.read_to_end(&mut buf)?;
            } else {
                s.take(size as u64).read_to_end(&mut buf)?;
            }
            Ok(buf)
        })?;
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

    /// An iterator over lines as `str` without line endings (SSE and JSON-lines).
    fn iter_lines(slf: Py<Self>) -> Lines {
        Lines { stream: slf }
    }

    /// An iterator over chunks of at most `chunk_size` bytes, as they arrive.
    #[pyo3(signature = (chunk_size=65536))]
    fn iter_chunks(slf: Py<Self>, chunk_size: usize) -> PyResult<Chunks> {
        if chunk_size == 0 {
            return Err(PyValueError::new_err("chunk_size must be at least 1"));
        }
        Ok(Chunks {
            stream: slf,
            size: chunk_size,
        })
    }

    /// An iterator over server-sent events as dicts `{"event", "data", "id", "retry"}`, read
    /// by the core's parser (`backend_pool::sse`, the WHATWG rules): `event` defaults to
    /// "message"; `id` is the last event ID so far (None when there is none); `retry` is the
    /// reconnection time in ms the event's lines set (None when they set none); comment lines
    /// (heartbeats) are skipped; an event the stream ends in before its blank line is dropped.
    fn iter_events(slf: Py<Self>) -> Events {
        Events {
            stream: slf,
            parser: Mutex::new(Parser::new()),
        }
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

/// Iterator over a stream's lines as `str`.
#[pyclass(frozen, module = "backend_pool")]
pub(crate) struct Lines {
    stream: Py<PyStreamingResponse>,
}

#[pymethods]
impl Lines {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self
            .stream
            .get()
            .next_line(py)?
            .map(|l| String::from_utf8_lossy(&strip_eol(l)).into_owned()))
    }
}

/// Iterator over a stream's chunks as `bytes`.
#[pyclass(frozen, module = "backend_pool")]
pub(crate) struct Chunks {
    stream: Py<PyStreamingResponse>,
    size: usize,
}

#[pymethods]
impl Chunks {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let size = self.size;
        let chunk = self.stream.get().with_stream(py, |s| {
            let available = s.fill_buf()?;
            let n = available.len().min(size);
            let chunk = available[..n].to_vec();
            s.consume(n);
            Ok(chunk)
        })?;
        Ok((!chunk.is_empty()).then(|| PyBytes::new(py, &chunk)))
    }
}

/// Iterator over a stream's server-sent events: the core's parser, whose state (a line begun,
/// the last event ID) lives here between calls while the stream stays in its response.
#[pyclass(frozen, module = "backend_pool")]
pub(crate) struct Events {
    stream: Py<PyStreamingResponse>,
    parser: Mutex<Parser>,
}

#[pymethods]
impl Events {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let parser = &self.parser;
        let next = self
            .stream
            .get()
            .with_stream(py, |s| Ok(parser.lock().next_event(s)?))?;
        let Some(ev) = next else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("event", ev.event)?;
        d.set_item("data", ev.data)?;
        d.set_item("id", (!ev.id.is_empty()).then_some(ev.id))?;
        d.set_item("retry", ev.retry.map(|r| r.as_millis() as u64))?;
        Ok(Some(d))
    }
}
