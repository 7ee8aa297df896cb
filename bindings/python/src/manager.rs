//! `PoolManager` and the module-level singleton (`init`, `get`, `shutdown`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend_pool::{
    global, Error, HttpClient, ManagerConfig, ManagerStats, PoolManager, Session, ShutdownReport,
};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::cancel::{CallToken, PyCancelToken};
use crate::client::{PyClient, PySession};
use crate::download::{download, PyDownload};
use crate::errors::{config_to_py, to_py};
use crate::request::{prepare, Args};
use crate::response::PyResponse;
use crate::stream::PyStreamingResponse;
use crate::ws::{self, PyWebSocket};
use crate::{json_dumps, json_loads, seconds};

/// Final statistics of the process-wide manager, kept after `shutdown()`.
static GLOBAL_FINAL: Mutex<Option<ManagerStats>> = parking_lot::const_mutex(None);

/// Where a Python `PoolManager` finds its Rust manager.
enum Source {
    /// Its own manager (`PoolManager(config)`); `None` once shut down, with the final stats.
    Owned {
        manager: RwLock<Option<Arc<PoolManager>>>,
        last: Mutex<Option<ManagerStats>>,
    },
    /// The process-wide manager (`init()` / `get()`).
    Global,
}

/// The pool manager: every connection to every configured backend.
#[pyclass(frozen, name = "PoolManager", module = "backend_pool")]
pub(crate) struct PyPoolManager {
    source: Source,
}

fn shutting_down() -> PyErr {
    to_py(Error::ShuttingDown { service: None })
}

/// Reads a configuration: a dict, a TOML string, a path (str or os.PathLike), or None for the
/// four known backends on their default ports.
fn load_config(py: Python<'_>, config: Option<&Bound<'_, PyAny>>) -> PyResult<ManagerConfig> {
    let Some(c) = config else {
        return Ok(ManagerConfig::default());
    };
    if c.is_none() {
        return Ok(ManagerConfig::default());
    }
    if c.cast::<PyDict>().is_ok() {
        let text = json_dumps(py, c)?;
        return ManagerConfig::from_json_str(&text).map_err(config_to_py);
    }
    if let Ok(s) = c.cast::<PyString>() {
        let text = s.to_str()?.to_string();
        let is_file = Path::new(&text).is_file();
        let looks_like_toml = text.contains('\n') || text.contains('=') || text.trim().is_empty();
        return py
            .detach(|| {
                if !is_file && looks_like_toml {
                    ManagerConfig::from_toml_str(&text)
                } else {
                    ManagerConfig::from_file(&text)
                }
            })
            .map_err(config_to_py);
    }
    let path: String = py
        .import("os")?
        .call_method1("fspath", (c,))?
        .extract()
        .map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(
                "config must be a dict, a TOML string, a path or None",
            )
        })?;
    py.detach(|| ManagerConfig::from_file(&path))
        .map_err(config_to_py)
}

fn to_dict<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    json_loads(py, PyString::new(py, &text).as_any(), "(manager)")
}

fn stats_dict<'py>(py: Python<'py>, stats: &ManagerStats) -> PyResult<Bound<'py, PyAny>> {
    json_loads(
        py,
        PyString::new(py, &stats.to_json()).as_any(),
        "(manager)",
    )
}

/// Releases a shut-down manager and returns its final statistics. If connections are still
/// checked out, the last reference is released on a short-lived thread: dropping the manager
/// would otherwise wait for them (up to 5 s) on the caller's.
fn release(m: Arc<PoolManager>, report: &ShutdownReport) -> ManagerStats {
    let stats = m.stats();
    if report.still_in_use.is_empty() {
        drop(m);
    } else {
        let _ = std::thread::Builder::new()
            .name("backend-pool-release".into())
            .spawn(move || drop(m));
    }
    stats
}

fn close(m: Arc<PoolManager>, deadline: std::time::Duration) -> (ShutdownReport, ManagerStats) {
    let report = m.shutdown(deadline).unwrap_or_default();
    let stats = release(m, &report);
    (report, stats)
}

impl PyPoolManager {
    /// The HTTP client a call goes through: `service`'s, routed per call, or with `pinned`,
    /// the session's endpoint (never another). Either way, after the manager's shutdown the
    /// call raises `ShuttingDown`.
    fn http(&self, service: &str, pinned: Option<&Session>) -> PyResult<HttpClient> {
        let m = self.manager()?;
        match pinned {
            None => m.http(service),
            Some(session) => session.http(),
        }
        .map_err(to_py)
    }

