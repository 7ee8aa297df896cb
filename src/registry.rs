//! The services of one manager, as [`PoolManager`](crate::PoolManager) and its maintenance
//! threads both see them: each service's context, its pools and the state of its maintenance
//! step, and whether the manager is closed. The manager owns the [`Registry`] in an `Arc`;
//! the maintenance threads hold only a `Weak` to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::http::HttpPool;
use crate::service::ServiceContext;
use crate::stats::PoolCounters;
use crate::ws::WsPool;

/// Every service of one manager, in configuration order.
pub(crate) struct Registry {
    pub services: Vec<Service>,
    closed: AtomicBool,
}

impl Registry {
    pub(crate) fn new(services: Vec<Service>) -> Registry {
        Registry {
            services,
            closed: AtomicBool::new(false),
        }
    }

    /// The service called `name`.
    pub(crate) fn find(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.core.name == name)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the manager closed; true for the call that closed it.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }
}

/// One service: what its pools share, its pools, its maintenance step.
pub(crate) struct Service {
    pub core: Arc<ServiceContext>,
    pub http: Option<Arc<HttpPool>>,
    pub ws: Option<Arc<WsPool>>,
    /// Its maintenance step: one at a time.
    pub step: MaintenanceStep,
}

impl Service {
    pub(crate) fn new(
        core: Arc<ServiceContext>,
        http: Option<Arc<HttpPool>>,
        ws: Option<Arc<WsPool>>,
    ) -> Service {
        Service {
            core,
            http,
            ws,
            step: MaintenanceStep::default(),
        }
    }

    /// The counters of the service's first pool (HTTP, else WebSocket).
    pub(crate) fn counters(&self) -> Option<&PoolCounters> {
        match (&self.http, &self.ws) {
            (Some(http), _) => Some(http.counters()),
            (None, Some(ws)) => Some(ws.counters()),
            (None, None) => None,
        }
    }
}

/// The state of a service's maintenance step (see `maintenance`): one at a time.
#[derive(Default)]
pub(crate) struct MaintenanceStep {
    /// A step of this service is queued or running.
    pub scheduled: AtomicBool,
    /// Held while a step runs: keeps `run_now` and a background step apart.
    pub running: Mutex<()>,
}
