//! The collectors and their one registration list, [`ALL`].
//!
//! A collector is a file named after the Postgres view it reads, with its
//! SQL, its version gates and a header listing the metrics it exports. Most
//! read one wide view and are declarations only: a [`Table`] of label and
//! value columns (see `table.rs`), from which the SQL, the row reader and the
//! families follow. The others hold a typed row struct, their queries and a
//! pure function that maps rows to [`Family`] values, unit-tested with
//! hand-built rows. Adding a collector is one new file plus one line in
//! [`ALL`]. Collectors never touch HTTP or the snapshot: they return
//! families, and the scheduler stores them.
//!
//! Besides [`ALL`], the configuration's `checks:` asks for collectors of
//! its own ([`from_checks`]): one per probe (`probe.rs`) and the statement
//! plans (`pg_stat_statements_plans.rs`). They are [`Stateful`]: they keep
//! what they learn between runs (a plan's fingerprint, an explain budget).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::{Checks, CollectorConfig, CollectorDefaults};
use crate::db::{Client, DbError, describe};
use crate::metrics::Family;

pub mod plan;
pub mod table;

mod console;
mod migrations;
mod pg_class_sizes;
mod pg_database;
mod pg_database_discovery;
mod pg_indexes;
mod pg_matviews;
mod pg_postmaster;
mod pg_settings;
mod pg_stat_activity;
mod pg_stat_activity_pools;
mod pg_stat_activity_queries;
mod pg_stat_database;
mod pg_stat_database_conflicts;
mod pg_stat_statements;
mod pg_stat_statements_plans;
mod pg_stat_user_indexes;
mod pg_stat_user_tables;
mod pg_statio_user_tables;
mod pgbouncer_config;
mod pgbouncer_databases;
mod pgbouncer_lists;
mod pgbouncer_pools;
mod pgbouncer_stats;
mod readings;

mod pg_buffercache_summary;
mod pg_database_wraparound;
mod pg_locks;
mod pg_ls_waldir;
mod pg_replication;
mod pg_replication_slots;
mod pg_roles;
mod pg_stat_activity_autovacuum;
mod pg_stat_activity_idle;
mod pg_stat_activity_long_running;
mod pg_stat_archiver;
mod pg_stat_bgwriter;
mod pg_stat_checkpointer;
mod pg_stat_progress_vacuum;
mod pg_stat_replication;
mod pg_stat_wal;
mod pg_stat_wal_receiver;
mod pg_statio_user_indexes;
mod probe;
mod query;

pub use table::Table;

/// The registration list, in the order the collectors are configured and
/// reported.
pub const ALL: &[Definition] = &[
    pg_postmaster::DEFINITION,
    pg_settings::DEFINITION,
    pg_stat_database::DEFINITION,
    pg_stat_database_conflicts::DEFINITION,
    pg_database::DEFINITION,
    pg_stat_activity::DEFINITION,
    pg_stat_statements::DEFINITION,
    pg_stat_activity_queries::DEFINITION,
    pg_stat_activity_pools::DEFINITION,
    pg_matviews::DEFINITION,
    pg_indexes::DEFINITION,
    pg_stat_user_indexes::DEFINITION,
    pg_stat_user_tables::DEFINITION,
    pg_statio_user_tables::DEFINITION,
    pg_class_sizes::DEFINITION,
    migrations::DEFINITION,
    pg_locks::DEFINITION,
    pg_replication::DEFINITION,
    pg_stat_replication::DEFINITION,
    pg_replication_slots::DEFINITION,
    pg_stat_bgwriter::DEFINITION,
    pg_stat_checkpointer::DEFINITION,
    pg_stat_archiver::DEFINITION,
    pg_ls_waldir::DEFINITION,
    pg_stat_wal::DEFINITION,
    pg_stat_progress_vacuum::DEFINITION,
    pg_roles::DEFINITION,
    pg_stat_wal_receiver::DEFINITION,
    pg_database_wraparound::DEFINITION,
    pg_stat_activity_long_running::DEFINITION,
    pg_stat_activity_idle::DEFINITION,
    pg_stat_activity_autovacuum::DEFINITION,
    pg_buffercache_summary::DEFINITION,
    pg_statio_user_indexes::DEFINITION,
    pgbouncer_pools::DEFINITION,
    pgbouncer_stats::DEFINITION,
    pgbouncer_databases::DEFINITION,
    pgbouncer_lists::DEFINITION,
    pgbouncer_config::DEFINITION,
];

