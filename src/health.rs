//! What pgsidecar knows about itself: each collector's status (for the
//! landing page, `/readyz` and the health metrics) and the health families.
//!
//! Metrics (rendered after every collection and every few seconds, never per
//! scrape):
//! - `pg_up` gauge: 1 if the last run of the collector that decides it (the
//!   `postmaster` collector) reached Postgres (postgres_exporter's name).
//!   PgBouncer collectors never count for it.
//! - `pgbouncer_up` gauge (pgbouncer_exporter's name): 1 if the last run of
//!   `pgbouncer_pools` reached PgBouncer's admin console; present only
//!   while a PgBouncer collector is active on this sidecar.
//! - `pg_scrape_collector_success{collector}`,
//!   `pg_scrape_collector_duration_seconds{collector}` gauges
//!   (postgres_exporter's names; here they describe the last collection).
//! - `pgsidecar_collector_last_success_timestamp_seconds{collector}` gauge.
//! - `pgsidecar_collector_failures_total{collector}` counter.
//! - `pgsidecar_collector_interval_seconds{collector}`,
//!   `pgsidecar_collector_timeout_seconds{collector}`,
//!   `pgsidecar_collector_stale_after_seconds{collector}` gauges (configuration).
//! - postgres_exporter's exporter-level families, as an interval-collecting
//!   exporter can mean them (a scrape never queries Postgres here):
//!   `pg_exporter_last_scrape_error` gauge, 1 while the last run of any
//!   active collector failed (an unavailable prerequisite does not count:
//!   it is reported by `pgsidecar_collector_unavailable`, and counting it
//!   would keep the error up on every standby or server without an optional
//!   extension); `pg_exporter_last_scrape_duration_seconds` gauge, the
//!   longest last-run duration among the active collectors (upstream's
//!   scrape runs its collectors side by side, so its duration is the
//!   slowest one's); `pg_exporter_scrapes_total` counter, the collector runs
//!   since pgsidecar started (each a round of queries to Postgres; HTTP
//!   scrapes are not counted, since they never reach Postgres).
//! - `pgsidecar_slow_query_threshold_seconds` gauge (configuration).
//! - the postgres-server-health alerts' thresholds (`checks.server`), gauges
//!   (configuration): `pgsidecar_replication_lag_threshold_seconds`,
//!   `pgsidecar_archive_age_threshold_seconds`,
//!   `pgsidecar_wraparound_ratio_threshold`, `pgsidecar_locks_ratio_threshold`.
//! - `pgsidecar_build_info{version,revision,rustc}` gauge, 1.
//! - `pgsidecar_db_pool_size`, `_available`, `_waiting`, `_max_size` gauges.
//! - the process metrics of the `prometheus` crate: `process_cpu_seconds_total`,
//!   `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//!   `process_open_fds`, `process_max_fds`, `process_start_time_seconds`,
//!   `process_threads`.
//! - `pgsidecar_leader` gauge: 1 while this sidecar runs the server-scoped
//!   collectors (see `leader.rs`); `pgsidecar_leader_changes_total` counter.
//! - `pgsidecar_coordination_mode{mode}` gauge, 1: `all`, `leader-election`
//!   or `none`.
//! - `pgsidecar_config_last_reload_successful` gauge (0/1) and
//!   `pgsidecar_config_last_reload_success_timestamp_seconds` gauge, as
//!   Prometheus names them for itself: the start counts as a successful load.
//! - per probe (`checks.probes`), from its collector's status, so they are
//!   there when its runs fail: `pgsidecar_probe_success{probe}` gauge (0/1,
//!   after the first run), `pgsidecar_probe_last_success_timestamp_seconds{probe}`
//!   gauge (0: never) and `pgsidecar_probe_budget_seconds{probe}` gauge (the
//!   configured budget, if any).
//!
//! A server-scoped collector is inactive while this sidecar is not leader:
//! its per-collector series are left out, readiness does not wait for it,
//! and `pg_up` ignores it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use prometheus::core::Collector;

use crate::collectors::{Definition, Report, Scope, Target};
use crate::config::CollectorConfig;
use crate::leader::Leadership;
use crate::metrics::{Family, encode, encode_protos};

/// How a run ended. Messages are scrubbed of secrets before they get here.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// With what the run reported besides its families.
    Ok(Report),
    Failed(String),
    /// A prerequisite is missing; the reason says which.
    Unavailable(String),
}

