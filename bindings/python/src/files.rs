//! `files=`: a `multipart/form-data` body in the conventions of `requests`, built as the
//! core's [`Form`] and sent by its `send_multipart` (one encoder, the core's).
//!
//! `files` is a mapping or a list of `(name, value)` pairs (a name may repeat); a value is
//!
//! * a path (`str` or `os.PathLike`): the file is opened now and streamed as it is sent,
//!   never read whole into memory; its file name is the path's last component;
//! * a binary file object (`open(path, "rb")`, `io.BytesIO`): read in pieces as the body is
//!   sent, from its current position to its end (it must be seekable: the length goes out
//!   first, in `Content-Length`); its file name is its `name`'s last component, else the
//!   field's name;
//! * `bytes` (or a bytearray or memoryview), sent as they are, under the field's name as file
//!   name;
//! * a tuple `(filename, content)` or `(filename, content, content_type)`, whose content is
//!   one of the above or a `str` (sent as UTF-8 text, as in `requests`); a filename of None
//!   makes the part a plain field.
//!
//! A part without a content type gets the one `mimetypes` guesses from its file name (as
//! httpx), else the core's `application/octet-stream`. `data=`'s fields, a mapping or pairs,
//! come first, as text parts.
//!
//! A file object is read with the interpreter attached for each piece (its `read()` is Python
//! code); what it raises is kept in [`Raised`] and raised by the call in place of the core's
//! `RequestBody` error.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend_pool::{Form, Part};
use parking_lot::Mutex;
use pyo3::exceptions::{PyIsADirectoryError, PyOSError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyByteArray, PyBytes, PyString, PyTuple};

/// The most a file object's `read()` is asked for at once.
const FILE_PIECE: usize = 256 * 1024;

/// The first exception Python code raised while the body was sent: a file object's `read()`,
/// or the `upload_progress` callback.
#[derive(Clone, Default)]
pub(crate) struct Raised(Arc<Mutex<Option<PyErr>>>);

impl Raised {
    pub(crate) fn keep(&self, err: PyErr) {
        self.0.lock().get_or_insert(err);
    }

    /// True once an exception was kept.
    pub(crate) fn is_set(&self) -> bool {
        self.0.lock().is_some()
    }

    /// The exception, if one was raised.
    pub(crate) fn take(&self) -> Option<PyErr> {
        self.0.lock().take()
    }
}

/// The form of `files=` with `data=`'s fields (already as pairs) first.
pub(crate) fn form(
    py: Python<'_>,
    fields: Vec<(String, String)>,
    files: &Bound<'_, PyAny>,
    raised: &Raised,
) -> PyResult<Form> {
    let mut form = Form::new();
    for (name, value) in fields {
        form = form.text(&name, &value);
    }
    for (name, value) in crate::request::named_items("files", "file", files)? {
        form = form.part(&name, part(py, &name, &value, raised)?);
    }
    Ok(form)
}

/// One part: see the module docs.
fn part(py: Python<'_>, name: &str, value: &Bound<'_, PyAny>, raised: &Raised) -> PyResult<Part> {
    if let Ok(tuple) = value.cast::<PyTuple>() {
        let n = tuple.len();
        if !(2..=3).contains(&n) {
            return Err(PyTypeError::new_err(format!(
                "files: '{name}' must be (filename, content) or (filename, content, \
                 content_type), not a tuple of {n}"
            )));
        }
        let file_name: Option<String> = tuple.get_item(0)?.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "files: the filename of '{name}' must be str or None"
            ))
        })?;
        let content_type: Option<String> = match n {
            3 => tuple.get_item(2)?.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "files: the content type of '{name}' must be str or None"
                ))
            })?,
            _ => None,
        };
        let content = tuple.get_item(1)?;
        let (source, _) = if let Ok(text) = content.cast::<PyString>() {
            (Part::text(text.to_str()?), None)
        } else {
            source(py, name, &content, raised)?
        };
        return typed(py, source, file_name, content_type);
    }
    if value.is_instance_of::<PyString>() || value.hasattr("__fspath__")? {
        let (source, file_name) = source(py, name, value, raised)?;
        return typed(py, source, file_name, None);
    }
    let (source, file_name) = source(py, name, value, raised)?;
    typed(
        py,
        source,
        file_name.or_else(|| Some(name.to_string())),
        None,
    )
}

/// The part's bytes from a path, a file object or bytes, and the file name they suggest.
fn source(
    py: Python<'_>,
    name: &str,
    value: &Bound<'_, PyAny>,
    raised: &Raised,
) -> PyResult<(Part, Option<String>)> {
    if value.is_instance_of::<PyBytes>() || value.is_instance_of::<PyByteArray>() {
        let bytes: PyBackedBytes = value.extract()?;
        let len = bytes.len() as u64;
        return Ok((Part::reader(io::Cursor::new(bytes), len), None));
    }
    if value.is_instance_of::<PyString>() || value.hasattr("__fspath__")? {
        let path: PathBuf = value.extract()?;
        let (file, len) = open(py, &path)?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        return Ok((Part::reader(file, len), file_name));
    }
    if value.hasattr("read")? {
        return file_object(py, name, value, raised);
    }
    if let Ok(view) = value.cast::<pyo3::types::PyMemoryView>() {
        let bytes: PyBackedBytes = py
            .import("builtins")?
            .getattr("bytes")?
            .call1((view,))?
            .extract()?;
        let len = bytes.len() as u64;
        return Ok((Part::reader(io::Cursor::new(bytes), len), None));
    }
    Err(PyTypeError::new_err(format!(
        "files: '{name}' must be a path, a binary file object, bytes, or a (filename, \
         content[, content_type]) tuple, not {}",
        value.get_type().name()?
    )))
}