/// What a made collector was made from.
#[derive(PartialEq)]
enum MadeFrom {
    Probe(crate::config::Probe),
    Explain(crate::config::Explain),
    Query(crate::config::CustomQuery),
}

/// The collectors one pgsidecar has made from its checks so far (see
/// [`from_checks`]).
#[derive(Default)]
pub struct Made(Vec<(MadeFrom, &'static Definition, CollectorConfig)>);

/// The collectors that `checks:` asks for, with their configuration: one
/// per probe, then the statement plans if `slow_queries.explain` is on.
///
/// Each is made once and never freed: the scheduler, the health and the
/// snapshot know every collector as `&'static`, as they know the built-in
/// ones. `made` remembers them, so a reload that keeps a probe as it was
/// gets the same definition back, and its task and its memory between runs
/// (plan fingerprints, the explain budget) carry on; only a changed or new
/// probe makes a new one (a few hundred bytes).
pub fn from_checks(checks: &Checks, made: &mut Made) -> Vec<(&'static Definition, CollectorConfig)> {
    let wanted = checks
        .probes
        .iter()
        .map(|p| MadeFrom::Probe(p.clone()))
        .chain(checks.statements.explain.iter().map(|e| MadeFrom::Explain(e.clone())));
    make(wanted, made)
}

/// The collectors of the custom queries (`queries:`, `--extend.query-path`),
/// one `query:<name>` each, made and remembered as [`from_checks`] does.
pub fn from_queries(
    queries: &[crate::config::CustomQuery],
    made: &mut Made,
) -> Vec<(&'static Definition, CollectorConfig)> {
    make(queries.iter().map(|q| MadeFrom::Query(q.clone())), made)
}

fn make(wanted: impl Iterator<Item = MadeFrom>, made: &mut Made) -> Vec<(&'static Definition, CollectorConfig)> {
    wanted
        .map(|from| {
            if let Some((_, def, cfg)) = made.0.iter().find(|(f, _, _)| *f == from) {
                return (*def, cfg.clone());
            }
            let (def, cfg) = match &from {
                MadeFrom::Probe(p) => probe::definition(p),
                MadeFrom::Explain(e) => pg_stat_statements_plans::definition(e),
                MadeFrom::Query(q) => query::definition(q),
            };
            let def: &'static Definition = Box::leak(Box::new(def));
            made.0.push((from, def, cfg.clone()));
            (def, cfg)
        })
        .collect()
}

/// The discovery of the other databases (`databases:`), collector
/// `databases`, which hands what it finds to `others`.
pub fn from_databases(others: std::sync::Arc<crate::db::Others>) -> (&'static Definition, CollectorConfig) {
    pg_database_discovery::definition(others)
}

/// Each collector's name and defaults, as configuration loading takes them.
pub fn defaults() -> Vec<CollectorDefaults> {
    ALL.iter()
        .map(|d| CollectorDefaults {
            name: d.name,
            enabled: d.enabled_by_default,
            interval: d.default_interval,
            covered_by: match d.source {
                Source::CoveredBy(by) => Some(by),
                _ => None,
            },
            pgbouncer: d.target == Target::PgBouncer,
            families: match &d.source {
                Source::Table(t) => t.columns.iter().map(|c| c.metric).collect(),
                _ => d.exports.families.to_vec(),
            },
        })
        .collect()
}

/// The metric names of table columns that are postgres_exporter's, kept as
/// they are even where Prometheus's naming rules would say otherwise.
pub fn upstream_names() -> impl Iterator<Item = &'static str> {
    ALL.iter()
        .filter_map(|d| match &d.source {
            Source::Table(t) => Some(t.columns),
            Source::Custom(_) | Source::CoveredBy(_) | Source::Stateful(_) => None,
        })
        .flatten()
        .filter(|c| c.upstream)
        .map(|c| c.metric)
        .chain(ALL.iter().flat_map(|d| d.exports.upstream.iter().copied()))
}

/// What a collector knows (the server it talks to, the configured checks),
/// and what it reports besides its families. One per run.
#[derive(Debug)]
pub struct Ctx {
    /// `server_version_num`, e.g. 150004; read once per new connection.
    pub server_version_num: u32,
    /// `current_database()`, read with the version once per new connection,
    /// so that no collector pays a round trip for it ("" if unknown: a
    /// collector then reads it in its own query).
    pub datname: String,
    pub checks: std::sync::Arc<crate::config::Checks>,
    report: std::sync::Mutex<Report>,
    /// What collectors keep between runs (none in unit tests: every run
    /// then starts afresh).
    memory: Option<std::sync::Arc<Memory>>,
}

/// What collectors keep between runs, one value per collector and database,
/// for the life of the process. A run
/// [takes](Ctx::recall) its value and [keeps](Ctx::keep) the new one when
/// it succeeds: a run that fails or times out leaves nothing, and the next
/// one starts afresh. Runs of one collector never overlap.
#[derive(Default)]
pub struct Memory(std::sync::Mutex<Slots>);

/// A value per collector (the value's type and a tag: collectors of one
/// type tell themselves apart by it) and database.
type Slots = std::collections::HashMap<(std::any::TypeId, &'static str, String), Box<dyn std::any::Any + Send>>;

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memory({} values)", self.len())
    }
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what was kept for the databases `keep` rejects (dropped, or
    /// no longer discovered).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|(_, _, datname), _| keep(datname));
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What a successful run says besides its families.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Set by [`Ctx::omitted`]: relations left out by `checks.relations.max_series`
    /// (`None`: no cap applied).
    pub omitted: Option<usize>,
    /// What the run could not read or left out, for the status page and the
    /// log: one object's failed query, statements a filter hid. The other
    /// objects' series are still reported.
    pub notes: Vec<String>,
    /// With `databases:`, whether the run read each other database it
    /// tried (a failed one's error is among the notes).
    pub databases: Vec<(String, bool)>,
}

impl Report {
    /// Counts `n` more relations left out by the cap.
    fn omit(&mut self, n: usize) {
        self.omitted = Some(self.omitted.unwrap_or(0) + n);
    }

    /// Adds what a run in another database (`databases:`) reported, or
    /// why it read nothing there: its omitted relations count, its notes
    /// and its failure are named after the database.
    pub fn add_database(&mut self, datname: &str, outcome: Result<Report, String>) {
        match outcome {
            Ok(r) => {
                if let Some(n) = r.omitted {
                    self.omit(n);
                }
                self.notes
                    .extend(r.notes.into_iter().map(|n| format!("database {datname}: {n}")));
                self.databases.push((datname.to_string(), true));
            }
            Err(e) => {
                self.notes.push(format!("database {datname}: {e}"));
                self.databases.push((datname.to_string(), false));
            }
        }
    }
}

impl Ctx {
    pub fn new(server_version_num: u32, checks: std::sync::Arc<crate::config::Checks>) -> Self {
        Ctx {
            server_version_num,
            datname: String::new(),
            checks,
            report: std::sync::Mutex::new(Report::default()),
            memory: None,
        }
    }

    /// The session's database: `datname`, or if that is not known yet,
    /// `current_database()` (one round trip).
    pub async fn database(&self, client: &Client) -> Result<String, CollectError> {
        if !self.datname.is_empty() {
            return Ok(self.datname.clone());
        }
        let rows = query(
            client,
            "current_database()",
            "SELECT current_database()::text AS datname",
            &[],
        )
        .await?;
        match rows.first() {
            Some(r) => text(r, "datname"),
            None => Ok(String::new()),
        }
    }

    /// The same, with the memory between runs.
    pub fn remembering(self, memory: std::sync::Arc<Memory>) -> Self {
        Ctx {
            memory: Some(memory),
            ..self
        }
    }

    /// Takes what the last successful run of this collector (`tag`) in
    /// this database kept (the default if nothing).
    pub fn recall<T: Default + Send + 'static>(&self, tag: &'static str) -> T {
        let Some(m) = &self.memory else {
            return T::default();
        };
        let key = (std::any::TypeId::of::<T>(), tag, self.datname.clone());
        m.lock()
            .remove(&key)
            .and_then(|v| v.downcast::<T>().ok())
            .map_or_else(T::default, |v| *v)
    }

    /// Keeps `value` for this collector's (`tag`) next run in this
    /// database.
    pub fn keep<T: Send + 'static>(&self, tag: &'static str, value: T) {
        if let Some(m) = &self.memory {
            let key = (std::any::TypeId::of::<T>(), tag, self.datname.clone());
            m.lock().insert(key, Box::new(value));
        }
    }

    /// The same, for a session connected to `datname`.
    pub fn in_database(self, datname: String) -> Self {
        Ctx { datname, ..self }
    }

    /// Records relations left out by `checks.relations.max_series`; the
    /// health families report it as `pgsidecar_collector_series_truncated`
    /// and `pgsidecar_collector_relations_omitted`, once per collector.
    /// Capped queries end in `LIMIT` and count what the filter let through
    /// with `count(*) OVER ()`, so rows beyond the cap are never sent.
    pub fn omitted(&self, n: usize) {
        self.report_mut().omit(n);
    }

    fn report_mut(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records something the run could not read or left out.
    pub fn note(&self, note: impl Into<String>) {
        self.report_mut().notes.push(note.into());
    }

    /// What this run reported besides its families.
    pub fn report(&self) -> Report {
        self.report_mut().clone()
    }
}