    /// Sends a request to `service` (to `pinned`'s endpoint if given) and reads the whole
    /// response.
    pub(crate) fn send(
        &self,
        py: Python<'_>,
        service: &str,
        pinned: Option<&Session>,
        method: &str,
        path: &str,
        args: &Args<'_>,
    ) -> PyResult<PyResponse> {
        let client = self.http(service, pinned)?;
        // A progress callback's exception cancels the call: with one, the call has a token of
        // its own, linked to the caller's (never the caller's token itself).
        let caller = args.cancel.as_ref().map(|c| c.get());
        let call = args
            .upload_progress
            .as_ref()
            .map(|_| CallToken::new(caller));
        let token = match &call {
            Some(call) => Some(call.token()),
            None => caller.map(PyCancelToken::token),
        };
        let prepared = prepare(py, &client, method, path, args, token)?;
        let line = prepared.line.clone();
        let response = prepared.send(py)?;
        Ok(PyResponse::new(py, service, line, response))
    }

    /// Sends a request to `service` (to `pinned`'s endpoint if given) and returns the
    /// response with its body unread.
    pub(crate) fn open(
        &self,
        py: Python<'_>,
        service: &str,
        pinned: Option<&Session>,
        method: &str,
        path: &str,
        args: &Args<'_>,
    ) -> PyResult<PyStreamingResponse> {
        let client = self.http(service, pinned)?;
        let call = CallToken::new(args.cancel.as_ref().map(|c| c.get()));
        let prepared = prepare(py, &client, method, path, args, Some(call.token()))?;
        let line = prepared.line.clone();
        let response = prepared.open(py)?;
        Ok(PyStreamingResponse::new(service, line, response, call))
    }

    /// Downloads `GET path` of `service` (of `pinned`'s endpoint if given) to `dest`
    /// (`download.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fetch(
        &self,
        py: Python<'_>,
        service: &str,
        pinned: Option<&Session>,
        path: &str,
        dest: PathBuf,
        args: &Args<'_>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyDownload> {
        let client = self.http(service, pinned)?;
        download(py, &client, path, dest, args, progress)
    }

    /// Checks out a WebSocket of `service` (of `pinned`'s endpoint if given).
    pub(crate) fn lease(
        &self,
        py: Python<'_>,
        service: &str,
        pinned: Option<&Session>,
        wait_timeout: Option<f64>,
        cancel: Option<Bound<'_, PyCancelToken>>,
    ) -> PyResult<PyWebSocket> {
        let m = self.manager()?;
        let wait = ws::wait(wait_timeout)?;
        let call = CallToken::new(cancel.as_ref().map(|c| c.get()));
        let token = call.token();
        let guard = py
            .detach(|| match (pinned, wait) {
                (None, Some(w)) => m.websocket_wait_cancellable(service, w, token),
                (None, None) => m.websocket_cancellable(service, token),
                (Some(s), Some(w)) => s.websocket_wait(w, Some(token)),
                (Some(s), None) => s.websocket_cancellable(token),
            })
            .map_err(to_py)?;
        Ok(PyWebSocket::new(service, guard, call))
    }

    fn manager(&self) -> PyResult<Arc<PoolManager>> {
        match &self.source {
            Source::Owned { manager, .. } => manager.read().clone(),
            Source::Global => global::get(),
        }
        .ok_or_else(shutting_down)
    }

    fn last_stats(&self) -> Option<ManagerStats> {
        match &self.source {
            Source::Owned { last, .. } => last.lock().clone(),
            Source::Global => GLOBAL_FINAL.lock().clone(),
        }
    }

    fn current_stats(&self, py: Python<'_>) -> PyResult<ManagerStats> {
        match self.manager() {
            Ok(m) => Ok(py.detach(|| m.stats())),
            Err(e) => self.last_stats().ok_or(e),
        }
    }
}

#[pymethods]
impl PyPoolManager {
    /// Builds every pool and starts the maintenance thread; no connection is opened yet.
    #[new]
    #[pyo3(signature = (config=None))]
    fn new(py: Python<'_>, config: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let config = load_config(py, config)?;
        let manager = py.detach(|| PoolManager::new(config)).map_err(to_py)?;
        Ok(PyPoolManager {
            source: Source::Owned {
                manager: RwLock::new(Some(Arc::new(manager))),
                last: Mutex::new(None),
            },
        })
    }

    /// Sends a request to `service` and reads the whole response.
    #[pyo3(signature = (service, method, path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn request<'py>(
        &self,
        py: Python<'py>,
        service: &str,
        method: &str,
        path: &str,
        params: Option<Bound<'py, PyAny>>,
        data: Option<Bound<'py, PyAny>>,
        json: Option<Bound<'py, PyAny>>,
        files: Option<Bound<'py, PyAny>>,
        headers: Option<Bound<'py, PyAny>>,
        timeout: Option<Bound<'py, PyAny>>,
        wait_timeout: Option<f64>,
        cancel: Option<Bound<'py, PyCancelToken>>,
        upload_progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<PyResponse> {
        let args = Args {
            params,
            data,
            json,
            files,
            headers,
            timeout,
            wait_timeout,
            cancel,
            upload_progress,
        };
        self.send(py, service, None, method, path, &args)
    }

