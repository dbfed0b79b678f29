//! `edgeward.downstream.max_connections`: one count of open client connections for every proxy
//! listener. Past the limit a new connection is closed at once (the kernel's backlog holds those not
//! accepted yet); the open ones are served as before.

use crate::metrics;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Connections {
    open: AtomicUsize,
    max: usize,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Count a new connection in, unless `max` are open; it counts until the guard drops.
    pub fn admit(self: &Arc<Self>) -> Option<Open> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            metrics::CONNECTIONS_REFUSED.inc();
            return None;
        }
        metrics::CONNECTIONS.inc();
        Some(Open(self.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open connection.
pub struct Open(Arc<Connections>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        metrics::CONNECTIONS.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_again_after_a_close() {
        let c = Connections::new(2);
        let a = c.admit().expect("first");
        let _b = c.admit().expect("second");
        assert!(c.admit().is_none());
        drop(a);
        let _c = c.admit().expect("a place freed by the close");
        assert_eq!(c.open(), 2);
    }
}
