//! Request arguments in the conventions of `requests` and `httpx` (`params=`, `data=`,
//! `json=`, `files=`, `headers=`, `timeout=`), turned into the core's `RequestBuilder` and a
//! body. Every call (`PoolManager.request` / `stream` / `download`, and `Client`'s verbs)
//! goes through [`prepare`], then [`Prepared::send`], [`Prepared::open`] or
//! [`Prepared::into_parts`].

use backend_pool::{CancelToken, Form, HttpClient, RequestBuilder, Response, StreamingResponse};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::cancel::PyCancelToken;
use crate::errors::to_py;
use crate::files::{self, Raised};
use crate::json_dumps;
use crate::timeout::Timeouts;

/// The keyword arguments every request takes, as Python gave them.
#[derive(Default)]
pub(crate) struct Args<'py> {
    pub params: Option<Bound<'py, PyAny>>,
    pub data: Option<Bound<'py, PyAny>>,
    pub json: Option<Bound<'py, PyAny>>,
    pub files: Option<Bound<'py, PyAny>>,
    pub headers: Option<Bound<'py, PyAny>>,
    pub timeout: Option<Bound<'py, PyAny>>,
    pub wait_timeout: Option<f64>,
    pub cancel: Option<Bound<'py, PyCancelToken>>,
    /// `upload_progress(sent, total)`; the call's token must be its own (see [`prepare`]).
    pub upload_progress: Option<Bound<'py, PyAny>>,
}

/// A request body, held while the interpreter is detached.
pub(crate) enum Body<'py> {
    Empty,
    /// Borrowed from Python `bytes` (no copy).
    Python(Bound<'py, PyBytes>),
    /// Encoded here: JSON, a form, text.
    Owned(Vec<u8>),
    /// `files=` (and `data=`'s fields): sent by the core's `send_multipart`, streamed.
    Multipart(Form),
}

impl Body<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Empty | Body::Multipart(_) => &[],
            Body::Python(b) => b.as_bytes(),
            Body::Owned(v) => v,
        }
    }
}

/// A request ready to send.
pub(crate) struct Prepared<'py> {
    req: RequestBuilder,
    body: Body<'py>,
    /// What a file object of `files=`, or the `upload_progress` callback, raised while the
    /// body was sent: raised by the call, whatever the core says.
    raised: Raised,
    /// `METHOD /path?query` (`params=` by name only: a value may be a secret), for the
    /// messages of status errors.
    pub line: String,
}

impl<'py> Prepared<'py> {
    /// Sends the request and reads the whole response, detached from the interpreter.
    pub(crate) fn send(self, py: Python<'_>) -> PyResult<Response> {
        let Prepared {
            req, body, raised, ..
        } = self;
        let result = match body {
            Body::Multipart(form) => py.detach(move || req.send_multipart(form)),
            body => {
                let bytes = body.bytes();
                py.detach(move || req.send_bytes(bytes))
            }
        };
        python_first(result, &raised)
    }

    /// Sends the request and returns the response with its body unread, detached from the
    /// interpreter; `files=` as the core's `stream_multipart`.
    pub(crate) fn open(self, py: Python<'_>) -> PyResult<StreamingResponse> {
        let Prepared {
            req, body, raised, ..
        } = self;
        let result = match body {
            Body::Multipart(form) => py.detach(move || req.stream_multipart(form)),
            body => {
                let bytes = body.bytes();
                py.detach(move || req.stream(bytes))
            }
        };
        python_first(result, &raised)
    }

    /// The builder and the body of a download (no `files=`: a download is a `GET`).
    pub(crate) fn into_parts(self) -> PyResult<(RequestBuilder, Body<'py>)> {
        if let Body::Multipart(_) = self.body {
            return Err(PyTypeError::new_err("files= is not for a download"));
        }
        Ok((self.req, self.body))
    }
}

/// The call's result, unless Python code (a file object's `read()`, the progress callback)
/// raised while the body was sent: then its own exception, rather than the core's word for
/// what followed (the request stopped, or was cancelled).
fn python_first<T>(result: Result<T, backend_pool::Error>, raised: &Raised) -> PyResult<T> {
    match raised.take() {
        Some(err) => Err(err),
        None => result.map_err(to_py),
    }
}

