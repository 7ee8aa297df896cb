//! One formatter for a whole error chain.

use std::fmt;

#[cfg(doc)]
use super::{ConfigError, Error};

/// An error and every cause under it on one line, outermost first, joined by `": "` (for
/// logs, health records and messages to a user).
///
/// Each layer's `Display` prints only its own words and keeps its cause for
/// [`source`](std::error::Error::source), so `Display` alone drops the causes and this prints
/// each exactly once. [`Error::chain`] and [`ConfigError::chain`] make one; [`ErrorChain::new`]
/// takes any error (the I/O error of a [`StreamingResponse`](crate::StreamingResponse) read,
/// say).
///
/// ```
/// use backend_pool::{ConfigError, ErrorChain, ManagerConfig};
///
/// let err = ManagerConfig::from_file("/nonexistent/services.toml").unwrap_err();
/// assert!(matches!(err, ConfigError::Io { .. }));
/// let line = err.chain().to_string(); // the path, then the OS's reason
/// assert!(line.starts_with(&err.to_string()) && line.len() > err.to_string().len(), "{line}");
///
/// let io = std::io::Error::other("connection reset");
/// assert_eq!(ErrorChain::new(&io).to_string(), "connection reset");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ErrorChain<'a>(&'a (dyn std::error::Error + 'a));

impl<'a> ErrorChain<'a> {
    /// The chain of `error` and its sources.
    pub fn new(error: &'a (dyn std::error::Error + 'a)) -> Self {
        ErrorChain(error)
    }
}

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
