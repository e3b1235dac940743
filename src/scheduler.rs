//! The scheduler: one task per enabled collector, each on its own interval
//! and with its own time limit, plus a task that refreshes the health
//! families every few seconds and whenever leadership changes.
//!
//! A run's result replaces the collector's previous part of the snapshot at
//! once. A failed run keeps the last good part until it is older than the
//! collector's `stale_after`, then drops it; the failure itself shows at once
//! in `pg_scrape_collector_success`. A failure is logged when it starts or its
//! message changes, and recovery once, not a line per interval.
//!
//! A collector whose definition `backs_off` (a probe, the statement plans)
//! skips ticks after failures in a row: after the n-th it waits 2^(n-1)
//! intervals before the next attempt, at most [`MAX_BACKOFF_TICKS`] + 1, so
//! a query that keeps timing out costs the server less and less; a success
//! or a new leadership ends the backoff. Skipped ticks are not runs: health
//! keeps the last failure.
//!
//! A server-scoped collector runs only while this sidecar is leader (see
//! `leader.rs`). While not leader it does not touch the database and serves
//! none of its series: its part is dropped when leadership is lost, and a
//! run that finishes after the loss is discarded. On becoming leader it runs
//! at once, then on its interval.
//!
//! The timing lives here; what one run does is a [`Runner`]: the real one
//! ([`Pooled`]) takes a connection from the pool and runs the collector's
//! queries within its timeout. The unit tests drive the timing with a
//! scripted runner under `tokio::time::pause()`.
//!
//! A configuration reload changes what runs without a restart
//! ([`Scheduler::apply`]): a collector whose configuration did not change
//! keeps its task and its series; one whose interval, timeout or
//! `stale_after` changed gets a new task, which replaces the old series at
//! its first run; a disabled one stops and its series are dropped. The pool
//! and the checks are [`Swap`]s that each run reads at its start, so a new
//! datasource or new thresholds apply from the next run.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, timeout_at};
use tracing::Instrument;

use std::collections::BTreeMap;

use tokio::task::JoinHandle;

use crate::collectors::{CollectError, Ctx, Definition, Report, Scope, Target};
use crate::config::{Checks, CollectorConfig};
use crate::db::{Bouncer, Db, Others};
use crate::health::Outcome;
use crate::logging::ErrorLog;
use crate::metrics::encode;
use crate::state::{PoolStatus, State};
use crate::swap::Swap;

/// How often the health families (process, pool) are refreshed when no
/// collector finishes in between.
pub const HEALTH_REFRESH: Duration = Duration::from_secs(5);

/// Most ticks a backing-off collector skips between attempts.
pub const MAX_BACKOFF_TICKS: u32 = 31;

/// Ticks to skip after `failures` failed runs in a row: 0, 1, 3, 7, …, at most
/// [`MAX_BACKOFF_TICKS`].
fn backoff_ticks(failures: u32) -> u32 {
    let doubled = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    doubled.saturating_sub(1).min(MAX_BACKOFF_TICKS)
}

/// What a successful run produced: the encoded families, and what it
/// reported besides them.
pub struct Collected {
    pub body: Bytes,
    pub report: Report,
}

/// One run of a collector, apart from the timing around it.
pub trait Runner: Send + Sync + 'static {
    fn run(
        &self,
        def: &'static Definition,
        cfg: &CollectorConfig,
    ) -> impl Future<Output = Result<Collected, CollectError>> + Send;

    /// The pool's gauges, for the health families.
    fn pool(&self) -> PoolStatus;

    /// Removes secrets from a message before it is stored or logged.
    fn scrub(&self, message: &str) -> String;
}