/// `upload_progress=`: the core calls it on the calling thread (the interpreter detached),
/// at most every 100 ms while the body goes out and once at the end; each call attaches only
/// for itself. What it raises (or a signal handler, as a Ctrl-C) is kept in `raised` and
/// cancels `token`, the call's own: the core stops the upload and closes the connection,
/// and sends nothing again (a cancelled call is never retried).
fn upload_progress(
    callback: &Bound<'_, PyAny>,
    token: CancelToken,
    raised: &Raised,
) -> PyResult<impl FnMut(u64, u64) + Send + 'static> {
    if !callback.is_callable() {
        return Err(PyTypeError::new_err(
            "upload_progress must be a callable taking (sent, total)",
        ));
    }
    let callback = callback.clone().unbind();
    let raised = raised.clone();
    Ok(move |sent: u64, total: u64| {
        if raised.is_set() {
            return;
        }
        let called = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            callback.call1(py, (sent, total))?;
            Ok(())
        });
        if let Err(e) = called {
            raised.keep(e);
            token.cancel();
        }
    })
}

/// Builds a request from Python arguments; nothing is sent.
pub(crate) fn prepare<'py>(
    py: Python<'py>,
    client: &HttpClient,
    method: &str,
    path: &str,
    args: &Args<'py>,
    cancel: Option<&CancelToken>,
) -> PyResult<Prepared<'py>> {
    let timeouts = Timeouts::resolve(args.timeout.as_ref(), args.wait_timeout)?;
    let mut req = timeouts.apply(client.request(method, path));
    let mut line = format!("{} {path}", method.to_ascii_uppercase());
    if let Some(params) = &args.params {
        // Encoded by the core (`RequestBuilder::query`), after any query in `path`.
        let mut sep = if path.contains('?') { "&" } else { "?" };
        for (name, value) in pairs("params", params)? {
            line.push_str(sep);
            line.push_str(&name);
            line.push_str("=…");
            sep = "&";
            req = req.query(&name, &value);
        }
    }
    if let Some(token) = cancel {
        req = req.cancel_on(token);
    }
    let raised = Raised::default();
    if let Some(callback) = &args.upload_progress {
        // Its exception cancels the call's token: the call's own (the caller passes one
        // for a call with a callback), or one made here.
        let token = match cancel {
            Some(token) => token.clone(),
            None => {
                let own = CancelToken::new();
                req = req.cancel_on(&own);
                own
            }
        };
        req = req.upload_progress(upload_progress(callback, token, &raised)?);
    }
    let mut has_content_type = false;
    if let Some(h) = &args.headers {
        for (name, value) in header_pairs(h)? {
            has_content_type |= name.eq_ignore_ascii_case("content-type");
            req = req.header(&name, &value);
        }
    }
    let (body, content_type) = match (&args.json, &args.data, &args.files) {
        (Some(_), Some(_), _) => {
            return Err(PyTypeError::new_err("pass either json= or data=, not both"))
        }
        (Some(_), None, Some(_)) => {
            return Err(PyTypeError::new_err(
                "pass either json= or files=, not both (data= holds a multipart form's fields)",
            ))
        }
        (None, data, Some(files)) => {
            let fields = match data {
                None => Vec::new(),
                Some(data) if is_form(data)? => pairs("data", data)?,
                Some(_) => {
                    return Err(PyTypeError::new_err(
                        "with files=, data= must be a dict or a list of (name, value) pairs \
                         (the form's fields), not bytes or text",
                    ))
                }
            };
            // The core sets the multipart Content-Type (with its boundary).
            (
                Body::Multipart(files::form(py, fields, files, &raised)?),
                None,
            )
        }
        (Some(value), None, None) => (
            Body::Owned(json_dumps(py, value)?.into_bytes()),
            Some("application/json"),
        ),
        (None, Some(data), None) => data_body(py, data)?,
        (None, None, None) => (Body::Empty, None),
    };
    if let (Some(content_type), false) = (content_type, has_content_type) {
        req = req.header("Content-Type", content_type);
    }
    Ok(Prepared {
        req,
        body,
        raised,
        line,
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
    let mut out = Vec::new();
    for (name, value) in named_items(what, "value", v)? {
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

/// `(name, item)` from a mapping or a list or tuple of pairs, in order, names checked to be
/// str (`params=`, `data=`, `files=`); `what` and `item` name them in the errors.
pub(crate) fn named_items<'py>(
    what: &str,
    item: &str,
    v: &Bound<'py, PyAny>,
) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    let bad = || {
        PyTypeError::new_err(format!(
            "{what} must be a dict or a list of (name, {item}) pairs"
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
    for entry in items.try_iter()? {
        let (name, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) =
            entry?.extract().map_err(|_| bad())?;
        let name: String = name
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("{what}: names must be str")))?;
        out.push((name, value));
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