    /// Sends a request and returns the response with its body unread (server-sent events,
    /// large downloads). The pooled connection is held until the stream is closed. The
    /// stream has a token of its own (its `cancel()`), cancelled by `cancel` too.
    #[pyo3(signature = (service, method, path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream<'py>(
        &self,
        py: Python<'py>,
        service: &str,
        method: &str,
        path: &str,
        params: Option<Bound<'py, PyAny>>,
        data: Option<Bound<'py, PyAny>>,
        json: Option<Bound<'py, PyAny>>,
        files: Option<Bound<'py, PyAny>>,
        headers: Option<Bound<'py, PyAny>>,
        timeout: Option<Bound<'py, PyAny>>,
        wait_timeout: Option<f64>,
        cancel: Option<Bound<'py, PyCancelToken>>,
        upload_progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<PyStreamingResponse> {
        let args = Args {
            params,
            data,
            json,
            headers,
            timeout,
            wait_timeout,
            cancel,
            files,
            upload_progress,
        };
        self.open(py, service, None, method, path, &args)
    }

    /// Downloads `GET path` of `service` to the file `dest`, with the interpreter detached
    /// while bytes flow: see `download.rs`.
    #[pyo3(signature = (service, path, dest, *, params=None, headers=None, timeout=None, wait_timeout=None, cancel=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn download<'py>(
        &self,
        py: Python<'py>,
        service: &str,
        path: &str,
        dest: PathBuf,
        params: Option<Bound<'py, PyAny>>,
        headers: Option<Bound<'py, PyAny>>,
        timeout: Option<Bound<'py, PyAny>>,
        wait_timeout: Option<f64>,
        cancel: Option<Bound<'py, PyCancelToken>>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<PyDownload> {
        let args = Args {
            params,
            headers,
            timeout,
            wait_timeout,
            cancel,
            ..Args::default()
        };
        self.fetch(py, service, None, path, dest, &args, progress)
    }

    /// A client for one service's HTTP pool, with `get`, `post`, ... (as Rust's
    /// `manager.http(service)`). Raises `UnknownService` if the service has no HTTP pool.
    fn client(slf: Bound<'_, Self>, service: &str) -> PyResult<PyClient> {
        slf.get().manager()?.http(service).map_err(to_py)?;
        Ok(PyClient::new(slf.unbind(), service))
    }

    /// Checks out a WebSocket of `service`, waiting at most `wait_timeout` seconds for a free
    /// socket (the service's `wait_timeout_ms` by default). The lease has a token of its own
    /// (its `cancel()`), cancelled by `cancel` too: the wait, and the lease's reads and sends.
    #[pyo3(signature = (service, *, wait_timeout=None, cancel=None))]
    fn websocket(
        &self,
        py: Python<'_>,
        service: &str,
        wait_timeout: Option<f64>,
        cancel: Option<Bound<'_, PyCancelToken>>,
    ) -> PyResult<PyWebSocket> {
        self.lease(py, service, None, wait_timeout, cancel)
    }

    /// A session of `service`: its HTTP calls and WebSocket leases all go to one endpoint,
    /// chosen now by health, sessions already pinned there and the queue length the server
    /// last reported (as Rust's `manager.session(service)`). Its pin ends with `close()`, at
    /// the end of a `with` block, or when it is garbage collected. Raises `UnknownService`,
    /// `ShuttingDown`.
    fn session(slf: Bound<'_, Self>, service: &str) -> PyResult<Py<PySession>> {
        let session = slf.get().manager()?.session(service).map_err(to_py)?;
        PySession::create(slf.py(), slf.unbind(), session)
    }

    /// A snapshot of every figure as a dict (after shutdown: the final snapshot).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stats = self.current_stats(py)?;
        stats_dict(py, &stats)
    }

    /// The statistics in Prometheus text format.
    fn prometheus(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.current_stats(py)?.to_prometheus())
    }

    /// The health of one service, or of every service as `{name: health}`.
    #[pyo3(signature = (service=None))]
    fn health<'py>(&self, py: Python<'py>, service: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
        let m = self.manager()?;
        match service {
            Some(name) => {
                let snapshot = m.health(name).map_err(to_py)?;
                to_dict(py, &snapshot)
            }
            None => {
                let all = PyDict::new(py);
                for name in m.service_names() {
                    let snapshot = m.health(&name).map_err(to_py)?;
                    all.set_item(name, to_dict(py, &snapshot)?)?;
                }
                Ok(all.into_any())
            }
        }
    }

    /// The configured service names, in order.
    #[getter]
    fn services(&self) -> PyResult<Vec<String>> {
        let m = self.manager()?;
        Ok(m.service_names())
    }

    /// True once shut down.
    #[getter]
    fn closed(&self) -> bool {
        self.manager().is_err()
    }

    /// Shuts down within `timeout` seconds: new calls raise `ShuttingDown`, idle connections
    /// close now, connections in use close when returned, the background threads stop.
    /// Returns the report as a dict, or None if it was already shut down.
    #[pyo3(signature = (timeout=5.0))]
    fn shutdown<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Option<Bound<'py, PyAny>>> {
        let deadline = seconds(timeout, "timeout")?;
        match &self.source {
            Source::Owned { manager, last } => {
                let Some(m) = manager.write().take() else {
                    return Ok(None);
                };
                let (report, stats) = py.detach(|| close(m, deadline));
                *last.lock() = Some(stats);
                to_dict(py, &report).map(Some)
            }
            Source::Global => shutdown(py, timeout),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.shutdown(py, 5.0).map(drop)
    }

    fn __repr__(&self) -> String {
        let kind = match self.source {
            Source::Owned { .. } => "",
            Source::Global => " (process-wide)",
        };
        match self.manager() {
            Ok(m) => format!("<PoolManager{kind} services={:?}>", m.service_names()),
            Err(_) => format!("<PoolManager{kind} closed>"),
        }
    }

    /// Changes the running manager to `config` (the forms `PoolManager(config)` takes)
    /// without a restart, as Rust's `PoolManager::apply`: unchanged services keep their pools
    /// and calls; changed and removed ones take no new work, their calls in flight finish
    /// within `timeout` seconds (then are interrupted) and they close; new ones start lazily.
    /// Returns when the old ones are closed (the GIL is released meanwhile), with the report
    /// as a dict. Raises `ConfigError` for an invalid configuration, which changes nothing.
    #[pyo3(signature = (config, *, timeout=30.0))]
    fn apply<'py>(
        &self,
        py: Python<'py>,
        config: &Bound<'py, PyAny>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let m = self.manager()?;
        let deadline = seconds(timeout, "timeout")?;
        let config = load_config(py, Some(config))?;
        let report = py.detach(|| m.apply(config, deadline)).map_err(to_py)?;
        to_dict(py, &report)
    }

    /// "Can I reach it now?": runs `service`'s health check now, within `timeout` seconds, as
    /// Rust's `PoolManager::probe`; returns the report as a dict (`reachable`, `check`,
    /// `error`, `elapsed_ms`, `health`). Raises `UnknownService`, `ShuttingDown`.
    #[pyo3(signature = (service, *, timeout=5.0))]
    fn probe<'py>(
        &self,
        py: Python<'py>,
        service: &str,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let m = self.manager()?;
        let deadline = seconds(timeout, "timeout")?;
        let report = py.detach(|| m.probe(service, deadline)).map_err(to_py)?;
        to_dict(py, &report)
    }
}

