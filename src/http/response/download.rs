//! Downloads: a [`StreamingResponse`]'s body saved to a file (through a temporary file
//! renamed into place) or to a writer, in 64 KiB pieces, with a progress callback.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ureq::http::HeaderMap;

use super::{classify, cut_short, head_accessors, Headers, StreamingResponse};
use crate::error::Error;

/// How often, at most, a download calls its progress callback, unless
/// [`StreamingResponse::progress_interval`] says otherwise.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How much of the body a download reads and writes at a time.
const PIECE: usize = 64 * 1024;

/// How far a download is: what its progress callback receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Body bytes received and written so far.
    pub bytes: u64,
    /// The body's length (`Content-Length`), when the server announced it.
    pub total: Option<u64>,
    /// Time since the download began (its response head had arrived).
    pub elapsed: Duration,
    /// True for the last call, made once the whole body is saved (the file in place).
    pub done: bool,
}

impl Progress {
    /// `bytes / total`, from 0.0 to 1.0, when the length is known (1.0 for an empty body).
    pub fn fraction(&self) -> Option<f64> {
        match self.total? {
            0 => Some(1.0),
            total => Some((self.bytes as f64 / total as f64).min(1.0)),
        }
    }
}

/// A finished download: the response's status and headers, and the bytes saved.
#[derive(Clone)]
pub struct Download {
    status: u16,
    headers: Headers,
    bytes: u64,
    service: String,
}

impl Download {
    head_accessors!();

    /// Body bytes saved (the `Content-Length`, when the server announced one).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("service", &self.service)
            .field("status", &self.status)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl StreamingResponse {
    /// How often, at most, [`StreamingResponse::download_to`] and
    /// [`StreamingResponse::download_to_writer`] call their progress callback (besides the
    /// last call). Defaults to 100 ms.
    pub fn progress_interval(mut self, every: Duration) -> Self {
        self.progress_every = every;
        self
    }

    /// Saves the body to the file `dest`, calling `progress` as it goes, and returns the
    /// response's head and the bytes saved. Memory stays flat whatever the size (64 KiB
    /// pieces), and `max_body_bytes` does not apply.
    ///
    /// The body goes to a temporary file beside `dest` (`.{name}.part-…`, in the same
    /// directory, so the rename cannot cross file systems), renamed to `dest`, replacing any
    /// file there, once the whole body has arrived. A download that fails, is cancelled or
    /// panics removes its temporary file: nothing is ever left under `dest`'s name but a
    /// whole body. The file is not `fsync`ed.
    ///
    /// `progress` is called on this thread at most every 100 ms
    /// ([`StreamingResponse::progress_interval`]) while bytes arrive, and once at the end
    /// with `done: true`, after the rename; `bytes` never decreases and ends at the
    /// `Content-Length`. The request's timeouts (the read-idle timeout between pieces, a
    /// [`total_timeout`](crate::RequestBuilder::total_timeout)) and its cancel token
    /// ([`cancel_on`](crate::RequestBuilder::cancel_on)) apply throughout.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), backend_pool::Error> {
    /// # let manager = backend_pool::PoolManager::new(backend_pool::ManagerConfig::default())?;
    /// let saved = manager
    ///     .http("wan2gp")?
    ///     .get("/gradio_api/file=outputs/video.mp4")
    ///     .download_to("/tmp/video.mp4", |p| {
    ///         if let Some(f) = p.fraction() {
    ///             println!("{:.0} %", f * 100.0);
    ///         }
    ///     })?;
    /// println!("{} bytes", saved.bytes());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Status`] for a status outside 2xx (with the body's first 64 KiB; no file is
    /// made); [`Error::Save`] if the temporary file cannot be made or written or the rename
    /// fails; [`Error::ConnectionClosed`] naming the bytes announced and received if the
    /// server closes before the body's end; [`Error::Timeout`], [`Error::Cancelled`], or
    /// any other error of reading the body.
    pub fn download_to(
        self,
        dest: impl AsRef<Path>,
        mut progress: impl FnMut(Progress),
    ) -> Result<Download, Error> {
        self.download_file(dest.as_ref(), &mut progress)
    }

    /// [`StreamingResponse::download_to`] into `out` (flushed at the end): the same checks,
    /// progress and errors, but what was written before a failure stays written.
    ///
    /// # Errors
    /// As [`StreamingResponse::download_to`]; a write to `out` that fails is
    /// [`Error::Save`] without a path.
    pub fn download_to_writer<W: Write + ?Sized>(
        self,
        out: &mut W,
        mut progress: impl FnMut(Progress),
    ) -> Result<Download, Error> {
        let mut this = self.check_success()?;
        let start = Instant::now();
        let saved = this.copy_body(out, None, start, &mut progress)?;
        progress(saved.progress(start, true));
        Ok(this.into_download(saved.bytes))
    }

    fn download_file(
        self,
        dest: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Download, Error> {
        let mut this = self.check_success()?;
        let start = Instant::now();
        let mut part = PartFile::create(dest).map_err(|(path, e)| this.save_error(path, e))?;
        let saved = this.copy_body(&mut part.file, Some(&part.path), start, progress)?;
        part.persist(dest)
            .map_err(|(path, e)| this.save_error(path, e))?;
        progress(saved.progress(start, true));
        Ok(this.into_download(saved.bytes))
    }

    /// A download is of a 2xx body; anything else is a status error, with its evidence.
    fn check_success(self) -> Result<Self, Error> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        Err(self.into_status_error())
    }

    /// Copies the rest of the body to `out`, calling `progress` at most every
    /// `progress_every`; checks the length against `Content-Length`.
    fn copy_body<W: Write + ?Sized>(
        &mut self,
        out: &mut W,
        path: Option<&Path>,
        start: Instant,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Saved, Error> {
        let mut piece = vec![0u8; PIECE];
        let mut last = start;
        loop {
            if self.is_cancelled() {
                return Err(self.cancel_error());
            }
            let n = match self.reader.read(&mut piece) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.body_failed(e)),
            };
            self.read += n as u64;
            out.write_all(&piece[..n])
                .map_err(|e| self.save_error(path.map(Path::to_path_buf), e))?;
            let now = Instant::now();
            if now.duration_since(last) >= self.progress_every {
                last = now;
                progress(self.saved().progress(start, false));
            }
        }
        if self.content_length.is_some_and(|n| n != self.read) {
            // The transport ends a body at its length: a mismatch is a server's fault.
            let err = cut_short(self.service.clone(), self.content_length, self.read);
            self.count_once(&err);
            return Err(err);
        }
        out.flush()
            .map_err(|e| self.save_error(path.map(Path::to_path_buf), e))?;
        Ok(self.saved())
    }

