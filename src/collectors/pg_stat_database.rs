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

use std::collections::BTreeMap;

use super::{
    Client, CollectError, CollectFuture, Column, Ctx, Definition, Scope, column_families, query, read_columns,
    select_list, text,
};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "stat_database",
    enabled_by_default: true,
    default_interval: None,
    scope: Scope::Server,
    collect,
};

const PG14: u32 = 140000;

const COLUMNS: &[Column] = &[
    Column::gauge(
        "numbackends",
        "pg_stat_database_numbackends",
        "Number of backends currently connected to this database",
    ),
    Column::counter(
        "xact_commit",
        "pg_stat_database_xact_commit",
        "Number of transactions in this database that have been committed",
    ),
    Column::counter(
        "xact_rollback",
        "pg_stat_database_xact_rollback",
        "Number of transactions in this database that have been rolled back",
    ),
    Column::counter(
        "blks_read",
        "pg_stat_database_blks_read",
        "Number of disk blocks read in this database",
    ),
    Column::counter(
        "blks_hit",
        "pg_stat_database_blks_hit",
        "Number of times disk blocks were found already in the buffer cache",
    ),
    Column::counter(
        "tup_returned",
        "pg_stat_database_tup_returned",
        "Number of rows returned by queries in this database",
    ),
    Column::counter(
        "tup_fetched",
        "pg_stat_database_tup_fetched",
        "Number of rows fetched by queries in this database",
    ),
    Column::counter(
        "tup_inserted",
        "pg_stat_database_tup_inserted",
        "Number of rows inserted by queries in this database",
    ),
    Column::counter(
        "tup_updated",
        "pg_stat_database_tup_updated",
        "Number of rows updated by queries in this database",
    ),
    Column::counter(
        "tup_deleted",
        "pg_stat_database_tup_deleted",
        "Number of rows deleted by queries in this database",
    ),
    Column::counter(
        "conflicts",
        "pg_stat_database_conflicts",
        "Number of queries canceled due to conflicts with recovery in this database",
    ),
    Column::counter(
        "temp_files",
        "pg_stat_database_temp_files",
        "Number of temporary files created by queries in this database",
    ),
    Column::counter(
        "temp_bytes",
        "pg_stat_database_temp_bytes",
        "Total amount of data written to temporary files by queries in this database",
    ),
    Column::counter(
        "deadlocks",
        "pg_stat_database_deadlocks",
        "Number of deadlocks detected in this database",
    ),
    Column::counter(
        "blk_read_time",
        "pg_stat_database_blk_read_time",
        "Time spent reading data file blocks by backends in this database, in milliseconds",
    ),
    Column::counter(
        "blk_write_time",
        "pg_stat_database_blk_write_time",
        "Time spent writing data file blocks by backends in this database, in milliseconds",
    ),
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
    .since(PG14),
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
];

/// `stats_reset` is a timestamp, read apart from the numeric columns.
const STATS_RESET: &[Column] = &[Column::counter(
    "stats_reset",
    "pg_stat_database_stats_reset",
    "Time at which these statistics were last reset (unix time, 0 if never)",
)];

/// The SQL for a server version.
pub fn sql(version: u32) -> String {
    format!(
        "SELECT datid::text AS datid, datname::text AS datname, {}, \
         extract(epoch FROM stats_reset)::float8 AS stats_reset \
         FROM pg_stat_database WHERE datname IS NOT NULL",
        select_list(COLUMNS, version)
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub datid: String,
    pub datname: String,
    /// Column name → value; only the columns this server version has.
    pub values: BTreeMap<&'static str, f64>,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let v = ctx.server_version_num;
        let rows = read_rows(client, "stat_database", &sql(v), &[COLUMNS, STATS_RESET], v).await?;
        Ok(families(&rows))
    })
}

impl Row {
    /// The label values and the column values, as `column_families` takes them.
    pub fn labelled(&self) -> (Vec<&str>, &BTreeMap<&'static str, f64>) {
        (vec![self.datid.as_str(), self.datname.as_str()], &self.values)
    }
}

/// Reads one `Row` per database: `datid`, `datname` and the columns of
/// `tables` that the server version has. Shared with `stat_database_conflicts`.
pub(super) async fn read_rows(
    client: &Client,
    what: &'static str,
    sql: &str,
    tables: &[&'static [Column]],
    version: u32,
) -> Result<Vec<Row>, CollectError> {
    let mut rows = Vec::new();
    for r in query(client, what, sql).await? {
        let mut values = BTreeMap::new();
        for cols in tables {
            values.extend(read_columns(&r, what, cols, version)?);
        }
        rows.push(Row {
            datid: text(&r, what, "datid")?,
            datname: text(&r, what, "datname")?,
            values,
        });
    }
    Ok(rows)
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    let it = rows
        .iter()
        .map(|r| (vec![r.datid.as_str(), r.datname.as_str()], &r.values));
    let mut out = column_families(COLUMNS, &["datid", "datname"], it.clone());
    out.extend(column_families(STATS_RESET, &["datid", "datname"], it));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gates_pick_columns() {
        assert!(!sql(130000).contains("active_time"));
        assert!(sql(140000).contains("active_time::float8"));
        assert!(sql(180000).contains("extract(epoch FROM stats_reset)"));
    }

    #[test]
    fn milliseconds_become_seconds_only_for_the_seconds_names() {
        let rows = [Row {
            datid: "5".into(),
            datname: "app".into(),
            values: [("xact_commit", 7.0), ("active_time", 2500.0), ("blk_read_time", 30.0)]
                .into_iter()
                .collect(),
        }];
        let f = families(&rows);
        let get = |n: &str| f.iter().find(|f| f.name() == n).and_then(|f| f.get(&["5", "app"]));
        assert_eq!(get("pg_stat_database_xact_commit"), Some(7.0));
        assert_eq!(get("pg_stat_database_active_time_seconds_total"), Some(2.5));
        assert_eq!(get("pg_stat_database_blk_read_time"), Some(30.0));
        assert_eq!(get("pg_stat_database_sessions_total"), None);
    }
}