/// One collector's state, as last recorded.
#[derive(Debug, Clone)]
pub struct CollectorStatus {
    pub name: &'static str,
    pub scope: Scope,
    pub decides_up: bool,
    pub target: Target,
    pub interval: Duration,
    pub timeout: Duration,
    pub stale_after: Duration,
    pub runs: u64,
    pub failures: u64,
    pub last_run: Option<SystemTime>,
    pub last_duration: Option<Duration>,
    pub last_success: Option<SystemTime>,
    /// The last run's outcome; `None` before the first.
    pub last: Option<Outcome>,
    /// What the last successful run reported (relations a cap left out,
    /// notes).
    pub report: Report,
    /// The probe this collector runs, if it is one: its name and budget.
    pub probe: Option<(String, Option<Duration>)>,
}

impl CollectorStatus {
    pub fn ok(&self) -> Option<bool> {
        self.last.as_ref().map(|o| matches!(o, Outcome::Ok(_)))
    }

    /// The last run's error, as the status page shows it.
    pub fn error(&self) -> Option<String> {
        match &self.last {
            Some(Outcome::Failed(e)) => Some(e.clone()),
            Some(Outcome::Unavailable(reason)) => Some(format!("unavailable: {reason}")),
            _ => None,
        }
    }

    /// Whether the collector runs here: per-pod ones always, server-wide
    /// ones only on the leader.
    pub fn active(&self, leader: bool) -> bool {
        leader || self.scope == Scope::Pod
    }
}

pub struct Health {
    collectors: Mutex<Vec<CollectorStatus>>,
    /// Configured thresholds, exported as gauges for alert rules to compare against.
    slow_query_threshold: Mutex<Duration>,
    server_thresholds: Mutex<crate::config::ServerThresholds>,
    /// Whether the last configuration reload worked, and when one last did.
    reload: Mutex<(bool, SystemTime)>,
    process: prometheus::process_collector::ProcessCollector,
}

/// Where the collector runs: `every_pod` (a PgBouncer collector's
/// `pgbouncer.run_by`) makes it per pod.
fn scope(def: &'static Definition, c: &CollectorConfig) -> Scope {
    if c.every_pod { Scope::Pod } else { def.scope }
}

fn status(def: &'static Definition, c: &CollectorConfig, checks: &crate::config::Checks) -> CollectorStatus {
    CollectorStatus {
        name: c.name,
        scope: scope(def, c),
        decides_up: def.decides_up,
        target: def.target,
        interval: c.interval,
        timeout: c.timeout,
        stale_after: c.stale_after,
        runs: 0,
        failures: 0,
        last_run: None,
        last_duration: None,
        last_success: None,
        last: None,
        report: Report::default(),
        probe: probe_of(c, checks),
    }
}

/// The probe a collector runs, if it is one: its name and budget.
fn probe_of(c: &CollectorConfig, checks: &crate::config::Checks) -> Option<(String, Option<Duration>)> {
    checks
        .probes
        .iter()
        .find(|p| p.collector() == c.name)
        .map(|p| (p.name.clone(), p.budget))
}

