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
        if let Err(why) = check_path_chars(path, false) {
            return Err(format!("'{url}': {why}"));
        }
        Ok(Endpoint {
            tls,
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
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

/// The characters of a URL path (RFC 3986 `pchar` and `/`, `%` followed by two hex digits),
/// and with `query`, a `?` and query characters.
fn check_path_chars(path: &str, query: bool) -> Result<(), String> {
    let bytes = path.as_bytes();
    let mut in_query = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let ok = match b {
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err("'%' must be followed by two hex digits".into());
                }
                i += 2;
                true
            }
            b'?' if query => {
                in_query = true;
                true
            }
            b'?' => false,
            b'#' => return Err("a fragment ('#') is never sent".into()),
            b'/' | b':' | b'@' => true,
            _ => is_unreserved(b) || is_sub_delim(b),
        };
        if !ok {
            let c = path[i..].chars().next().unwrap_or('?');
            let what = if c.is_whitespace() || c.is_control() {
                format!("{c:?}")
            } else {
                format!("'{c}'")
            };
            let part = if in_query { "query" } else { "path" };
            return Err(format!(
                "{what} is not allowed in a URL {part} (percent-encode it)"
            ));
        }
        i += 1;
    }
    Ok(())
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
        assert!(check_path_chars("/prompt", false).is_ok());
        assert!(check_path_chars("/a?b=c&d", true).is_ok());
        assert!(check_path_chars("/a?b", false).is_err());
        assert!(check_path_chars("/a b", true).is_err());
        assert!(check_path_chars("/a\r\n", true).is_err());
        assert!(is_query_name("clientId") && !is_query_name("a=b") && !is_query_name(""));
    }
}
