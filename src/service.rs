//! What a service's pools share ([`ServiceContext`]): its settings resolved once (URLs,
//! headers, timeouts, TLS roots), its health, its blocked I/O to cut short at shutdown, the
//! last connect error, and whether a reconfiguration retired it.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::abort::Aborts;
use crate::config::{Endpoint, ServiceConfig};
use crate::error::{ConfigError, Error, ErrorClass};
use crate::health::Health;

/// A header sent on every request and handshake (values may be secrets: never logged).
pub(crate) struct Header {
    pub name: String,
    pub value: String,
}

/// TLS roots for `https` / `wss`, in the form each client wants.
pub(crate) struct Tls {
    pub ureq: ureq::tls::TlsConfig,
    pub rustls: Arc<rustls::ClientConfig>,
}

/// Timeouts by phase, as durations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub wait: Duration,
    pub connect: Duration,
    pub request: Duration,
    pub read_idle: Duration,
    pub idle: Duration,
    pub lifetime: Duration,
    pub leak: Duration,
    pub health: Duration,
    pub health_interval: Duration,
}

/// One service's context, shared by its pools (each holds it as `core`) and its
/// maintenance step.
pub(crate) struct ServiceContext {
    pub name: String,
    pub config: ServiceConfig,
    /// This endpoint's base URL, as configured (a statistics label).
    pub url: String,
    pub endpoint: Endpoint,
    pub timeouts: Timeouts,
    /// Bearer token first (as `Authorization`), then plain and secret headers.
    pub headers: Vec<Header>,
    pub tls: Option<Tls>,
    pub health: Health,
    /// Blocked connects, pings and probes, cut short at shutdown.
    pub aborts: Aborts,
    last_connect_error: Mutex<Option<String>>,
    /// [`Retired`] as a number: 0 while in service (read only once the pools are closed).
    retired: AtomicU8,
    /// The server's queue length from its last health probe (ComfyUI's
    /// `exec_info.queue_remaining` from `GET /prompt`); `u64::MAX`: unknown.
    queue: AtomicU64,
    /// Sessions pinned to this endpoint now (`crate::route::Session`).
    pub sessions: AtomicUsize,
}

/// Why a reconfiguration took a service out of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retired {
    /// A new configuration of the same name took its place.
    Replaced = 1,
    /// Its name is gone from the configuration.
    Removed = 2,
}