/// The real runner: a pooled connection and the collector's queries, both
/// within the collector's timeout; a query that overruns it is cancelled.
/// The pool and the checks are read at the start of each run. A PgBouncer
/// collector gets the admin console's session instead, also within its
/// timeout; one that overruns it is closed (PgBouncer has no statement
/// timeout to rely on).
pub struct Pooled {
    pub db: Arc<Swap<Db>>,
    /// The admin console's pool, if `pgbouncer:` is configured.
    pub bouncer: Swap<Option<Bouncer>>,
    pub checks: Swap<Checks>,
    /// The sessions to the other databases, if `databases:` is configured.
    pub others: Swap<Option<Arc<Others>>>,
    /// What collectors keep between runs (`relation_sizes`'s readings).
    pub memory: Arc<crate::collectors::Memory>,
}

impl Pooled {
    async fn run_console(&self, def: &'static Definition, cfg: &CollectorConfig) -> Result<Collected, CollectError> {
        let (bouncer, checks) = (self.bouncer.get(), self.checks.get());
        let Some(b) = bouncer.as_ref() else {
            return Err(CollectError::Unavailable("pgbouncer is not configured".into()));
        };
        let deadline = Instant::now() + cfg.timeout;
        let client = timeout_at(deadline, b.client())
            .await
            .map_err(|_| CollectError::Timeout(cfg.timeout))??;
        let ctx = Ctx::new(0, checks);
        match timeout_at(deadline, def.collect(&client, &ctx)).await {
            Ok(r) => r.map(|families| Collected {
                body: encode(families),
                report: ctx.report(),
            }),
            Err(_) => {
                b.discard(client);
                Err(CollectError::Timeout(cfg.timeout))
            }
        }
    }
}

/// One run of a per-database collector in another database, on a session
/// from `others`, within the collector's time limit of its own.
async fn in_database(
    def: &'static Definition,
    cfg: &CollectorConfig,
    others: &Arc<Others>,
    name: &str,
    ctx: Ctx,
) -> Result<(Vec<crate::metrics::Family>, Report), CollectError> {
    let deadline = Instant::now() + cfg.timeout;
    let session = timeout_at(deadline, others.client(name))
        .await
        .map_err(|_| CollectError::Timeout(cfg.timeout))??;
    let ctx = ctx.in_database(name.to_string());
    match timeout_at(deadline, def.collect(&session, &ctx)).await {
        Ok(r) => r.map(|families| (families, ctx.report())),
        Err(_) => {
            session.discard();
            Err(CollectError::Timeout(cfg.timeout))
        }
    }
}

impl Runner for Pooled {
    async fn run(&self, def: &'static Definition, cfg: &CollectorConfig) -> Result<Collected, CollectError> {
        if def.target == Target::PgBouncer {
            return self.run_console(def, cfg).await;
        }
        let (db, checks) = (self.db.get(), self.checks.get());
        let deadline = Instant::now() + cfg.timeout;
        let client = timeout_at(deadline, db.client())
            .await
            .map_err(|_| CollectError::Timeout(cfg.timeout))??;
        let ctx = Ctx::new(db.server_version(), checks.clone())
            .remembering(self.memory.clone())
            .in_database(db.database());
        // A custom query with `databases` runs in the DSN's database only if
        // that matches too.
        let here = def.per_database.is_none_or(|p| p.runs_in_dsn(&ctx.datname, &checks));
        let mut families = if !here {
            Vec::new()
        } else {
            match timeout_at(deadline, def.collect(&client, &ctx)).await {
                Ok(r) => r?,
                Err(_) => {
                    db.cancel(client);
                    return Err(CollectError::Timeout(cfg.timeout));
                }
            }
        };
        drop(client);
        let mut report = ctx.report();
        if let (Some(wanted), Some(others)) = (def.per_database, self.others.get().as_ref()) {
            let version = db.server_version();
            // At start-up the discovery runs with the first runs: wait for
            // it, within this run's time limit.
            let _ = timeout_at(deadline, others.discovered()).await;
            let found = others.found();
            for name in found.iter() {
                let checks = others.config.checks_for(name, &checks);
                if !wanted.runs_in(name, &checks) {
                    continue;
                }
                let ctx = Ctx::new(version, Arc::new(checks)).remembering(self.memory.clone());
                let read = in_database(def, cfg, others, name, ctx).await;
                let outcome = match read {
                    Ok((more, r)) => {
                        crate::metrics::merge(&mut families, more);
                        Ok(r)
                    }
                    Err(e) => Err(others.scrub(&e.to_string())),
                };
                report.add_database(name, outcome);
            }
            self.memory.retain(|d| d == ctx.datname || found.iter().any(|f| f == d));
        }
        Ok(Collected {
            body: encode(families),
            report,
        })
    }

