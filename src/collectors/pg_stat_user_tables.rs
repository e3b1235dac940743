//! `stat_user_tables`: per-table scan, row and maintenance counters and
//! sizes, from `pg_stat_user_tables`.
//!
//! Metrics, labels `datname`, `schemaname`, `relname` (postgres_exporter's
//! names and types; its counters carry no `_total`, so neither do these):
//! - counters: `pg_stat_user_tables_seq_scan`, `_seq_tup_read`, `_idx_scan`
//!   (0 for a table without indexes), `_idx_tup_fetch`, `_n_tup_ins`,
//!   `_n_tup_upd`, `_n_tup_del`, `_n_tup_hot_upd`, `_vacuum_count`,
//!   `_autovacuum_count`, `_analyze_count`, `_autoanalyze_count`.
//! - gauges: `_n_live_tup`, `_n_dead_tup`, `_n_mod_since_analyze`,
//!   `_last_vacuum`, `_last_autovacuum`, `_last_analyze`, `_last_autoanalyze`
//!   (unix time, 0 if never), `pg_stat_user_tables_index_size_bytes`,
//!   `pg_stat_user_tables_table_size_bytes`.
//! - new in pgsidecar: `pg_stat_user_tables_dead_tuple_ratio` gauge,
//!   `n_dead_tup / (n_live_tup + n_dead_tup)`, 0 for an empty table.
//!
//! `datname` is the database pgsidecar is connected to. Tables are filtered
//! by `checks.relations` and capped at its `max_series`, biggest first.
//!
//! Version gates: none.

use super::{
    Client, CollectFuture, Column, Ctx, Definition, Scope, column_families, read_table_rows, relation_filter,
    select_list,
};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "stat_user_tables",
    enabled_by_default: true,
    default_interval: None,
    scope: Scope::Server,
    collect,
};

const COLUMNS: &[Column] = &[
    Column::counter(
        "seq_scan",
        "pg_stat_user_tables_seq_scan",
        "Number of sequential scans started on this table",
    ),
    Column::counter(
        "seq_tup_read",
        "pg_stat_user_tables_seq_tup_read",
        "Number of live rows read by sequential scans",
    ),
    Column::counter(
        "idx_scan",
        "pg_stat_user_tables_idx_scan",
        "Number of index scans started on this table",
    ),
    Column::counter(
        "idx_tup_fetch",
        "pg_stat_user_tables_idx_tup_fetch",
        "Number of live rows fetched by index scans",
    ),
    Column::counter("n_tup_ins", "pg_stat_user_tables_n_tup_ins", "Number of rows inserted"),
    Column::counter("n_tup_upd", "pg_stat_user_tables_n_tup_upd", "Number of rows updated"),
    Column::counter("n_tup_del", "pg_stat_user_tables_n_tup_del", "Number of rows deleted"),
    Column::counter(
        "n_tup_hot_upd",
        "pg_stat_user_tables_n_tup_hot_upd",
        "Number of rows updated without a new index entry (HOT updates)",
    ),
    Column::gauge(
        "n_live_tup",
        "pg_stat_user_tables_n_live_tup",
        "Estimated number of live rows",
    ),
    Column::gauge(
        "n_dead_tup",
        "pg_stat_user_tables_n_dead_tup",
        "Estimated number of dead rows",
    ),
    Column::gauge(
        "n_mod_since_analyze",
        "pg_stat_user_tables_n_mod_since_analyze",
        "Estimated number of rows changed since the table was last analyzed",
    ),
    Column::counter(
        "vacuum_count",
        "pg_stat_user_tables_vacuum_count",
        "Number of times this table has been vacuumed by hand",
    ),
    Column::counter(
        "autovacuum_count",
        "pg_stat_user_tables_autovacuum_count",
        "Number of times this table has been vacuumed by autovacuum",
    ),
    Column::counter(
        "analyze_count",
        "pg_stat_user_tables_analyze_count",
        "Number of times this table has been analyzed by hand",
    ),
    Column::counter(
        "autoanalyze_count",
        "pg_stat_user_tables_autoanalyze_count",
        "Number of times this table has been analyzed by autovacuum",
    ),
];

/// Timestamps and sizes: computed in the SQL, not plain columns.
const COMPUTED: &[Column] = &[
    Column::gauge(
        "last_vacuum",
        "pg_stat_user_tables_last_vacuum",
        "Last time this table was vacuumed by hand (unix time, 0 if never)",
    ),
    Column::gauge(
        "last_autovacuum",
        "pg_stat_user_tables_last_autovacuum",
        "Last time this table was vacuumed by autovacuum (unix time, 0 if never)",
    ),
    Column::gauge(
        "last_analyze",
        "pg_stat_user_tables_last_analyze",
        "Last time this table was analyzed by hand (unix time, 0 if never)",
    ),
    Column::gauge(
        "last_autoanalyze",
        "pg_stat_user_tables_last_autoanalyze",
        "Last time this table was analyzed by autovacuum (unix time, 0 if never)",
    ),
    Column::gauge(
        "index_size",
        "pg_stat_user_tables_index_size_bytes",
        "Total disk space used by the table's indexes, in bytes",
    ),
    Column::gauge(
        "table_size",
        "pg_stat_user_tables_table_size_bytes",
        "Disk space used by the table without its indexes (TOAST included), in bytes",
    ),
];

