//! `stat_database_conflicts`: queries canceled on a standby by recovery
//! conflicts, from `pg_stat_database_conflicts` (all zero on a primary).
//!
//! Metrics, labels `datid`, `datname`, all counters (postgres_exporter's names):
//! `pg_stat_database_conflicts_confl_tablespace`, `_confl_lock`,
//! `_confl_snapshot`, `_confl_bufferpin`, `_confl_deadlock`; PostgreSQL ≥ 16
//! also `pg_stat_database_conflicts_confl_active_logicalslot_total` (new in
//! pgsidecar).

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("stat_database_conflicts", TABLE);

const TABLE: Table = Table {
    from: "pg_stat_database_conflicts WHERE datname IS NOT NULL",
    labels: &[label("datid"), label("datname")],
    columns: &[
        Column::counter(
            "confl_tablespace",
            "pg_stat_database_conflicts_confl_tablespace",
            "Number of queries in this database that have been canceled due to dropped tablespaces",
        )
        .upstream(),
        Column::counter(
            "confl_lock",
            "pg_stat_database_conflicts_confl_lock",
            "Number of queries in this database that have been canceled due to lock timeouts",
        )
        .upstream(),
        Column::counter(
            "confl_snapshot",
            "pg_stat_database_conflicts_confl_snapshot",
            "Number of queries in this database that have been canceled due to old snapshots",
        )
        .upstream(),
        Column::counter(
            "confl_bufferpin",
            "pg_stat_database_conflicts_confl_bufferpin",
            "Number of queries in this database that have been canceled due to pinned buffers",
        )
        .upstream(),
        Column::counter(
            "confl_deadlock",
            "pg_stat_database_conflicts_confl_deadlock",
            "Number of queries in this database that have been canceled due to deadlocks",
        )
        .upstream(),
        Column::counter(
            "confl_active_logicalslot",
            "pg_stat_database_conflicts_confl_active_logicalslot_total",
            "Number of uses of logical slots in this database that have been canceled due to old snapshots or too low a wal_level on the primary",
        )
        .since(160000),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn logical_slot_conflicts_only_from_16() {
        assert!(!TABLE.sql(150000).contains("confl_active_logicalslot"));
        assert!(TABLE.sql(160000).contains("confl_active_logicalslot::float8"));
    }

    #[test]
    fn rows_map_to_counters() {
        let f = TABLE.families(150000, &[Row::new(&["1", "d"], &[("confl_lock", 3.0)])]);
        assert_eq!(
            value(&f, "pg_stat_database_conflicts_confl_lock", &["1", "d"]),
            Some(3.0)
        );
    }
}
