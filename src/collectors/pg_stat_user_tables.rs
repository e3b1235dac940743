//! `stat_user_tables`: per-table scan, row and maintenance counters: the
//! values of `pg_stat_user_tables`, read through the view's definition
//! (`pg_class`, `pg_namespace`, `pg_index` and the `pg_stat_get_*`
//! functions) rather than the view.
//!
//! Why not the view: picking the capped set from it and then reading it for
//! the picked rows scanned the catalogs several times, and ran the view's
//! `GROUP BY` over `pg_index` and every statistics function for every table
//! (issue 13). Here one subquery picks the tables from `pg_class` (the
//! view's relkinds and schemas, the filter, the biggest first by
//! `pg_class.relpages`), and the functions run in the outer select list, so
//! only for the picked tables; a `LATERAL` sum over `pg_index` gives
//! `idx_scan` and `idx_tup_fetch` as the view's `sum` does (NULL without
//! indexes).
//!
//! Metrics, labels `datname`, `schemaname`, `relname` (postgres_exporter's
//! names and types; its counters carry no `_total`, so neither do these):
//! - counters: `pg_stat_user_tables_seq_scan`, `_seq_tup_read`, `_idx_scan`
//!   (0 for a table without indexes), `_idx_tup_fetch`, `_n_tup_ins`,
//!   `_n_tup_upd`, `_n_tup_del`, `_n_tup_hot_upd`, `_vacuum_count`,
//!   `_autovacuum_count`, `_analyze_count`, `_autoanalyze_count`.
//! - gauges: `_n_live_tup`, `_n_dead_tup`, `_n_mod_since_analyze`,
//!   `_last_vacuum`, `_last_autovacuum`, `_last_analyze`, `_last_autoanalyze`
//!   (unix time, 0 if never). The sizes, `pg_stat_user_tables_index_size_bytes`
//!   and `_table_size_bytes`, are `relation_sizes`'s (`pg_class_sizes.rs`).
//! - new in pgsidecar: `pg_stat_user_tables_dead_tuple_ratio` gauge,
//!   `n_dead_tup / (n_live_tup + n_dead_tup)`, 0 for an empty table.
//!
//! `datname` is the database pgsidecar is connected to. Tables are filtered
//! by `checks.relations` and capped at its `max_series`, biggest first by
//! `pg_class.relpages` (what the last VACUUM or ANALYZE counted): no size
//! function, so the query takes no lock on any table and stats no file.
//!
//! Version gates: none among the metrics. The relkinds follow the view:
//! tables, TOAST tables and materialized views, and from PostgreSQL 14 on
//! partitioned tables.

use super::Definition;
use super::table::{Column, Params, Pick, Table, label};

pub const DEFINITION: Definition = Definition::table("stat_user_tables", TABLE).phase(1).per_database();

/// The tables read: also the ones `relation_sizes` sizes (`pg_class_sizes.rs`).
pub(super) const PICK: Pick = Pick {
    view: "pg_stat_user_tables",
    pick: "c.oid, n.nspname, c.relname, c.relfilenode, c.reltoastrelid",
    pick_from: "pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
    kinds: &[
        (0, "c.relkind IN ('r', 't', 'm')"),
        (140000, "c.relkind IN ('r', 't', 'm', 'p')"),
    ],
    schema: "n.nspname::text",
    relname: "c.relname::text",
    order: "c.relpages DESC, n.nspname, c.relname",
};

const TABLE: Table = Table {
    from: "LEFT JOIN LATERAL (SELECT sum(pg_stat_get_numscans(x.indexrelid)) AS idx_scan, \
           sum(pg_stat_get_tuples_fetched(x.indexrelid)) AS idx_tup_fetch \
           FROM pg_index x WHERE x.indrelid = p.oid) i ON true",
    labels: &[
        label("datname").session_database(),
        label("schemaname").from("p.nspname"),
        label("relname").from("p.relname"),
    ],
    columns: COLUMNS,
    params: Params::Relations(PICK),
};