    fn saved(&self) -> Saved {
        Saved {
            bytes: self.read,
            total: self.content_length,
        }
    }

    /// A failed read of the body, as the pool's error, counted once.
    fn body_failed(&mut self, e: io::Error) -> Error {
        match self.read_failure(e) {
            Ok(err) => err,
            Err(e) => {
                let err = classify(&self.conn.pool, ureq::Error::from(e), &self.limits);
                self.count_once(&err);
                err
            }
        }
    }

    fn save_error(&self, path: Option<PathBuf>, source: io::Error) -> Error {
        let err = Error::Save {
            service: self.service.clone(),
            path,
            source,
        };
        self.conn.pool.counters().error(err.class());
        err
    }

    fn into_download(mut self, bytes: u64) -> Download {
        Download {
            status: self.status,
            headers: std::mem::replace(&mut self.headers, Headers::new(HeaderMap::new())),
            bytes,
            service: std::mem::take(&mut self.service),
        }
    }
}

/// What a download has saved so far.
#[derive(Clone, Copy)]
struct Saved {
    bytes: u64,
    total: Option<u64>,
}

impl Saved {
    fn progress(self, start: Instant, done: bool) -> Progress {
        Progress {
            bytes: self.bytes,
            total: self.total,
            elapsed: start.elapsed(),
            done,
        }
    }
}

/// The temporary file a download writes, beside its destination; removed on drop unless
/// renamed into place.
struct PartFile {
    file: File,
    path: PathBuf,
    persisted: bool,
}

impl PartFile {
    /// Creates `.{name}.part-{pid}-{n}` in `dest`'s directory (never an existing file).
    fn create(dest: &Path) -> Result<PartFile, (Option<PathBuf>, io::Error)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = match dest.file_name() {
            Some(name) => name.to_string_lossy(),
            None => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "not a file name");
                return Err((Some(dest.to_path_buf()), e));
            }
        };
        let n = NEXT.fetch_add(1, Relaxed);
        let path = dest.with_file_name(format!(".{name}.part-{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => Ok(PartFile {
                file,
                path,
                persisted: false,
            }),
            Err(e) => Err((Some(path), e)),
        }
    }

    /// Renames the file to `dest` (replacing a file there).
    fn persist(mut self, dest: &Path) -> Result<(), (Option<PathBuf>, io::Error)> {
        match fs::rename(&self.path, dest) {
            Ok(()) => {
                self.persisted = true;
                Ok(())
            }
            Err(e) => Err((Some(dest.to_path_buf()), e)),
        }
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}