    fn pool(&self) -> PoolStatus {
        self.db.get().pool_status()
    }

    fn scrub(&self, message: &str) -> String {
        let message = self.db.get().scrub(message);
        match self.bouncer.get().as_ref() {
            Some(b) => b.scrub(&message),
            None => message,
        }
    }
}

/// A running task and the switch that stops it.
struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Task {
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "scheduler task ended abnormally");
        }
    }
}

/// The collector tasks and the health task.
pub struct Scheduler<R: Runner> {
    runner: Arc<R>,
    state: Arc<State>,
    collectors: BTreeMap<&'static str, (&'static Definition, CollectorConfig, Task)>,
    health: Task,
}

impl<R: Runner> Scheduler<R> {
    /// Starts a task for each collector, and the health task.
    pub fn start(runner: Arc<R>, state: Arc<State>, collectors: Vec<(&'static Definition, CollectorConfig)>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let handle =
            tokio::spawn(health_loop(runner.clone(), state.clone(), stopped).instrument(tracing::info_span!("health")));
        let mut s = Scheduler {
            runner,
            state,
            collectors: BTreeMap::new(),
            health: Task { stop, handle },
        };
        for (def, cfg) in collectors {
            s.spawn(def, cfg);
        }
        s
    }

    fn spawn(&mut self, def: &'static Definition, cfg: CollectorConfig) {
        let (stop, stopped) = watch::channel(false);
        let span = tracing::info_span!("collector", collector = def.name);
        let task = collector_loop(def, cfg.clone(), self.runner.clone(), self.state.clone(), stopped);
        let handle = tokio::spawn(task.instrument(span));
        self.collectors.insert(def.name, (def, cfg, Task { stop, handle }));
    }

    /// Makes exactly `collectors` run, each with its configuration: an
    /// unchanged one keeps its task, a changed one is restarted (its series
    /// stay until the new task's first run replaces them), a removed one is
    /// stopped and its series dropped.
    pub async fn apply(&mut self, collectors: Vec<(&'static Definition, CollectorConfig)>) {
        let wanted: BTreeMap<&'static str, _> = collectors.into_iter().map(|(d, c)| (d.name, (d, c))).collect();
        let names: Vec<&'static str> = self.collectors.keys().copied().collect();
        for name in names {
            // The same definition (a probe made from the same settings is the
            // same one) and the same configuration.
            let (old_def, old_cfg, _) = &self.collectors[name];
            let unchanged = wanted
                .get(name)
                .is_some_and(|(d, c)| std::ptr::eq(*d, *old_def) && c == old_cfg);
            if unchanged {
                continue;
            }
            if let Some((_, _, task)) = self.collectors.remove(name) {
                task.stop().await;
            }
            if !wanted.contains_key(name) {
                self.state.publish(name, None, self.runner.pool());
                tracing::info!(collector = name, "collector stopped by a reload");
            }
        }
        for (name, (def, cfg)) in wanted {
            if !self.collectors.contains_key(name) {
                tracing::info!(collector = name, interval = %crate::config::show(cfg.interval), "collector (re)started by a reload");
                self.spawn(def, cfg);
            }
        }
        self.state.refresh_health(self.runner.pool());
    }

    /// Stops every task and waits for them.
    pub async fn stop(self) {
        for (_, (_, _, task)) in self.collectors {
            task.stop().await;
        }
        self.health.stop().await;
    }
}

/// Refreshes the health families on a timer and whenever leadership changes.
async fn health_loop<R: Runner>(runner: Arc<R>, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(HEALTH_REFRESH);
    let mut leader = state.leadership.subscribe();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = leader.changed() => {
                // The sender lives in `state`, which this loop holds.
                if changed.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
        state.refresh_health(runner.pool());
    }
}

async fn collector_loop<R: Runner>(
    def: &'static Definition,
    cfg: CollectorConfig,
    runner: Arc<R>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut errors = ErrorLog::default();
    let mut notes = ErrorLog::default();
    let mut last_success: Option<Instant> = None;
    // Failed runs in a row, and the ticks still to skip because of them.
    let (mut failures, mut skip) = (0u32, 0u32);
    let server = def.scope == Scope::Server && !cfg.every_pod;
    let mut leader = state.leadership.subscribe();
    // The first run is at once (readiness); a phased collector's next ones
    // fall its phase into each interval.
    let mut phased = def.phase == 0;
    loop {
        tokio::select! {
            at = ticker.tick() => {
                if !phased {
                    phased = true;
                    ticker.reset_at(at + cfg.interval + cfg.interval.mul_f64(f64::from(def.phase) / 4.0));
                }
            }
            changed = leader.changed(), if server => {
                // The sender lives in `state`, which this loop holds.
                if changed.is_err() {
                    return;
                }
                if *leader.borrow_and_update() {
                    ticker.reset();
                    skip = 0;
                } else {
                    stand_down(def, &state, runner.as_ref());
                    continue;
                }
            }
            _ = shutdown.changed() => return,
        }
        if server && !*leader.borrow_and_update() {
            stand_down(def, &state, runner.as_ref());
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let started = Instant::now();
        // A run is a task of its own, so that a bug that panics fails one run
        // instead of ending the collector.
        let mut run = tokio::spawn({
            let (runner, cfg) = (runner.clone(), cfg.clone());
            async move { runner.run(def, &cfg).await }.in_current_span()
        });
        let result = tokio::select! {
            r = &mut run => r.unwrap_or_else(|e| Err(CollectError::Panic(e.to_string()))),
            _ = shutdown.changed() => {
                run.abort();
                return;
            }
        };
        let took = started.elapsed();
        if server && !state.leadership.is_leader() {
            // Leadership was lost during the run: its result is not ours to serve.
            stand_down(def, &state, runner.as_ref());
            continue;
        }
        // The new part, if it changes: published with the health families below.
        let mut part = None;
        let outcome = match result {
            Ok(collected) => {
                part = Some(Some(collected.body));
                last_success = Some(Instant::now());
                failures = 0;
                if errors.ended() {
                    tracing::info!(collector = def.name, "collector recovered");
                }
                let mut report = collected.report;
                report.notes = report.notes.iter().map(|n| runner.scrub(n)).collect();
                if report.notes.is_empty() {
                    notes.ended();
                } else if notes.is_new(&report.notes.join("; ")) {
                    tracing::warn!(collector = def.name, notes = %report.notes.join("; "), "collector left something out");
                }
                Outcome::Ok(report)
            }
            Err(e) => {
                let message = runner.scrub(&e.to_string());
                let backoff = matches!(e, CollectError::Connect(crate::db::DbError::Backoff { .. }));
                if !backoff && errors.is_new(&message) {
                    tracing::warn!(collector = def.name, error = %message, "collector failed");
                } else {
                    tracing::debug!(collector = def.name, error = %message, "collector failed again");
                }
                failures = failures.saturating_add(1);
                if def.backs_off {
                    let before = skip;
                    skip = backoff_ticks(failures);
                    if skip > before && skip > 0 {
                        tracing::info!(
                            collector = def.name,
                            failures,
                            next_attempt_in = %crate::config::show(cfg.interval.saturating_mul(skip + 1)),
                            "collector backs off after failures in a row"
                        );
                    }
                }
                let stale = last_success.is_none_or(|t| t.elapsed() > cfg.stale_after);
                if stale && state.snapshot.has(def.name) {
                    tracing::info!(collector = def.name, stale_after = %crate::config::show(cfg.stale_after), "dropping the failed collector's stale series");
                    part = Some(None);
                }
                match e {
                    CollectError::Unavailable(reason) => Outcome::Unavailable(runner.scrub(&reason)),
                    _ => Outcome::Failed(message),
                }
            }
        };
        state.health.record(def.name, SystemTime::now(), took, outcome);
        match part {
            Some(part) => state.publish(def.name, part, runner.pool()),
            None => state.refresh_health(runner.pool()),
        }
    }
}

/// A server-scoped collector while this sidecar is not leader: serves no series.
fn stand_down<R: Runner>(def: &'static Definition, state: &State, runner: &R) {
    if state.snapshot.has(def.name) {
        state.publish(def.name, None, runner.pool());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::config::CoordinationMode;
    use crate::health::Health;
    use crate::leader::Leadership;

    /// Answers each run with the next scripted result (`None`: never
    /// answers), and records when each run started.
    struct Script(
        Mutex<VecDeque<Option<Result<&'static str, &'static str>>>>,
        Arc<Mutex<Vec<Instant>>>,
    );

    impl Runner for Script {
        async fn run(&self, _: &'static Definition, _: &CollectorConfig) -> Result<Collected, CollectError> {
            self.1.lock().unwrap().push(Instant::now());
            let next = self.0.lock().unwrap().pop_front().flatten();
            match next {
                Some(Ok(body)) => Ok(Collected {
                    body: Bytes::from_static(body.as_bytes()),
                    report: Report::default(),
                }),
                Some(Err(e)) => Err(CollectError::Panic(e.to_string())),
                None => std::future::pending().await,
            }
        }

        fn pool(&self) -> PoolStatus {
            PoolStatus {
                max_size: 3,
                size: 0,
                available: 0,
                waiting: 0,
            }
        }

        fn scrub(&self, message: &str) -> String {
            message.replace("secret", "******")
        }
    }

    fn noop<'a>(_: &'a crate::db::Client, _: &'a Ctx) -> crate::collectors::CollectFuture<'a> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// A collector that backs off, as a probe does.
    static PROBE: Definition = Definition::custom("probe:x", noop).backs_off();

    fn def(name: &str) -> &'static Definition {
        if name == PROBE.name {
            return &PROBE;
        }
        crate::collectors::ALL.iter().find(|d| d.name == name).unwrap()
    }

    fn cfg(name: &'static str) -> CollectorConfig {
        CollectorConfig {
            name,
            enabled: true,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            stale_after: Duration::from_secs(3),
            every_pod: false,
        }
    }

    fn start(
        name: &'static str,
        mode: CoordinationMode,
        script: Vec<Option<Result<&'static str, &'static str>>>,
    ) -> (Arc<State>, Scheduler<Script>) {
        let (state, scheduler, _) = start_recorded(name, mode, script);
        (state, scheduler)
    }

    /// As `start`, also returning when each run started.
    fn start_recorded(
        name: &'static str,
        mode: CoordinationMode,
        script: Vec<Option<Result<&'static str, &'static str>>>,
    ) -> (Arc<State>, Scheduler<Script>, Arc<Mutex<Vec<Instant>>>) {
        let c = cfg(name);
        let collectors = vec![(def(name), c)];
        let health = Health::new(&collectors, &Checks::default());
        let state = Arc::new(State::new(health, Arc::new(Leadership::new(mode))));
        let runs = Arc::new(Mutex::new(Vec::new()));
        let runner = Arc::new(Script(Mutex::new(script.into()), runs.clone()));
        let scheduler = Scheduler::start(runner, state.clone(), collectors);
        (state, scheduler, runs)
    }

    fn body(state: &State) -> String {
        String::from_utf8(state.snapshot.body().to_vec()).unwrap()
    }

    /// Lets the scheduler's tasks run up to `at` after the start (time is paused).
    async fn until(start: Instant, at: Duration) {
        tokio::time::sleep_until(start + at).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_collector_keeps_its_series_until_stale_after_then_drops_them() {
        let t0 = Instant::now();
        let mut script = vec![Some(Ok("x_total 1\n"))];
        script.extend(std::iter::repeat_n(Some(Err("query: secret refused")), 10));
        let (state, stop) = start("settings", CoordinationMode::All, script);
        until(t0, Duration::from_millis(100)).await;
        assert!(body(&state).contains("x_total 1\n"));
        // Runs at 1 s and 2 s fail; the series stay, the failure shows at once.
        until(t0, Duration::from_millis(2100)).await;
        let text = body(&state);
        assert!(text.contains("x_total 1\n"), "{text}");
        assert!(
            text.contains("pg_scrape_collector_success{collector=\"settings\"} 0"),
            "{text}"
        );
        let s = &state.health.statuses()[0];
        assert_eq!(s.error().as_deref(), Some("collector panicked: query: ****** refused"));
        // The run at 3 s is exactly stale_after after the success: still kept.
        until(t0, Duration::from_millis(3100)).await;
        assert!(body(&state).contains("x_total 1\n"));
        // The run at 4 s is past it: dropped.
        until(t0, Duration::from_millis(4100)).await;
        let text = body(&state);
        assert!(!text.contains("x_total"), "{text}");
        assert!(
            text.contains("pgsidecar_collector_failures_total{collector=\"settings\"} 4"),
            "{text}"
        );
        stop.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_collector_serves_only_while_leader() {
        let t0 = Instant::now();
        let (state, stop) = start(
            "settings",
            CoordinationMode::LeaderElection,
            vec![Some(Ok("a 1\n")), Some(Ok("a 2\n")), None],
        );
        // Not leader: no run, nothing served, not even health for it.
        until(t0, Duration::from_millis(1500)).await;
        assert!(!body(&state).contains("collector=\"settings\""), "{}", body(&state));
        // Becoming leader runs it at once.
        state.leadership.set(true);
        until(t0, Duration::from_millis(1600)).await;
        assert!(body(&state).contains("a 1\n"));
        assert!(body(&state).contains("pgsidecar_leader 1\n"));
        until(t0, Duration::from_millis(2700)).await;
        assert!(body(&state).contains("a 2\n"));
        // Losing it drops the series at once.
        state.leadership.set(false);
        until(t0, Duration::from_millis(2800)).await;
        let text = body(&state);
        assert!(!text.contains("a 2\n"), "{text}");
        assert!(text.contains("pgsidecar_leader 0\n"), "{text}");
        stop.stop().await;
    }

    /// Records when each collector runs, and answers with its run count.
    #[derive(Default)]
    struct Clock(Mutex<BTreeMap<&'static str, Vec<Duration>>>, Option<Instant>);

    impl Runner for Clock {
        async fn run(&self, def: &'static Definition, _: &CollectorConfig) -> Result<Collected, CollectError> {
            let at = self.1.unwrap().elapsed();
            let mut runs = self.0.lock().unwrap();
            let times = runs.entry(def.name).or_default();
            times.push(at);
            Ok(Collected {
                body: Bytes::from(format!("x_{} {}\n", def.name, times.len())),
                report: Report::default(),
            })
        }

        fn pool(&self) -> PoolStatus {
            Script(Mutex::new(VecDeque::new()), Arc::default()).pool()
        }

        fn scrub(&self, message: &str) -> String {
            message.to_string()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_restarts_only_what_changed_and_stops_what_went() {
        let t0 = Instant::now();
        let every = |name, secs| CollectorConfig {
            interval: Duration::from_secs(secs),
            ..cfg(name)
        };
        let collectors = vec![
            (def("settings"), every("settings", 1)),
            (def("stat_database"), every("stat_database", 1)),
            (def("database"), every("database", 1)),
        ];
        let health = Health::new(&collectors, &Checks::default());
        let state = Arc::new(State::new(health, Arc::new(Leadership::new(CoordinationMode::All))));
        let clock = Arc::new(Clock(Mutex::default(), Some(t0)));
        let mut scheduler = Scheduler::start(clock.clone(), state.clone(), collectors);
        until(t0, Duration::from_millis(1500)).await;
        assert!(body(&state).contains("x_database 2\n"));
        // settings unchanged, stat_database every 2 s, database gone.
        scheduler
            .apply(vec![
                (def("settings"), every("settings", 1)),
                (def("stat_database"), every("stat_database", 2)),
            ])
            .await;
        let text = body(&state);
        assert!(!text.contains("x_database"), "{text}");
        until(t0, Duration::from_millis(4000) + Duration::from_millis(100)).await;
        let runs = clock.0.lock().unwrap().clone();
        let secs = |name: &str| runs[name].iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>();
        assert_eq!(secs("settings"), [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(secs("stat_database"), [0.0, 1.0, 1.5, 3.5]);
        assert_eq!(secs("database"), [0.0, 1.0]);
        // The restarted collector's series were replaced, never dropped.
        assert!(body(&state).contains("x_stat_database 4\n"));
        scheduler.stop().await;
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let ticks: Vec<u32> = (0..9).map(backoff_ticks).collect();
        assert_eq!(ticks, [0, 0, 1, 3, 7, 15, 31, 31, 31]);
        assert_eq!(backoff_ticks(u32::MAX), MAX_BACKOFF_TICKS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_collector_that_backs_off_waits_longer_after_each_failure_until_a_success() {
        let t0 = Instant::now();
        let mut script = vec![Some(Err("timed out")); 6];
        script.extend([Some(Ok("p 1\n")), Some(Ok("p 2\n"))]);
        let (state, stop, runs) = start_recorded("probe:x", CoordinationMode::All, script);
        until(t0, Duration::from_millis(64_500)).await;
        let at: Vec<u64> = runs.lock().unwrap().iter().map(|t| (*t - t0).as_secs()).collect();
        // Failures at 0, 1, 3, 7, 15 and 31 s; the run at 63 s succeeds and
        // ends the backoff, so the next is one interval later.
        assert_eq!(at, [0, 1, 3, 7, 15, 31, 63, 64]);
        let s = &state.health.statuses()[0];
        assert_eq!((s.runs, s.failures), (8, 6));
        assert!(body(&state).contains("p 2\n"));
        stop.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_phased_collector_runs_at_once_then_its_phase_into_each_interval() {
        let t0 = Instant::now();
        // stat_user_indexes: phase 3 of 4, so 750 ms into each 1 s interval.
        let (_state, stop, runs) =
            start_recorded("stat_user_indexes", CoordinationMode::All, vec![Some(Ok("i 1\n")); 4]);
        until(t0, Duration::from_millis(3_900)).await;
        let at: Vec<u128> = runs.lock().unwrap().iter().map(|t| (*t - t0).as_millis()).collect();
        assert_eq!(at, [0, 1_750, 2_750, 3_750]);
        stop.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_collector_that_does_not_back_off_runs_on_every_tick() {
        let t0 = Instant::now();
        let (_state, stop, runs) = start_recorded("settings", CoordinationMode::All, vec![Some(Err("down")); 6]);
        until(t0, Duration::from_millis(5_500)).await;
        assert_eq!(runs.lock().unwrap().len(), 6);
        stop.stop().await;
    }
}
