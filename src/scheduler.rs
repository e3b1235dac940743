//! The scheduler: one task per enabled collector, each on its own interval
//! and with its own time limit, plus a task that refreshes the health
//! families every few seconds.
//!
//! A run's result replaces the collector's previous part of the snapshot at
//! once. A failed run keeps the last good part until it is older than the
//! collector's `stale_after`, then drops it; the failure itself shows at once
//! in `pg_scrape_collector_success`. A failure is logged when it starts or its
//! message changes, and recovery once, not a line per interval.
//!
//! A server-scoped collector runs only while this sidecar is leader (see
//! `leader.rs`). While not leader it does not touch the database and serves
//! none of its series: its part is dropped when leadership is lost, and a
//! run that finishes after the loss is discarded. On becoming leader it runs
//! at once, then on its interval.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, timeout_at};

use crate::app::Shared;
use crate::collectors::{CollectError, Definition, Scope};
use crate::config::CollectorConfig;
use crate::db::Db;
use crate::metrics::{Family, encode};

/// How often the health families (process, pool) are refreshed when no
/// collector finishes in between.
pub const HEALTH_REFRESH: Duration = Duration::from_secs(5);

/// Runs until `shutdown` turns true; returns when every task has stopped.
pub async fn run(
    shared: Arc<Shared>,
    collectors: Vec<(&'static Definition, CollectorConfig)>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (def, cfg) in collectors {
        tasks.spawn(collector_loop(def, cfg, shared.clone(), shutdown.clone()));
    }
    tasks.spawn(health_loop(shared, shutdown));
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "scheduler task ended abnormally");
        }
    }
}

async fn health_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(HEALTH_REFRESH);
    loop {
        tokio::select! {
            _ = ticker.tick() => shared.refresh_health(),
            _ = shutdown.changed() => return,
        }
    }
}

async fn collector_loop(
    def: &'static Definition,
    cfg: CollectorConfig,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut logged_error: Option<String> = None;
    let server = def.scope == Scope::Server;
    let mut leader = shared.leadership.subscribe();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = leader.changed(), if server => {
                // The sender lives in `shared`, which this loop holds.
                if changed.is_err() {
                    return;
                }
                if *leader.borrow_and_update() {
                    ticker.reset();
                } else {
                    stand_down(def, &shared);
                    continue;
                }
            }
            _ = shutdown.changed() => return,
        }
        if server && !*leader.borrow_and_update() {
            stand_down(def, &shared);
            continue;
        }
        let started = Instant::now();
        // A run is a task of its own, so that a bug that panics fails one run
        // instead of ending the collector.
        let mut run = tokio::spawn({
            let (shared, cfg) = (shared.clone(), cfg.clone());
            async move {
                run_once(def, &cfg, &shared.db, &shared.config.checks)
                    .await
                    .map(|(families, omitted)| (encode(families), omitted))
            }
        });
        let result = tokio::select! {
            r = &mut run => r.unwrap_or_else(|e| Err(CollectError::Panic(e.to_string()))),
            _ = shutdown.changed() => {
                run.abort();
                return;
            }
        };
        let took = started.elapsed();
        if server && !shared.leadership.is_leader() {
            // Leadership was lost during the run: its result is not ours to serve.
            stand_down(def, &shared);
            continue;
        }
        let unavailable = matches!(result, Err(CollectError::Unavailable(_)));
        let mut omitted = None;
        // The new part, if it changes: published with the health families below.
        let mut part = None;
        let error = match result {
            Ok((encoded, cut)) => {
                omitted = cut;
                part = Some(Some(encoded));
                if logged_error.take().is_some() {
                    tracing::info!(collector = def.name, "collector recovered");
                }
                None
            }
            Err(e) => {
                let message = shared.db.scrub(&e.to_string());
                let is_backoff = matches!(e, CollectError::Connect(crate::db::DbError::Backoff { .. }));
                if !is_backoff && logged_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(collector = def.name, error = %message, "collector failed");
                    logged_error = Some(message.clone());
                } else {
                    tracing::debug!(collector = def.name, error = %message, "collector failed again");
                }
                Some(message)
            }
        };
        let failed = error.is_some();
        let before = shared
            .health
            .record(def.name, SystemTime::now(), took, error, unavailable, omitted);
        if failed {
            let last_success = before.and_then(|b| b.last_success);
            let stale = last_success.is_none_or(|t| t.elapsed().unwrap_or_default() > cfg.stale_after);
            if stale && shared.snapshot.has(def.name) {
                tracing::info!(collector = def.name, stale_after = %crate::config::show(cfg.stale_after), "dropping the failed collector's stale series");
                part = Some(None);
            }
        }
        match part {
            Some(part) => shared.publish(def.name, part),
            None => shared.refresh_health(),
        }
    }
}

/// A server-scoped collector while this sidecar is not leader: serves no series.
fn stand_down(def: &'static Definition, shared: &Shared) {
    if shared.snapshot.has(def.name) {
        shared.publish(def.name, None);
    }
}

/// One bounded run: a connection and the collector's queries, within its
/// timeout. Returns the families and the relations a cap left out.
async fn run_once(
    def: &Definition,
    cfg: &CollectorConfig,
    db: &Db,
    checks: &Arc<crate::config::Checks>,
) -> Result<(Vec<Family>, Option<usize>), CollectError> {
    let deadline = Instant::now() + cfg.timeout;
    let client = timeout_at(deadline, db.client())
        .await
        .map_err(|_| CollectError::Timeout(cfg.timeout))??;
    let ctx = db.ctx(checks);
    match timeout_at(deadline, (def.collect)(&client, &ctx)).await {
        Ok(r) => r.map(|families| (families, ctx.omitted())),
        Err(_) => {
            db.cancel(client);
            Err(CollectError::Timeout(cfg.timeout))
        }
    }
}
