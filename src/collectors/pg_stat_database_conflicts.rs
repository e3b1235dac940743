//! `stat_database_conflicts`: queries canceled on a standby by recovery
//! conflicts, from `pg_stat_database_conflicts` (all zero on a primary).
//!
//! Metrics, labels `datid`, `datname`, all counters (postgres_exporter's names):
//! `pg_stat_database_conflicts_confl_tablespace`, `_confl_lock`,
//! `_confl_snapshot`, `_confl_bufferpin`, `_confl_deadlock`; PostgreSQL ≥ 16
//! also `pg_stat_database_conflicts_confl_active_logicalslot_total` (new in
//! pgsidecar).

use super::pg_stat_database::{Row, read_rows};
use super::{Client, CollectFuture, Column, Ctx, Definition, Scope, column_families, select_list};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "stat_database_conflicts",
    enabled_by_default: true,
    default_interval: None,
    scope: Scope::Server,
    collect,
};

const COLUMNS: &[Column] = &[
    Column::counter("confl_tablespace", "pg_stat_database_conflicts_confl_tablespace", "Number of queries in this database that have been canceled due to dropped tablespaces"),
    Column::counter("confl_lock", "pg_stat_database_conflicts_confl_lock", "Number of queries in this database that have been canceled due to lock timeouts"),
    Column::counter("confl_snapshot", "pg_stat_database_conflicts_confl_snapshot", "Number of queries in this database that have been canceled due to old snapshots"),
    Column::counter("confl_bufferpin", "pg_stat_database_conflicts_confl_bufferpin", "Number of queries in this database that have been canceled due to pinned buffers"),
    Column::counter("confl_deadlock", "pg_stat_database_conflicts_confl_deadlock", "Number of queries in this database that have been canceled due to deadlocks"),
    Column::counter("confl_active_logicalslot", "pg_stat_database_conflicts_confl_active_logicalslot_total", "Number of uses of logical slots in this database that have been canceled due to old snapshots or too low a wal_level on the primary").since(160000),
];

pub fn sql(version: u32) -> String {
    format!(
        "SELECT datid::text AS datid, datname::text AS datname, {} FROM pg_stat_database_conflicts WHERE datname IS NOT NULL",
        select_list(COLUMNS, version)
    )
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let v = ctx.server_version_num;
        let rows = read_rows(client, "stat_database_conflicts", &sql(v), &[COLUMNS], v).await?;
        Ok(families(&rows))
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    column_families(COLUMNS, &["datid", "datname"], rows.iter().map(Row::labelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_slot_conflicts_only_from_16() {
        assert!(!sql(150000).contains("confl_active_logicalslot"));
        assert!(sql(160000).contains("confl_active_logicalslot::float8"));
    }

    #[test]
    fn rows_map_to_counters() {
        let rows = [Row {
            datid: "1".into(),
            datname: "d".into(),
            values: [("confl_lock", 3.0)].into_iter().collect(),
        }];
        let f = families(&rows);
        let lock = f
            .iter()
            .find(|f| f.name() == "pg_stat_database_conflicts_confl_lock")
            .unwrap();
        assert_eq!(lock.get(&["1", "d"]), Some(3.0));
    }
}
