//! `statio_user_tables`: per-table buffer cache hits and block reads, from
//! `pg_statio_user_tables`.
//!
//! Metrics, all counters, labels `datname`, `schemaname`, `relname`
//! (postgres_exporter's names; no `_total`):
//! `pg_statio_user_tables_heap_blocks_read`, `_heap_blocks_hit`,
//! `_idx_blocks_read`, `_idx_blocks_hit`, `_toast_blocks_read`,
//! `_toast_blocks_hit`, `_tidx_blocks_read`, `_tidx_blocks_hit`. A table
//! without indexes or TOAST table reports 0 for those.
//!
//! `datname` is the database pgsidecar is connected to. Tables are filtered
//! by `checks.relations` and capped at its `max_series`, biggest first by
//! `pg_class.relpages`: no size function, so no lock on any table.
//!
//! Version gates: none.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("statio_user_tables", TABLE).phase(2).per_database();

const TABLE: Table = Table {
    from: "pg_statio_user_tables s",
    labels: &[
        label("datname").from("current_database()"),
        label("schemaname").from("s.schemaname"),
        label("relname").from("s.relname"),
    ],
    columns: COLUMNS,
    params: Params::Relations {
        schema: "s.schemaname::text",
        relname: "s.relname::text",
        key: "s.relid",
        pick_from: "pg_statio_user_tables s JOIN pg_class c ON c.oid = s.relid",
        order: "c.relpages DESC, s.schemaname, s.relname",
    },
};

const COLUMNS: &[Column] = &[
    Column::counter(
        "heap_blks_read",
        "pg_statio_user_tables_heap_blocks_read",
        "Number of disk blocks read from this table",
    )
    .upstream(),
    Column::counter(
        "heap_blks_hit",
        "pg_statio_user_tables_heap_blocks_hit",
        "Number of buffer hits in this table",
    )
    .upstream(),
    Column::counter(
        "idx_blks_read",
        "pg_statio_user_tables_idx_blocks_read",
        "Number of disk blocks read from all indexes on this table",
    )
    .upstream(),
    Column::counter(
        "idx_blks_hit",
        "pg_statio_user_tables_idx_blocks_hit",
        "Number of buffer hits in all indexes on this table",
    )
    .upstream(),
    Column::counter(
        "toast_blks_read",
        "pg_statio_user_tables_toast_blocks_read",
        "Number of disk blocks read from this table's TOAST table",
    )
    .upstream(),
    Column::counter(
        "toast_blks_hit",
        "pg_statio_user_tables_toast_blocks_hit",
        "Number of buffer hits in this table's TOAST table",
    )
    .upstream(),
    Column::counter(
        "tidx_blks_read",
        "pg_statio_user_tables_tidx_blocks_read",
        "Number of disk blocks read from this table's TOAST table indexes",
    )
    .upstream(),
    Column::counter(
        "tidx_blks_hit",
        "pg_statio_user_tables_tidx_blocks_hit",
        "Number of buffer hits in this table's TOAST table indexes",
    )
    .upstream(),
];

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn blks_columns_become_blocks_counters() {
        let rows = [Row::new(
            &["app", "public", "messages"],
            &[("heap_blks_hit", 40.0), ("tidx_blks_read", 0.0)],
        )];
        let f = TABLE.families(150000, &rows);
        assert_eq!(f.len(), 8);
        let labels = ["app", "public", "messages"];
        assert_eq!(value(&f, "pg_statio_user_tables_heap_blocks_hit", &labels), Some(40.0));
        assert_eq!(value(&f, "pg_statio_user_tables_tidx_blocks_read", &labels), Some(0.0));
        let text = String::from_utf8(crate::metrics::encode(f).to_vec()).unwrap();
        assert!(
            text.contains("# TYPE pg_statio_user_tables_heap_blocks_hit counter"),
            "{text}"
        );
        let s = TABLE.sql(150000);
        assert!(s.contains("heap_blks_hit::float8 AS heap_blks_hit"), "{s}");
        assert!(s.contains("ORDER BY c.relpages DESC") && !s.contains("_size("), "{s}");
    }
}
