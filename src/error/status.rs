//! The evidence a status error keeps: [`StatusBody`], and the bounded first line of it that
//! the error's message shows.

use std::fmt;
use std::ops::Deref;

#[cfg(doc)]
use super::Error;

/// The body of an error response as [`Error::Status`] keeps it: at most its first
/// [`StatusBody::LIMIT`] bytes (64 KiB), which holds any JSON error a backend sends (ComfyUI's
/// `node_errors`, FastAPI's `detail`, LiteLLM's `error`), not a 500's endless traceback.
/// Derefs to `[u8]`; `Debug` shows its length and first line, not the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StatusBody {
    bytes: Vec<u8>,
    truncated: bool,
}

impl StatusBody {
    /// The most of a body a status error keeps: 64 KiB.
    pub const LIMIT: usize = 64 * 1024;

    /// Keeps at most [`StatusBody::LIMIT`] of `bytes`; `truncated` says the body went on
    /// past `bytes` (or its reading failed).
    pub(crate) fn new(mut bytes: Vec<u8>, truncated: bool) -> StatusBody {
        let truncated = truncated || bytes.len() > Self::LIMIT;
        if bytes.len() > Self::LIMIT {
            bytes.truncate(Self::LIMIT);
        }
        // A body read whole for a call may have held up to `max_body_bytes`.
        bytes.shrink_to_fit();
        StatusBody { bytes, truncated }
    }

    /// The bytes kept.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes kept, owned.
    pub fn into_vec(self) -> Vec<u8> {
        self.bytes
    }

    /// The bytes kept as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// True if the body went on past what is kept (it was longer than
    /// [`StatusBody::LIMIT`], or reading it failed): what is kept is then not whole JSON.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The first non-blank line, controls replaced by spaces, at most `max` characters
    /// (cut ones end with `…`): what a one-line message can show.
    pub(crate) fn first_line(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let line = text
            .split(['\n', '\r'])
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let cut = line.char_indices().nth(max).map(|(i, _)| i);
        let shown = &line[..cut.unwrap_or(line.len())];
        let mut out: String = shown
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if cut.is_some() {
            out.push('…');
        }
        out
    }
}

impl Deref for StatusBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for StatusBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for StatusBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusBody")
            .field("len", &self.bytes.len())
            .field("truncated", &self.truncated)
            .field("first_line", &self.first_line(80))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_capped_and_its_first_line_bounded() {
        let body = StatusBody::new(vec![b'x'; 200_000], false);
        assert_eq!(body.len(), StatusBody::LIMIT);
        assert!(body.is_truncated());
        assert_eq!(body.first_line(10), "xxxxxxxxxx…");
        assert!(format!("{body:?}").len() < 200, "{body:?}");
        let body = StatusBody::new(
            b"\n\r\n  {\"error\": \"bad\tinput\"}\r\nsecond".to_vec(),
            false,
        );
        assert!(!body.is_truncated());
        assert_eq!(body.first_line(100), "{\"error\": \"bad input\"}");
        let body = StatusBody::new("é".repeat(50).into_bytes(), false);
        assert_eq!(body.first_line(3), "ééé…", "cut on a character boundary");
        assert_eq!(StatusBody::new(Vec::new(), false).first_line(10), "");
        assert!(StatusBody::new(b"short".to_vec(), true).is_truncated());
    }
}
