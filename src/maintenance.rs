//! Background upkeep of every service: health checks, idle eviction, lifetime expiry, refills
//! and leak detection; designed so that one slow service never delays another, nor shutdown.
//!
//! # Design
//!
//! * **One scheduler thread** (`backend-pool-maintenance`) per manager holds only a `Weak` to
//!   the manager's [`Registry`], wakes on a crossbeam `tick` (`maintenance_interval_ms`) and stops
//!   when the stop channel fires or disconnects. It does no I/O: on each tick it decides, per
//!   service, whether a health check is due and queues that service's *step*.
//! * **A step** is everything one service needs in one pass (`maintain_service`): HTTP idle
//!   upkeep and health probe, WebSocket eviction, drain, pings and refill, leak scan. A
//!   service has at most one step queued or running (its `scheduled` flag): a tick that finds
//!   the previous step still running skips that service, so steps never overlap and the
//!   queue never holds more than one step per service. A step that must connect, ping or
//!   probe can block, but each wait has its own deadline (`connect_timeout_ms`,
//!   `pong_timeout_ms` for all of a pool's pings together, `health_timeout_ms`).
//! * **Workers** (`backend-pool-maint-N`) run the steps: one per service, at most
//!   [`MAX_WORKERS`], started with the manager. With no more services than workers, a queued
//!   step always finds a free worker, so a service stuck in a dripping handshake or waiting
//!   for a probe that never answers delays nobody else. (Beyond [`MAX_WORKERS`] services,
//!   that many stuck services at once would make the others wait for a worker.)
//! * **Shutdown** (`PoolManager::shutdown`) closes the pools, then aborts every blocked step
//!   through the services' [`Aborts`](crate::abort::Aborts) registries (each connect, ping
//!   and probe registers its socket there while it may block), then stops the scheduler and
//!   joins the scheduler and every worker by the shutdown deadline. Aborted reads and writes
//!   return at once, and so do connects (their sockets are registered before they
//!   connect), so joining takes milliseconds; only a host name's lookup in progress cannot
//!   be interrupted (bounded by its own timeout; an IP literal needs none). A step queued
//!   before shutdown finds the manager closed and does nothing. Dropping the manager does the
//!   same and waits at most [`DROP_JOIN`] for the threads; a thread not joined by then
//!   finishes its bounded step on its own and exits.
//! * [`run_now`] (`PoolManager::run_maintenance`) runs every service's step on the caller's
//!   thread, one after another, with every health check due; a per-service lock keeps it from
//!   overlapping a background step of the same service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, tick, Receiver, Sender};

use crate::health::HealthState;
use crate::registry::{Registry, Service};

/// The most worker threads a manager runs, whatever its number of services.
pub(crate) const MAX_WORKERS: usize = 16;

/// How long dropping a manager waits for its maintenance threads (steps in flight are
/// aborted first, so they end within microseconds to milliseconds).
pub(crate) const DROP_JOIN: Duration = Duration::from_millis(50);

/// A service's step, queued by the scheduler for the workers.
struct Task {
    service: usize,
    probe_due: bool,
}