pub type CollectFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Family>, CollectError>> + Send + 'a>>;

/// A hand-written collector: its queries and the mapping to families.
pub type CollectFn = for<'a> fn(&'a Client, &'a Ctx) -> CollectFuture<'a>;

/// Where a collector's data comes from, which decides who runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// About this pod (its pools' connections): every sidecar runs it.
    Pod,
    /// About the whole server or its databases: only the leader runs it.
    Server,
}

/// What a collector talks to, which decides the connection it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The Postgres server: a session from the pool.
    Postgres,
    /// PgBouncer's admin console (`pgbouncer:`): its one session, simple
    /// queries only (see `console.rs`).
    PgBouncer,
}

/// How a collector reads Postgres.
pub enum Source {
    /// One wide view, described by its columns.
    Table(Table),
    /// Hand-written.
    Custom(CollectFn),
    /// Nothing of its own: another collector, named here, exports its
    /// series. Enabling it enables that one instead (see
    /// `config::CollectorDefaults::covered_by`); it never runs.
    CoveredBy(&'static str),
    /// Made from the configuration, with memory between runs; leaked with
    /// its definition (see [`from_checks`]).
    Stateful(&'static dyn Stateful),
}

/// A collector that keeps what it learns between runs (behind its own lock:
/// runs of one collector never overlap, but it is shared with the tasks).
pub trait Stateful: Send + Sync {
    fn collect<'a>(&'a self, client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a>;
}

/// A collector as the configuration and the scheduler see it.
pub struct Definition {
    /// The name used in the config and in the `collector` label.
    pub name: &'static str,
    pub enabled_by_default: bool,
    /// Overrides `collection.interval` when the collector is costly.
    pub default_interval: Option<Duration>,
    pub scope: Scope,
    /// Its last run decides `pg_up`, or for a PgBouncer collector
    /// `pgbouncer_up` (see `health`).
    pub decides_up: bool,
    /// The first `server_version_num` that has what it reads (0: every
    /// version). On an older server a run reads nothing and notes
    /// `since_note`: a success, not a failure or a missing prerequisite.
    pub since: u32,
    pub since_note: &'static str,
    pub target: Target,
    /// After failures in a row it waits longer and longer between attempts
    /// (see `scheduler`), instead of trying on every tick.
    pub backs_off: bool,
    /// Where in its interval it runs after the first run, in quarters of
    /// the interval (0: with the others). The costly per-relation
    /// collectors take one quarter each, so that their queries do not
    /// compete with each other for the server's CPUs every round.
    pub phase: u8,
    /// It reads one database's own catalogs: with `databases:` it runs in
    /// each discovered database too, where this says yes for the checks of
    /// that database (the migrations only where they are configured).
    pub per_database: Option<PerDatabase>,
    /// A hand-written collector's families, if it lists them (a table's
    /// are its columns'); `upstream` are postgres_exporter's names among
    /// them. Unlisted, a custom query may not use its `pg_<name>` prefix.
    pub exports: Exports,
    pub source: Source,
}

/// The families a hand-written collector exports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exports {
    pub families: &'static [&'static str],
    pub upstream: &'static [&'static str],
}

