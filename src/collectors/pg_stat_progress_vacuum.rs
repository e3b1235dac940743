//! `stat_progress_vacuum`: every VACUUM running now (manual or autovacuum),
//! from `pg_stat_progress_vacuum`.
//!
//! Metrics, postgres_exporter's names and types:
//! - labels `datname`, `relname`, `phase`: `pg_stat_progress_vacuum_phase`
//!   gauge, 1 for the phase the vacuum is in and 0 for the six others
//!   (`initializing`, `scanning heap`, `vacuuming indexes`, `vacuuming heap`,
//!   `cleaning up indexes`, `truncating heap`, `performing final cleanup`).
//! - labels `datname`, `relname`, gauges: `pg_stat_progress_vacuum_heap_blks`
//!   (heap blocks in the table), `_heap_blks_scanned`, `_heap_blks_vacuumed`,
//!   `_index_vacuums` (index vacuum cycles completed), `_num_dead_tuples`
//!   (dead tuples, on PostgreSQL 17+ dead item identifiers, collected since
//!   the last index vacuum cycle).
//! - PostgreSQL 13–16 only: `pg_stat_progress_vacuum_max_dead_tuples` gauge.
//!   PostgreSQL 17 replaced that count by a memory size; pgsidecar exports
//!   it as `pg_stat_progress_vacuum_max_dead_tuple_bytes` and
//!   `pg_stat_progress_vacuum_dead_tuple_bytes` (new, 17+), with
//!   `pg_stat_progress_vacuum_indexes_total` and `_indexes_processed`
//!   (new, 17+).
//!
//! A vacuum in another database than pgsidecar's has its table named by OID
//! there (its catalog cannot be read from here); upstream would show a
//! wrong name or a bare number. The view is empty on a hot standby (no
//! vacuum runs there), which is a success with no series.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("stat_progress_vacuum", TABLE);

const PG17: u32 = 170000;
const BY_TABLE: &[&str] = &["datname", "relname"];

const TABLE: Table = Table {
    from: "pg_stat_progress_vacuum s JOIN pg_database d ON d.oid = s.datid \
           CROSS JOIN (VALUES ('initializing'), ('scanning heap'), ('vacuuming indexes'), ('vacuuming heap'), \
           ('cleaning up indexes'), ('truncating heap'), ('performing final cleanup')) AS p(phase)",
    labels: &[
        label("datname").from("d.datname"),
        label("relname")
            .from("CASE WHEN d.datname = current_database() THEN s.relid::regclass::text ELSE s.relid::text END"),
        label("phase").from("p.phase"),
    ],
    columns: &[
        Column::gauge(
            "phase_one",
            "pg_stat_progress_vacuum_phase",
            "1 for the phase this vacuum is in, 0 for the others",
        )
        .expr("(p.phase = s.phase)::int")
        .upstream(),
        Column::gauge(
            "heap_blks_total",
            "pg_stat_progress_vacuum_heap_blks",
            "Heap blocks in the table",
        )
        .expr("s.heap_blks_total")
        .labels(BY_TABLE)
        .upstream(),
        Column::gauge(
            "heap_blks_scanned",
            "pg_stat_progress_vacuum_heap_blks_scanned",
            "Heap blocks scanned so far",
        )
        .expr("s.heap_blks_scanned")
        .labels(BY_TABLE)
        .upstream(),
        Column::gauge(
            "heap_blks_vacuumed",
            "pg_stat_progress_vacuum_heap_blks_vacuumed",
            "Heap blocks vacuumed so far",
        )
        .expr("s.heap_blks_vacuumed")
        .labels(BY_TABLE)
        .upstream(),
        Column::gauge(
            "index_vacuum_count",
            "pg_stat_progress_vacuum_index_vacuums",
            "Index vacuum cycles completed",
        )
        .expr("s.index_vacuum_count")
        .labels(BY_TABLE)
        .upstream(),
        Column::gauge(
            "max_dead_tuples",
            "pg_stat_progress_vacuum_max_dead_tuples",
            "Dead tuples that can be stored before an index vacuum cycle is needed",
        )
        .expr("s.max_dead_tuples")
        .labels(BY_TABLE)
        .until(PG17)
        .upstream(),
        Column::gauge(
            "num_dead_tuples",
            "pg_stat_progress_vacuum_num_dead_tuples",
            "Dead tuples collected since the last index vacuum cycle",
        )
        .expr("s.num_dead_tuples")
        .labels(BY_TABLE)
        .until(PG17)
        .upstream(),
        Column::gauge(
            "num_dead_tuples",
            "pg_stat_progress_vacuum_num_dead_tuples",
            "Dead item identifiers collected since the last index vacuum cycle",
        )
        .expr("s.num_dead_item_ids")
        .labels(BY_TABLE)
        .since(PG17)
        .upstream(),
        Column::gauge(
            "max_dead_tuple_bytes",
            "pg_stat_progress_vacuum_max_dead_tuple_bytes",
            "Memory for dead tuples that can be used before an index vacuum cycle is needed, in bytes",
        )
        .expr("s.max_dead_tuple_bytes")
        .labels(BY_TABLE)
        .since(PG17),
        Column::gauge(
            "dead_tuple_bytes",
            "pg_stat_progress_vacuum_dead_tuple_bytes",
            "Memory used by dead tuples collected since the last index vacuum cycle, in bytes",
        )
        .expr("s.dead_tuple_bytes")
        .labels(BY_TABLE)
        .since(PG17),
        Column::gauge(
            "indexes_total",
            "pg_stat_progress_vacuum_indexes_total",
            "Indexes to vacuum or clean up in the current phase",
        )
        .expr("s.indexes_total")
        .labels(BY_TABLE)
        .since(PG17),
        Column::gauge(
            "indexes_processed",
            "pg_stat_progress_vacuum_indexes_processed",
            "Indexes vacuumed or cleaned up so far in the current phase",
        )
        .expr("s.indexes_processed")
        .labels(BY_TABLE)
        .since(PG17),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn seventeen_reads_the_renamed_columns() {
        let old = TABLE.sql(160000);
        assert!(old.contains("(s.num_dead_tuples)::float8 AS num_dead_tuples") && !old.contains("num_dead_item_ids"));
        let new = TABLE.sql(170000);
        assert!(new.contains("(s.num_dead_item_ids)::float8 AS num_dead_tuples") && !new.contains("s.max_dead_tuples"));
    }

    #[test]
    fn one_hot_phase() {
        let rows: Vec<Row> = ["scanning heap", "vacuuming heap"]
            .iter()
            .map(|p| {
                let one = if *p == "scanning heap" { 1.0 } else { 0.0 };
                Row::new(
                    &["app", "public.t", p],
                    &[("phase_one", one), ("heap_blks_scanned", 40.0)],
                )
            })
            .collect();
        let f = TABLE.families(160000, &rows);
        assert_eq!(
            value(
                &f,
                "pg_stat_progress_vacuum_phase",
                &["app", "public.t", "scanning heap"]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &f,
                "pg_stat_progress_vacuum_phase",
                &["app", "public.t", "vacuuming heap"]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&f, "pg_stat_progress_vacuum_heap_blks_scanned", &["app", "public.t"]),
            Some(40.0)
        );
    }
}
