//! `stat_database_conflicts`: queries canceled on a standby by recovery
//! conflicts, from `pg_stat_database_conflicts` (all zero on a primary).
//!
//! Metrics, labels `datid`, `datname`, all counters (postgres_exporter's names):
//! `pg_stat_database_conflicts_confl_tablespace`, `_confl_lock`,
//! `_confl_snapshot`, `_confl_bufferpin`, `_confl_deadlock`; PostgreSQL ≥ 16
//! also `pg_stat_database_conflicts_confl_active_logicalslot_total` (new in
//! pgsidecar).

use std::collections::BTreeMap;

use super::{Client, CollectFuture, Column, Ctx, Definition, column_families, query, read_columns, select_list, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "stat_database_conflicts",
    enabled_by_default: true,
    default_interval: None,
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

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub datid: String,
    pub datname: String,
    pub values: BTreeMap<&'static str, f64>,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let what = "stat_database_conflicts";
        let mut rows = Vec::new();
        for r in query(client, what, &sql(ctx.server_version_num)).await? {
            rows.push(Row {
                datid: text(&r, what, "datid")?,
                datname: text(&r, what, "datname")?,
                values: read_columns(&r, what, COLUMNS, ctx.server_version_num)?,
            });
        }
        Ok(families(&rows))
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    column_families(
        COLUMNS,
        &["datid", "datname"],
        rows.iter()
            .map(|r| (vec![r.datid.as_str(), r.datname.as_str()], &r.values)),
    )
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
