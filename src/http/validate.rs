//! What a request may ask for, checked before it takes a connection: an origin-form path on
//! the service, a method the client sends, headers that are well-formed and leave framing and
//! routing to the pool. A request that fails a check is
//! [`Error::InvalidRequest`](crate::Error::InvalidRequest): it costs no connection and says
//! nothing about the service's health.
//!
//! The path is appended to the service's base URL, so anything that is not an origin-form path
//! (`/…` with an optional `?query`, RFC 9112 §3.2.1) could re-target the request — and the
//! service's bearer token — at another host or port (`@evil:9999/x`, `:9999/x`, `//evil/x`,
//! `.evil.test/x`). Characters are held to RFC 3986: unreserved, sub-delims, `:`, `@`, `/`, `?`
//! in the query, and `%` followed by two hex digits; everything else (spaces, controls, `\`,
//! `#`, non-ASCII, `"<>[]^`{|}`) must be percent-encoded by the caller. Dot segments (`.`,
//! `..`, also percent-encoded) are refused too: servers resolve them and would step out of a
//! service URL's path prefix.

use ureq::http::header::{HeaderMap, HeaderName, HeaderValue};
use ureq::http::{Method, Uri};

use crate::config::{check_path, is_managed_header, quoted, Endpoint};
use crate::service::Header;

/// The methods sent (ureq sends no others; `CONNECT` would open a tunnel to another host).
pub(super) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
];

/// What the caller asked for, as given.
pub(super) struct Parts<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) query: &'a [(String, String)],
    pub(super) headers: &'a [(String, String)],
    pub(super) body_len: u64,
}

/// What a query parameter's name and value keep as they are: RFC 3986's unreserved
/// characters. Everything else is percent-encoded (as UTF-8), so no character of a name or
/// value can end it (`&`, `=`, `#`), change it on the way (`+` read as a space, `%`), or be
/// refused by the path check.
const QUERY_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Appends `pairs` to `target` (a checked origin-form path, with or without a query) as
/// `name=value` pairs, percent-encoded, after any query already there.
fn append_query(target: &mut String, pairs: &[(String, String)]) -> Result<(), String> {
    use percent_encoding::utf8_percent_encode as encode;
    use std::fmt::Write;
    let mut sep = match target.find('?') {
        None => "?",
        Some(_) if target.ends_with('?') || target.ends_with('&') => "",
        Some(_) => "&",
    };
    for (name, value) in pairs {
        if name.is_empty() {
            return Err("a query parameter has an empty name".into());
        }
        let _ = write!(
            target,
            "{sep}{}={}",
            encode(name, QUERY_COMPONENT),
            encode(value, QUERY_COMPONENT)
        );
        sep = "&";
    }
    Ok(())
}

/// A request that passed the checks, in the form it is sent.
pub(super) struct Target {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
}

/// A service's own headers (bearer token, configured headers), checked and parsed once per
/// pool: every request starts from a copy. If one fails its check, every request fails with
/// the reason, as checking them per request would.
pub(crate) struct ServiceHeaders(Result<HeaderMap, String>);

impl ServiceHeaders {
    /// `max_line` as for [`target`].
    pub(crate) fn new(headers: &[Header], max_line: usize) -> ServiceHeaders {
        let mut map = HeaderMap::with_capacity(headers.len());
        for h in headers {
            let parsed = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("service header name {:?} is not a valid token", h.name))
                .and_then(|name| {
                    // The value may be a secret: never quoted.
                    let value = header_value(&h.value)
                        .map_err(|why| format!("service header '{name}' has a value with {why}"))?;
                    check_line(&name, &value, max_line, "service header")?;
                    Ok((name, value))
                });
            match parsed {
                Ok((name, value)) => {
                    map.append(name, value);
                }
                Err(reason) => return ServiceHeaders(Err(reason)),
            }
        }
        ServiceHeaders(Ok(map))
    }
}

