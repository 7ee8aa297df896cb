//! Python bindings for `backend-pool`: the module `backend_pool._native`, re-exported by the
//! `backend_pool` package (see `python/backend_pool/__init__.py` and `_native.pyi`).
//!
//! Every call that can block (waiting for a pooled connection, connecting, sending, reading,
//! shutting down) detaches from the interpreter first, so other Python threads (and Blender's
//! UI) run meanwhile. Rust locks are only ever taken while detached, or held without
//! re-attaching, so a lock and the GIL can never wait on each other.
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

mod cancel;
mod client;
mod download;
mod errors;
mod files;
mod manager;
mod read;
mod request;
mod response;
mod slot;
mod stream;
mod timeout;
mod ws;

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

use crate::errors::Raised;

static JSON: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn json_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    JSON.get_or_try_init(py, || PyResult::Ok(py.import("json")?.unbind()))
        .map(|m| m.bind(py))
}

/// `json.dumps(value)` in its compact form.
pub(crate) fn json_dumps(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<String> {
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("separators", (",", ":"))?;
    json_module(py)?
        .call_method("dumps", (value,), Some(&kwargs))?
        .extract()
}

/// `json.loads(text)`; a decoding error becomes `JsonError` naming the service.
pub(crate) fn json_loads<'py>(
    py: Python<'py>,
    text: &Bound<'py, PyAny>,
    service: &str,
) -> PyResult<Bound<'py, PyAny>> {
    json_module(py)?
        .call_method1("loads", (text,))
        .map_err(|e| {
            Raised {
                class: "JsonError",
                message: format!("service '{service}': invalid JSON: {}", e.value(py)),
                service: Some(service),
                phase: Some("read"),
                error_class: "other",
            }
            .into_pyerr()
        })
}

/// Seconds from Python as a `Duration`.
pub(crate) fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!("{what} must be a finite number of seconds >= 0"))
    })
}

/// The native module.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<manager::PyPoolManager>()?;
    m.add_class::<cancel::PyCancelToken>()?;
    m.add_class::<client::PyClient>()?;
    m.add_class::<client::PySession>()?;
    m.add_class::<timeout::PyTimeout>()?;
    m.add_class::<response::PyResponse>()?;
    m.add_class::<stream::PyStreamingResponse>()?;
    m.add_class::<download::PyDownload>()?;
    m.add_class::<read::PyServerSentEvent>()?;
    m.add_class::<ws::PyWebSocket>()?;
    m.add_function(wrap_pyfunction!(manager::init, m)?)?;
    m.add_function(wrap_pyfunction!(manager::get, m)?)?;
    m.add_function(wrap_pyfunction!(manager::shutdown, m)?)?;
    Ok(())
}
