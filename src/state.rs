//! The state that the collecting tasks write and the HTTP server reads: the
//! snapshot (the encoded `/metrics` body), each collector's health and the
//! leadership flag.
//!
//! It holds no database handle and no datasource, so whatever is given only
//! this (the HTTP server) cannot reach Postgres or a password. The pool's
//! gauges reach it as a plain status value from the scheduler, which owns
//! the pool.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::health::Health;
use crate::leader::Leadership;
use crate::snapshot::{HEALTH, Snapshot};

/// pgsidecar's own connection pool, as the health families show it.
pub type PoolStatus = deadpool_postgres::Status;

/// A request to reload the configuration (SIGHUP, `POST /-/reload`), and
/// where its outcome goes: `Err` lists what is wrong with the new file.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

pub struct State {
    pub snapshot: Snapshot,
    pub health: Health,
    pub leadership: Arc<Leadership>,
    /// Held from rendering the health families to publishing them, so that
    /// concurrent collectors never publish an older rendering over a newer one.
    publishing: Mutex<()>,
}

impl State {
    pub fn new(health: Health, leadership: Arc<Leadership>) -> Self {
        State {
            snapshot: Snapshot::default(),
            health,
            leadership,
            publishing: Mutex::new(()),
        }
    }

    fn render_health(&self, pool: PoolStatus) -> Bytes {
        self.health.render(pool, &self.leadership)
    }

    /// Renders the health families anew and publishes them.
    pub fn refresh_health(&self, pool: PoolStatus) {
        let _order = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        self.snapshot.set(HEALTH, Some(self.render_health(pool)));
    }

    /// Replaces (or with `None` drops) a collector's part together with the
    /// health families, in one body: a scrape never sees a collection's
    /// series without its outcome, or the other way round.
    pub fn publish(&self, collector: &'static str, part: Option<Bytes>, pool: PoolStatus) {
        let _order = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        self.snapshot
            .update([(collector, part), (HEALTH, Some(self.render_health(pool)))]);
    }
}