/// Checks a request and builds what is sent: the method, the URI on the service's origin,
/// the service's headers followed by the caller's (a caller header replaces a service header
/// of the same name; repeated caller headers are all sent).
///
/// `max_line` is the output buffer's size: the HTTP client writes the request line and each
/// header line whole into it, so a longer one would fail after the connection was taken.
pub(super) fn target(
    endpoint: &Endpoint,
    base: &str,
    service_headers: &ServiceHeaders,
    parts: &Parts<'_>,
    max_line: usize,
) -> Result<Target, String> {
    let Parts {
        method,
        path,
        query,
        headers,
        body_len,
    } = *parts;
    let method = check_method(method)?;
    if method == Method::HEAD && body_len > 0 {
        return Err("a HEAD request carries no body".into());
    }
    check_path(path)?;
    let mut full = String::with_capacity(base.len() + path.len());
    full.push_str(base);
    full.push_str(path);
    append_query(&mut full, query)?;
    let uri = Uri::try_from(full)
        .map_err(|e| format!("path {} does not make a valid URI: {e}", quoted(path)))?;
    let target_len = uri.path_and_query().map_or(1, |p| p.as_str().len());
    // "METHOD target HTTP/1.1\r\n"
    if method.as_str().len() + target_len + 12 > max_line {
        return Err(format!(
            "path {} makes a request line longer than output_buffer_bytes ({max_line})",
            quoted(path)
        ));
    }
    let scheme = if endpoint.tls { "https" } else { "http" };
    let on_origin = uri.scheme_str() == Some(scheme)
        && uri
            .authority()
            .is_some_and(|a| is_origin(a.as_str(), endpoint));
    if !on_origin {
        return Err(format!(
            "path {path:?} leaves the service's origin {scheme}://{}:{}",
            endpoint.host, endpoint.port
        ));
    }
    let mut map = service_headers.0.clone()?;
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not a valid token"))?;
        if is_managed_header(name.as_str()) {
            return Err(format!(
                "header '{name}' is set by the pool (framing, routing, connection reuse, the \
                 WebSocket handshake) and cannot be set per request"
            ));
        }
        // The value may be a secret (an API key): never quoted.
        let value =
            header_value(value).map_err(|why| format!("header '{name}' has a value with {why}"))?;
        check_line(&name, &value, max_line, "header")?;
        if replaced.contains(&name) {
            map.append(name, value);
        } else {
            map.insert(name.clone(), value);
            replaced.push(name);
        }
    }
    Ok(Target {
        method,
        uri,
        headers: map,
    })
}

/// Whether a URI's authority is exactly the service's `host:port` (host in any case; the
/// base URL always spells the port, and has no user info).
fn is_origin(authority: &str, endpoint: &Endpoint) -> bool {
    let host = endpoint.host.as_bytes();
    let bytes = authority.as_bytes();
    bytes.len() > host.len()
        && bytes[..host.len()].eq_ignore_ascii_case(host)
        && bytes[host.len()] == b':'
        && bytes[host.len() + 1..].iter().all(u8::is_ascii_digit)
        && authority[host.len() + 1..].parse::<u16>() == Ok(endpoint.port)
}

/// "name: value\r\n", plus the blank line that ends the head if it is the last one.
fn check_line(
    name: &HeaderName,
    value: &HeaderValue,
    max_line: usize,
    what: &str,
) -> Result<(), String> {
    let len = name.as_str().len() + value.len() + 6;
    if len > max_line {
        return Err(format!(
            "{what} '{name}' makes a line of {len} bytes, longer than output_buffer_bytes \
             ({max_line})"
        ));
    }
    Ok(())
}

fn check_method(method: &str) -> Result<Method, String> {
    if method == "CONNECT" {
        return Err("method CONNECT opens a tunnel to another host and is not sent".into());
    }
    if !METHODS.contains(&method) {
        return Err(format!(
            "method {method:?} is not supported (use one of {})",
            METHODS.join(", ")
        ));
    }
    Method::from_bytes(method.as_bytes()).map_err(|e| format!("method {method:?}: {e}"))
}

