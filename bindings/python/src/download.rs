//! `download()`: a response's body saved to a file by the core
//! (`StreamingResponse::download_to`: a temporary file beside the destination, renamed into
//! place once whole), with the interpreter detached while bytes flow, and `Download`, what
//! it returns.
//!
//! The progress callback runs on the calling thread: the core calls its closure there at
//! most every 100 ms and once at the end; the closure attaches to the interpreter only for
//! the call. If the callback raises (or a signal handler does: a Ctrl-C in a script), the
//! download's own token is cancelled: the core stops at its next piece, removes the temporary
//! file and closes the connection (counted as `cancelled`), and the call raises the
//! callback's exception.

use std::path::PathBuf;

use backend_pool::{Download, Error, HttpClient, Progress};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::cancel::CallToken;
use crate::errors::to_py;
use crate::request::{prepare, Args};
use crate::response::{core_status_error, headers_object};

/// How a download ended, seen from the detached closure.
enum Outcome {
    Saved(Download),
    /// The request or the download failed; a status error keeps the response's headers.
    Failed(Error, Vec<(String, String)>),
}

/// `GET path` on `client`'s service saved to `dest`; `progress(downloaded, total)` called
/// on this thread.
pub(crate) fn download(
    py: Python<'_>,
    client: &HttpClient,
    path: &str,
    dest: PathBuf,
    args: &Args<'_>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<PyDownload> {
    // The download's own token: the callback's exception cancels it, never the caller's
    // token (which cancels it too).
    let call = CallToken::new(args.cancel.as_ref().map(|c| c.get()));
    let prepared = prepare(py, client, "GET", path, args, Some(call.token()))?;
    let line = prepared.line.clone();
    let (req, _) = prepared.into_parts()?;
    let callback = progress.map(Bound::unbind);
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let report = |p: Progress| {
        if raised.lock().is_some() {
            return;
        }
        let called = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(callback) = &callback {
                callback.call1(py, (p.bytes, p.total))?;
            }
            Ok(())
        });
        if let Err(e) = called {
            *raised.lock() = Some(e);
            call.cancel();
        }
    };
    let outcome = py.detach(|| {
        let stream = match req.stream(&[]) {
            Ok(stream) => stream,
            Err(e) => return Outcome::Failed(e, Vec::new()),
        };
        // Only a status error needs the headers (the core's error has none).
        let headers = if (200..300).contains(&stream.status()) {
            Vec::new()
        } else {
            stream.headers().to_vec()
        };
        match stream.download_to(&dest, report) {
            Ok(saved) => Outcome::Saved(saved),
            Err(e) => Outcome::Failed(e, headers),
        }
    });
    // The callback's exception first: it is why the download stopped (or, from the last
    // call, after the file was in place, what the caller must see).
    if let Some(e) = raised.into_inner() {
        return Err(e);
    }
    match outcome {
        Outcome::Saved(saved) => Ok(PyDownload {
            status: saved.status(),
            headers: saved.headers().to_vec(),
            headers_object: PyOnceLock::new(),
            service: client.service().to_string(),
            path: dest.to_string_lossy().into_owned(),
            bytes: saved.bytes(),
        }),
        Outcome::Failed(e @ Error::Status { .. }, headers) => {
            Err(core_status_error(e, Some(line), headers))
        }
        Outcome::Failed(e, _) => Err(to_py(e)),
    }
}

/// A finished download: the response's status and headers, where the body was saved and how
/// many bytes.
#[pyclass(frozen, name = "Download", module = "backend_pool")]
pub(crate) struct PyDownload {
    status: u16,
    headers: Vec<(String, String)>,
    headers_object: PyOnceLock<Py<PyAny>>,
    service: String,
    path: String,
    bytes: u64,
}

#[pymethods]
impl PyDownload {
    /// The status code (2xx: any other is an `HTTPStatusError`).
    #[getter]
    fn status_code(&self) -> u16 {
        self.status
    }

    /// The status code (an alias of `status_code`).
    #[getter]
    fn status(&self) -> u16 {
        self.status
    }

    /// The headers, a read-only case-insensitive mapping (`backend_pool.Headers`).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        headers_object(py, &self.headers_object, &self.headers)
    }

    /// The service that answered.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// The file the body was saved to.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// The body's bytes saved (its `Content-Length`, when the server sent one).
    #[getter]
    fn num_bytes_downloaded(&self) -> u64 {
        self.bytes
    }

    fn __repr__(&self) -> String {
        format!(
            "<Download [{}] service='{}' {} bytes to {:?}>",
            self.status, self.service, self.bytes, self.path
        )
    }
}
