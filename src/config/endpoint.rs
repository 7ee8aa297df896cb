//! Base URLs and the paths requests use: what a URL, a path and a query name may hold,
//! checked once so no request can fail on them.

/// A parsed base URL: scheme, host and port (the path is kept as a prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl Endpoint {
    /// Parses `http(s)://host[:port][/prefix]`: an ASCII host name, an IPv4 address or a
    /// bracketed IPv6 address; a port of 1 to 65535 in digits; no credentials, query or
    /// fragment; a prefix of URL path characters.
    ///
    /// Errors show the URL without its credentials, query and fragment (`shown`): that is
    /// where a URL carries API keys.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let raw = url;
        let url = shown(raw);
        let (tls, rest) = if let Some(rest) = raw.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = raw.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!(
                "'{url}' must start with http:// or https:// (the WebSocket URL is derived from it)"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!(
                "'{url}' must not carry credentials, a query or a fragment (a token goes in \
                 bearer_token or secret_headers)"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            match v6.split_once(']') {
                Some((h, p)) => {
                    if h.parse::<std::net::Ipv6Addr>().is_err() {
                        return Err(format!(
                            "'{url}' has an invalid IPv6 address '[{h}]' (zone ids are not supported)"
                        ));
                    }
                    if !p.is_empty() && !p.starts_with(':') {
                        return Err(format!("'{url}' has text after the IPv6 address"));
                    }
                    (format!("[{h}]"), p.strip_prefix(':'))
                }
                None => return Err(format!("'{url}' has an unclosed IPv6 bracket")),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("'{url}' has no host"));
        }
        if !host.is_ascii() {
            return Err(format!(
                "'{url}': host '{host}' is not ASCII; write an internationalised name in its \
                 xn-- (punycode) form"
            ));
        }
        if !host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(format!(
                "'{url}': host '{host}' may hold only letters, digits, '-', '.' and '_'"
            ));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("'{url}' has an invalid port '{p}' (1 to 65535)"))?,
        };
        if let Err(why) = check_chars(path, false) {
            return Err(format!("'{url}': its path has {why}"));
        }
        Ok(Endpoint {
            tls,
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// Names the same server and prefix as `other`: host names compare without case (DNS
    /// ignores it); the port is the parsed one (the default spelled out or not).
    pub(crate) fn same_as(&self, other: &Endpoint) -> bool {
        self.tls == other.tls
            && self.port == other.port
            && self.prefix == other.prefix
            && self.host.eq_ignore_ascii_case(&other.host)
    }

    /// `http(s)://host:port` followed by the prefix.
    pub(crate) fn http_base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}{}", self.host, self.port, self.prefix)
    }

    /// `ws(s)://host:port` followed by the prefix and `path`.
    pub(crate) fn ws_url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{}:{}{}{path}",
            self.host, self.port, self.prefix
        )
    }
}

/// `url` as errors show it: credentials (`user:pass@`), a query and a fragment, where a URL
/// carries API keys, each replaced by `…`.
fn shown(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let (rest, tail) = match rest.find(['?', '#']) {
        Some(i) => (
            &rest[..i],
            if rest[i..].starts_with('?') {
                "?…"
            } else {
                "#…"
            },
        ),
        None => (rest, ""),
    };
    let authority = rest.find('/').unwrap_or(rest.len());
    match rest[..authority].rfind('@') {
        Some(at) => format!("{scheme}…@{}{tail}", &rest[at + 1..]),
        None => format!("{scheme}{rest}{tail}"),
    }
}

/// Longest request path (with its query) accepted: servers refuse far shorter request
/// lines; large data belongs in the body.
pub(crate) const MAX_PATH_BYTES: usize = 32 * 1024;

/// Checks that `path` is an origin-form path (RFC 9112 §3.2.1): `/…` with an optional
/// `?query`, RFC 3986 characters only (see [`check_chars`]), not `//…` (which names another
/// host), no dot segments (`.`, `..`, also percent-encoded: servers resolve them and would
/// step out of a service URL's path prefix), at most [`MAX_PATH_BYTES`]. Request paths,
/// `health_path` and `websocket.path` all pass here.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "path {} must start with '/' (an origin-form path such as /v1/models): anything \
             else could name another host",
            quoted(path)
        ));
    }
    if path.starts_with("//") {
        return Err(format!(
            "path {} starts with '//', which names another host",
            quoted(path)
        ));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "path of {} bytes is longer than {MAX_PATH_BYTES} (send large data in the body)",
            path.len()
        ));
    }
    check_chars(path, true).map_err(|why| format!("path {} has {why}", quoted(path)))?;
    let path_only = path.split('?').next().unwrap_or_default();
    for segment in path_only.split('/') {
        if is_dot_segment(segment) {
            return Err(format!(
                "path {} has a dot segment ('{segment}'): servers resolve it, out of the \
                 service's path",
                quoted(path)
            ));
        }
    }
    Ok(())
}