impl Drop for PyPoolManager {
    fn drop(&mut self) {
        if let Source::Owned { manager, .. } = &mut self.source {
            if let Some(m) = manager.get_mut().take() {
                // Dropping shuts down (bounded wait): never with the interpreter attached.
                Python::attach(|py| {
                    py.detach(|| {
                        close(m, std::time::Duration::from_secs(5));
                    })
                });
            }
        }
    }
}

/// Starts the process-wide manager, or returns the running one (then `config` is ignored).
#[pyfunction]
#[pyo3(signature = (config=None))]
pub(crate) fn init(py: Python<'_>, config: Option<&Bound<'_, PyAny>>) -> PyResult<PyPoolManager> {
    if global::get().is_none() {
        let config = load_config(py, config)?;
        py.detach(|| global::init(config)).map_err(to_py)?;
        *GLOBAL_FINAL.lock() = None;
    }
    Ok(PyPoolManager {
        source: Source::Global,
    })
}

/// The process-wide manager, or None if none is running.
#[pyfunction]
pub(crate) fn get() -> Option<PyPoolManager> {
    global::get().map(|_| PyPoolManager {
        source: Source::Global,
    })
}

/// Shuts the process-wide manager down within `timeout` seconds; returns the report as a
/// dict, or None if none was running. Afterwards `init()` starts a new one.
#[pyfunction]
#[pyo3(signature = (timeout=5.0))]
pub(crate) fn shutdown(py: Python<'_>, timeout: f64) -> PyResult<Option<Bound<'_, PyAny>>> {
    let deadline = seconds(timeout, "timeout")?;
    let done = py.detach(|| {
        let m = global::get()?;
        let report = global::shutdown(deadline)
            .ok()
            .flatten()
            .unwrap_or_default();
        let stats = release(m, &report);
        Some((report, stats))
    });
    match done {
        None => Ok(None),
        Some((report, stats)) => {
            *GLOBAL_FINAL.lock() = Some(stats);
            to_dict(py, &report).map(Some)
        }
    }
}
