//! Request arguments in the conventions of `requests` and `httpx` (`params=`, `data=`,
//! `json=`, `headers=`, `timeout=`), turned into the core's `RequestBuilder` and a body.
//! Every call (`PoolManager.request` / `stream`, and `Client`'s verbs) goes through
//! [`prepare`], then [`Prepared::send`] or [`Prepared::open`].

use backend_pool::{CancelToken, Error, HttpClient, RequestBuilder, Response, StreamingResponse};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::cancel::PyCancelToken;
use crate::json_dumps;
use crate::timeout::Timeouts;

/// The keyword arguments every request takes, as Python gave them.
#[derive(Default)]
pub(crate) struct Args<'py> {
    pub params: Option<Bound<'py, PyAny>>,
    pub data: Option<Bound<'py, PyAny>>,
    pub json: Option<Bound<'py, PyAny>>,
    pub headers: Option<Bound<'py, PyAny>>,
    pub timeout: Option<Bound<'py, PyAny>>,
    pub wait_timeout: Option<f64>,
    pub cancel: Option<Bound<'py, PyCancelToken>>,
}

/// A request body, held while the interpreter is detached.
pub(crate) enum Body<'py> {
    Empty,
    /// Borrowed from Python `bytes` (no copy).
    Python(Bound<'py, PyBytes>),
    /// Encoded here: JSON, a form, text.
    Owned(Vec<u8>),
    // `files=` adds a multipart form here, sent with the core's `send_multipart`.
}

impl Body<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Python(b) => b.as_bytes(),
            Body::Owned(v) => v,
        }
    }
}

/// A request ready to send.
pub(crate) struct Prepared<'py> {
    req: RequestBuilder,
    body: Body<'py>,
    /// `METHOD /path?query`, for the messages of status errors.
    pub line: String,
}

impl Prepared<'_> {
    /// Sends the request and reads the whole response, detached from the interpreter.
    pub(crate) fn send(self, py: Python<'_>) -> Result<Response, Error> {
        let Prepared { req, body, .. } = self;
        let bytes = body.bytes();
        py.detach(move || req.send_bytes(bytes))
    }

    /// Sends the request and returns the response with its body unread, detached from the
    /// interpreter.
    pub(crate) fn open(self, py: Python<'_>) -> Result<StreamingResponse, Error> {
        let Prepared { req, body, .. } = self;
        let bytes = body.bytes();
        py.detach(move || req.stream(bytes))
    }
}

/// Builds a request from Python arguments; nothing is sent. `whole` is false for a stream
/// (see [`Timeouts::apply`]).
pub(crate) fn prepare<'py>(
    py: Python<'py>,
    client: &HttpClient,
    method: &str,
    path: &str,
    args: &Args<'py>,
    whole: bool,
    cancel: Option<&CancelToken>,
) -> PyResult<Prepared<'py>> {
    let target = match &args.params {
        Some(params) => with_query(py, path, &pairs("params", params)?)?,
        None => path.to_string(),
    };
    let timeouts = Timeouts::resolve(args.timeout.as_ref(), args.wait_timeout)?;
    let mut req = timeouts.apply(client.request(method, &target), whole);
    if let Some(token) = cancel {
        req = req.cancel_on(token);
    }
    let mut has_content_type = false;
    if let Some(h) = &args.headers {
        for (name, value) in header_pairs(h)? {
            has_content_type |= name.eq_ignore_ascii_case("content-type");
            req = req.header(&name, &value);
        }
    }
    let (body, content_type) = match (&args.json, &args.data) {
        (Some(_), Some(_)) => {
            return Err(PyTypeError::new_err("pass either json= or data=, not both"))
        }
        (Some(value), None) => (
            Body::Owned(json_dumps(py, value)?.into_bytes()),
            Some("application/json"),
        ),
        (None, Some(data)) => data_body(py, data)?,
        (None, None) => (Body::Empty, None),
    };
    if let (Some(content_type), false) = (content_type, has_content_type) {
        req = req.header("Content-Type", content_type);
    }
    Ok(Prepared {
        req,
        body,
        line: format!("{} {target}", method.to_ascii_uppercase()),
    })
}

