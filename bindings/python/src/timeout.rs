//! `timeout=` as in httpx: a number bounds each phase, a `Timeout` sets them one by one, a
//! `(connect, read)` pair as in `requests`. [`Timeouts::apply`] is the one place that maps
//! them onto the core's `RequestBuilder` (its per-phase timeouts).

use std::time::Duration;

use backend_pool::RequestBuilder;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyTuple};

use crate::seconds;

/// Timeouts of one request, in seconds: `connect` (opening a connection), `read` (waiting
/// for the response and for each part of its body), `pool` (waiting for a pooled
/// connection), `total` (the whole request, body included). `timeout` is the default of
/// `connect`, `read` and `pool`; a phase left at None takes the service's configured value.
#[pyclass(frozen, eq, name = "Timeout", module = "backend_pool")]
#[derive(Clone, Copy, PartialEq)]
pub(crate) struct PyTimeout {
    connect: Option<f64>,
    read: Option<f64>,
    pool: Option<f64>,
    total: Option<f64>,
}

#[pymethods]
impl PyTimeout {
    #[new]
    #[pyo3(signature = (timeout=None, *, connect=None, read=None, pool=None, total=None))]
    fn new(
        timeout: Option<f64>,
        connect: Option<f64>,
        read: Option<f64>,
        pool: Option<f64>,
        total: Option<f64>,
    ) -> PyResult<Self> {
        let t = PyTimeout {
            connect: connect.or(timeout),
            read: read.or(timeout),
            pool: pool.or(timeout),
            total,
        };
        t.durations()?; // checked now, not at the first request
        Ok(t)
    }

    /// Opening a connection (TCP, TLS), in seconds; None: the service's `connect_timeout_ms`.
    #[getter]
    fn connect(&self) -> Option<f64> {
        self.connect
    }

    /// The longest wait for each read of the response (its head, then each part of its
    /// body), in seconds; None: the service's `read_idle_timeout_ms`.
    #[getter]
    fn read(&self) -> Option<f64> {
        self.read
    }

    /// Waiting for a pooled connection, in seconds; None: the service's `wait_timeout_ms`.
    #[getter]
    fn pool(&self) -> Option<f64> {
        self.pool
    }

    /// The whole request, its body included, in seconds; None: no deadline but the phases'.
    #[getter]
    fn total(&self) -> Option<f64> {
        self.total
    }

    fn __repr__(&self) -> String {
        let show = |v: Option<f64>| v.map_or("None".to_string(), |s| format!("{s:?}"));
        format!(
            "Timeout(connect={}, read={}, pool={}, total={})",
            show(self.connect),
            show(self.read),
            show(self.pool),
            show(self.total)
        )
    }
}

impl PyTimeout {
    fn durations(&self) -> PyResult<Timeouts> {
        let d = |v: Option<f64>, what: &str| v.map(|s| seconds(s, what)).transpose();
        Ok(Timeouts {
            connect: d(self.connect, "Timeout.connect")?,
            read: d(self.read, "Timeout.read")?,
            pool: d(self.pool, "Timeout.pool")?,
            total: d(self.total, "Timeout.total")?,
        })
    }
}

/// The timeouts a request was given; None: the service's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Timeouts {
    connect: Option<Duration>,
    read: Option<Duration>,
    pool: Option<Duration>,
    total: Option<Duration>,
}

impl Timeouts {
    /// From `timeout=` (None, a number, a `(connect, read)` pair or a `Timeout`) and
    /// `wait_timeout=`, which overrides the pool timeout.
    pub(crate) fn resolve(
        timeout: Option<&Bound<'_, PyAny>>,
        wait_timeout: Option<f64>,
    ) -> PyResult<Timeouts> {
        let mut t = match timeout {
            None => Timeouts::default(),
            Some(v) if v.is_none() => Timeouts::default(),
            Some(v) => from_python(v)?,
        };
        if let Some(w) = wait_timeout {
            t.pool = Some(seconds(w, "wait_timeout")?);
        }
        Ok(t)
    }

    /// Sets these timeouts on `req`, each on the core's setting of its phase: `pool` the
    /// wait for a pooled connection, `connect` opening one, `read` the longest wait for each
    /// read of the response (its head, then each part of its body: a body that keeps coming
    /// may take any time, as in httpx), `total` one deadline for the whole request, its body
    /// included.
    pub(crate) fn apply(&self, mut req: RequestBuilder) -> RequestBuilder {
        if let Some(wait) = self.pool {
            req = req.wait_timeout(wait);
        }
        if let Some(connect) = self.connect {
            req = req.connect_timeout(connect);
        }
        if let Some(read) = self.read {
            req = req.read_timeout(read);
        }
        if let Some(total) = self.total {
            req = req.total_timeout(total);
        }
        req
    }
}

fn from_python(v: &Bound<'_, PyAny>) -> PyResult<Timeouts> {
    if let Ok(t) = v.cast::<PyTimeout>() {
        return t.get().durations();
    }
    let number = |v: &Bound<'_, PyAny>| -> PyResult<Option<f64>> {
        if v.is_none() {
            return Ok(None);
        }
        if v.is_instance_of::<PyBool>()
            || !(v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>())
        {
            return Err(bad_timeout());
        }
        v.extract().map(Some)
    };
    if let Ok(pair) = v.cast::<PyTuple>() {
        if pair.len() != 2 {
            return Err(bad_timeout());
        }
        let (connect, read) = (number(&pair.get_item(0)?)?, number(&pair.get_item(1)?)?);
        return PyTimeout::new(None, connect, read, None, None)?.durations();
    }
    PyTimeout::new(number(v)?, None, None, None, None)?.durations()
}

fn bad_timeout() -> PyErr {
    PyTypeError::new_err(
        "timeout must be a number of seconds, a (connect, read) pair or a backend_pool.Timeout",
    )
}
