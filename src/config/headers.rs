//! What a service sends on every request and handshake: its headers and its bearer token.
//! Names must be tokens and values must be what both clients send as is, each name once, none
//! the pool sets itself ([`is_managed_header`], also applied to each request's headers), and the whole set must fit in ureq's write buffer with a request
//! line (ureq writes a request head into that buffer whole, or fails every request).

use std::collections::HashMap;

use super::problem::{bad, label, Bad};
use super::service::REDACTED;
use super::{Secret, ServiceConfig};
use crate::error::ConfigError;

/// What a request head needs beside the configured headers: request line, `Host`,
/// `User-Agent` and the per-request headers of a short call.
pub(crate) const REQUEST_HEAD_RESERVE: usize = 256;

impl ServiceConfig {
    /// Names, values, duplicates and reserved names of `headers` and `secret_headers`.
    pub(super) fn check_headers(&self) -> Result<(), Bad> {
        let bearer = self.bearer_token.is_some() || self.bearer_token_env.is_some();
        let mut seen: HashMap<String, &str> = HashMap::new();
        let plain = self
            .headers
            .iter()
            .map(|(k, v)| ("headers", k, v.as_str(), false));
        let secret = self
            .secret_headers
            .iter()
            .map(|(k, v)| ("secret_headers", k, v.expose(), true));
        for (field, name, value, is_secret) in plain.chain(secret) {
            let fail = |reason: String| Bad {
                field: field.to_string(),
                key: Some(name.clone()),
                reason,
            };
            if !is_header_name(name) {
                return Err(fail(format!(
                    "'{name}' is not a header name (letters, digits and !#$%&'*+-.^_`|~)"
                )));
            }
            let lower = name.to_ascii_lowercase();
            if is_managed_header(&lower) {
                return Err(fail(format!(
                    "'{name}' is set by the pool or the WebSocket handshake itself"
                )));
            }
            if bearer && lower == "authorization" {
                return Err(fail(format!(
                    "'{name}' conflicts with bearer_token / bearer_token_env, which send \
                     Authorization"
                )));
            }
            // A credential put in `headers` instead of `secret_headers` is not shown either.
            if let Some(first) = seen.insert(lower, name) {
                return Err(fail(format!(
                    "'{name}' repeats '{first}' (header names ignore case)"
                )));
            }
            if is_secret && value.trim() == REDACTED {
                return Err(fail(format!(
                    "'{name}' {}",
                    redacted_dump("supply the header's value again")
                )));
            }
            if !is_header_value(value) {
                // Values are never shown: a plain header may carry a key all the same.
                return Err(fail(format!(
                    "'{name}' has a value a header cannot carry: only visible ASCII, spaces and \
                     tabs (no line breaks; the value is not shown)"
                )));
            }
        }
        Ok(())
    }

