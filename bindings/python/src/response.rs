//! `Response` (a whole response), what both response kinds share (headers as a `Headers`,
//! the reason phrase), and `HTTPStatusError` with the response it carries.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList};

use backend_pool::Error;

use crate::errors::{to_py, Raised};
use crate::json_loads;

static HEADERS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The headers as a `backend_pool.headers.Headers` (case-insensitive, read-only), made on the
/// first call and kept in `cache`.
pub(crate) fn headers_object<'py>(
    py: Python<'py>,
    cache: &PyOnceLock<Py<PyAny>>,
    pairs: &[(String, String)],
) -> PyResult<Bound<'py, PyAny>> {
    let made = cache.get_or_try_init(py, || {
        let class = HEADERS.get_or_try_init(py, || {
            PyResult::Ok(
                py.import("backend_pool.headers")?
                    .getattr("Headers")?
                    .unbind(),
            )
        })?;
        let list = PyList::new(py, pairs)?;
        PyResult::Ok(class.bind(py).call1((list,))?.unbind())
    })?;
    Ok(made.bind(py).clone())
}

/// The first header called `name` (any case).
pub(crate) fn find_header<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The reason phrase of `status` ("Not Found"), from Python's `http.HTTPStatus`; empty for a
/// code it does not know (HTTP/1.1 servers may send any phrase: the core keeps none).
pub(crate) fn reason_phrase(py: Python<'_>, status: u16) -> String {
    py.import("http")
        .and_then(|m| m.getattr("HTTPStatus"))
        .and_then(|c| c.call1((status,)))
        .and_then(|s| s.getattr("phrase"))
        .and_then(|p| p.extract())
        .unwrap_or_default()
}

/// A whole response: `status_code`, `headers`, `content`, `text`, `json()`.
#[pyclass(frozen, name = "Response", module = "backend_pool")]
pub(crate) struct PyResponse {
    status: u16,
    headers: Vec<(String, String)>,
    headers_object: PyOnceLock<Py<PyAny>>,
    content: Py<PyBytes>,
    service: String,
    /// `METHOD /path?query`, for the status error's message.
    line: String,
    /// A 4xx / 5xx response's core `Response` (its body moved to `content`), until the first
    /// `raise_for_status()` turns it into the core's status error: counted under `status`
    /// once per response, as Rust's `error_for_status` (which consumes the response) does.
    /// None for any other status, once raised, and for a response the core counted already.
    uncounted: Mutex<Option<backend_pool::Response>>,
}

impl PyResponse {
    pub(crate) fn new(
        py: Python<'_>,
        service: &str,
        line: String,
        mut r: backend_pool::Response,
    ) -> Self {
        let status = r.status();
        let headers = r.headers().to_vec();
        let body = r.take_body();
        let mut made = Self::from_parts(py, service, line, status, headers, &body);
        if status >= 400 {
            made.uncounted = Mutex::new(Some(r));
        }
        made
    }

    pub(crate) fn from_parts(
        py: Python<'_>,
        service: &str,
        line: String,
        status: u16,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Self {
        PyResponse {
            status,
            headers,
            headers_object: PyOnceLock::new(),
            content: PyBytes::new(py, body).unbind(),
            service: service.to_string(),
            line,
            uncounted: Mutex::new(None),
        }
    }

    /// Counts this response's status error, the first time only (see `uncounted`).
    pub(crate) fn count_status_error(&self) {
        let core = self.uncounted.lock().take();
        if let Some(core) = core {
            // The error is the core's count; the exception is made here.
            let _ = core.error_for_status();
        }
    }
}

#[pymethods]
impl PyResponse {
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

    /// Raises `HTTPStatusError` (with this response as its `.response`) for a 4xx / 5xx
    /// status, counted under the statistics' `status` class once per response (a second
    /// raise of the same response is not a second failure); returns the response otherwise.
    fn raise_for_status(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let this = slf.get();
        if this.status >= 400 {
            this.count_status_error();
            return Err(status_error(slf.unbind()));
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

/// `HTTPStatusError` for `response` (a 4xx or 5xx): `.response`, `.status_code`, `.status`;
/// class `status`, as the core's status errors. The message names the service, the request
/// line and the status.
pub(crate) fn status_error(response: Py<PyResponse>) -> PyErr {
    status_error_saying(response, None)
}

/// `HTTPStatusError` for the core's [`Error::Status`] (a download's status outside 2xx):
/// its `.response` holds the status, `headers` (when the caller still had them) and the body
/// the core kept (its first 64 KiB). Without a request `line`, the message is the core's.
pub(crate) fn core_status_error(
    err: Error,
    line: Option<String>,
    headers: Vec<(String, String)>,
) -> PyErr {
    let message = match &line {
        Some(_) => None,
        None => Some(err.chain().to_string()),
    };
    let Error::Status {
        service,
        status,
        body,
        ..
    } = err
    else {
        return to_py(err);
    };
    Python::attach(|py| {
        let response = PyResponse::from_parts(
            py,
            &service,
            line.unwrap_or_default(),
            status,
            headers,
            &body,
        );
        match Py::new(py, response) {
            Ok(response) => status_error_saying(response, message),
            Err(e) => e,
        }
    })
}

fn status_error_saying(response: Py<PyResponse>, message: Option<String>) -> PyErr {
    Python::attach(|py| {
        let r = response.get();
        let message = message.unwrap_or_else(|| {
            let kind = if r.status < 500 { "client" } else { "server" };
            let reason = reason_phrase(py, r.status);
            format!(
                "service '{}': {} answered {} {reason} (a {kind} error)",
                r.service, r.line, r.status
            )
        });
        let err = Raised {
            class: "HTTPStatusError",
            message,
            service: Some(&r.service),
            phase: Some("receive"),
            error_class: "status",
        }
        .into_pyerr();
        let value = err.value(py);
        let set = value
            .setattr("status_code", r.status)
            .and_then(|()| value.setattr("status", r.status))
            .and_then(|()| value.setattr("response", response.clone_ref(py)));
        match set {
            Ok(()) => err,
            Err(e) => e,
        }
    })
}