/// `data=`: bytes and text as they are; a mapping or a list of pairs as a form
/// (`application/x-www-form-urlencoded`).
fn data_body<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<(Body<'py>, Option<&'static str>)> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok((Body::Python(b.clone()), None));
    }
    if let Ok(s) = data.cast::<PyString>() {
        return Ok((Body::Owned(s.to_str()?.as_bytes().to_vec()), None));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok((Body::Owned(b.to_vec()), None));
    }
    if is_form(data)? {
        let form = urlencode(py, &pairs("data", data)?)?;
        return Ok((
            Body::Owned(form.into_bytes()),
            Some("application/x-www-form-urlencoded"),
        ));
    }
    // memoryview and other buffer objects: bytes(data).
    let bytes = py
        .import("builtins")?
        .getattr("bytes")?
        .call1((data,))
        .ok()
        .and_then(|b| b.cast_into::<PyBytes>().ok())
        .ok_or_else(|| {
            PyTypeError::new_err(
                "data must be bytes, str, a buffer, or a dict or list of (name, value) pairs \
                 (a form)",
            )
        })?;
    Ok((Body::Python(bytes), None))
}

/// A mapping, or a list or tuple (of pairs): a form, not bytes.
fn is_form(data: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(data.hasattr("items")?
        || data.is_instance_of::<PyList>()
        || data.is_instance_of::<PyTuple>())
}

/// `(name, value)` pairs from a mapping or a list of pairs, in order; a list or tuple value
/// repeats its name for each item. Values are str, int, float, bool (`"true"` / `"false"`)
/// or None (`""`), as httpx writes them.
fn pairs(what: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let bad = || {
        PyTypeError::new_err(format!(
            "{what} must be a dict or a list of (name, value) pairs"
        ))
    };
    let items = if v.hasattr("items")? {
        v.call_method0("items")?
    } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        v.clone()
    } else {
        return Err(bad());
    };
    let mut out = Vec::new();
    for item in items.try_iter()? {
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item?.extract().map_err(|_| bad())?;
        let name: String = name
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("{what}: names must be str")))?;
        if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
            for one in value.try_iter()? {
                let text = scalar(what, &name, &one?)?;
                out.push((name.clone(), text));
            }
        } else {
            let text = scalar(what, &name, &value)?;
            out.push((name, text));
        }
    }
    Ok(out)
}

fn scalar(what: &str, name: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    if v.is_none() {
        return Ok(String::new());
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.to_string());
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(s.to_str()?.to_string());
    }
    if v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>() {
        return Ok(v.str()?.to_str()?.to_string());
    }
    Err(PyTypeError::new_err(format!(
        "{what}: the value of '{name}' must be str, int, float, bool or None, not {}",
        v.get_type().name()?
    )))
}

/// `path` with `pairs` appended to its query, each name and value percent-encoded as UTF-8
/// by Python's `urllib.parse.quote` (every byte but the unreserved `A-Z a-z 0-9 - . _ ~`).
/// The core's `RequestBuilder::query` will take the pairs instead.
fn with_query(py: Python<'_>, path: &str, pairs: &[(String, String)]) -> PyResult<String> {
    if pairs.is_empty() {
        return Ok(path.to_string());
    }
    let quote = py.import("urllib.parse")?.getattr("quote")?;
    let encode = |s: &str| -> PyResult<String> { quote.call1((s, "")).and_then(|q| q.extract()) };
    let mut target = path.to_string();
    let sep = match path.find('?') {
        None => "?",
        Some(_) if path.ends_with('?') || path.ends_with('&') => "",
        Some(_) => "&",
    };
    target.push_str(sep);
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            target.push('&');
        }
        target.push_str(&encode(name)?);
        target.push('=');
        target.push_str(&encode(value)?);
    }
    Ok(target)
}

/// A form body as browsers, `requests` and `httpx` send it: `urllib.parse.urlencode`
/// (spaces as `+`).
fn urlencode(py: Python<'_>, pairs: &[(String, String)]) -> PyResult<String> {
    py.import("urllib.parse")?
        .call_method1("urlencode", (pairs.to_vec(),))?
        .extract()
}

/// `headers=`: a mapping (a dict, a `Headers`) or a list of `(name, value)` pairs, whose
/// names may repeat (each is sent).
fn header_pairs(h: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let bad =
        || PyTypeError::new_err("headers must be a dict or a list of (name, value) pairs of str");
    if h.hasattr("items")? {
        h.call_method0("items")?
            .try_iter()?
            .map(|item| item?.extract::<(String, String)>().map_err(|_| bad()))
            .collect()
    } else {
        h.extract::<Vec<(String, String)>>().map_err(|_| bad())
    }
}
