//! Mock of the unnamed fifth service: a plain HTTP/1.1 + WebSocket service.

use super::start;
use crate::{Request, Response, ServerBuilder, TestServer};

/// A running generic service, no auth, no idle timeout.
///
/// - `GET /health` → 200 `ok` (text).
/// - `GET /echo?x=..` → the value of `x` as text (empty if absent).
/// - `POST /echo` → the body, with the request's `Content-Type`
///   (default `application/octet-stream`).
/// - WebSocket `/ws`: echo.
/// - Anything else: 404.
pub fn generic() -> TestServer {
    start(generic_builder(None), "generic")
}

/// [`generic`] requiring `Authorization: Bearer <token>` on every route but
/// `/health` (401 otherwise).
pub fn generic_with_token(token: &str) -> TestServer {
    start(generic_builder(Some(token)), "generic")
}

/// The builder behind [`generic`] / [`generic_with_token`].
pub fn generic_builder(token: Option<&str>) -> ServerBuilder {
    let expected = token.map(|t| format!("Bearer {t}"));
    TestServer::builder()
        .http(move |req| handle(expected.as_deref(), req))
        .websocket("/ws", |_| {})
}

fn handle(expected_auth: Option<&str>, req: &Request) -> Response {
    let path = req.path_only();
    if req.method == "GET" && path == "/health" {
        return Response::text(200, "ok");
    }
    if let Some(expected) = expected_auth {
        if req.header("authorization").map(str::trim) != Some(expected) {
            return Response::text(401, "unauthorized");
        }
    }
    match (req.method.as_str(), path) {
        ("GET", "/echo") => Response::text(200, &req.query_param("x").unwrap_or_default()),
        ("POST", "/echo") => Response::bytes(
            200,
            req.header("content-type")
                .unwrap_or("application/octet-stream"),
            req.body.clone(),
        ),
        _ => Response::text(404, "not found"),
    }
}