impl Definition {
    /// An enabled, server-scoped collector reading `source`, with every
    /// other setting at its default; the methods below change them.
    const fn new(name: &'static str, source: Source) -> Self {
        Definition {
            name,
            enabled_by_default: true,
            default_interval: None,
            scope: Scope::Server,
            decides_up: false,
            since: 0,
            since_note: "",
            target: Target::Postgres,
            backs_off: false,
            phase: 0,
            per_database: None,
            exports: Exports {
                families: &[],
                upstream: &[],
            },
            source,
        }
    }

    /// Lists a hand-written collector's families.
    pub const fn exports(self, exports: Exports) -> Self {
        Definition { exports, ..self }
    }

    /// An enabled, server-scoped collector over one wide view.
    pub const fn table(name: &'static str, table: Table) -> Self {
        Definition::new(name, Source::Table(table))
    }

    /// An enabled, server-scoped hand-written collector.
    pub const fn custom(name: &'static str, collect: CollectFn) -> Self {
        Definition::new(name, Source::Custom(collect))
    }

    /// An opt-in name whose series `by` exports (see [`Source::CoveredBy`]).
    pub const fn covered_by(name: &'static str, by: &'static str) -> Self {
        Definition::new(name, Source::CoveredBy(by)).opt_in()
    }