impl Health {
    pub fn new(enabled: &[(&'static Definition, CollectorConfig)], checks: &crate::config::Checks) -> Self {
        Health {
            slow_query_threshold: Mutex::new(checks.slow_query_threshold),
            server_thresholds: Mutex::new(checks.server.clone()),
            collectors: Mutex::new(enabled.iter().map(|(def, c)| status(def, c, checks)).collect()),
            reload: Mutex::new((true, SystemTime::now())),
            process: prometheus::process_collector::ProcessCollector::for_self(),
        }
    }

    /// After a reload: the enabled collectors and the thresholds anew. A
    /// collector that stays keeps its counts and last outcome.
    pub fn reconfigure(&self, enabled: &[(&'static Definition, CollectorConfig)], checks: &crate::config::Checks) {
        *self.slow_query_threshold.lock().unwrap_or_else(|p| p.into_inner()) = checks.slow_query_threshold;
        *self.server_thresholds.lock().unwrap_or_else(|p| p.into_inner()) = checks.server.clone();
        let mut all = self.lock();
        let next = enabled
            .iter()
            .map(|(def, c)| match all.iter().find(|s| s.name == c.name) {
                Some(old) => CollectorStatus {
                    scope: scope(def, c),
                    interval: c.interval,
                    timeout: c.timeout,
                    stale_after: c.stale_after,
                    probe: probe_of(c, checks),
                    ..old.clone()
                },
                None => status(def, c, checks),
            })
            .collect();
        *all = next;
    }

    /// Records a reload attempt.
    pub fn record_reload(&self, ok: bool) {
        let mut r = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        r.0 = ok;
        if ok {
            r.1 = SystemTime::now();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CollectorStatus>> {
        self.collectors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a run that ended at `finished` after `duration`; returns the
    /// status before it.
    pub fn record(
        &self,
        name: &str,
        finished: SystemTime,
        duration: Duration,
        outcome: Outcome,
    ) -> Option<CollectorStatus> {
        let mut all = self.lock();
        let s = all.iter_mut().find(|s| s.name == name)?;
        let before = s.clone();
        s.runs += 1;
        s.last_run = Some(finished);
        s.last_duration = Some(duration);
        match &outcome {
            Outcome::Ok(report) => {
                s.last_success = Some(finished);
                s.report = report.clone();
            }
            Outcome::Failed(_) | Outcome::Unavailable(_) => {
                s.failures += 1;
                // A failed run read no database: its per-database outcomes
                // are no longer the last run's.
                s.report.databases.clear();
            }
        }
        s.last = Some(outcome);
        Some(before)
    }

    pub fn statuses(&self) -> Vec<CollectorStatus> {
        self.lock().clone()
    }

    /// The active collectors that have not finished a run yet.
    pub fn not_ready(&self, leader: bool) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|s| s.runs == 0 && s.active(leader))
            .map(|s| s.name)
            .collect()
    }

    /// 1 if Postgres answered the last run of the collector that decides
    /// `pg_up` (or, with that collector disabled or inactive, the most recent
    /// run of any active collector).
    pub fn pg_up(&self, leader: bool) -> bool {
        self.up(Target::Postgres, leader).unwrap_or(false)
    }

    /// 1 if PgBouncer answered the last run of `pgbouncer_pools` (or of the
    /// PgBouncer collector that ran last, with it disabled); `None` while
    /// no PgBouncer collector is active here (not configured, or run by the
    /// leader only and this sidecar is not leader).
    pub fn pgbouncer_up(&self, leader: bool) -> Option<bool> {
        self.up(Target::PgBouncer, leader)
    }

    fn up(&self, target: Target, leader: bool) -> Option<bool> {
        let all = self.lock();
        let mut active = all.iter().filter(|s| s.target == target && s.active(leader)).peekable();
        active.peek()?;
        let active: Vec<_> = active.collect();
        if let Some(p) = active.iter().find(|s| s.decides_up) {
            return Some(p.ok() == Some(true));
        }
        Some(
            active
                .iter()
                .filter(|s| s.runs > 0)
                .max_by_key(|s| s.last_run)
                .is_some_and(|s| s.ok() == Some(true)),
        )
    }

    /// Whether an active collector's last run failed (unavailable ones do
    /// not count), the longest last-run duration of the active collectors,
    /// and the runs of all collectors (a counter: inactive ones count too, so
    /// it never goes down when leadership moves).
    fn exporter_totals(&self, leader: bool) -> (bool, Duration, u64) {
        let all = self.lock();
        let active = || all.iter().filter(|s| s.active(leader));
        let error = active().any(|s| matches!(s.last, Some(Outcome::Failed(_))));
        let longest = active().filter_map(|s| s.last_duration).max().unwrap_or_default();
        (error, longest, all.iter().map(|s| s.runs).sum())
    }

    /// Encodes the health families.
    pub fn render(&self, pool: deadpool_postgres::Status, leadership: &Leadership) -> Bytes {
        let (mode, leader) = (leadership.mode(), leadership.is_leader());
        let mut fams = Vec::new();
        let mut up = Family::gauge(
            "pg_up",
            "Whether the last connection to Postgres succeeded (1) or not (0)",
            &[],
        );
        up.set(&[], if self.pg_up(leader) { 1.0 } else { 0.0 });
        fams.push(up);
        if let Some(ok) = self.pgbouncer_up(leader) {
            let mut up = Family::gauge(
                "pgbouncer_up",
                "Whether the last connection to PgBouncer's admin console succeeded (1) or not (0)",
                &[],
            );
            up.set(&[], if ok { 1.0 } else { 0.0 });
            fams.push(up);
        }

        let mut is_leader = Family::gauge(
            "pgsidecar_leader",
            "1 while this pgsidecar runs the server-wide collectors (coordination)",
            &[],
        );
        is_leader.set(&[], if leader { 1.0 } else { 0.0 });
        fams.push(is_leader);
        let mut changes = Family::counter(
            "pgsidecar_leader_changes_total",
            "Times this pgsidecar became or stopped being leader since it started",
            &[],
        );
        changes.set(&[], leadership.changes() as f64);
        fams.push(changes);
        let mut coordination = Family::gauge(
            "pgsidecar_coordination_mode",
            "Configured coordination.mode (all, leader-election or none); always 1",
            &["mode"],
        );
        coordination.set(&[mode.as_str()], 1.0);
        fams.push(coordination);

        let (error, longest, runs) = self.exporter_totals(leader);
        for (name, help, v, counter) in [
            (
                "pg_exporter_last_scrape_error",
                "1 while the last run of any active collector failed (unavailable ones not counted)",
                if error { 1.0 } else { 0.0 },
                false,
            ),
            (
                "pg_exporter_last_scrape_duration_seconds",
                "The longest duration of the active collectors' last runs",
                longest.as_secs_f64(),
                false,
            ),
            (
                "pg_exporter_scrapes_total",
                "Collector runs (rounds of queries to Postgres) since pgsidecar started",
                runs as f64,
                true,
            ),
        ] {
            let mut f = if counter {
                Family::counter(name, help, &[])
            } else {
                Family::gauge(name, help, &[])
            };
            f.set(&[], v);
            fams.push(f);
        }

        let l = &["collector"];
        let mut success = Family::gauge(
            "pg_scrape_collector_success",
            "Whether the collector's last run succeeded (1) or not (0)",
            l,
        );
        let mut duration = Family::gauge(
            "pg_scrape_collector_duration_seconds",
            "Duration of the collector's last run",
            l,
        );
        let mut last_ok = Family::gauge(
            "pgsidecar_collector_last_success_timestamp_seconds",
            "Unix time of the collector's last successful run (0: never)",
            l,
        );
        let mut failures = Family::counter(
            "pgsidecar_collector_failures_total",
            "Failed runs of the collector since pgsidecar started",
            l,
        );
        let mut interval = Family::gauge(
            "pgsidecar_collector_interval_seconds",
            "Configured interval between runs of the collector",
            l,
        );
        let mut timeout = Family::gauge(
            "pgsidecar_collector_timeout_seconds",
            "Configured time limit of one run of the collector",
            l,
        );
        let mut unavailable = Family::gauge(
            "pgsidecar_collector_unavailable",
            "1 while the collector cannot run because a prerequisite is missing; the reason says which",
            &["collector", "reason"],
        );
        let mut truncated = Family::gauge(
            "pgsidecar_collector_series_truncated",
            "1 if the collector's per-relation output was cut to checks.relations.max_series",
            l,
        );
        let mut omitted = Family::gauge(
            "pgsidecar_collector_relations_omitted",
            "Relations left out of the collector's output by the max_series cap",
            l,
        );
        let mut stale = Family::gauge(
            "pgsidecar_collector_stale_after_seconds",
            "Age after which a failing collector's last good series are dropped",
            l,
        );
        let mut in_database = Family::gauge(
            "pgsidecar_collector_database_success",
            "Whether the last run of a per-database collector read this database (databases:); the status page says why not",
            &["collector", "datname"],
        );
        for s in self.lock().iter().filter(|s| s.active(leader)) {
            let n = &[s.name];
            if let Some(ok) = s.ok() {
                success.set(n, if ok { 1.0 } else { 0.0 });
                duration.set(n, s.last_duration.unwrap_or_default().as_secs_f64());
            }
            last_ok.set(n, s.last_success.map_or(0.0, unix));
            failures.set(n, s.failures as f64);
            interval.set(n, s.interval.as_secs_f64());
            timeout.set(n, s.timeout.as_secs_f64());
            stale.set(n, s.stale_after.as_secs_f64());
            if let Some(cut) = s.report.omitted {
                truncated.set(n, if cut > 0 { 1.0 } else { 0.0 });
                omitted.set(n, cut as f64);
            }
            if let Some(Outcome::Unavailable(reason)) = &s.last {
                unavailable.set(&[s.name, reason], 1.0);
            }
            for (datname, ok) in &s.report.databases {
                in_database.set(&[s.name, datname], if *ok { 1.0 } else { 0.0 });
            }
        }
        fams.extend([
            success,
            duration,
            last_ok,
            failures,
            interval,
            timeout,
            stale,
            unavailable,
            truncated,
            omitted,
            in_database,
        ]);

        fams.extend(self.probe_families(leader));

        let mut threshold = Family::gauge(
            "pgsidecar_slow_query_threshold_seconds",
            "Configured slow-query threshold (checks.slow_queries.threshold)",
            &[],
        );
        let slow = *self.slow_query_threshold.lock().unwrap_or_else(|p| p.into_inner());
        threshold.set(&[], slow.as_secs_f64());
        fams.push(threshold);
        let server = self.server_thresholds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (name, help, value) in [
            (
                "pgsidecar_replication_lag_threshold_seconds",
                "Configured replay lag above which a standby alerts (checks.server.replication_lag)",
                server.replication_lag.as_secs_f64(),
            ),
            (
                "pgsidecar_archive_age_threshold_seconds",
                "Configured age of the last archived segment above which archiving is stalled (checks.server.archive_age)",
                server.archive_age.as_secs_f64(),
            ),
            (
                "pgsidecar_wraparound_ratio_threshold",
                "Configured XID or multixact age over its freeze_max_age above which wraparound alerts (checks.server.wraparound_ratio)",
                server.wraparound_ratio,
            ),
            (
                "pgsidecar_locks_ratio_threshold",
                "Configured share of the lock table above which locks alert (checks.server.locks_ratio)",
                server.locks_ratio,
            ),
        ] {
            let mut g = Family::gauge(name, help, &[]);
            g.set(&[], value);
            fams.push(g);
        }

        let (reload_ok, reloaded) = *self.reload.lock().unwrap_or_else(|p| p.into_inner());
        let mut ok = Family::gauge(
            "pgsidecar_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or not (0)",
            &[],
        );
        ok.set(&[], if reload_ok { 1.0 } else { 0.0 });
        let mut at = Family::gauge(
            "pgsidecar_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load (the start, or a reload)",
            &[],
        );
        at.set(&[], unix(reloaded));
        fams.extend([ok, at]);

        let mut build = Family::gauge(
            "pgsidecar_build_info",
            "pgsidecar's version, source revision and compiler; always 1",
            &["version", "revision", "rustc"],
        );
        build.set(
            &[
                env!("CARGO_PKG_VERSION"),
                option_env!("PGSIDECAR_REVISION").unwrap_or("unknown"),
                option_env!("PGSIDECAR_RUSTC").unwrap_or("unknown"),
            ],
            1.0,
        );
        fams.push(build);

        for (name, help, v) in [
            (
                "pgsidecar_db_pool_size",
                "Connections pgsidecar's own pool holds open",
                pool.size,
            ),
            (
                "pgsidecar_db_pool_available",
                "Idle connections in pgsidecar's own pool",
                pool.available,
            ),
            (
                "pgsidecar_db_pool_waiting",
                "Collectors waiting for a connection from pgsidecar's own pool",
                pool.waiting,
            ),
            (
                "pgsidecar_db_pool_max_size",
                "Most connections pgsidecar's own pool may open",
                pool.max_size,
            ),
        ] {
            let mut f = Family::gauge(name, help, &[]);
            f.set(&[], v as f64);
            fams.push(f);
        }

        let mut out = BytesMut::new();
        out.extend_from_slice(&encode(fams));
        out.extend_from_slice(&encode_protos(self.process.collect()));
        out.freeze()
    }
}

impl Health {
    /// The probes' success, last success and budget, for the active ones.
    fn probe_families(&self, leader: bool) -> Vec<Family> {
        let l = &["probe"];
        let mut success = Family::gauge(
            "pgsidecar_probe_success",
            "Whether the probe's last run succeeded (1) or not (0)",
            l,
        );
        let mut last_ok = Family::gauge(
            "pgsidecar_probe_last_success_timestamp_seconds",
            "Unix time of the probe's last successful run (0: never)",
            l,
        );
        let mut budget = Family::gauge(
            "pgsidecar_probe_budget_seconds",
            "The latency the probe must stay under (checks.probes[].budget)",
            l,
        );
        for s in self.lock().iter().filter(|s| s.active(leader)) {
            let Some((name, b)) = &s.probe else { continue };
            if let Some(ok) = s.ok() {
                success.set(&[name], if ok { 1.0 } else { 0.0 });
            }
            last_ok.set(&[name], s.last_success.map_or(0.0, unix));
            if let Some(b) = b {
                budget.set(&[name], b.as_secs_f64());
            }
        }
        vec![success, last_ok, budget]
    }
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CoordinationMode;

    fn cfg(name: &str) -> (&'static Definition, CollectorConfig) {
        let def = crate::collectors::ALL.iter().find(|d| d.name == name).unwrap();
        let c = CollectorConfig {
            name: def.name,
            enabled: true,
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
            stale_after: Duration::from_secs(45),
            every_pod: false,
        };
        (def, c)
    }

    fn ok(omitted: Option<usize>) -> Outcome {
        Outcome::Ok(Report {
            omitted,
            ..Report::default()
        })
    }

    #[test]
    fn pg_up_follows_the_collector_that_decides_it() {
        let h = Health::new(&[cfg("postmaster"), cfg("settings")], &crate::config::Checks::default());
        assert!(!h.pg_up(true));
        assert_eq!(h.not_ready(true), vec!["postmaster", "settings"]);
        h.record("settings", SystemTime::now(), Duration::ZERO, ok(Some(4)));
        assert!(!h.pg_up(true));
        h.record("postmaster", SystemTime::now(), Duration::ZERO, ok(None));
        assert!(h.pg_up(true));
        h.record(
            "postmaster",
            SystemTime::now(),
            Duration::ZERO,
            Outcome::Failed("down".into()),
        );
        assert!(!h.pg_up(true));
        assert!(h.not_ready(true).is_empty());
        let text = String::from_utf8(
            h.render(
                deadpool_postgres::Status {
                    max_size: 3,
                    size: 1,
                    available: 1,
                    waiting: 0,
                },
                &Leadership::new(CoordinationMode::All),
            )
            .to_vec(),
        )
        .unwrap();
        assert!(text.contains("pg_up 0\n"), "{text}");
        assert!(
            text.contains("pg_scrape_collector_success{collector=\"postmaster\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("pgsidecar_collector_failures_total{collector=\"postmaster\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("pgsidecar_db_pool_max_size 3\n"), "{text}");
        assert!(
            text.contains("pgsidecar_collector_series_truncated{collector=\"settings\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pgsidecar_collector_relations_omitted{collector=\"settings\"} 4\n"),
            "{text}"
        );
        assert!(
            !text.contains("pgsidecar_collector_relations_omitted{collector=\"postmaster\"}"),
            "{text}"
        );
        assert!(text.contains("pgsidecar_slow_query_threshold_seconds 0.1\n"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(text.contains("pgsidecar_leader 1\n"), "{text}");
        assert!(text.contains("pgsidecar_coordination_mode{mode=\"all\"} 1\n"), "{text}");
    }

    #[test]
    fn exporter_level_families_follow_failures_not_unavailability() {
        let h = Health::new(&[cfg("postmaster"), cfg("settings")], &crate::config::Checks::default());
        let pool = deadpool_postgres::Status {
            max_size: 3,
            size: 1,
            available: 1,
            waiting: 0,
        };
        let render =
            |h: &Health| String::from_utf8(h.render(pool, &Leadership::new(CoordinationMode::All)).to_vec()).unwrap();
        let text = render(&h);
        assert!(text.contains("pg_exporter_last_scrape_error 0\n"), "{text}");
        assert!(text.contains("pg_exporter_scrapes_total 0\n"), "{text}");
        h.record("postmaster", SystemTime::now(), Duration::from_millis(20), ok(None));
        h.record(
            "settings",
            SystemTime::now(),
            Duration::from_millis(300),
            Outcome::Unavailable("standby".into()),
        );
        let text = render(&h);
        assert!(text.contains("pg_exporter_last_scrape_error 0\n"), "{text}");
        assert!(
            text.contains("pg_exporter_last_scrape_duration_seconds 0.3\n"),
            "{text}"
        );
        assert!(text.contains("pg_exporter_scrapes_total 2\n"), "{text}");
        assert!(text.contains("# TYPE pg_exporter_scrapes_total counter"), "{text}");
        h.record(
            "postmaster",
            SystemTime::now(),
            Duration::from_millis(5),
            Outcome::Failed("connection refused".into()),
        );
        assert!(render(&h).contains("pg_exporter_last_scrape_error 1\n"));
        h.record("postmaster", SystemTime::now(), Duration::from_millis(5), ok(None));
        let text = render(&h);
        assert!(text.contains("pg_exporter_last_scrape_error 0\n"), "{text}");
        assert!(text.contains("pg_exporter_scrapes_total 4\n"), "{text}");
        // A follower's server-wide collectors are inactive: not counted in the error.
        let h = Health::new(&[cfg("postmaster")], &crate::config::Checks::default());
        h.record(
            "postmaster",
            SystemTime::now(),
            Duration::ZERO,
            Outcome::Failed("x".into()),
        );
        let text = String::from_utf8(
            h.render(pool, &Leadership::new(CoordinationMode::LeaderElection))
                .to_vec(),
        )
        .unwrap();
        assert!(text.contains("pg_exporter_last_scrape_error 0\n"), "{text}");
        assert!(text.contains("pg_exporter_scrapes_total 1\n"), "{text}");
    }

    /// The server-health thresholds are exported whoever leads, and a
    /// reload changes them.
    #[test]
    fn server_thresholds_are_exported_and_follow_a_reload() {
        let pool = deadpool_postgres::Status {
            max_size: 3,
            size: 1,
            available: 1,
            waiting: 0,
        };
        let render = |h: &Health| {
            String::from_utf8(
                h.render(pool, &Leadership::new(CoordinationMode::LeaderElection))
                    .to_vec(),
            )
            .unwrap()
        };
        let h = Health::new(&[cfg("postmaster")], &crate::config::Checks::default());
        let text = render(&h);
        for want in [
            "pgsidecar_replication_lag_threshold_seconds 300\n",
            "pgsidecar_archive_age_threshold_seconds 900\n",
            "pgsidecar_wraparound_ratio_threshold 1.5\n",
            "pgsidecar_locks_ratio_threshold 0.8\n",
            "# TYPE pgsidecar_locks_ratio_threshold gauge\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let checks = crate::config::Checks {
            server: crate::config::ServerThresholds {
                replication_lag: Duration::from_secs(60),
                archive_age: Duration::from_millis(1500),
                wraparound_ratio: 2.0,
                locks_ratio: 0.5,
            },
            ..crate::config::Checks::default()
        };
        h.reconfigure(&[cfg("postmaster")], &checks);
        let text = render(&h);
        for want in [
            "pgsidecar_replication_lag_threshold_seconds 60\n",
            "pgsidecar_archive_age_threshold_seconds 1.5\n",
            "pgsidecar_wraparound_ratio_threshold 2\n",
            "pgsidecar_locks_ratio_threshold 0.5\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn a_non_leader_waits_for_and_shows_only_the_pods_collectors() {
        let h = Health::new(&[cfg("postmaster"), cfg("pools")], &crate::config::Checks::default());
        assert_eq!(h.not_ready(false), vec!["pools"]);
        h.record("pools", SystemTime::now(), Duration::ZERO, ok(None));
        assert!(h.not_ready(false).is_empty());
        assert_eq!(h.not_ready(true), vec!["postmaster"]);
        // pg_up follows the active collectors: pools here.
        assert!(h.pg_up(false));
        assert!(!h.pg_up(true));
        let pool = deadpool_postgres::Status {
            max_size: 3,
            size: 1,
            available: 1,
            waiting: 0,
        };
        let text = String::from_utf8(
            h.render(pool, &Leadership::new(CoordinationMode::LeaderElection))
                .to_vec(),
        )
        .unwrap();
        assert!(text.contains("pgsidecar_leader 0\n"), "{text}");
        assert!(text.contains("pgsidecar_leader_changes_total 0\n"), "{text}");
        assert!(text.contains("pg_up 1\n"), "{text}");
        assert!(text.contains("collector=\"pools\""), "{text}");
        assert!(!text.contains("collector=\"postmaster\""), "{text}");
    }

    #[test]
    fn pgbouncer_up_follows_pgbouncer_pools_and_never_touches_pg_up() {
        let pool = deadpool_postgres::Status {
            max_size: 3,
            size: 1,
            available: 1,
            waiting: 0,
        };
        let render = |h: &Health, mode| String::from_utf8(h.render(pool, &Leadership::new(mode)).to_vec()).unwrap();
        // Not configured: no pgbouncer_up at all.
        let h = Health::new(&[cfg("postmaster")], &crate::config::Checks::default());
        assert_eq!(h.pgbouncer_up(true), None);
        assert!(!render(&h, CoordinationMode::All).contains("pgbouncer_up"));

        let h = Health::new(
            &[cfg("postmaster"), cfg("pgbouncer_pools"), cfg("pgbouncer_stats")],
            &crate::config::Checks::default(),
        );
        let now = SystemTime::now();
        h.record("postmaster", now, Duration::ZERO, ok(None));
        h.record("pgbouncer_stats", now, Duration::ZERO, ok(None));
        // Before pgbouncer_pools has run, PgBouncer is not known to be up.
        assert_eq!(h.pgbouncer_up(true), Some(false));
        h.record(
            "pgbouncer_pools",
            now,
            Duration::ZERO,
            Outcome::Failed("refused".into()),
        );
        assert_eq!(h.pgbouncer_up(true), Some(false));
        assert!(h.pg_up(true), "a PgBouncer failure took pg_up down");
        let text = render(&h, CoordinationMode::All);
        assert!(
            text.contains("pgbouncer_up 0\n") && text.contains("pg_up 1\n"),
            "{text}"
        );
        h.record("pgbouncer_pools", now, Duration::ZERO, ok(None));
        h.record("postmaster", now, Duration::ZERO, Outcome::Failed("down".into()));
        assert_eq!(h.pgbouncer_up(true), Some(true));
        assert!(!h.pg_up(true));
        // Run by the leader only: a follower shows no pgbouncer_up.
        assert_eq!(h.pgbouncer_up(false), None);
        assert!(!render(&h, CoordinationMode::LeaderElection).contains("pgbouncer_up"));
    }

    #[test]
    fn an_unavailable_collector_says_why_and_is_not_up() {
        let h = Health::new(&[cfg("stat_statements")], &crate::config::Checks::default());
        h.record(
            "stat_statements",
            SystemTime::now(),
            Duration::ZERO,
            Outcome::Unavailable("extension missing".into()),
        );
        let s = &h.statuses()[0];
        assert_eq!(s.ok(), Some(false));
        assert_eq!(s.error().as_deref(), Some("unavailable: extension missing"));
        let pool = deadpool_postgres::Status {
            max_size: 3,
            size: 1,
            available: 1,
            waiting: 0,
        };
        let text = String::from_utf8(h.render(pool, &Leadership::new(CoordinationMode::All)).to_vec()).unwrap();
        assert!(
            text.contains(
                "pgsidecar_collector_unavailable{collector=\"stat_statements\",reason=\"extension missing\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("pg_scrape_collector_success{collector=\"stat_statements\"} 0\n"),
            "{text}"
        );
        // A success clears it.
        h.record("stat_statements", SystemTime::now(), Duration::ZERO, ok(None));
        let text = String::from_utf8(h.render(pool, &Leadership::new(CoordinationMode::All)).to_vec()).unwrap();
        assert!(!text.contains("pgsidecar_collector_unavailable"), "{text}");
    }

    #[test]
    fn a_probe_reports_success_and_budget_even_when_its_runs_fail() {
        let yaml = "checks:\n  probes:\n    - name: history\n      query: SELECT 1\n      budget: 200ms\n    - name: plain\n      query: SELECT 2\n";
        let config = crate::config::Config::from_yaml(
            yaml,
            "c.yaml",
            &crate::config::Flags::default(),
            &std::collections::BTreeMap::<String, String>::new(),
            &[],
        )
        .unwrap();
        let probes = crate::collectors::from_checks(&config.checks, &mut crate::collectors::Made::default());
        let h = Health::new(&probes, &config.checks);
        let pool = deadpool_postgres::Status {
            max_size: 3,
            size: 1,
            available: 1,
            waiting: 0,
        };
        let render = |leadership: &Leadership| String::from_utf8(h.render(pool, leadership).to_vec()).unwrap();
        let all = Leadership::new(CoordinationMode::All);
        let text = render(&all);
        assert!(
            text.contains("pgsidecar_probe_budget_seconds{probe=\"history\"} 0.2\n"),
            "{text}"
        );
        assert!(
            !text.contains("pgsidecar_probe_budget_seconds{probe=\"plain\"}"),
            "{text}"
        );
        assert!(
            !text.contains("pgsidecar_probe_success"),
            "not before the first run: {text}"
        );
        assert!(
            text.contains("pgsidecar_probe_last_success_timestamp_seconds{probe=\"history\"} 0\n"),
            "{text}"
        );
        h.record(
            "probe:history",
            UNIX_EPOCH + Duration::from_secs(1000),
            Duration::ZERO,
            ok(None),
        );
        h.record(
            "probe:history",
            SystemTime::now(),
            Duration::ZERO,
            Outcome::Failed("timed out".into()),
        );
        let text = render(&all);
        assert!(
            text.contains("pgsidecar_probe_success{probe=\"history\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("pgsidecar_probe_last_success_timestamp_seconds{probe=\"history\"} 1000\n"),
            "{text}"
        );
        assert!(
            text.contains("pg_scrape_collector_success{collector=\"probe:history\"} 0\n"),
            "{text}"
        );
        // Probes are the leader's: a follower shows none.
        let text = render(&Leadership::new(CoordinationMode::None));
        assert!(!text.contains("pgsidecar_probe_"), "{text}");
    }
}
