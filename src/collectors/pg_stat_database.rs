//! `stat_database`: per-database activity counters, from `pg_stat_database`.
//!
//! Metrics, labels `datid`, `datname` (postgres_exporter's names and types;
//! the peer's counters carry no `_total`, so neither do these):
//! - `pg_stat_database_numbackends` gauge.
//! - counters: `pg_stat_database_xact_commit`, `_xact_rollback`,
//!   `_blks_read`, `_blks_hit`, `_tup_returned`, `_tup_fetched`,
//!   `_tup_inserted`, `_tup_updated`, `_tup_deleted`, `_conflicts`,
//!   `_temp_files`, `_temp_bytes`, `_deadlocks`, `_blk_read_time` and
//!   `_blk_write_time` (milliseconds, as Postgres reports them),
//!   `_stats_reset` (unix time of the last reset, 0 if never).
//! - PostgreSQL ≥ 14: `pg_stat_database_active_time_seconds_total` (peer's
//!   name) and, new in pgsidecar, `pg_stat_database_session_time_seconds_total`,
//!   `_idle_in_transaction_time_seconds_total`, `_sessions_total`,
//!   `_sessions_abandoned_total`, `_sessions_fatal_total`,
//!   `_sessions_killed_total`.
//! - new in pgsidecar: `pg_stat_database_checksum_failures_total`.
//!
//! The row for shared catalogs (no `datname`) is skipped, as the peer does.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("stat_database", TABLE);

const TABLE: Table = Table {
    from: "pg_stat_database WHERE datname IS NOT NULL",
    labels: &[label("datid"), label("datname")],
    columns: COLUMNS,
    params: Params::None,
};

const PG14: u32 = 140000;

const COLUMNS: &[Column] = &[
    Column::gauge(
        "numbackends",
        "pg_stat_database_numbackends",
        "Number of backends currently connected to this database",
    )
    .upstream(),
    Column::counter(
        "xact_commit",
        "pg_stat_database_xact_commit",
        "Number of transactions in this database that have been committed",
    )
    .upstream(),
    Column::counter(
        "xact_rollback",
        "pg_stat_database_xact_rollback",
        "Number of transactions in this database that have been rolled back",
    )
    .upstream(),
    Column::counter(
        "blks_read",
        "pg_stat_database_blks_read",
        "Number of disk blocks read in this database",
    )
    .upstream(),
    Column::counter(
        "blks_hit",
        "pg_stat_database_blks_hit",
        "Number of times disk blocks were found already in the buffer cache",
    )
    .upstream(),
    Column::counter(
        "tup_returned",
        "pg_stat_database_tup_returned",
        "Number of rows returned by queries in this database",
    )
    .upstream(),
    Column::counter(
        "tup_fetched",
        "pg_stat_database_tup_fetched",
        "Number of rows fetched by queries in this database",
    )
    .upstream(),
    Column::counter(
        "tup_inserted",
        "pg_stat_database_tup_inserted",
        "Number of rows inserted by queries in this database",
    )
    .upstream(),
    Column::counter(
        "tup_updated",
        "pg_stat_database_tup_updated",
        "Number of rows updated by queries in this database",
    )
    .upstream(),
    Column::counter(
        "tup_deleted",
        "pg_stat_database_tup_deleted",
        "Number of rows deleted by queries in this database",
    )
    .upstream(),
    Column::counter(
        "conflicts",
        "pg_stat_database_conflicts",
        "Number of queries canceled due to conflicts with recovery in this database",
    )
    .upstream(),
    Column::counter(
        "temp_files",
        "pg_stat_database_temp_files",
        "Number of temporary files created by queries in this database",
    )
    .upstream(),
    Column::counter(
        "temp_bytes",
        "pg_stat_database_temp_bytes",
        "Total amount of data written to temporary files by queries in this database",
    )
    .upstream(),
    Column::counter(
        "deadlocks",
        "pg_stat_database_deadlocks",
        "Number of deadlocks detected in this database",
    )
    .upstream(),
    Column::counter(
        "blk_read_time",
        "pg_stat_database_blk_read_time",
        "Time spent reading data file blocks by backends in this database, in milliseconds",
    )
    .upstream(),
    Column::counter(
        "blk_write_time",
        "pg_stat_database_blk_write_time",
        "Time spent writing data file blocks by backends in this database, in milliseconds",
    )
    .upstream(),
    Column::counter(
        "checksum_failures",
        "pg_stat_database_checksum_failures_total",
        "Number of data page checksum failures detected in this database",
    ),
    Column::counter(
        "active_time",
        "pg_stat_database_active_time_seconds_total",
        "Time spent executing SQL statements in this database, in seconds",
    )
    .scaled(1e-3)
    .since(PG14)
    .upstream(),
    Column::counter(
        "session_time",
        "pg_stat_database_session_time_seconds_total",
        "Time spent by database sessions in this database, in seconds",
    )
    .scaled(1e-3)
    .since(PG14),
    Column::counter(
        "idle_in_transaction_time",
        "pg_stat_database_idle_in_transaction_time_seconds_total",
        "Time spent idling while in a transaction in this database, in seconds",
    )
    .scaled(1e-3)
    .since(PG14),
    Column::counter(
        "sessions",
        "pg_stat_database_sessions_total",
        "Total number of sessions established to this database",
    )
    .since(PG14),
    Column::counter(
        "sessions_abandoned",
        "pg_stat_database_sessions_abandoned_total",
        "Number of sessions to this database terminated because the client connection was lost",
    )
    .since(PG14),
    Column::counter(
        "sessions_fatal",
        "pg_stat_database_sessions_fatal_total",
        "Number of sessions to this database terminated by fatal errors",
    )
    .since(PG14),
    Column::counter(
        "sessions_killed",
        "pg_stat_database_sessions_killed_total",
        "Number of sessions to this database terminated by operator intervention",
    )
    .since(PG14),
    Column::counter(
        "stats_reset",
        "pg_stat_database_stats_reset",
        "Time at which these statistics were last reset (unix time, 0 if never)",
    )
    .epoch()
    .upstream(),
];

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn version_gates_pick_columns() {
        assert!(!TABLE.sql(130000).contains("active_time"));
        assert!(TABLE.sql(140000).contains("active_time::float8"));
        assert!(TABLE.sql(180000).contains("date_part('epoch', stats_reset)"));
    }

    #[test]
    fn milliseconds_become_seconds_only_for_the_seconds_names() {
        let rows = [Row::new(
            &["5", "app"],
            &[("xact_commit", 7.0), ("active_time", 2500.0), ("blk_read_time", 30.0)],
        )];
        let f = TABLE.families(140000, &rows);
        let get = |n: &str| value(&f, n, &["5", "app"]);
        assert_eq!(get("pg_stat_database_xact_commit"), Some(7.0));
        assert_eq!(get("pg_stat_database_active_time_seconds_total"), Some(2.5));
        assert_eq!(get("pg_stat_database_blk_read_time"), Some(30.0));
        assert_eq!(get("pg_stat_database_sessions_total"), None);
    }
}
