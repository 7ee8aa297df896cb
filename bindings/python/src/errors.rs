//! Rust errors to Python exceptions (the classes live in `backend_pool/errors.py`).

use std::fmt;
use std::io;

use backend_pool::{sse, ConfigError, Error, ErrorChain, Phase};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// What a Python exception is made of.
pub(crate) struct Raised<'a> {
    pub class: &'a str,
    pub message: String,
    pub service: Option<&'a str>,
    pub phase: Option<&'static str>,
    pub error_class: &'a str,
}

impl Raised<'_> {
    /// Builds the exception instance (attaching to the interpreter if needed).
    pub(crate) fn into_pyerr(self) -> PyErr {
        Python::attach(|py| match self.build(py) {
            Ok(err) => err,
            Err(e) => PyRuntimeError::new_err(format!("{} ({e})", self.message)),
        })
    }

    fn build(&self, py: Python<'_>) -> PyResult<PyErr> {
        let module = ERRORS.get_or_try_init(py, || {
            PyResult::Ok(py.import("backend_pool.errors")?.unbind())
        })?;
        let class = module.bind(py).getattr(self.class)?;
        let value = class.call1((self.message.as_str(),))?;
        value.setattr("service", self.service)?;
        value.setattr("phase", self.phase)?;
        value.setattr("error_class", self.error_class)?;
        Ok(PyErr::from_value(value))
    }
}

/// The snake_case name of a phase (`wait`, `connect`, ...), as in the statistics.
pub(crate) fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Wait => "wait",
        Phase::Connect => "connect",
        Phase::Send => "send",
        Phase::Receive => "receive",
        Phase::Read => "read",
        _ => "other",
    }
}

/// Maps a pool error to its Python exception; a status error is `HTTPStatusError` with its
/// `.response` (see [`crate::response::core_status_error`]). The message is the whole cause chain, with the
/// phase spelled out when the error's own words do not already say it.
pub(crate) fn to_py(err: Error) -> PyErr {
    if let Error::Status { .. } = err {
        return crate::response::core_status_error(err, None, Vec::new());
    }
    let class = match &err {
        Error::UnknownService { .. } | Error::NoSuchPool { .. } => "UnknownService",
        Error::PoolTimeout { .. } => "PoolTimeout",
        Error::ServiceUnavailable { .. } => "ServiceUnavailable",
        Error::ShuttingDown { .. } | Error::ServiceRetired { .. } => "ShuttingDown",
        Error::Cancelled { .. } => "Cancelled",
        Error::Timeout { .. } => "TimeoutException",
        Error::ConnectionClosed { .. } | Error::Transport { .. } => "BackendConnectionError",
        Error::WebSocketClosed { .. } => "WebSocketClosed",
        Error::TooLarge { .. } => "TooLarge",
        Error::Json { .. } => "JsonError",
        Error::InvalidRequest { .. } => "InvalidRequest",
        Error::Save { .. } => "SaveError",
        Error::Config(_) => "ConfigError",
        _ => "BackendPoolError",
    };
    let mut message = err.chain().to_string();
    if let Some(phase) = err.phase() {
        let words = phase.to_string();
        if !message.contains(&words) {
            message.push_str(&format!(" (while {words})"));
        }
    }
    Raised {
        class,
        message,
        service: err.service(),
        phase: err.phase().map(phase_name),
        error_class: err.class().name(),
    }
    .into_pyerr()
}

/// Maps a configuration error.
pub(crate) fn config_to_py(err: ConfigError) -> PyErr {
    to_py(Error::Config(err))
}

/// Maps an I/O error while reading a streamed body of `service`. A pool error the core
/// wrapped in it (`Cancelled`, `ShuttingDown`: kind `ConnectionAborted`; a `Timeout` naming
/// the deadline that fired: kind `TimedOut`) is raised as itself; a line or event over its
/// limit is `TooLarge`.
pub(crate) fn stream_io(service: &str, err: io::Error) -> PyErr {
    let err = match pool_error(err) {
        Ok(err) => err,
        Err(pool_error) => return to_py(pool_error),
    };
    let (class, error_class) = if is_timeout(&err) {
        ("TimeoutException", "timeout")
    } else if is_too_large(&err) {
        ("TooLarge", "too_large")
    } else {
        ("BackendConnectionError", "closed")
    };
    let message = format!(
        "service '{service}': reading the response body failed: {}",
        ErrorChain::new(&err)
    );
    Raised {
        class,
        message,
        service: Some(service),
        phase: Some("read"),
        error_class,
    }
    .into_pyerr()
}

/// A line of a streamed body longer than the limit.
#[derive(Debug)]
pub(crate) struct LineTooLong {
    limit: usize,
}

impl LineTooLong {
    /// The I/O error a line reader returns.
    pub(crate) fn error(limit: usize) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, LineTooLong { limit })
    }
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a line is longer than {} bytes", self.limit)
    }
}

impl std::error::Error for LineTooLong {}

/// True for a line or a server-sent event over its limit.
fn is_too_large(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| {
        e.is::<LineTooLong>()
            || e.downcast_ref::<sse::Error>()
                .is_some_and(|e| !matches!(e, sse::Error::Io(_)))
    })
}

/// The pool error the core wrapped in `err` as `Err`, or `err` itself as `Ok`.
fn pool_error(err: io::Error) -> Result<io::Error, Error> {
    if !err.get_ref().is_some_and(|e| e.is::<Error>()) {
        return Ok(err);
    }
    let kind = err.kind();
    match err.into_inner().map(|e| e.downcast::<Error>()) {
        Some(Ok(e)) => Err(*e),
        Some(Err(other)) => Ok(io::Error::new(kind, other)),
        None => Ok(io::Error::from(kind)),
    }
}

/// True if `err` or anything it wraps is a timeout (the core reports a streamed body's read
/// timeout as `ErrorKind::TimedOut`).
fn is_timeout(err: &io::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        current = e.source();
    }
    false
}
