//! `statio_user_tables`: per-table buffer cache hits and block reads: the
//! values of `pg_statio_user_tables`, read through the view's definition
//! (`pg_class`, `pg_namespace`, `pg_index` and the `pg_stat_get_blocks_*`
//! functions) rather than the view. As in `pg_stat_user_tables.rs`, one
//! subquery picks the capped set from `pg_class` and the functions run only
//! for the picked tables, their indexes (`LATERAL` sums), their TOAST table
//! (`reltoastrelid`, NULL for none as the view's outer join gives) and its
//! indexes; reading the view twice (to pick, then for the picked rows) cost
//! the catalog scans and every table's sums twice (issue 13). `_read` is
//! `blocks_fetched - blocks_hit`, as the view computes it.
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
//! Version gates: none (the view's relkinds are tables, TOAST tables and
//! materialized views on every version).

use super::Definition;
use super::table::{Column, Params, Pick, Table, label};

pub const DEFINITION: Definition = Definition::table("statio_user_tables", TABLE).phase(2).per_database();

/// The sums over the indexes of the relation `of`, as the view's.
macro_rules! index_sums {
    ($alias:literal, $of:literal) => {
        concat!(
            "LEFT JOIN LATERAL (SELECT sum(pg_stat_get_blocks_fetched(x.indexrelid) \
             - pg_stat_get_blocks_hit(x.indexrelid)) AS blks_read, \
             sum(pg_stat_get_blocks_hit(x.indexrelid)) AS blks_hit \
             FROM pg_index x WHERE x.indrelid = ",
            $of,
            ") ",
            $alias,
            " ON true"
        )
    };
}

const TABLE: Table = Table {
    from: concat!(index_sums!("i", "p.oid"), " ", index_sums!("t", "p.toast")),
    labels: &[
        label("datname").session_database(),
        label("schemaname").from("p.nspname"),
        label("relname").from("p.relname"),
    ],
    columns: COLUMNS,
    params: Params::Relations(Pick {
        view: "pg_statio_user_tables",
        pick: "c.oid, n.nspname, c.relname, NULLIF(c.reltoastrelid, 0) AS toast",
        pick_from: "pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
        kinds: &[(0, "c.relkind IN ('r', 't', 'm')")],
        schema: "n.nspname::text",
        relname: "c.relname::text",
        order: "c.relpages DESC, n.nspname, c.relname",
    }),
};

const COLUMNS: &[Column] = &[
    Column::counter(
        "heap_blks_read",
        "pg_statio_user_tables_heap_blocks_read",
        "Number of disk blocks read from this table",
    )
    .expr("pg_stat_get_blocks_fetched(p.oid) - pg_stat_get_blocks_hit(p.oid)")
    .upstream(),
    Column::counter(
        "heap_blks_hit",
        "pg_statio_user_tables_heap_blocks_hit",
        "Number of buffer hits in this table",
    )
    .expr("pg_stat_get_blocks_hit(p.oid)")
    .upstream(),
    Column::counter(
        "idx_blks_read",
        "pg_statio_user_tables_idx_blocks_read",
        "Number of disk blocks read from all indexes on this table",
    )
    .expr("i.blks_read")
    .upstream(),
    Column::counter(
        "idx_blks_hit",
        "pg_statio_user_tables_idx_blocks_hit",
        "Number of buffer hits in all indexes on this table",
    )
    .expr("i.blks_hit")
    .upstream(),
    Column::counter(
        "toast_blks_read",
        "pg_statio_user_tables_toast_blocks_read",
        "Number of disk blocks read from this table's TOAST table",
    )
    .expr("pg_stat_get_blocks_fetched(p.toast) - pg_stat_get_blocks_hit(p.toast)")
    .upstream(),
    Column::counter(
        "toast_blks_hit",
        "pg_statio_user_tables_toast_blocks_hit",
        "Number of buffer hits in this table's TOAST table",
    )
    .expr("pg_stat_get_blocks_hit(p.toast)")
    .upstream(),
    Column::counter(
        "tidx_blks_read",
        "pg_statio_user_tables_tidx_blocks_read",
        "Number of disk blocks read from this table's TOAST table indexes",
    )
    .expr("t.blks_read")
    .upstream(),
    Column::counter(
        "tidx_blks_hit",
        "pg_statio_user_tables_tidx_blocks_hit",
        "Number of buffer hits in this table's TOAST table indexes",
    )
    .expr("t.blks_hit")
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
        assert!(
            s.contains("(pg_stat_get_blocks_hit(p.oid))::float8 AS heap_blks_hit"),
            "{s}"
        );
        assert!(s.contains("WHERE x.indrelid = p.toast) t ON true"), "{s}");
        assert!(s.contains("ORDER BY c.relpages DESC") && !s.contains("_size("), "{s}");
    }
}
