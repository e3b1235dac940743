//! `stat_user_indexes`: per-index scans and block I/O: the values of
//! `pg_stat_user_indexes` and `pg_statio_user_indexes`, read through the
//! views' definition (`pg_index`, the table's and the index's `pg_class`,
//! `pg_namespace` and the `pg_stat_get_*` functions) rather than the views.
//! One subquery picks the capped set (the views' table relkinds and
//! schemas, the filter, the biggest indexes first by `pg_class.relpages`)
//! and the functions run only for the picked indexes: picking from one view
//! and then joining both for the picked rows scanned the catalogs four
//! times per round (issue 13). `idx_blks_read` is
//! `blocks_fetched - blocks_hit`, as the view computes it.
//!
//! Metrics, labels `datname`, `schemaname`, `relname`, `indexrelname`
//! (postgres_exporter has no per-index scans; these names are pgsidecar's):
//! - counters `pg_stat_user_indexes_idx_scan_total`,
//!   `_idx_tup_read_total`, `_idx_tup_fetch_total`.
//! - `pg_stat_user_indexes_size_bytes` is `relation_sizes`'s
//!   (`pg_class_sizes.rs`), on its own longer interval.
//! - PostgreSQL ≥ 16: `pg_stat_user_indexes_last_idx_scan_timestamp_seconds`
//!   gauge (unix time of the last scan, 0 if never).
//! - `pgsidecar_index_unused` gauge: 1 for an index never scanned that is
//!   not unique, not a primary key and backs no constraint; only the 1s are
//!   exported.
//!
//! Metrics, labels `schemaname`, `relname`, `indexrelname` only
//! (postgres_exporter's names and labels): counters
//! `pg_statio_user_indexes_idx_blks_read_total`, `_idx_blks_hit_total`.
//!
//! `datname` is the database pgsidecar is connected to. `checks.relations`
//! picks the tables; at most `max_series` indexes are reported, the biggest
//! first by `pg_class.relpages`: no size function, so the query takes no
//! lock on any index or table.

use super::Definition;
use super::table::{Column, Params, Pick, Table, label};

pub const DEFINITION: Definition = Definition::table("stat_user_indexes", TABLE).phase(3).per_database();

const PG16: u32 = 160000;

const STATIO_LABELS: &[&str] = &["schemaname", "relname", "indexrelname"];

/// The indexes read: also the ones `relation_sizes` sizes (`pg_class_sizes.rs`).
pub(super) const PICK: Pick = Pick {
    view: "pg_stat_user_indexes",
    pick: "ic.oid, n.nspname, c.relname, ic.relname AS indexrelname, x.indisunique, x.indisprimary, \
           x.indrelid, ic.relfilenode",
    pick_from: "pg_index x JOIN pg_class c ON c.oid = x.indrelid \
                JOIN pg_class ic ON ic.oid = x.indexrelid \
                JOIN pg_namespace n ON n.oid = c.relnamespace",
    kinds: &[(0, "c.relkind IN ('r', 't', 'm')")],
    schema: "n.nspname::text",
    relname: "c.relname::text",
    order: "ic.relpages DESC, n.nspname, ic.relname",
};

const TABLE: Table = Table {
    from: "",
    labels: &[
        label("datname").session_database(),
        label("schemaname").from("p.nspname"),
        label("relname").from("p.relname"),
        label("indexrelname").from("p.indexrelname"),
    ],
    columns: &[
        Column::counter(
            "idx_scan",
            "pg_stat_user_indexes_idx_scan_total",
            "Number of index scans initiated on this index",
        )
        .expr("pg_stat_get_numscans(p.oid)"),
        Column::counter(
            "idx_tup_read",
            "pg_stat_user_indexes_idx_tup_read_total",
            "Number of index entries returned by scans on this index",
        )
        .expr("pg_stat_get_tuples_returned(p.oid)"),
        Column::counter(
            "idx_tup_fetch",
            "pg_stat_user_indexes_idx_tup_fetch_total",
            "Number of live table rows fetched by simple index scans using this index",
        )
        .expr("pg_stat_get_tuples_fetched(p.oid)"),
        Column::gauge(
            "last_idx_scan",
            "pg_stat_user_indexes_last_idx_scan_timestamp_seconds",
            "Time of the last scan on this index (unix time, 0 if never)",
        )
        .expr("pg_stat_get_lastscan(p.oid)")
        .epoch()
        .since(PG16),
        Column::counter(
            "idx_blks_read",
            "pg_statio_user_indexes_idx_blks_read_total",
            "Number of disk blocks read from this index",
        )
        .expr("pg_stat_get_blocks_fetched(p.oid) - pg_stat_get_blocks_hit(p.oid)")
        .labels(STATIO_LABELS)
        .upstream(),
        Column::counter(
            "idx_blks_hit",
            "pg_statio_user_indexes_idx_blks_hit_total",
            "Number of buffer hits in this index",
        )
        .expr("pg_stat_get_blocks_hit(p.oid)")
        .labels(STATIO_LABELS)
        .upstream(),
        Column::gauge(
            "unused",
            "pgsidecar_index_unused",
            "1 for an index never scanned that is not unique, not a primary key and backs no constraint",
        )
        .expr(
            // NOT IN an uncorrelated subquery: one hashed scan of
            // pg_constraint per query, not one per index (conindid has no index).
            "CASE WHEN pg_stat_get_numscans(p.oid) = 0 AND NOT p.indisunique AND NOT p.indisprimary \
             AND p.oid NOT IN (SELECT conindid FROM pg_constraint) THEN 1 END",
        )
        .skip_null(),
    ],
    params: Params::Relations(PICK),
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn version_gates_pick_columns() {
        assert!(!TABLE.sql(150000).contains("last_idx_scan"));
        let s = TABLE.sql(160000);
        assert!(s.contains("date_part('epoch', pg_stat_get_lastscan(p.oid))"), "{s}");
        assert!(s.contains("ORDER BY ic.relpages DESC") && !s.contains("_size("), "{s}");
    }

    #[test]
    fn statio_keeps_the_peers_labels_and_only_unused_ones_are_flagged() {
        let big = ["app", "public", "t", "big"];
        let small = ["app", "public", "t", "small"];
        let rows = [
            Row::new(&big, &[("idx_scan", 0.0), ("idx_blks_hit", 5.0)]),
            Row::new(&small, &[("idx_scan", 0.0), ("unused", 1.0)]),
        ];
        let f = TABLE.families(150000, &rows);
        assert_eq!(value(&f, "pg_stat_user_indexes_idx_scan_total", &big), Some(0.0));
        assert_eq!(
            value(&f, "pg_statio_user_indexes_idx_blks_hit_total", &big[1..]),
            Some(5.0)
        );
        assert_eq!(value(&f, "pgsidecar_index_unused", &big), None);
        assert_eq!(value(&f, "pgsidecar_index_unused", &small), Some(1.0));
        assert!(
            !f.iter()
                .any(|f| f.name() == "pg_stat_user_indexes_last_idx_scan_timestamp_seconds")
        );
    }
}