const LABELS: &[&str] = &["datname", "schemaname", "relname"];

/// The SQL for a server version; `$1`..`$4` are [`relation_params`].
pub fn sql(version: u32) -> String {
    format!(
        "SELECT current_database()::text AS datname, schemaname::text AS schemaname, relname::text AS relname, {}, \
         extract(epoch FROM last_vacuum)::float8 AS last_vacuum, \
         extract(epoch FROM last_autovacuum)::float8 AS last_autovacuum, \
         extract(epoch FROM last_analyze)::float8 AS last_analyze, \
         extract(epoch FROM last_autoanalyze)::float8 AS last_autoanalyze, \
         pg_indexes_size(relid)::float8 AS index_size, pg_table_size(relid)::float8 AS table_size \
         FROM pg_stat_user_tables WHERE {} \
         ORDER BY table_size DESC NULLS LAST, schemaname, relname",
        select_list(COLUMNS, version),
        relation_filter("schemaname", "relname", 1)
    )
}

pub type Row = super::TableRow;

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let sql = sql(ctx.server_version_num);
        let rows = read_table_rows(client, ctx, "stat_user_tables", &sql, &[COLUMNS, COMPUTED]).await?;
        Ok(families(&rows))
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    let it = rows.iter().map(Row::labelled);
    let mut out = column_families(COLUMNS, LABELS, it.clone());
    out.extend(column_families(COMPUTED, LABELS, it));
    let mut ratio = Family::gauge(
        "pg_stat_user_tables_dead_tuple_ratio",
        "Share of the table's rows that are dead: n_dead_tup / (n_live_tup + n_dead_tup), 0 if both are 0",
        LABELS,
    );
    for r in rows {
        let get = |c: &str| r.values.get(c).copied().unwrap_or(0.0);
        let (live, dead) = (get("n_live_tup"), get("n_dead_tup"));
        let value = if live + dead > 0.0 { dead / (live + dead) } else { 0.0 };
        ratio.set(&[&r.datname, &r.schemaname, &r.relname], value);
    }
    out.push(ratio);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(relname: &str, values: &[(&'static str, f64)]) -> Row {
        Row {
            datname: "app".into(),
            schemaname: "public".into(),
            relname: relname.into(),
            values: values.iter().copied().collect(),
        }
    }

    #[test]
    fn families_carry_names_types_and_the_dead_tuple_ratio() {
        let rows = [
            row(
                "messages",
                &[
                    ("seq_scan", 12.0),
                    ("n_live_tup", 2500.0),
                    ("n_dead_tup", 2500.0),
                    ("table_size", 8192.0),
                    ("last_vacuum", 0.0),
                ],
            ),
            row("empty", &[("n_live_tup", 0.0), ("n_dead_tup", 0.0)]),
        ];
        let f = families(&rows);
        let find = |n: &str| f.iter().find(|f| f.name() == n).unwrap();
        let labels = ["app", "public", "messages"];
        assert_eq!(find("pg_stat_user_tables_seq_scan").get(&labels), Some(12.0));
        assert_eq!(find("pg_stat_user_tables_table_size_bytes").get(&labels), Some(8192.0));
        assert_eq!(find("pg_stat_user_tables_last_vacuum").get(&labels), Some(0.0));
        let ratio = find("pg_stat_user_tables_dead_tuple_ratio");
        assert_eq!(ratio.get(&labels), Some(0.5));
        assert_eq!(ratio.get(&["app", "public", "empty"]), Some(0.0));
        let text = String::from_utf8(crate::metrics::encode(f.clone()).to_vec()).unwrap();
        assert!(text.contains("# TYPE pg_stat_user_tables_seq_scan counter"), "{text}");
        assert!(text.contains("# TYPE pg_stat_user_tables_n_dead_tup gauge"), "{text}");
        assert!(text.contains("# TYPE pg_stat_user_tables_last_vacuum gauge"), "{text}");
    }

    #[test]
    fn sql_filters_and_orders_by_size() {
        let s = sql(150000);
        assert!(s.contains("idx_scan::float8 AS idx_scan"), "{s}");
        assert!(s.contains("$4::text[]"), "{s}");
        assert!(s.contains("ORDER BY table_size DESC"), "{s}");
    }
}