/// The scheduler and workers of one manager.
pub(crate) struct Maintenance {
    stop: Sender<()>,
    /// Every thread holds a clone of the sender and drops it when it exits: disconnected
    /// means all have exited.
    exited: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Maintenance {
    /// Starts the scheduler and one worker per service (at most [`MAX_WORKERS`]).
    ///
    /// # Errors
    /// When the system refuses a thread; those already started stop and are joined.
    pub(crate) fn start(registry: &Arc<Registry>, interval: Duration) -> std::io::Result<Self> {
        let services = registry.services.len();
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let (exited_tx, exited_rx) = bounded::<()>(0);
        let (task_tx, task_rx) = bounded::<Task>(services.max(1));
        let mut m = Maintenance {
            stop: stop_tx,
            exited: exited_rx,
            threads: Vec::new(),
        };
        let workers = services.min(MAX_WORKERS);
        for i in 0..workers {
            let (weak, tasks, exited) =
                (Arc::downgrade(registry), task_rx.clone(), exited_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("backend-pool-maint-{i}"))
                .spawn(move || {
                    work(&weak, &tasks);
                    drop(exited);
                });
            match spawned {
                Ok(handle) => m.threads.push(handle),
                Err(e) => {
                    // The started workers see the queue disconnect and exit.
                    drop((task_tx, exited_tx));
                    m.stop(Instant::now() + Duration::from_secs(1));
                    return Err(e);
                }
            }
        }
        let weak = Arc::downgrade(registry);
        let spawned = std::thread::Builder::new()
            .name("backend-pool-maintenance".into())
            .spawn(move || {
                schedule(&weak, interval, &stop_rx, &task_tx);
                drop(exited_tx);
            });
        match spawned {
            Ok(handle) => m.threads.push(handle),
            Err(e) => {
                m.stop(Instant::now() + Duration::from_secs(1));
                return Err(e);
            }
        }
        Ok(m)
    }

    /// Stops the scheduler; the workers finish their current step (aborted by then, at
    /// shutdown) and exit. Joins every thread if all exit by `deadline`; returns whether
    /// they did. Threads not joined finish on their own.
    pub(crate) fn stop(self, deadline: Instant) -> bool {
        let _ = self.stop.try_send(());
        loop {
            match self.exited.recv_deadline(deadline) {
                Ok(()) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return false,
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
        true
    }
}

/// The scheduler's loop: on each tick, queue a step for every service without one in flight.
fn schedule(
    registry: &Weak<Registry>,
    interval: Duration,
    stop: &Receiver<()>,
    tasks: &Sender<Task>,
) {
    let ticker = tick(interval);
    let mut next_probe: Vec<Instant> = Vec::new();
    loop {
        select! {
            recv(stop) -> _ => return,
            recv(ticker) -> _ => {
                let Some(registry) = registry.upgrade() else { return };
                if registry.is_closed() {
                    return;
                }
                let now = Instant::now();
                next_probe.resize(registry.services.len(), now);
                for (i, (service, next)) in registry.services.iter().zip(&mut next_probe).enumerate() {
                    if service.step.scheduled.swap(true, Ordering::AcqRel) {
                        continue; // its last step is still running: never two at once
                    }
                    let probe_due = due(service, next, now);
                    if tasks.try_send(Task { service: i, probe_due }).is_err() {
                        service.step.scheduled.store(false, Ordering::Release);
                    }
                }
            }
        }
    }
}

/// Is a health check of `service` due now? (Every tick while it is unhealthy.) Advances
/// `next` when it is.
fn due(service: &Service, next: &mut Instant, now: Instant) -> bool {
    let unhealthy = service.core.health.state() == HealthState::Unhealthy;
    let due = unhealthy || now >= *next;
    if due {
        *next = now + service.core.timeouts.health_interval;
    }
    due
}

/// A worker's loop: run queued steps until the queue disconnects (the scheduler stopped).
fn work(registry: &Weak<Registry>, tasks: &Receiver<Task>) {
    while let Ok(task) = tasks.recv() {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let Some(service) = registry.services.get(task.service) else {
            continue;
        };
        // Clears `scheduled` even if the step panics.
        let _done = Scheduled(&service.step.scheduled);
        if registry.is_closed() {
            continue;
        }
        // Busy only while `run_now` runs this service's step: then this one is not needed.
        let running = service.step.running.try_lock();
        if running.is_some() {
            maintain_service(service, Instant::now(), task.probe_due);
        }
    }
}

struct Scheduled<'a>(&'a AtomicBool);

impl Drop for Scheduled<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One pass over every service on the calling thread, every health check due.
pub(crate) fn run_now(registry: &Registry) {
    for service in &registry.services {
        if registry.is_closed() {
            return;
        }
        let _running = service.step.running.lock();
        maintain_service(service, Instant::now(), true);
    }
}

/// One service's step. Its health is not updated once shutdown has begun (an aborted probe
/// says nothing about the server).
fn maintain_service(service: &Service, now: Instant, probe_due: bool) {
    let core = &service.core;
    let record = |outcome: Result<(), String>| {
        if !core.aborts.is_closed() {
            core.health.probed(outcome);
        }
    };
    if let Some(http) = &service.http {
        http.maintain(now);
        if probe_due {
            let outcome = match core.config.health_path.as_deref() {
                Some(path) => http.probe(path),
                None if core.health.state() != HealthState::Healthy => Some(tcp_probe(service)),
                None => None,
            };
            if let Some(outcome) = outcome {
                record(outcome);
            }
        }
    }
    if let Some(ws) = &service.ws {
        // Pings idle sockets when due; with none idle, an unhealthy service gets a TCP probe.
        ws.maintain(now, probe_due);
        if probe_due && service.http.is_none() && core.health.state() == HealthState::Unhealthy {
            record(tcp_probe(service));
        }
    }
}

/// Can a TCP connection be opened within the probe deadline (`health_timeout_ms`, for all
/// the host's addresses together)?
fn tcp_probe(service: &Service) -> Result<(), String> {
    let core = &service.core;
    let deadline = Instant::now() + core.timeouts.health;
    // Shutdown ends the connect (`crate::abort`).
    let watch = |socket: &_| Ok(core.aborts.watch_tcp(socket));
    let _connected = crate::net::connect(&core.endpoint.host, core.endpoint.port, deadline, watch)
        .map_err(|err| format!("TCP probe: {err}"))?;
    // A real connection the server saw: count it, and its close, in a pool.
    if let Some(counters) = service.counters() {
        counters.probe_connection();
    }
    Ok(())
}
