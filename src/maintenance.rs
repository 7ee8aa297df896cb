//! Background upkeep of every service: health checks, idle eviction, lifetime expiry, refills
//! and leak detection; designed so that one slow service never delays another, nor shutdown.
//!
//! # Design
//!
//! * **One scheduler thread** (`backend-pool-maintenance`) per manager holds only a `Weak` to
//!   the manager's [`Registry`], wakes on a crossbeam `tick` (`maintenance_interval_ms`) and stops
//!   when the stop channel fires or disconnects. It does no I/O: on each tick it decides, per
//!   service, whether a health check is due and queues that service's *step*.
//! * **A step** is everything one endpoint of a service needs in one pass
//!   (`maintain_member`): HTTP idle upkeep and health probe, WebSocket eviction, drain,
//!   pings and refill, leak scan. A service with several endpoints (`urls`) has a step per
//!   endpoint, each queued on its own: a silent endpoint whose probe waits its whole
//!   `health_timeout_ms` holds back no sibling's probe. An endpoint has at most one step
//!   queued or running (its `scheduled` flag): a tick that finds the previous step still
//!   running skips that endpoint, so steps never overlap and the queue never holds more
//!   than one step per endpoint. A step that must connect, ping or probe can block, but
//!   each wait has its own deadline (`connect_timeout_ms`, `pong_timeout_ms` for all of a
//!   pool's pings together, `health_timeout_ms`).
//! * **Workers** (`backend-pool-maint-N`) run the steps: one per endpoint, at most
//!   [`MAX_WORKERS`], started with the manager, and more when a reconfiguration adds
//!   endpoints ([`Maintenance::grow`]; never fewer: an idle worker costs a parked thread).
//!   With no more endpoints than workers, a queued step always finds a free worker, so an
//!   endpoint stuck in a dripping handshake or waiting for a probe that never answers delays
//!   nobody else. (Beyond [`MAX_WORKERS`] endpoints, that many stuck endpoints at once would
//!   make the others wait for a worker.)
//! * **Reconfiguration.** Each tick walks the services in service *now* (the registry's
//!   snapshot), so an added service is tended from the next tick and a removed one no
//!   more; a step queued for a service retired meanwhile does nothing. A new
//!   `maintenance_interval_ms` reaches the scheduler through its `retick` channel.
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
//! * [`run_now`] (`PoolManager::run_maintenance`) runs every endpoint's step on the caller's
//!   thread, one after another, with every health check due; a per-endpoint lock keeps it
//!   from overlapping a background step of the same endpoint.
//! * [`probe_now`] (`PoolManager::probe`) runs one service's health check within the
//!   caller's deadline (each endpoint's at once, on threads of its own, when it has
//!   several), and records it as a maintenance probe would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, tick, unbounded, Receiver, Sender};

use crate::health::HealthState;
use crate::registry::{Member, Registry, Service};

/// The most worker threads a manager runs, whatever its number of services.
pub(crate) const MAX_WORKERS: usize = 16;

/// How long dropping a manager waits for its maintenance threads (steps in flight are
/// aborted first, so they end within microseconds to milliseconds).
pub(crate) const DROP_JOIN: Duration = Duration::from_millis(50);

/// An endpoint's step, queued by the scheduler for the workers.
struct Task {
    service: Arc<Service>,
    /// The endpoint's index in `service.endpoints`.
    member: usize,
    probe_due: bool,
}

/// How many steps `services` can have queued at once: one per endpoint.
pub(crate) fn steps(services: &[Arc<Service>]) -> usize {
    services.iter().map(|s| s.endpoints.len()).sum()
}

