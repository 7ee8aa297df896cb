//! Cutting blocked I/O short at shutdown.
//!
//! A connect, a WebSocket ping or an HTTP health probe can block for as long as its own
//! deadline when a server drips or never answers. Before such a step blocks, it registers a
//! way to shut its socket down ([`Aborts::watch_tcp`]: the shared socket, registered
//! before it connects (`crate::net`); [`Aborts::watch_agent`]: a clone of the ureq agent,
//! whose `shutdown` interrupts the request in flight, its connect included); the returned
//! [`Watch`] unregisters it when the step ends.
//! [`Aborts::abort_all`], called once by `PoolManager::shutdown`, shuts every registered
//! socket down, so each blocked read or write returns at once (on Windows within a slice:
//! `crate::net`, "Windows"); a watch registered after that fires at once.
//!
//! A connect is ended by shutting its socket down, on its own thread (no helper thread is
//! left behind). Not interrupted: a host name's lookup (the system resolver offers no
//! handle), bounded by `connect_timeout_ms` / `health_timeout_ms`; an IP literal needs none.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::net::SharedTcp;

/// One service's blocked-I/O registry. See the module docs.
#[derive(Default)]
pub(crate) struct Aborts {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    closed: bool,
    next: u64,
    watched: Vec<(u64, Target)>,
}

enum Target {
    Tcp(Arc<SharedTcp>),
    Agent(ureq::Agent),
}

impl Target {
    fn fire(self) {
        match self {
            Target::Tcp(stream) => stream.shut_down(),
            Target::Agent(agent) => agent.shutdown(),
        }
    }
}

impl Aborts {
    /// Registers `stream` (the socket itself, shared: no second descriptor) until the
    /// returned watch drops.
    pub(crate) fn watch_tcp(&self, stream: &Arc<SharedTcp>) -> Watch<'_> {
        self.watch(Target::Tcp(Arc::clone(stream)))
    }

    /// Registers `agent` until the returned watch drops; aborting shuts the agent down
    /// (every connection it holds, and the request it is running).
    pub(crate) fn watch_agent(&self, agent: &ureq::Agent) -> Watch<'_> {
        self.watch(Target::Agent(agent.clone()))
    }

    fn watch(&self, target: Target) -> Watch<'_> {
        let mut st = self.state.lock();
        if st.closed {
            drop(st);
            target.fire();
            return Watch {
                aborts: self,
                id: None,
            };
        }
        st.next += 1;
        let id = st.next;
        st.watched.push((id, target));
        Watch {
            aborts: self,
            id: Some(id),
        }
    }

    /// Shuts down every watched socket, and any watched later. Idempotent.
    pub(crate) fn abort_all(&self) {
        let watched = {
            let mut st = self.state.lock();
            st.closed = true;
            std::mem::take(&mut st.watched)
        };
        // Off-lock: a shutdown is a system call.
        for (_, target) in watched {
            target.fire();
        }
    }

    /// Has [`Aborts::abort_all`] run (the manager is shutting down)?
    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

/// A registered socket; unregisters it (closing the clone) when dropped.
#[must_use = "the socket is watched only while the watch lives"]
pub(crate) struct Watch<'a> {
    aborts: &'a Aborts,
    id: Option<u64>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let target = {
            let mut st = self.aborts.state.lock();
            let at = st.watched.iter().position(|(i, _)| *i == id);
            at.map(|at| st.watched.swap_remove(at).1)
        };
        drop(target); // closes the clone off-lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::blocking_read;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    fn pair() -> (Arc<SharedTcp>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (Arc::new(client.into()), listener.accept().unwrap().0)
    }

    #[test]
    fn abort_all_wakes_a_blocked_read_and_later_watches_fire_at_once() {
        let aborts = Aborts::default();
        let (client, _server) = pair();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        std::thread::scope(|s| {
            let watch = aborts.watch_tcp(&client);
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                aborts.abort_all();
            });
            assert_eq!(
                blocking_read(&client, &mut [0u8; 8]).unwrap(),
                0,
                "EOF after shutdown"
            );
            drop(watch);
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(aborts.is_closed());

        let (late, _server) = pair();
        let _watch = aborts.watch_tcp(&late);
        assert_eq!(blocking_read(&late, &mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn a_dropped_watch_leaves_its_socket_alone() {
        let aborts = Aborts::default();
        let (client, mut server) = pair();
        drop(aborts.watch_tcp(&client));
        assert!(aborts.state.lock().watched.is_empty());
        aborts.abort_all();
        use std::io::Write;
        (&**client).write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }
}