    /// An enabled, server-scoped collector made from the configuration,
    /// with memory between runs (a probe, the statement plans, a custom
    /// query, the discovery of the databases).
    pub const fn stateful(name: &'static str, collector: &'static dyn Stateful) -> Self {
        Definition::new(name, Source::Stateful(collector))
    }

    /// Reads nothing on servers older than `version`, noting why.
    pub const fn since(self, version: u32, note: &'static str) -> Self {
        Definition {
            since: version,
            since_note: note,
            ..self
        }
    }

    /// Off unless the configuration turns it on.
    pub const fn opt_in(self) -> Self {
        Definition {
            enabled_by_default: false,
            ..self
        }
    }

    /// Runs on this interval unless configured otherwise.
    pub const fn every(self, interval: Duration) -> Self {
        Definition {
            default_interval: Some(interval),
            ..self
        }
    }

    /// Run by every sidecar, leader or not.
    pub const fn per_pod(self) -> Self {
        Definition {
            scope: Scope::Pod,
            ..self
        }
    }

    /// Its last run decides `pg_up` (`pgbouncer_up` for a PgBouncer collector).
    pub const fn decides_up(self) -> Self {
        Definition {
            decides_up: true,
            ..self
        }
    }

    /// Reads PgBouncer's admin console: enabled only when `pgbouncer:` is
    /// configured, and run by the leader or by every pod as
    /// `pgbouncer.run_by` says.
    pub const fn pgbouncer(self) -> Self {
        Definition {
            target: Target::PgBouncer,
            ..self
        }
    }