/// `.` or `..`, each dot possibly percent-encoded (`%2e`, `%2E`). Checked without decoding:
/// every request's path passes here.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// The characters of a URL path: unreserved, sub-delims, `:`, `@`, `/`, and `%` followed by
/// two hex digits; with `query`, also `?` (a query). Anything else (spaces, controls, `\`,
/// `#`, non-ASCII, `"<>[]^`{|}`) must be percent-encoded. The error says what and where.
fn check_chars(path: &str, query: bool) -> Result<(), String> {
    let bytes = path.as_bytes();
    for (i, c) in path.char_indices() {
        let ok = match c {
            '%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err(format!("a '%' at byte {i} not followed by two hex digits"));
                }
                true
            }
            '?' => query,
            '/' | ':' | '@' => true,
            c => c.is_ascii() && (is_unreserved(c as u8) || is_sub_delim(c as u8)),
        };
        if !ok {
            let what = match c {
                '#' => "a fragment ('#'), which is never sent to a server".to_string(),
                c if c.is_ascii_control() || c.is_whitespace() => {
                    format!("a control or space character {c:?}")
                }
                c if !c.is_ascii() => format!("a non-ASCII character {c:?}"),
                c => format!("the character {c:?}"),
            };
            return Err(format!("{what} at byte {i}: percent-encode it"));
        }
    }
    Ok(())
}

/// A path for an error message: escaped, and cut short if long.
pub(crate) fn quoted(path: &str) -> String {
    const SHOWN: usize = 120;
    match path.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{:?}… ({} bytes)", &path[..i], path.len()),
        None => format!("{path:?}"),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// A query parameter name that needs no encoding: letters, digits, `-`, `.`, `_`, `~`.
pub(crate) fn is_query_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_unreserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse("https://example.test/api/").unwrap();
        assert_eq!((e.tls, e.port, e.prefix.as_str()), (true, 443, "/api"));
        assert_eq!(e.ws_url("/ws"), "wss://example.test:443/api/ws");
        let e = Endpoint::parse("http://[::1]:8188").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("[::1]", 8188));
        let e = Endpoint::parse("http://xn--bcher-kva.example/%7Euser").unwrap();
        assert_eq!(e.prefix, "/%7Euser");
        for bad in [
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:",
            "http://h:+80",
            "http://h:99999",
            "http://u@h",
            "ws://h",
            "http://[::1",
            "http://[::1]x",
            "http://[zz]",
            "http://bücher.example",
            "http://h/a b",
            "http://h/a%2",
            "http://h\\x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn paths_names_and_values() {
        assert!(check_chars("/prompt", false).is_ok());
        assert!(check_chars("/a?b=c&d", true).is_ok());
        assert!(check_chars("/a?b", false).is_err());
        assert!(check_chars("/a b", true).is_err());
        assert!(check_chars("/a\r\n", true).is_err());
        for ok in ["/", "/a?b=c&d=%2F", "/a:b@c", "/x?y=/z?w", "/..x", "/a//b"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        let why = |p: &str| check_path(p).unwrap_err();
        assert!(why("@h:1/x").contains("must start with '/'"));
        assert!(why("//h/x").contains("'//'"));
        assert!(why("/x#y").contains("fragment"));
        assert!(why("/x\r\n").contains("control"));
        assert!(why("/é").contains("non-ASCII"));
        assert!(why("/%4").contains("two hex digits"));
        assert!(why("/a/%2E%2e/b").contains("dot segment"));
        for dots in [".", "..", "%2e", "%2E", ".%2e", "%2E.", "%2e%2E"] {
            assert!(is_dot_segment(dots), "{dots}");
        }
        for not in [
            "",
            "...",
            "%2e%2e%2e",
            "..x",
            "%2",
            "%2f",
            "%%2e",
            "%2e%2",
            "x.",
        ] {
            assert!(!is_dot_segment(not), "{not}");
        }
        assert!(why(&"/a".repeat(20_000)).contains("longer than"));
        assert!(
            why(&format!("x{}", "a".repeat(500))).len() < 400,
            "message not cut short"
        );
        assert!(is_query_name("clientId") && !is_query_name("a=b") && !is_query_name(""));
    }
}
