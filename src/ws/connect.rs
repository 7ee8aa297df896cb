//! Opening a pooled WebSocket: TCP connect (`crate::net`), TLS and the WebSocket handshake
//! (`handshake.rs`) under one deadline (`connect_timeout_ms`), so a server that answers a byte
//! at a time cannot stretch it; every TCP connection made is counted, and so is its close when
//! the handshake fails. A handshake refused with a status is the server's answer
//! ([`Error::Status`]), not a failed connect.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tungstenite::client::IntoClientRequest;

use super::handshake::{self, Failure};
use super::{tcp_of, PooledSocket, WsPool, WsStream};
use crate::cancel::CancelToken;
use crate::error::{Error, ErrorClass, Phase};
use crate::net::SharedTcp;
use crate::service::{jittered, random_u64};
use crate::stats::{CloseCause, PoolCounters};

impl WsPool {
    /// Opens a socket: TCP connect, TLS and handshake, all within one `connect_timeout_ms`.
    /// A panic on the way (tungstenite asserts on its buffer settings) is a failed connect.
    /// With a `cancel` token, cancelling ends the TCP connect and cuts the handshakes short,
    /// as shutdown does; a connect either ended says nothing about the server (not counted
    /// against health). A handshake answered with a status is [`Error::Status`] with the
    /// status, the body's first 64 KiB (read within the same deadline: `handshake.rs`) and
    /// the URL; its socket is closed, and it is not counted against health either
    /// (`ErrorClass::Status` says why).
    pub(super) fn connect(&self, cancel: Option<&CancelToken>) -> Result<PooledSocket, Error> {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.connect_inner(cancel)))
                .unwrap_or_else(|panic| {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into());
                    Err(Error::Transport {
                        service: self.core.name.clone(),
                        phase: Phase::Connect,
                        source: format!("opening the socket panicked: {why}").into(),
                    })
                });
        match &result {
            Ok(_) => self.core.health.success(),
            Err(_)
                if cancel.is_some_and(CancelToken::is_cancelled)
                    || self.core.aborts.is_closed() => {}
            // A handshake answered with a status: the server answering, not an outage
            // (`ErrorClass::Status`). The attempt failed all the same.
            Err(e) if e.class() == ErrorClass::Status => {
                self.core.counters.connect_failures.fetch_add(1, Relaxed);
                self.core.health.success();
            }
            Err(e) => {
                self.core.counters.connect_failures.fetch_add(1, Relaxed);
                self.core
                    .connection_failed(ErrorClass::Connect, e.chain().to_string());
            }
        }
        result
    }

    fn connect_inner(&self, cancel: Option<&CancelToken>) -> Result<PooledSocket, Error> {
        let core = &self.core;
        let t = core.timeouts;
        // One deadline for TCP, TLS and the handshake: a server answering a byte at a time
        // cannot stretch it.
        let deadline = Instant::now() + t.connect;
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Transport {
            service: core.name.clone(),
            phase: Phase::Connect,
            source,
        };
        let timed_out = || Error::Timeout {
            service: core.name.clone(),
            phase: Phase::Connect,
            after: t.connect,
        };
        let client_id = self
            .config
            .client_id_param
            .as_ref()
            .map(|_| format!("bp-{:016x}", random_u64()));
        let mut url = core.endpoint.ws_url(&self.config.path);
        if let (Some(param), Some(id)) = (&self.config.client_id_param, &client_id) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{param}={id}"));
        }
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| fail(e.into()))?;
        for h in &core.headers {
            let name = tungstenite::http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| fail(e.into()))?;
            let value = tungstenite::http::HeaderValue::from_str(&h.value)
                .map_err(|_| fail(format!("header '{}' has an invalid value", h.name).into()))?;
            request.headers_mut().insert(name, value);
        }
        let host = core
            .endpoint
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = match &core.tls {
            None => None,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|_| fail(format!("'{host}' is not a valid TLS server name").into()))?;
                Some((Arc::clone(&tls.rustls), name))
            }
        };
        // Shutdown, or the caller's cancel, shuts the socket down: that ends the connect (the
        // socket is watched before it connects: `crate::net`), and cuts a TLS or WebSocket
        // handshake that drips or stalls short (see `crate::abort`, `crate::cancel`).
        let watch = |socket: &Arc<SharedTcp>| {
            let watches = (
                core.aborts.watch_tcp(socket),
                cancel.map(|token| token.watch_tcp(socket)),
            );
            // Registered first, then checked: a cancel or shutdown from now on finds it.
            if core.aborts.is_closed() || cancel.is_some_and(CancelToken::is_cancelled) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the connect was cancelled",
                ));
            }
            Ok(watches)
        };
        let (stream, _watches) = crate::net::connect(host, core.endpoint.port, deadline, watch)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    timed_out()
                } else {
                    fail(e.into())
                }
            })?;
        // The TCP connection exists from here: count it, and its close if the handshake fails.
        self.core.counters.created.fetch_add(1, Relaxed);
        let opened = Opened(&self.core.counters);
        let _ = stream.set_nodelay(true);
        let stream = WsStream::open(stream, tls, deadline).map_err(|e| fail(e.into()))?;
        let tcp = Arc::clone(stream.tcp());
        let mut socket =
            handshake::handshake(request, stream, self.ws_config).map_err(|e| match e {
                Failure::Error(tungstenite::Error::Io(e))
                    if e.kind() == io::ErrorKind::TimedOut =>
                {
                    timed_out()
                }
                Failure::Error(e) => fail(e.into()),
                Failure::Refused { status, body } => {
                    // The server answered: its status and reasons, and the socket closed now.
                    let _ = tcp.shutdown(std::net::Shutdown::Both);
                    Error::Status {
                        service: core.name.clone(),
                        status,
                        phase: Phase::Connect,
                        // The query may carry the client id (or a token): not shown.
                        url: Some(url.split('?').next().unwrap_or_default().to_string()),
                        body,
                    }
                }
            })?;
        // Idle from here: the socket's own timeouts rule until a lease sets a deadline.
        socket
            .get_mut()
            .set_timeouts(t.read_idle, t.request)
            .map_err(|e| fail(e.into()))?;
        socket.get_mut().clear_deadline();
        std::mem::forget(opened);
        let now = Instant::now();
        log::debug!(target: "backend_pool", "service '{}': WebSocket opened", core.name);
        let lease = self.core.leases.register();
        lease.set_interrupt(crate::lease::Interrupt::Tcp(Arc::clone(tcp_of(&socket))));
        Ok(PooledSocket {
            socket,
            client_id,
            lease,
            expires: now + jittered(t.lifetime),
            last_ping: now,
        })
    }
}

/// Counts the close of a TCP connection whose handshake failed (dropped unless disarmed).
struct Opened<'a>(&'a PoolCounters);

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        self.0.closed(CloseCause::Broken, 1);
        self.0.closed_total.fetch_add(1, Relaxed);
    }
}