    /// Runs `quarters` quarters of its interval after the others (0..=3).
    pub const fn phase(self, quarters: u8) -> Self {
        Definition {
            phase: quarters % 4,
            ..self
        }
    }

    /// Reads one database's own catalogs: runs in every database of
    /// `databases:` too.
    pub const fn per_database(self) -> Self {
        Definition {
            per_database: Some(PerDatabase::Every(always)),
            ..self
        }
    }

    /// Runs in the other databases of `databases:` where `wanted` says yes
    /// for their checks.
    pub const fn per_database_if(self, wanted: fn(&Checks) -> bool) -> Self {
        Definition {
            per_database: Some(PerDatabase::Every(wanted)),
            ..self
        }
    }

    /// Backs off after failures in a row.
    pub const fn backs_off(self) -> Self {
        Definition {
            backs_off: true,
            ..self
        }
    }

    /// One run on a connection.
    pub fn collect<'a>(&'a self, client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
        if ctx.server_version_num < self.since {
            ctx.note(format!(
                "{} (this server is PostgreSQL {}): nothing to read",
                self.since_note,
                ctx.server_version_num / 10000
            ));
            return Box::pin(async { Ok(Vec::new()) });
        }
        match &self.source {
            Source::Table(t) => Box::pin(t.collect(client, ctx)),
            Source::Custom(f) => f(client, ctx),
            Source::CoveredBy(_) => Box::pin(async { Ok(Vec::new()) }),
            Source::Stateful(s) => s.collect(client, ctx),
        }
    }
}

fn always(_: &Checks) -> bool {
    true
}

/// Which databases a per-database collector runs in.
#[derive(Debug, Clone, Copy)]
pub enum PerDatabase {
    /// The DSN's, and every other one `databases:` reads where this says
    /// yes for its checks.
    Every(fn(&Checks) -> bool),
    /// Those whose name matches one of these (`*`, `?`), the DSN's included
    /// only if it matches (a custom query's `databases`).
    Matching(&'static [String]),
}

impl PerDatabase {
    /// Whether it runs in the DSN's database `datname` ("" before the
    /// first connection says, when it runs).
    pub fn runs_in_dsn(&self, datname: &str, checks: &Checks) -> bool {
        match self {
            PerDatabase::Every(_) => true,
            PerDatabase::Matching(_) => datname.is_empty() || self.runs_in(datname, checks),
        }
    }

