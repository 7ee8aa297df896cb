//! The one background thread of a manager: health checks, idle eviction, lifetime expiry,
//! refills and leak detection for every service.
//!
//! It holds only a `Weak` reference to the manager's state, wakes on a crossbeam `tick`, and
//! stops when the shutdown channel fires or disconnects. Each probe has its own deadline
//! (`health_timeout_ms`), so a dead backend delays the others by at most that much.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, tick, Receiver, Sender};

use crate::health::HealthState;
use crate::manager::{Service, Shared};

/// Starts the thread; it signals `done` as its last act so shutdown can wait with a deadline.
pub(crate) fn spawn(
    shared: Weak<Shared>,
    interval: Duration,
    stop: Receiver<()>,
    done: Sender<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("backend-pool-maintenance".into())
        .spawn(move || {
            let ticker = tick(interval);
            let mut next_probe: Vec<Instant> = Vec::new();
            loop {
                select! {
                    recv(stop) -> _ => break,
                    recv(ticker) -> _ => {
                        let Some(shared) = shared.upgrade() else { break };
                        run_cycle(&shared, &mut next_probe, Instant::now());
                    }
                }
            }
            let _ = done.send(());
        })
}

/// One maintenance pass over every service.
pub(crate) fn run_cycle(shared: &Arc<Shared>, next_probe: &mut Vec<Instant>, now: Instant) {
    next_probe.resize(shared.services.len(), now);
    for (service, next) in shared.services.iter().zip(next_probe.iter_mut()) {
        if shared.is_closed() {
            return;
        }
        let unhealthy = service.core.health.state() == HealthState::Unhealthy;
        let probe_due = unhealthy || now >= *next;
        if probe_due {
            *next = now + service.core.timeouts.health_interval;
        }
        maintain_service(service, now, probe_due);
    }
}

fn maintain_service(service: &Service, now: Instant, probe_due: bool) {
    let core = &service.core;
    if let Some(http) = &service.http {
        http.maintain(now);
        if probe_due {
            let outcome = match core.config.health_path.as_deref() {
                Some(path) => http.probe(path),
                None if core.health.state() != HealthState::Healthy => Some(tcp_probe(service)),
                None => None,
            };
            if let Some(outcome) = outcome {
                core.health.probed(outcome);
            }
        }
    }
    if let Some(ws) = &service.ws {
        // Pings idle sockets when due; with none idle, an unhealthy service gets a TCP probe.
        ws.maintain(now, probe_due);
        if probe_due && service.http.is_none() && core.health.state() == HealthState::Unhealthy {
            core.health.probed(tcp_probe(service));
        }
    }
}

/// Can a TCP connection be opened within the probe deadline?
fn tcp_probe(service: &Service) -> Result<(), String> {
    let e = &service.core.endpoint;
    let host = e.host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, e.port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {host}: {err}"))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, service.core.timeouts.health) {
            Ok(_) => {
                // A real connection the server saw: count it, and its close, in a pool.
                if let Some(counters) = service.counters() {
                    counters.probe_connection();
                }
                return Ok(());
            }
            Err(err) => last = format!("connect to {addr}: {err}"),
        }
    }
    Err(last)
}