/// The scheduler and workers of one manager.
pub(crate) struct Maintenance {
    stop: Sender<()>,
    /// A new tick for the scheduler.
    retick: Sender<Duration>,
    /// Every thread holds a clone of the sender and drops it when it exits: disconnected
    /// means all have exited. This one is for workers started later; `stop` drops it.
    exited: Receiver<()>,
    exited_tx: Sender<()>,
    /// The queue, for workers started later.
    tasks: Receiver<Task>,
    registry: Weak<Registry>,
    threads: Vec<JoinHandle<()>>,
    workers: usize,
}

impl Maintenance {
    /// Starts the scheduler and one worker per endpoint (at most [`MAX_WORKERS`]).
    ///
    /// # Errors
    /// When the system refuses a thread; those already started stop and are joined.
    pub(crate) fn start(registry: &Arc<Registry>, interval: Duration) -> std::io::Result<Self> {
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let (retick_tx, retick_rx) = unbounded::<Duration>();
        let (exited_tx, exited_rx) = bounded::<()>(0);
        // At most one task per endpoint (its `scheduled` flag): bounded by the endpoints.
        let (task_tx, task_rx) = unbounded::<Task>();
        let mut m = Maintenance {
            stop: stop_tx,
            retick: retick_tx,
            exited: exited_rx,
            exited_tx: exited_tx.clone(),
            tasks: task_rx,
            registry: Arc::downgrade(registry),
            threads: Vec::new(),
            workers: 0,
        };
        if let Err(e) = m.grow(steps(&registry.current())) {
            // The started workers see the queue disconnect and exit.
            drop((task_tx, exited_tx));
            m.stop(Instant::now() + Duration::from_secs(1));
            return Err(e);
        }
        let weak = Arc::downgrade(registry);
        let spawned = std::thread::Builder::new()
            .name("backend-pool-maintenance".into())
            .spawn(move || {
                schedule(&weak, interval, &stop_rx, &retick_rx, &task_tx);
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

    /// Starts workers until there is one per endpoint, `steps` of them (at most
    /// [`MAX_WORKERS`]; see [`steps`]); never stops one.
    ///
    /// # Errors
    /// When the system refuses a thread (the workers started so far stay).
    pub(crate) fn grow(&mut self, steps: usize) -> std::io::Result<()> {
        while self.workers < steps.min(MAX_WORKERS) {
            let (weak, tasks, exited) = (
                Weak::clone(&self.registry),
                self.tasks.clone(),
                self.exited_tx.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("backend-pool-maint-{}", self.workers))
                .spawn(move || {
                    work(&weak, &tasks);
                    drop(exited);
                })?;
            self.threads.push(handle);
            self.workers += 1;
        }
        Ok(())
    }

    /// The scheduler ticks every `interval` from now on.
    pub(crate) fn set_interval(&self, interval: Duration) {
        let _ = self.retick.send(interval);
    }

    /// Stops the scheduler; the workers finish their current step (aborted by then, at
    /// shutdown) and exit. Joins every thread if all exit by `deadline`; returns whether
    /// they did. Threads not joined finish on their own.
    pub(crate) fn stop(self, deadline: Instant) -> bool {
        let Maintenance {
            stop,
            exited,
            exited_tx,
            threads,
            ..
        } = self;
        drop(exited_tx);
        let _ = stop.try_send(());
        loop {
            match exited.recv_deadline(deadline) {
                Ok(()) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return false,
            }
        }
        for t in threads {
            let _ = t.join();
        }
        true
    }
}

/// The scheduler's loop: on each tick, queue a step for every endpoint of the services in
/// service without one in flight.
fn schedule(
    registry: &Weak<Registry>,
    interval: Duration,
    stop: &Receiver<()>,
    retick: &Receiver<Duration>,
    tasks: &Sender<Task>,
) {
    let mut ticker = tick(interval);
    loop {
        select! {
            recv(stop) -> _ => return,
            recv(retick) -> interval => match interval {
                Ok(interval) => ticker = tick(interval),
                Err(_) => return,
            },
            recv(ticker) -> _ => {
                let Some(registry) = registry.upgrade() else { return };
                if registry.is_closed() {
                    return;
                }
                let now = Instant::now();
                for service in registry.current().iter() {
                    let probe_due = due(service, now);
                    for (member, m) in service.endpoints.iter().enumerate() {
                        if m.step.scheduled.swap(true, Ordering::AcqRel) {
                            continue; // its last step is still running: never two at once
                        }
                        let task = Task { service: Arc::clone(service), member, probe_due };
                        if tasks.try_send(task).is_err() {
                            m.step.scheduled.store(false, Ordering::Release);
                        }
                    }
                }
            }
        }
    }
}

/// Is a health check of `service`'s endpoints due now? (Every tick while one is unhealthy;
/// an endpoint whose last step still runs skips it.) Advances its next check when it is.
fn due(service: &Service, now: Instant) -> bool {
    let unhealthy = service
        .endpoints
        .iter()
        .any(|m| m.core.health.state() == HealthState::Unhealthy);
    let mut next = service.next_probe.lock();
    let due = unhealthy || next.map_or(true, |next| now >= next);
    if due {
        *next = Some(crate::clock::deadline(
            now,
            service.core.timeouts.health_interval,
        ));
    }
    due
}

/// A worker's loop: run queued steps until the queue disconnects (the scheduler stopped).
fn work(registry: &Weak<Registry>, tasks: &Receiver<Task>) {
    while let Ok(Task {
        service,
        member,
        probe_due,
    }) = tasks.recv()
    {
        let Some(member) = service.endpoints.get(member) else {
            continue;
        };
        // Clears `scheduled` even if the step panics.
        let _done = Scheduled(&member.step.scheduled);
        let Some(registry) = registry.upgrade() else {
            return;
        };
        if registry.is_closed() || service.core.is_retired() {
            continue;
        }
        // Busy only while `run_now` runs this endpoint's step: then this one is not needed.
        let running = member.step.running.try_lock();
        if running.is_some() {
            maintain_member(member, Instant::now(), probe_due);
        }
    }
}

struct Scheduled<'a>(&'a AtomicBool);

impl Drop for Scheduled<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One pass over every endpoint of every service on the calling thread, every health check
/// due.
pub(crate) fn run_now(registry: &Registry) {
    for service in registry.current().iter() {
        for member in service.endpoints.iter() {
            if registry.is_closed() {
                return;
            }
            let _running = member.step.running.lock();
            maintain_member(member, Instant::now(), true);
        }
    }
}

/// The check [`probe_now`] ran, and what it found.
pub(crate) struct Probed {
    /// `GET /health`, `HEAD /`, `TCP connect`.
    pub check: String,
    pub outcome: Result<(), String>,
}

/// A readiness check of `service` now, on the calling thread, within `timeout`: its
/// `health_path` through a pooled connection (not a caller's use: no request, no
/// acquisition counted; a connection it opens counts as a probe's), or, without one, or with
/// every connection busy (waiting for one would say nothing about the server), a TCP
/// connect to its host (counted as a probe connection). Recorded in the service's health
/// as a maintenance probe is; shutdown or a reconfiguration cuts it short, and then records
/// nothing. With several endpoints, each is checked at the same time, on a thread of its
/// own (the caller's for the first), each within `timeout`, so the answer comes within
/// `timeout` however many endpoints are silent; each is recorded in its own health. The
/// answer is the first reachable one's in configuration order, or the last one's failure.
/// If the system refuses a thread, that endpoint is checked on the caller's thread after
/// the others started.
pub(crate) fn probe_now(service: &Service, timeout: Duration) -> Probed {
    let (first, rest) = match &*service.endpoints {
        [] => {
            return Probed {
                check: "none".into(),
                outcome: Err("the service has no endpoint".into()),
            }
        }
        [only] => return probe_member(only, timeout),
        [first, rest @ ..] => (first, rest),
    };
    let mut answers = Vec::with_capacity(service.endpoints.len());
    std::thread::scope(|scope| {
        let mut inline = Vec::new();
        let handles: Vec<_> = rest
            .iter()
            .filter_map(|member| {
                let spawned = std::thread::Builder::new()
                    .name("backend-pool-probe".into())
                    .spawn_scoped(scope, move || probe_member(member, timeout));
                match spawned {
                    Ok(handle) => Some(handle),
                    Err(_) => {
                        inline.push(member);
                        None
                    }
                }
            })
            .collect();
        answers.push(probe_member(first, timeout));
        answers.extend(inline.into_iter().map(|m| probe_member(m, timeout)));
        for handle in handles {
            // A panicking probe says nothing about its endpoint: left out of the answer.
            if let Ok(probed) = handle.join() {
                answers.push(probed);
            }
        }
    });
    // `answers` is in configuration order but for endpoints checked inline: fine for
    // "a reachable one", and the failure reported is one of the endpoints'.
    let mut last = None;
    for probed in answers {
        if probed.outcome.is_ok() {
            return probed;
        }
        last = Some(probed);
    }
    last.unwrap_or_else(|| Probed {
        check: "none".into(),
        outcome: Err("no endpoint's check finished".into()),
    })
}

/// [`probe_now`] for one endpoint.
fn probe_member(member: &Member, timeout: Duration) -> Probed {
    let core = &member.core;
    let end = crate::clock::deadline(Instant::now(), timeout);
    let pooled = match (&member.http, core.config.health_path.as_deref()) {
        (Some(http), Some(path)) => http.probe(path, timeout).map(|outcome| Probed {
            check: format!("{} {path}", if path == "/" { "HEAD" } else { "GET" }),
            outcome,
        }),
        _ => None,
    };
    let probed = pooled.unwrap_or_else(|| Probed {
        check: "TCP connect".into(),
        outcome: tcp_probe(member, end),
    });
    if !core.aborts.is_closed() {
        core.health.probed(probed.outcome.clone());
    }
    probed
}

/// One endpoint's step. Its health is not updated once shutdown has begun (an aborted
/// probe says nothing about the server).
fn maintain_member(member: &Member, now: Instant, probe_due: bool) {
    let core = &member.core;
    let record = |outcome: Result<(), String>| {
        if !core.aborts.is_closed() {
            core.health.probed(outcome);
        }
    };
    if let Some(http) = &member.http {
        http.maintain(now);
        if probe_due {
            let outcome = match core.config.health_path.as_deref() {
                Some(path) => http.probe(path, core.timeouts.health),
                None if core.health.state() != HealthState::Healthy => {
                    Some(tcp_probe(member, Instant::now() + core.timeouts.health))
                }
                None => None,
            };
            if let Some(outcome) = outcome {
                record(outcome);
            }
        }
    }
    if let Some(ws) = &member.ws {
        // Pings idle sockets when due; with none idle, an unhealthy endpoint gets a TCP probe.
        ws.maintain(now, probe_due);
        if probe_due && member.http.is_none() && core.health.state() == HealthState::Unhealthy {
            record(tcp_probe(member, Instant::now() + core.timeouts.health));
        }
    }
}

/// Can a TCP connection be opened by `deadline` (`health_timeout_ms` from now for a
/// maintenance probe), for all the host's addresses together?
fn tcp_probe(member: &Member, deadline: Instant) -> Result<(), String> {
    let core = &member.core;
    // Shutdown ends the connect (`crate::abort`).
    let watch = |socket: &_| Ok(core.aborts.watch_tcp(socket));
    let _connected = crate::net::connect(&core.endpoint.host, core.endpoint.port, deadline, watch)
        .map_err(|err| format!("TCP probe: {err}"))?;
    // A real connection the server saw: count it, and its close, in a pool.
    if let Some(counters) = member.counters() {
        counters.probe_connection();
    }
    Ok(())
}