    /// Whether it runs in the other database `datname`, whose checks are `checks`.
    pub fn runs_in(&self, datname: &str, checks: &Checks) -> bool {
        match self {
            PerDatabase::Every(wanted) => wanted(checks),
            PerDatabase::Matching(patterns) => patterns.iter().any(|p| crate::config::glob(p, datname)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{0}")]
    Connect(#[from] DbError),
    #[error("query {what}: {}", describe(.source))]
    Query {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("column {column}: {source}")]
    Column {
        column: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("query {what}: no row returned")]
    NoRow { what: &'static str },
    /// An `EXPLAIN` output that is not what PostgreSQL prints.
    #[error("{0}")]
    Plan(String),
    /// A custom query's rows that cannot be series (too many, a value that
    /// is not a number, two rows with the same labels).
    #[error("{0}")]
    Rows(String),
    #[error("timed out after {}", crate::config::show(*.0))]
    Timeout(Duration),
    #[error("collector panicked: {0}")]
    Panic(String),
    /// A prerequisite is missing (an extension not installed, a permission):
    /// reported once in the log and as `pgsidecar_collector_unavailable`,
    /// whose `reason` label is this text.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl CollectError {
    pub fn query(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        CollectError::Query {
            what: what.into(),
            source,
        }
    }

    pub fn column(column: &'static str, source: tokio_postgres::Error) -> Self {
        CollectError::Column { column, source }
    }
}

/// Runs `sql` (prepared once per connection) with bind parameters and
/// returns its rows; `what` names the statement in an error.
pub async fn query(
    client: &Client,
    what: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, CollectError> {
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(|e| CollectError::query(what, e))?;
    client
        .query(&stmt, params)
        .await
        .map_err(|e| CollectError::query(what, e))
}

/// Runs `sql` as [`query`] does, but hands each row to `each` as it
/// arrives instead of collecting them: a wide result is never held whole.
/// Returns the number of rows.
pub async fn query_each(
    client: &Client,
    what: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    mut each: impl FnMut(tokio_postgres::Row) -> Result<(), CollectError>,
) -> Result<usize, CollectError> {
    use futures_util::TryStreamExt;
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(|e| CollectError::query(what, e))?;
    let rows = client
        .query_raw(&stmt, params.iter().copied())
        .await
        .map_err(|e| CollectError::query(what, e))?;
    let mut rows = std::pin::pin!(rows);
    let mut n = 0;
    while let Some(row) = rows.try_next().await.map_err(|e| CollectError::query(what, e))? {
        each(row)?;
        n += 1;
    }
    Ok(n)
}

/// Reads a column that the SQL cast to `float8`; SQL NULL reads as 0.
pub fn float(row: &tokio_postgres::Row, name: &'static str) -> Result<f64, CollectError> {
    row.try_get::<_, Option<f64>>(name)
        .map(|v| v.unwrap_or(0.0))
        .map_err(|e| CollectError::column(name, e))
}

/// Reads a text-like column (`text`, `name`); SQL NULL reads as "". Bytes
/// that are not UTF-8 become U+FFFD (see [`Lossy`]).
pub fn text(row: &tokio_postgres::Row, name: &'static str) -> Result<String, CollectError> {
    row.try_get::<_, Option<Lossy>>(name)
        .map(|v| v.map(|Lossy(s)| s).unwrap_or_default())
        .map_err(|e| CollectError::column(name, e))
}

/// A text-like value read as the server sent it, with every byte sequence
/// that is not UTF-8 replaced by U+FFFD. A `SQL_ASCII` database stores names
/// and statement texts unchecked, so any role with `CREATEDB` can make a
/// database whose name is not UTF-8; read strictly, that one name failed
/// `stat_database`, `stat_activity` and `database` for every database.
pub struct Lossy(pub String);

impl<'a> tokio_postgres::types::FromSql<'a> for Lossy {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Lossy, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Lossy(String::from_utf8_lossy(raw).into_owned()))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

/// A `WHERE` fragment that applies `checks.relations` to a schema column and
/// a relation-name column, reading its four `text[]` parameters from
/// `$first`..`$first+3` (see [`relation_params`]). System schemas are always
/// left out.
pub fn relation_filter(schema_col: &str, rel_col: &str, first: usize) -> String {
    let (a, b, c, d) = (first, first + 1, first + 2, first + 3);
    format!(
        "{schema_col} NOT IN ('pg_catalog', 'information_schema') AND {schema_col} NOT LIKE 'pg\\_toast%' \
         AND (cardinality(${a}::text[]) = 0 OR {schema_col} = ANY(${a}::text[])) \
         AND NOT ({schema_col} = ANY(${b}::text[])) \
         AND (cardinality(${c}::text[]) = 0 OR {rel_col} LIKE ANY(${c}::text[])) \
         AND NOT ({rel_col} LIKE ANY(${d}::text[]))"
    )
}

/// The four parameters of [`relation_filter`], in order.
pub fn relation_params(r: &crate::config::Relations) -> [&Vec<String>; 4] {
    [&r.include_schemas, &r.exclude_schemas, &r.include, &r.exclude]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitted_relations_add_up_and_notes_are_kept() {
        let ctx = Ctx::new(150000, std::sync::Arc::new(crate::config::Checks::default()));
        assert_eq!(ctx.report().omitted, None);
        ctx.omitted(1);
        assert_eq!(ctx.report().omitted, Some(1));
        ctx.omitted(0);
        assert_eq!(ctx.report().omitted, Some(1));
        ctx.omitted(2);
        assert_eq!(ctx.report().omitted, Some(3));
        ctx.note("x");
        assert_eq!(ctx.report().notes, vec!["x".to_string()]);
    }

    #[test]
    fn defaults_are_postgres_exporters() {
        let on = |name: &str| ALL.iter().find(|d| d.name == name).map(|d| d.enabled_by_default);
        for name in [
            "locks",
            "replication",
            "stat_replication",
            "replication_slots",
            "stat_bgwriter",
            "stat_archiver",
            "wal",
            "stat_progress_vacuum",
            "roles",
            // Upstream's is opt-in; on here, and a note before PostgreSQL 17.
            "stat_checkpointer",
        ] {
            assert_eq!(on(name), Some(true), "{name}");
        }
        for name in [
            "stat_wal_receiver",
            "database_wraparound",
            "long_running_transactions",
            "process_idle",
            "stat_activity_autovacuum",
            "buffercache_summary",
            "statio_user_indexes",
        ] {
            assert_eq!(on(name), Some(false), "{name}");
        }
    }

    #[test]
    fn names_are_unique_and_one_collector_per_target_decides_up() {
        let mut names: Vec<_> = ALL.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for target in [Target::Postgres, Target::PgBouncer] {
            let deciders: Vec<_> = ALL.iter().filter(|d| d.decides_up && d.target == target).collect();
            assert_eq!(deciders.len(), 1, "{target:?}");
        }
    }

    #[test]
    fn a_query_kept_by_a_reload_keeps_its_definition() {
        let queries = |sql: &str| {
            let yaml =
                format!("queries:\n  app:\n    query: {sql}\n    metrics:\n      - n:\n          usage: GAUGE\n");
            crate::config::test_load(&yaml, &defaults()).unwrap().queries
        };
        let mut made = Made::default();
        let first = from_queries(&queries("SELECT 1 AS n"), &mut made);
        let again = from_queries(&queries("SELECT 1 AS n"), &mut made);
        let changed = from_queries(&queries("SELECT 2 AS n"), &mut made);
        assert_eq!(first[0].0.name, "query:app");
        assert_eq!(first[0].1.name, "query:app");
        assert!(std::ptr::eq(first[0].0, again[0].0));
        assert!(!std::ptr::eq(first[0].0, changed[0].0));
    }

    #[test]
    fn a_probe_kept_by_a_reload_keeps_its_definition() {
        let checks = |query: &str| {
            let yaml = format!("checks:\n  probes:\n    - name: history\n      query: {query}\n");
            crate::config::test_load(&yaml, &defaults()).unwrap().checks
        };
        let mut made = Made::default();
        let first = from_checks(&checks("SELECT 1"), &mut made);
        let again = from_checks(&checks("SELECT 1"), &mut made);
        let changed = from_checks(&checks("SELECT 2"), &mut made);
        assert_eq!(first.len(), 1);
        assert!(std::ptr::eq(first[0].0, again[0].0));
        assert!(!std::ptr::eq(first[0].0, changed[0].0));
        assert_eq!(first[0].0.name, "probe:history");
        // Another pgsidecar makes its own: no memory is shared.
        let other = from_checks(&checks("SELECT 1"), &mut Made::default());
        assert!(!std::ptr::eq(first[0].0, other[0].0));
    }
}
