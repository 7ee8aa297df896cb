//! Prometheus text exposition (format 0.0.4) of a [`ManagerStats`] snapshot.

use std::fmt::Write as _;

use super::{ManagerStats, PoolStats};
use crate::error::PoolKind;

impl ManagerStats {
    /// Prometheus text exposition (version 0.0.4). Label values are escaped. A service with
    /// several endpoints is listed per endpoint, with an `endpoint` label (its URL); sum
    /// over it for the service.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        type Getter = fn(&PoolStats) -> Option<f64>;
        let metrics: [(&str, &str, &str, Getter); 16] = [
            (
                "acquisitions_total",
                "counter",
                "Successful checkouts.",
                |p| Some(p.acquisitions as f64),
            ),
            (
                "requests_total",
                "counter",
                "HTTP requests answered (no series for WebSocket pools: see acquisitions_total).",
                |p| p.requests.map(|n| n as f64),
            ),
            (
                "retries_total",
                "counter",
                "Idempotent requests retried on a fresh connection.",
                |p| Some(p.retries as f64),
            ),
            (
                "connections_created_total",
                "counter",
                "Real connections opened.",
                |p| Some(p.connections_created as f64),
            ),
            (
                "connect_failures_total",
                "counter",
                "Failed connection attempts.",
                |p| Some(p.connect_failures as f64),
            ),
            ("connections_open", "gauge", "Connections open now.", |p| {
                Some(p.connections_open as f64)
            }),
            ("in_use", "gauge", "Connections checked out.", |p| {
                Some(p.in_use as f64)
            }),
            ("idle", "gauge", "Idle connections.", |p| {
                Some(p.idle as f64)
            }),
            (
                "waiting",
                "gauge",
                "Callers waiting for a connection.",
                |p| Some(p.waiting as f64),
            ),
            ("max_connections", "gauge", "The pool's cap.", |p| {
                Some(p.max as f64)
            }),
            (
                "leaks_detected_total",
                "counter",
                "Connections held past the leak threshold.",
                |p| Some(p.leaks_detected as f64),
            ),
            (
                "reuse_ratio",
                "gauge",
                "1 - connections created / uses (HTTP requests, WebSocket checkouts).",
                |p| Some(p.reuse_rate()),
            ),
            ("error_ratio", "gauge", "Errors per attempt.", |p| {
                Some(p.error_rate())
            }),
            (
                "acquire_p50_seconds",
                "gauge",
                "Median checkout time.",
                |p| Some(p.acquire_time.p50_us / 1e6),
            ),
            (
                "acquire_p99_seconds",
                "gauge",
                "99th percentile checkout time.",
                |p| Some(p.acquire_time.p99_us / 1e6),
            ),
            (
                "acquire_max_seconds",
                "gauge",
                "Longest checkout time.",
                |p| Some(p.acquire_time.max_us / 1e6),
            ),
        ];
        for (name, kind, help, get) in metrics {
            family(&mut out, name, kind, help);
            for s in &self.services {
                for (endpoint, p) in s.series() {
                    if let Some(value) = get(p) {
                        sample(&mut out, name, &s.name, endpoint, p, None, value);
                    }
                }
            }
        }
        let closed = "connections_closed_total";
        family(&mut out, closed, "counter", "Connections closed, by cause.");
        for s in &self.services {
            for (endpoint, p) in s.series() {
                let c = &p.closed;
                for (cause, n) in [
                    ("idle", c.idle),
                    ("lifetime", c.lifetime),
                    ("broken", c.broken),
                    ("health", c.health),
                    ("shutdown", c.shutdown),
                    ("abandoned", c.abandoned),
                    ("other", c.other),
                ] {
                    let cause = Some(("cause", cause));
                    sample(&mut out, closed, &s.name, endpoint, p, cause, n);
                }
            }
        }
        let errors = "errors_total";
        family(&mut out, errors, "counter", "Errors, by class.");
        for s in &self.services {
            for (endpoint, p) in s.series() {
                for (class, n) in p.errors.iter() {
                    let class = Some(("class", class));
                    sample(&mut out, errors, &s.name, endpoint, p, class, n);
                }
            }
        }
        let healthy = "healthy";
        family(
            &mut out,
            healthy,
            "gauge",
            "1 healthy, 0.5 degraded, 0 unhealthy.",
        );
        for s in &self.services {
            if s.endpoints.is_empty() {
                let _ = writeln!(
                    out,
                    "backend_pool_{healthy}{{service=\"{}\"}} {}",
                    escape(&s.name),
                    s.health.state.as_gauge()
                );
            }
            for e in &s.endpoints {
                let _ = writeln!(
                    out,
                    "backend_pool_{healthy}{{service=\"{}\",endpoint=\"{}\"}} {}",
                    escape(&s.name),
                    escape(&e.url),
                    e.health.state.as_gauge()
                );
            }
        }
        out
    }
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP backend_pool_{name} {help}");
    let _ = writeln!(out, "# TYPE backend_pool_{name} {kind}");
}

/// One sample of a pool's metric, labelled with its service, its endpoint (for a service
/// with several), its pool kind and `extra`.
fn sample(
    out: &mut String,
    name: &str,
    service: &str,
    endpoint: Option<&str>,
    pool: &PoolStats,
    extra: Option<(&str, &str)>,
    value: impl std::fmt::Display,
) {
    let (service, kind) = (escape(service), pool_label(pool.kind));
    let endpoint = endpoint.map_or(String::new(), |e| format!(",endpoint=\"{}\"", escape(e)));
    let _ = match extra {
        Some((label, v)) => writeln!(
            out,
            "backend_pool_{name}{{service=\"{service}\"{endpoint},pool=\"{kind}\",{label}=\"{v}\"}} {value}"
        ),
        None => writeln!(
            out,
            "backend_pool_{name}{{service=\"{service}\"{endpoint},pool=\"{kind}\"}} {value}"
        ),
    };
}

fn pool_label(kind: PoolKind) -> &'static str {
    match kind {
        PoolKind::Http => "http",
        PoolKind::WebSocket => "websocket",
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_escapes_labels() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