    /// The request head must fit in ureq's write buffer: the configured headers (and a bearer
    /// token of `bearer` bytes) plus [`REQUEST_HEAD_RESERVE`].
    pub(super) fn check_head_fits(
        &self,
        buffer: usize,
        bearer: Option<usize>,
        from: &str,
    ) -> Result<(), Bad> {
        let line = |name: &str, value: usize| name.len() + 2 + value + 2;
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| line(k, v.len()))
            .chain(
                self.secret_headers
                    .iter()
                    .map(|(k, v)| line(k, v.expose().len())),
            )
            .chain(bearer.map(|n| line("Authorization", "Bearer ".len() + n)))
            .sum();
        let need = headers + REQUEST_HEAD_RESERVE;
        if need > buffer {
            return Err(bad(
                "http.output_buffer_bytes",
                format!(
                    "({buffer}) cannot hold a request head: the configured headers{from} take \
                     {headers} bytes and {REQUEST_HEAD_RESERVE} more are needed for the request \
                     line, Host and User-Agent; raise it to at least {need}"
                ),
            ));
        }
        Ok(())
    }

    /// The bearer token: `bearer_token`, else the variable named by `bearer_token_env` (unset
    /// or empty: none). Read when the manager starts.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] on `bearer_token_env` when the variable's value is not a token
    /// a header can carry (naming the variable, never the value), or on
    /// `http.output_buffer_bytes` when the token does not fit in a request head.
    pub(crate) fn resolved_bearer(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(token) = &self.bearer_token {
            return Ok(Some(token.clone()));
        }
        let Some(var) = self.bearer_token_env.as_deref() else {
            return Ok(None);
        };
        let Some(value) = std::env::var_os(var) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(None);
        }
        let invalid =
            |field: &str, reason: String| ConfigError::invalid(label(&self.name), field, &reason);
        let token = match value.into_string() {
            Ok(token) if is_token(&token) => token,
            _ => {
                return Err(invalid(
                    "bearer_token_env",
                    format!(
                        "names {var}, whose value is not a bearer token: only visible ASCII \
                         without spaces or line breaks (the value is not shown)"
                    ),
                ))
            }
        };
        if let Some(http) = &self.http {
            let from = format!(" and the token in {var}");
            self.check_head_fits(http.output_buffer_bytes, Some(token.len()), &from)
                .map_err(|b| invalid(&b.field, b.reason))?;
        }
        Ok(Some(Secret(token)))
    }
}

/// Why a secret that reads `<redacted>` is refused: the configuration was written out (where
/// every secret serialises as that placeholder) and read back; sending the placeholder would
/// fail every request with a 401 that says nothing about why. `supply` says how to give the
/// secret again.
pub(crate) fn redacted_dump(supply: &str) -> String {
    format!(
        "is \"{REDACTED}\", the placeholder secrets are written out as: this configuration was \
         saved from a redacted dump; {supply}"
    )
}

/// An HTTP header name: a non-empty token (RFC 9110 `tchar`).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A header value both HTTP clients send as is: visible ASCII, spaces and tabs (no line
/// breaks or other control characters, no bytes above ASCII).
pub(crate) fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// A bearer token: visible ASCII without spaces.
pub(crate) fn is_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Headers the pool sets itself, the one list both checks use: a service's configuration
/// (sent on every request and handshake) and a request may set none of them.
///
/// * `Host` would re-target the request at another virtual host (the client sends a given
///   `Host` instead of the URL's).
/// * `Content-Length` and `Transfer-Encoding` are set from the body: a second opinion
///   desynchronises the connection (request smuggling).
/// * The hop-by-hop headers would change the pooled connection's fate behind the pool's back.
/// * The WebSocket handshake's own headers would break the upgrade.
const MANAGED_HEADERS: [&str; 13] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-key",
    "sec-websocket-version",
];

/// Whether the pool sets the header `name` (any case) itself: see [`MANAGED_HEADERS`].
pub(crate) fn is_managed_header(name: &str) -> bool {
    MANAGED_HEADERS.iter().any(|m| m.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_tokens() {
        assert!(is_header_name("X-Api-Key") && !is_header_name("X Key") && !is_header_name(""));
        assert!(is_header_value("a b\tc") && !is_header_value("a\r\nb") && !is_header_value("é"));
        assert!(is_token("sk-1234") && !is_token("sk 1") && !is_token(""));
    }

    #[test]
    fn a_configured_header_may_not_set_what_a_request_may_not() {
        // `Host` would send every request to another virtual host (ureq sends a configured
        // Host instead of the URL's); `Proxy-Connection` is hop-by-hop. Per request both are
        // refused, so a service's configuration may not set them either.
        for name in [
            "Host",
            "proxy-connection",
            "Content-Length",
            "Sec-WebSocket-Key",
        ] {
            let mut config = ServiceConfig::litellm();
            config.headers.insert(name.into(), "x".into());
            let bad = config.check_headers().expect_err(name);
            assert_eq!(bad.field, "headers", "{name}");
            assert!(
                bad.reason.contains("set by the pool"),
                "{name}: {}",
                bad.reason
            );
        }
    }
}
