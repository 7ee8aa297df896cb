//! `Client`: one service's HTTP pool, with `get`, `post`, ... as Rust's `manager.http(service)`.

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::cancel::PyCancelToken;
use crate::download::PyDownload;
use crate::manager::PyPoolManager;
use crate::request::Args;
use crate::response::PyResponse;
use crate::stream::PyStreamingResponse;

/// One service's HTTP pool: `manager.client("comfyui").get("/history")`. Takes the same
/// keyword arguments as `PoolManager.request`. A view on the manager: calls after its
/// shutdown raise `ShuttingDown`; nothing to close.
#[pyclass(frozen, name = "Client", module = "backend_pool")]
pub(crate) struct PyClient {
    manager: Py<PyPoolManager>,
    service: String,
}

impl PyClient {
    pub(crate) fn new(manager: Py<PyPoolManager>, service: &str) -> Self {
        PyClient {
            manager,
            service: service.to_string(),
        }
    }

    fn send(
        &self,
        py: Python<'_>,
        method: &str,
        path: &str,
        args: &Args<'_>,
    ) -> PyResult<PyResponse> {
        self.manager
            .get()
            .send(py, &self.service, method, path, args)
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
    #[pyo3(signature = (method, path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None))]
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
        };
        self.send(py, method, path, &args)
    }

    /// Sends a request and returns the response with its body unread (as
    /// `PoolManager.stream`).
    #[pyo3(signature = (method, path, *, params=None, data=None, json=None, headers=None, timeout=None, wait_timeout=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        path: &str,
        params: Option<Bound<'py, PyAny>>,
        data: Option<Bound<'py, PyAny>>,
        json: Option<Bound<'py, PyAny>>,
        headers: Option<Bound<'py, PyAny>>,
        timeout: Option<Bound<'py, PyAny>>,
        wait_timeout: Option<f64>,
        cancel: Option<Bound<'py, PyCancelToken>>,
    ) -> PyResult<PyStreamingResponse> {
        let args = Args {
            params,
            data,
            json,
            headers,
            timeout,
            wait_timeout,
            cancel,
            ..Args::default()
        };
        self.manager
            .get()
            .open(py, &self.service, method, path, &args)
    }

    /// `request("GET", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None))]
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
        };
        self.send(py, "GET", path, &args)
    }

    /// `request("HEAD", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None))]
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
        };
        self.send(py, "HEAD", path, &args)
    }

    /// `request("POST", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None))]
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
        };
        self.send(py, "POST", path, &args)
    }

    /// `request("PUT", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None))]
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
        };
        self.send(py, "PUT", path, &args)
    }

    /// `request("DELETE", path, ...)`.
    #[pyo3(signature = (path, *, params=None, data=None, json=None, files=None, headers=None, timeout=None, wait_timeout=None, cancel=None))]
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
        self.manager
            .get()
            .fetch(py, &self.service, path, dest, &args, progress)
    }

    fn __repr__(&self) -> String {
        format!("<Client service='{}'>", self.service)
    }
}