/// A header value: visible ASCII, spaces and tabs only (no line breaks or other controls that
/// would split or smuggle headers; non-ASCII must be encoded, e.g. RFC 8187).
pub(super) fn header_value(value: &str) -> Result<HeaderValue, &'static str> {
    if let Some(b) = value
        .bytes()
        .find(|b| !(b.is_ascii_graphic() || *b == b' ' || *b == b'\t'))
    {
        return Err(match b {
            b'\r' | b'\n' => "a line break",
            b if b.is_ascii_control() => "a control character",
            _ => "a non-ASCII character",
        });
    }
    HeaderValue::from_str(value).map_err(|_| "an invalid character")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /x` with the caller's `headers`, the service's headers checked on the spot.
    fn get_x(
        endpoint: &Endpoint,
        service: &[Header],
        headers: &[(String, String)],
        max_line: usize,
    ) -> Result<Target, String> {
        let base = endpoint.http_base();
        let service = ServiceHeaders::new(service, max_line);
        let parts = Parts {
            method: "GET",
            path: "/x",
            query: &[],
            headers,
            body_len: 0,
        };
        target(endpoint, &base, &service, &parts, max_line)
    }

    fn with_query(path: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut target = path.to_string();
        append_query(&mut target, &pairs)?;
        Ok(target)
    }

    #[test]
    fn query_parameters_are_percent_encoded_after_the_query_in_the_path() {
        let view = [("filename", "my render.png"), ("type", "output")];
        assert_eq!(
            with_query("/view", &view).unwrap(),
            "/view?filename=my%20render.png&type=output"
        );
        for path in ["/view?a=1", "/view?a=1&", "/view?"] {
            let sep = if path.ends_with('1') { "&" } else { "" };
            assert_eq!(
                with_query(path, &[("b", "2")]).unwrap(),
                format!("{path}{sep}b=2")
            );
        }
        assert_eq!(with_query("/x", &[]).unwrap(), "/x");
        assert_eq!(
            with_query("/x", &[("a&b=c", "d#e+f%g/h?i j"), ("k", "")]).unwrap(),
            "/x?a%26b%3Dc=d%23e%2Bf%25g%2Fh%3Fi%20j&k="
        );
        assert_eq!(
            with_query("/x", &[("é", "日本\u{0}\r\n")]).unwrap(),
            "/x?%C3%A9=%E6%97%A5%E6%9C%AC%00%0D%0A"
        );
        assert_eq!(
            with_query("/x", &[("-._~", "-._~")]).unwrap(),
            "/x?-._~=-._~"
        );
        let why = with_query("/x", &[("", "v")]).unwrap_err();
        assert!(why.contains("empty name"), "{why}");
    }

    #[test]
    fn an_encoded_query_always_passes_the_path_check() {
        let all: String = (0u8..=127)
            .map(char::from)
            .chain(['é', '€', '😀'])
            .collect();
        let target = with_query("/x", &[(&all, &all)]).unwrap();
        check_path(&target).unwrap();
        Uri::try_from(format!("http://h:1{target}")).unwrap();
    }

    #[test]
    fn service_headers_checked_once_are_sent_or_fail_every_request() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8000").unwrap();
        let header = |name: &str, value: &str| Header {
            name: name.into(),
            value: value.into(),
        };
        let service = [
            header("Authorization", "Bearer sk-1"),
            header("X-Team", "a"),
        ];
        let mine = [("x-team".to_string(), "b".to_string())];
        let sent = get_x(&endpoint, &service, &mine, 4096).unwrap();
        assert_eq!(sent.headers["authorization"], "Bearer sk-1");
        let teams: Vec<_> = sent.headers.get_all("x-team").iter().collect();
        assert_eq!(teams, ["b"], "a caller header replaces the service's");
        let broken = [header("X-Key", "line\r\nbreak")];
        for _ in 0..2 {
            let why = get_x(&endpoint, &broken, &[], 4096).err().unwrap();
            assert_eq!(why, "service header 'x-key' has a value with a line break");
        }
        let long = [header("X-Long", &"v".repeat(100))];
        let why = get_x(&endpoint, &long, &[], 64).err().unwrap();
        assert!(
            why.starts_with("service header 'x-long' makes a line"),
            "{why}"
        );
    }

    #[test]
    fn the_origin_is_the_service_host_and_port_exactly() {
        let endpoint = Endpoint::parse("http://Example.test:8080/api").unwrap();
        for ok in ["example.test:8080", "EXAMPLE.test:8080"] {
            assert!(is_origin(ok, &endpoint), "{ok}");
        }
        for not in [
            "example.test:8081",
            "example.test:80800",
            "example.test:+8080",
            "example.test",
            "example.test.evil:8080",
            "user@example.test:8080",
            "evil.test:8080",
            "",
        ] {
            assert!(!is_origin(not, &endpoint), "{not}");
        }
        let v6 = Endpoint::parse("http://[::1]:9000").unwrap();
        assert!(is_origin("[::1]:9000", &v6));
        assert!(!is_origin("[::2]:9000", &v6));
    }

    #[test]
    fn header_values_refuse_line_breaks_controls_and_non_ascii() {
        assert!(header_value("a\tb c!~").is_ok());
        assert!(header_value("").is_ok());
        assert_eq!(header_value("a\r\nb").unwrap_err(), "a line break");
        assert_eq!(header_value("a\0").unwrap_err(), "a control character");
        assert_eq!(header_value("a\u{7f}").unwrap_err(), "a control character");
        assert_eq!(header_value("é").unwrap_err(), "a non-ASCII character");
    }

    #[test]
    fn a_request_may_not_set_what_a_configuration_may_not() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8000").unwrap();
        let send = |name: &str| {
            let headers = [(name.to_string(), "x".to_string())];
            get_x(&endpoint, &[], &headers, 4096).map(drop)
        };
        assert!(send("X-Ok").is_ok());
        for name in ["Host", "Proxy-Connection", "Upgrade", "Sec-WebSocket-Key"] {
            let why = send(name).expect_err(name);
            assert!(why.contains("set by the pool"), "{name}: {why}");
        }
    }
}
