//! `WebSocket`: a pooled socket as a context manager.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_pool::{Error, Message, WsGuard};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::cancel::CallToken;
use crate::errors::to_py;
use crate::slot::{closed_suffix, Slot};
use crate::{json_dumps, json_loads, seconds};

/// A WebSocket checked out of a service's pool: a lease. Use it as a context manager and call
/// `finish()` once nothing the lease started is still running (ComfyUI: your prompt ended
/// with `executing` / `node: None`): the socket then goes back to the pool. A lease that
/// read `client_id` or sent and ends without `finish()` is closed instead (its job's events
/// must not reach the next lessee), as is a socket that failed or was closed by the peer.
///
/// One thread reads or sends at a time; `cancel()`, `close()`, `finish()` and `discard()`
/// work from any thread without waiting for it: the lease's own token (linked to the
/// caller's, if any) sits outside the lock that thread holds (see `slot.rs`).
#[pyclass(frozen, name = "WebSocket", module = "backend_pool")]
pub(crate) struct PyWebSocket {
    service: String,
    cancel: CallToken,
    inner: Arc<Slot<WsGuard>>,
}

enum Received {
    Text(String),
    Binary(Vec<u8>),
}

impl PyWebSocket {
    /// `cancel` is the token the socket was checked out with.
    pub(crate) fn new(service: &str, guard: WsGuard, cancel: CallToken) -> Self {
        // A socket cut off mid-call is closed: a cancel that raced a read which succeeded
        // has still shut it down.
        let inner = Arc::new(Slot::new(guard, WsGuard::discard));
        let slot = Arc::downgrade(&inner);
        cancel.on_cancel(move || {
            if let Some(slot) = slot.upgrade() {
                slot.close(WsGuard::discard, || ());
            }
        });
        PyWebSocket {
            service: service.to_string(),
            cancel,
            inner,
        }
    }

    /// Runs `f` on the checked-out socket with the interpreter detached. A cancelled lease
    /// ends (its socket closed) after its call returns.
    fn with_guard<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut WsGuard) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        let cancel = &self.cancel;
        match py.detach(|| self.inner.use_with(f, || cancel.is_cancelled())) {
            None => Err(PyValueError::new_err(format!(
                "the WebSocket lease of service '{}' has ended (finished, closed or cancelled)",
                self.service
            ))),
            Some(r) => r.map_err(to_py),
        }
    }

    fn receive(&self, py: Python<'_>, timeout: Option<f64>, text_only: bool) -> PyResult<Received> {
        let wait = timeout.map(|t| seconds(t, "timeout")).transpose()?;
        self.with_guard(py, move |g| {
            let deadline = wait.map(|w| Instant::now() + w);
            loop {
                let msg = match deadline {
                    // Zero left still reports a timeout through the guard (counted, named).
                    Some(d) => g.read_timeout(d.saturating_duration_since(Instant::now()))?,
                    None => g.read()?,
                };
                match msg {
                    Message::Text(t) => return Ok(Received::Text(t)),
                    Message::Binary(b) if !text_only => return Ok(Received::Binary(b)),
                    Message::Binary(_) => continue,
                }
            }
        })
    }
}

#[pymethods]
impl PyWebSocket {
    /// The client id the socket was opened with (ComfyUI's `clientId`), or None (also once
    /// the lease ended). Reading it marks the lease as started: end it with `finish()`.
    #[getter]
    fn client_id(&self, py: Python<'_>) -> Option<String> {
        // Another thread may hold the socket while it blocks in recv: wait detached.
        py.detach(|| {
            self.inner
                .use_with(|g| g.client_id().map(str::to_string), || false)
                .flatten()
        })
    }

    /// The service.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// True once the lease ended (finished, closed, discarded or cancelled).
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Sends a text (`str`) or binary (`bytes`, `bytearray`) message.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let message = if let Ok(s) = data.cast::<PyString>() {
            Message::text(s.to_str()?)
        } else if let Ok(b) = data.cast::<PyBytes>() {
            Message::binary(b.as_bytes())
        } else if let Ok(b) = data.extract::<Vec<u8>>() {
            Message::Binary(b)
        } else {
            return Err(PyTypeError::new_err("send() takes str or bytes"));
        };
        self.with_guard(py, move |g| g.send(message))
    }

    /// Sends `value` encoded as JSON in a text message.
    fn send_json(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let text = json_dumps(py, value)?;
        self.with_guard(py, move |g| g.send_text(&text))
    }

    /// The next text (`str`) or binary (`bytes`) message. Pings are answered and skipped.
    /// Waits at most `timeout` seconds (the service's `read_idle_timeout_ms` by default) and
    /// raises `Timeout` after it; the socket stays usable after a timeout.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        Ok(match self.receive(py, timeout, false)? {
            Received::Text(t) => PyString::new(py, &t).into_any().unbind(),
            Received::Binary(b) => PyBytes::new(py, &b).into_any().unbind(),
        })
    }

    /// The next text message decoded as JSON (binary messages are skipped). Raises `Timeout`
    /// as `recv`.
    #[pyo3(signature = (timeout=None))]
    fn recv_json<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        match self.receive(py, timeout, true)? {
            Received::Text(t) => json_loads(py, PyString::new(py, &t).as_any(), &self.service),
            Received::Binary(_) => unreachable!("binary messages are skipped"),
        }
    }

    /// Ends the lease at a quiet point: nothing it started is still running. The socket goes
    /// back to its pool (unless it failed). A call still blocked on another thread means it
    /// is not quiet: that call is cancelled and the socket closed, as by `close()`.
    /// Idempotent.
    fn finish(&self, py: Python<'_>) {
        py.detach(|| self.inner.close(WsGuard::finish, || self.cancel.cancel()));
    }

    /// Ends the lease: the socket goes back to its pool if the lease never read `client_id`
    /// nor sent, and is closed otherwise (use `finish()` after a completed job). Never waits
    /// for a thread blocked reading or sending: that call is cancelled (it raises
    /// `Cancelled`) and the socket closed. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close(drop, || self.cancel.cancel()));
    }

    /// Closes the socket instead of returning it to the pool (after a protocol mix-up, or to
    /// force a fresh connection). Never waits, as `close()`.
    fn discard(&self, py: Python<'_>) {
        py.detach(|| self.inner.close(WsGuard::discard, || self.cancel.cancel()));
    }

    /// Cancels the lease from any thread: a read or send blocked on it raises `Cancelled` at
    /// once, and so does every later one; the socket is closed, never returned to the pool.
    /// The token given to `websocket()` (if any) is not cancelled. Idempotent.
    fn cancel(&self, py: Python<'_>) {
        py.detach(|| {
            self.cancel.cancel();
            self.inner.close(WsGuard::discard, || ());
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        // The client id is not shown: reading it would mark the lease as started.
        format!(
            "<WebSocket service='{}'{}>",
            self.service,
            closed_suffix(self.inner.is_closed())
        )
    }
}

impl Drop for PyWebSocket {
    fn drop(&mut self) {
        let inner = self.inner.take();
        if inner.is_some() {
            Python::attach(|py| py.detach(|| drop(inner)));
        }
    }
}

/// Used by `PoolManager.websocket`: the wait for a free socket.
pub(crate) fn wait(wait_timeout: Option<f64>) -> PyResult<Option<Duration>> {
    wait_timeout.map(|t| seconds(t, "wait_timeout")).transpose()
}