const COLUMNS: &[Column] = &[
    Column::counter(
        "seq_scan",
        "pg_stat_user_tables_seq_scan",
        "Number of sequential scans started on this table",
    )
    .expr("pg_stat_get_numscans(p.oid)")
    .upstream(),
    Column::counter(
        "seq_tup_read",
        "pg_stat_user_tables_seq_tup_read",
        "Number of live rows read by sequential scans",
    )
    .expr("pg_stat_get_tuples_returned(p.oid)")
    .upstream(),
    Column::counter(
        "idx_scan",
        "pg_stat_user_tables_idx_scan",
        "Number of index scans started on this table",
    )
    .expr("i.idx_scan")
    .upstream(),
    Column::counter(
        "idx_tup_fetch",
        "pg_stat_user_tables_idx_tup_fetch",
        "Number of live rows fetched by index scans",
    )
    .expr("i.idx_tup_fetch + pg_stat_get_tuples_fetched(p.oid)")
    .upstream(),
    Column::counter("n_tup_ins", "pg_stat_user_tables_n_tup_ins", "Number of rows inserted")
        .expr("pg_stat_get_tuples_inserted(p.oid)")
        .upstream(),
    Column::counter("n_tup_upd", "pg_stat_user_tables_n_tup_upd", "Number of rows updated")
        .expr("pg_stat_get_tuples_updated(p.oid)")
        .upstream(),
    Column::counter("n_tup_del", "pg_stat_user_tables_n_tup_del", "Number of rows deleted")
        .expr("pg_stat_get_tuples_deleted(p.oid)")
        .upstream(),
    Column::counter(
        "n_tup_hot_upd",
        "pg_stat_user_tables_n_tup_hot_upd",
        "Number of rows updated without a new index entry (HOT updates)",
    )
    .expr("pg_stat_get_tuples_hot_updated(p.oid)")
    .upstream(),
    Column::gauge(
        "n_live_tup",
        "pg_stat_user_tables_n_live_tup",
        "Estimated number of live rows",
    )
    .expr("pg_stat_get_live_tuples(p.oid)")
    .upstream(),
    Column::gauge(
        "n_dead_tup",
        "pg_stat_user_tables_n_dead_tup",
        "Estimated number of dead rows",
    )
    .expr("pg_stat_get_dead_tuples(p.oid)")
    .upstream(),
    Column::gauge(
        "n_mod_since_analyze",
        "pg_stat_user_tables_n_mod_since_analyze",
        "Estimated number of rows changed since the table was last analyzed",
    )
    .expr("pg_stat_get_mod_since_analyze(p.oid)")
    .upstream(),
    Column::counter(
        "vacuum_count",
        "pg_stat_user_tables_vacuum_count",
        "Number of times this table has been vacuumed by hand",
    )
    .expr("pg_stat_get_vacuum_count(p.oid)")
    .upstream(),
    Column::counter(
        "autovacuum_count",
        "pg_stat_user_tables_autovacuum_count",
        "Number of times this table has been vacuumed by autovacuum",
    )
    .expr("pg_stat_get_autovacuum_count(p.oid)")
    .upstream(),
    Column::counter(
        "analyze_count",
        "pg_stat_user_tables_analyze_count",
        "Number of times this table has been analyzed by hand",
    )
    .expr("pg_stat_get_analyze_count(p.oid)")
    .upstream(),
    Column::counter(
        "autoanalyze_count",
        "pg_stat_user_tables_autoanalyze_count",
        "Number of times this table has been analyzed by autovacuum",
    )
    .expr("pg_stat_get_autoanalyze_count(p.oid)")
    .upstream(),
    Column::gauge(
        "last_vacuum",
        "pg_stat_user_tables_last_vacuum",
        "Last time this table was vacuumed by hand (unix time, 0 if never)",
    )
    .expr("pg_stat_get_last_vacuum_time(p.oid)")
    .epoch()
    .upstream(),
    Column::gauge(
        "last_autovacuum",
        "pg_stat_user_tables_last_autovacuum",
        "Last time this table was vacuumed by autovacuum (unix time, 0 if never)",
    )
    .expr("pg_stat_get_last_autovacuum_time(p.oid)")
    .epoch()
    .upstream(),
    Column::gauge(
        "last_analyze",
        "pg_stat_user_tables_last_analyze",
        "Last time this table was analyzed by hand (unix time, 0 if never)",
    )
    .expr("pg_stat_get_last_analyze_time(p.oid)")
    .epoch()
    .upstream(),
    Column::gauge(
        "last_autoanalyze",
        "pg_stat_user_tables_last_autoanalyze",
        "Last time this table was analyzed by autovacuum (unix time, 0 if never)",
    )
    .expr("pg_stat_get_last_autoanalyze_time(p.oid)")
    .epoch()
    .upstream(),
    Column::gauge(
        "dead_tuple_ratio",
        "pg_stat_user_tables_dead_tuple_ratio",
        "Share of the table's rows that are dead: n_dead_tup / (n_live_tup + n_dead_tup), 0 if both are 0",
    )
    .expr(
        "CASE WHEN pg_stat_get_live_tuples(p.oid) + pg_stat_get_dead_tuples(p.oid) > 0 \
         THEN pg_stat_get_dead_tuples(p.oid)::float8 \
         / (pg_stat_get_live_tuples(p.oid) + pg_stat_get_dead_tuples(p.oid)) ELSE 0 END",
    ),
];

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn families_carry_names_types_and_units() {
        let rows = [Row::new(
            &["app", "public", "messages"],
            &[
                ("seq_scan", 12.0),
                ("n_dead_tup", 4.0),
                ("last_vacuum", 0.0),
                ("dead_tuple_ratio", 0.5),
            ],
        )];
        let f = TABLE.families(150000, &rows);
        let labels = ["app", "public", "messages"];
        assert_eq!(value(&f, "pg_stat_user_tables_seq_scan", &labels), Some(12.0));
        assert_eq!(value(&f, "pg_stat_user_tables_last_vacuum", &labels), Some(0.0));
        assert_eq!(value(&f, "pg_stat_user_tables_dead_tuple_ratio", &labels), Some(0.5));
        let text = String::from_utf8(crate::metrics::encode(f).to_vec()).unwrap();
        assert!(text.contains("# TYPE pg_stat_user_tables_seq_scan counter"), "{text}");
        assert!(text.contains("# TYPE pg_stat_user_tables_n_dead_tup gauge"), "{text}");
        assert!(text.contains("# TYPE pg_stat_user_tables_last_vacuum gauge"), "{text}");
    }

    #[test]
    fn sql_filters_orders_by_pages_without_size_functions_and_reads_times_as_epochs() {
        let s = TABLE.sql(150000);
        assert!(s.contains("(i.idx_scan)::float8 AS idx_scan"), "{s}");
        assert!(
            s.contains("date_part('epoch', pg_stat_get_last_vacuum_time(p.oid)) AS last_vacuum"),
            "{s}"
        );
        assert!(s.contains("c.relkind IN ('r', 't', 'm', 'p')"), "{s}");
        assert!(TABLE.sql(130000).contains("c.relkind IN ('r', 't', 'm') AND"));
        assert!(s.contains("$4::text[]"), "{s}");
        assert!(s.contains("ORDER BY c.relpages DESC"), "{s}");
        assert!(!s.contains("_size("), "{s}");
    }
}