/// The file at `path` and its length; an `OSError` naming the path if it cannot be read
/// (`FileNotFoundError`, `PermissionError`, `IsADirectoryError`, as `open()` raises them).
fn open(py: Python<'_>, path: &Path) -> PyResult<(File, u64)> {
    let shown = path.display().to_string();
    let os_error = |e: io::Error| -> PyErr {
        let Some(errno) = e.raw_os_error() else {
            return PyOSError::new_err(format!("cannot read '{shown}': {e}"));
        };
        // OSError(errno, strerror, filename) is the subclass for errno, as open() raises it.
        // On Windows the code is a Win32 error, not an errno: OSError's fourth argument
        // (winerror) maps it, as Python's own open() does (5, "Access is denied", is
        // PermissionError there, not errno 5's "Input/output error").
        #[cfg(windows)]
        let oserror = {
            let text = e.to_string();
            let strerror = text
                .rsplit_once(" (os error")
                .map_or(text.as_str(), |(t, _)| t)
                .to_string();
            py.get_type::<PyOSError>()
                .call1((0, strerror, shown.as_str(), errno))
        };
        #[cfg(not(windows))]
        let oserror = py
            .import("os")
            .and_then(|os| os.call_method1("strerror", (errno,)))
            .and_then(|strerror| {
                py.get_type::<PyOSError>()
                    .call1((errno, strerror, shown.as_str()))
            });
        oserror.map_or_else(|err| err, PyErr::from_value)
    };
    // A directory first: Windows refuses to open one ("Access is denied"), and the answer
    // should say what it is on every platform, as open() does (IsADirectoryError).
    let is_a_directory = || PyIsADirectoryError::new_err((21, "Is a directory", shown.clone()));
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(is_a_directory());
    }
    let file = File::open(path).map_err(os_error)?;
    let meta = file.metadata().map_err(os_error)?;
    if meta.is_dir() {
        return Err(is_a_directory());
    }
    if !meta.is_file() {
        return Err(PyOSError::new_err(format!(
            "'{}' is not a regular file",
            path.display()
        )));
    }
    Ok((file, meta.len()))
}

/// A binary file object: its length from its position to its end, and its name.
fn file_object(
    py: Python<'_>,
    name: &str,
    file: &Bound<'_, PyAny>,
    raised: &Raised,
) -> PyResult<(Part, Option<String>)> {
    let io = py.import("io")?;
    if file.is_instance(&io.getattr("TextIOBase")?)? {
        return Err(PyTypeError::new_err(format!(
            "files: '{name}' is a text file: open it in binary mode ('rb')"
        )));
    }
    let seekable = file
        .call_method0("seekable")
        .and_then(|s| s.is_truthy())
        .unwrap_or(false);
    if !seekable {
        return Err(PyTypeError::new_err(format!(
            "files: the file object of '{name}' must be seekable (its length is sent before \
             its bytes); pass its bytes instead"
        )));
    }
    let at: u64 = file.call_method0("tell")?.extract()?;
    let end: u64 = file.call_method1("seek", (0, 2))?.extract()?;
    file.call_method1("seek", (at, 0))?;
    let len = end.saturating_sub(at);
    let file_name = file
        .getattr("name")
        .ok()
        .and_then(|n| n.extract::<PathBuf>().ok())
        .filter(|p| {
            let s = p.to_string_lossy();
            !(s.starts_with('<') && s.ends_with('>'))
        })
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let reader = FileObject {
        file: file.clone().unbind(),
        name: name.to_string(),
        raised: raised.clone(),
    };
    Ok((Part::reader(reader, len), file_name))
}

/// `part` with its file name, and its content type: the one given, else the one
/// `mimetypes` guesses from the file name, else none (the core's default).
fn typed(
    py: Python<'_>,
    mut part: Part,
    file_name: Option<String>,
    content_type: Option<String>,
) -> PyResult<Part> {
    let content_type = match (content_type, &file_name) {
        (Some(ct), _) => Some(ct),
        (None, Some(file_name)) => py
            .import("mimetypes")?
            .call_method1("guess_type", (file_name,))?
            .get_item(0)?
            .extract()?,
        (None, None) => None,
    };
    if let Some(file_name) = &file_name {
        part = part.file_name(file_name);
    }
    if let Some(ct) = &content_type {
        part = part.content_type(ct);
    }
    Ok(part)
}

/// A Python binary file object as a reader, read with the interpreter attached for each
/// piece; what its `read()` raises is kept in `raised`.
struct FileObject {
    file: Py<PyAny>,
    name: String,
    raised: Raised,
}

impl Read for FileObject {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(FILE_PIECE);
        let result = Python::attach(|py| -> PyResult<usize> {
            let got = self.file.bind(py).call_method1("read", (want,))?;
            let bytes: PyBackedBytes = got.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "files: the read() of '{}' returned {}, not bytes",
                    self.name,
                    got.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?;
            if bytes.len() > want {
                return Err(PyTypeError::new_err(format!(
                    "files: read({want}) of '{}' returned {} bytes",
                    self.name,
                    bytes.len()
                )));
            }
            buf[..bytes.len()].copy_from_slice(&bytes);
            Ok(bytes.len())
        });
        result.map_err(|e| {
            self.raised.keep(e);
            io::Error::other(format!(
                "the read() of the file object '{}' raised",
                self.name
            ))
        })
    }
}