impl ServiceContext {
    /// The context of `config`'s endpoint `url` (one of `config.endpoint_urls()`).
    pub(crate) fn new(config: &ServiceConfig, url: &str) -> Result<ServiceContext, ConfigError> {
        config.validate()?;
        let name = config.name.clone();
        let endpoint =
            Endpoint::parse(url).map_err(|why| ConfigError::invalid(&name, "url", &why))?;
        let ms = Duration::from_millis;
        let timeouts = Timeouts {
            wait: ms(config.wait_timeout_ms),
            connect: ms(config.connect_timeout_ms),
            request: ms(config.request_timeout_ms),
            read_idle: ms(config.read_idle_timeout_ms),
            idle: ms(config.idle_timeout_ms),
            lifetime: ms(config.max_lifetime_ms),
            leak: ms(config.leak_threshold_ms),
            health: ms(config.health_timeout_ms),
            health_interval: ms(config.health_interval_ms),
        };
        let mut headers = Vec::new();
        if let Some(token) = config.resolved_bearer()? {
            headers.push(Header {
                name: "Authorization".into(),
                value: format!("Bearer {}", token.expose()),
            });
        }
        for (k, v) in &config.headers {
            headers.push(Header {
                name: k.clone(),
                value: v.clone(),
            });
        }
        for (k, v) in &config.secret_headers {
            headers.push(Header {
                name: k.clone(),
                value: v.expose().to_string(),
            });
        }
        let tls = if endpoint.tls {
            Some(load_tls(&name, config.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(ServiceContext {
            health: Health::new(&name, config.unhealthy_after),
            name,
            config: config.clone(),
            url: url.to_string(),
            endpoint,
            timeouts,
            headers,
            tls,
            aborts: Aborts::default(),
            last_connect_error: Mutex::new(None),
            retired: AtomicU8::new(0),
            queue: AtomicU64::new(u64::MAX),
            sessions: AtomicUsize::new(0),
        })
    }

    /// A request or connect failed at the connection level: counts against health, and a
    /// connect failure is kept for timeout errors.
    pub(crate) fn connection_failed(&self, class: ErrorClass, why: String) {
        if class == ErrorClass::Connect {
            *self.last_connect_error.lock() = Some(why.clone());
        }
        self.health.failure(why);
    }

    pub(crate) fn last_connect_error(&self) -> Option<String> {
        self.last_connect_error.lock().clone()
    }

    /// Marks the service retired (before its pools close, so that every caller they turn
    /// away reads why).
    pub(crate) fn retire(&self, why: Retired) {
        self.retired.store(why as u8, Ordering::Release);
    }

    /// The queue length the endpoint reported at its last health probe, if it reports one.
    pub(crate) fn queue_remaining(&self) -> Option<u64> {
        Some(self.queue.load(Ordering::Relaxed)).filter(|&n| n != u64::MAX)
    }

    /// Records a health probe's answer `body` to `path`: ComfyUI's `GET /prompt` reports
    /// `{"exec_info": {"queue_remaining": n}}`; any other path, or an answer without it,
    /// leaves the queue length unknown.
    pub(crate) fn probed_body(&self, path: &str, body: &[u8]) {
        let n = (path == "/prompt")
            .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
            .flatten()
            .and_then(|v| v.get("exec_info")?.get("queue_remaining")?.as_u64())
            .map_or(u64::MAX, |n| n.min(u64::MAX - 1));
        self.queue.store(n, Ordering::Relaxed);
    }

    /// Has a reconfiguration taken the service out of service?
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire) != 0
    }

    /// The error for work its closed pools turn away: the service was retired, or the
    /// manager is shutting down.
    pub(crate) fn closed_error(&self) -> Error {
        match self.retired.load(Ordering::Acquire) {
            0 => Error::ShuttingDown {
                service: Some(self.name.clone()),
            },
            why => Error::ServiceRetired {
                service: self.name.clone(),
                removed: why == Retired::Removed as u8,
            },
        }
    }
}

/// Reads `ca_file` (PEM) into root stores for ureq and for tungstenite's rustls; without a
/// file, the webpki roots.
fn load_tls(service: &str, ca_file: Option<&str>) -> Result<Tls, ConfigError> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ureq_roots = match ca_file {
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            RootCerts::WebPki
        }
        Some(path) => {
            let bad = |why: String| ConfigError::invalid(service, "ca_file", &why);
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read '{path}': {e}")))?;
            let mut certs = Vec::new();
            for item in parse_pem(&pem) {
                if let PemItem::Certificate(cert) =
                    item.map_err(|e| bad(format!("'{path}' is not valid PEM: {e}")))?
                {
                    roots
                        .add(rustls::pki_types::CertificateDer::from(cert.der().to_vec()))
                        .map_err(|e| bad(format!("'{path}' holds an unusable certificate: {e}")))?;
                    certs.push(cert);
                }
            }
            if certs.is_empty() {
                return Err(bad(format!("'{path}' holds no certificate")));
            }
            RootCerts::new_with_certs(&certs)
        }
    };
    let rustls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid(service, "url", &format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls {
        ureq: TlsConfig::builder().root_certs(ureq_roots).build(),
        rustls: Arc::new(rustls),
    })
}

/// A random 64-bit value (std's per-process random hash keys; enough for ids and jitter).
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Relaxed));
    h.finish()
}

/// `lifetime` minus up to 2.5 %, so connections made together do not expire together.
pub(crate) fn jittered(lifetime: Duration) -> Duration {
    let fraction = (random_u64() % 1000) as f64 / 1000.0 * 0.025;
    lifetime.mul_f64(1.0 - fraction)
}
