//! `Client`: one service's HTTP pool, with `get`, `post`, ... as Rust's `manager.http(service)`;
//! `Session`: a `Client` whose calls (and WebSocket leases) all go to one endpoint, as Rust's
//! `manager.session(service)`. Both send through the manager's `send`/`open`/`fetch`, the
//! session with its pin: one path for the arguments.

use std::path::PathBuf;

use backend_pool::Session;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::cancel::PyCancelToken;
use crate::download::PyDownload;
use crate::manager::PyPoolManager;
use crate::request::Args;
use crate::response::PyResponse;
use crate::stream::PyStreamingResponse;
use crate::ws::PyWebSocket;

/// One service's HTTP pool: `manager.client("comfyui").get("/history")`. Takes the same
/// keyword arguments as `PoolManager.request`. A view on the manager: calls after its
/// shutdown raise `ShuttingDown`; nothing to close.
#[pyclass(frozen, subclass, name = "Client", module = "backend_pool")]
pub(crate) struct PyClient {
    manager: Py<PyPoolManager>,
    service: String,
    /// A session's pin (`Some`; `Some(None)` once closed); `None` for a plain client.
    pin: Option<Mutex<Option<Session>>>,
}

impl PyClient {
    pub(crate) fn new(manager: Py<PyPoolManager>, service: &str) -> Self {
        PyClient {
            manager,
            service: service.to_string(),
            pin: None,
        }
    }

    /// The session a call goes through: `None` for a plain client (routed per call).
    /// Raises `ValueError` on a closed session.
    fn pinned(&self) -> PyResult<Option<Session>> {
        let Some(pin) = &self.pin else {
            return Ok(None);
        };
        match &*pin.lock() {
            Some(session) => Ok(Some(session.clone())),
            None => Err(PyValueError::new_err(format!(
                "the session of service '{}' is closed",
                self.service
            ))),
        }
    }

    fn send(
        &self,
        py: Python<'_>,
        method: &str,
        path: &str,
        args: &Args<'_>,
    ) -> PyResult<PyResponse> {
        let pinned = self.pinned()?;
        self.manager
            .get()
            .send(py, &self.service, pinned.as_ref(), method, path, args)
    }
}

#[pymethods]
impl PyClient {
    /// The service's name.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// Sends a request and reads the whole response (as `PoolManager.request`).
    #[pyo3(signature = (method, path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn request<'py>(
        &self,
        py: Python<'py>,
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
        self.send(py, method, path, &args)
    }

    /// Sends a request and returns the response with its body unread (as
    /// `PoolManager.stream`).
    #[pyo3(signature = (method, path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream<'py>(
        &self,
        py: Python<'py>,
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
        let pinned = self.pinned()?;
        self.manager
            .get()
            .open(py, &self.service, pinned.as_ref(), method, path, &args)
    }

    /// `request("GET", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn get<'py>(
        &self,
        py: Python<'py>,
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
        self.send(py, "GET", path, &args)
    }

    /// `request("HEAD", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn head<'py>(
        &self,
        py: Python<'py>,
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
        self.send(py, "HEAD", path, &args)
    }

    /// `request("POST", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn post<'py>(
        &self,
        py: Python<'py>,
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
        self.send(py, "POST", path, &args)
    }

    /// `request("PUT", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn put<'py>(
        &self,
        py: Python<'py>,
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
        self.send(py, "PUT", path, &args)
    }

    /// `request("DELETE", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None, upload_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn delete<'py>(
        &self,
        py: Python<'py>,
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
        self.send(py, "DELETE", path, &args)
    }

    /// Downloads `GET path` to the file `dest` (as `PoolManager.download`).
    #[pyo3(signature = (path, dest, *, params=None, headers=None, timeout=None, wait_timeout=None, cancel=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn download<'py>(
        &self,
        py: Python<'py>,
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
        let pinned = self.pinned()?;
        self.manager.get().fetch(
            py,
            &self.service,
            pinned.as_ref(),
            path,
            dest,
            &args,
            progress,
        )
    }

    fn __repr__(&self) -> String {
        format!("<Client service='{}'>", self.service)
    }
}

/// One job's affinity to one endpoint of a service (`manager.session("comfyui")`): a `Client`
/// whose calls, and whose `websocket()` leases, all go to the endpoint chosen when it was made
/// (`endpoint`), never elsewhere, not even a retried GET. Its pin ends with `close()`, at the
/// end of a `with` block, or when it is garbage collected; calls after `close()` raise
/// `ValueError`. Responses, streams and leases taken before keep working.
#[pyclass(frozen, extends = PyClient, name = "Session", module = "backend_pool")]
pub(crate) struct PySession {
    endpoint: String,
}

impl PySession {
    pub(crate) fn create(
        py: Python<'_>,
        manager: Py<PyPoolManager>,
        session: Session,
    ) -> PyResult<Py<PySession>> {
        let endpoint = session.endpoint().to_string();
        let client = PyClient {
            manager,
            service: session.service().to_string(),
            pin: Some(Mutex::new(Some(session))),
        };
        Py::new(
            py,
            PyClassInitializer::from(client).add_subclass(PySession { endpoint }),
        )
    }
}

#[pymethods]
impl PySession {
    /// The base URL of the endpoint the session is pinned to.
    #[getter]
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// True once closed.
    #[getter]
    fn closed(slf: &Bound<'_, Self>) -> bool {
        let client = slf.as_super().get();
        client.pin.as_ref().is_none_or(|p| p.lock().is_none())
    }

    /// Checks out a WebSocket of the session's endpoint (as `PoolManager.websocket`).
    #[pyo3(signature = (*, wait_timeout=None, cancel=None))]
    fn websocket(
        slf: &Bound<'_, Self>,
        wait_timeout: Option<f64>,
        cancel: Option<Bound<'_, PyCancelToken>>,
    ) -> PyResult<PyWebSocket> {
        let client = slf.as_super().get();
        let pinned = client.pinned()?;
        client.manager.get().lease(
            slf.py(),
            &client.service,
            pinned.as_ref(),
            wait_timeout,
            cancel,
        )
    }

    /// Ends the pin (the endpoint no longer counts this session). Idempotent.
    fn close(slf: &Bound<'_, Self>) {
        let client = slf.as_super().get();
        if let Some(pin) = &client.pin {
            let session = pin.lock().take();
            drop(session);
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(slf: &Bound<'_, Self>, _args: &Bound<'_, PyTuple>) {
        Self::close(slf);
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let client = slf.as_super().get();
        let state = if Self::closed(slf) { " closed" } else { "" };
        format!(
            "<Session service='{}' endpoint='{}'{state}>",
            client.service,
            slf.get().endpoint
        )
    }
}
