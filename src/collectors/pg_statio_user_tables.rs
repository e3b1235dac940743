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
//! by `checks.relations` and capped at its `max_series`, biggest first.
//!
//! Version gates: none.

use super::{
    Client, CollectFuture, Column, Ctx, Definition, Scope, column_families, read_table_rows, relation_filter,
    select_list,
};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "statio_user_tables",
    enabled_by_default: true,
    default_interval: None,
    scope: Scope::Server,
    collect,
};

const COLUMNS: &[Column] = &[
    Column::counter(
        "heap_blks_read",
        "pg_statio_user_tables_heap_blocks_read",
        "Number of disk blocks read from this table",
    ),
    Column::counter(
        "heap_blks_hit",
        "pg_statio_user_tables_heap_blocks_hit",
        "Number of buffer hits in this table",
    ),
    Column::counter(
        "idx_blks_read",
        "pg_statio_user_tables_idx_blocks_read",
        "Number of disk blocks read from all indexes on this table",
    ),
    Column::counter(
        "idx_blks_hit",
        "pg_statio_user_tables_idx_blocks_hit",
        "Number of buffer hits in all indexes on this table",
    ),
    Column::counter(
        "toast_blks_read",
        "pg_statio_user_tables_toast_blocks_read",
        "Number of disk blocks read from this table's TOAST table",
    ),
    Column::counter(
        "toast_blks_hit",
        "pg_statio_user_tables_toast_blocks_hit",
        "Number of buffer hits in this table's TOAST table",
    ),
    Column::counter(
        "tidx_blks_read",
        "pg_statio_user_tables_tidx_blocks_read",
        "Number of disk blocks read from this table's TOAST table indexes",
    ),
    Column::counter(
        "tidx_blks_hit",
        "pg_statio_user_tables_tidx_blocks_hit",
        "Number of buffer hits in this table's TOAST table indexes",
    ),
];

const LABELS: &[&str] = &["datname", "schemaname", "relname"];

/// The SQL for a server version; `$1`..`$4` are [`relation_params`].
pub fn sql(version: u32) -> String {
    format!(
        "SELECT current_database()::text AS datname, schemaname::text AS schemaname, relname::text AS relname, {} \
         FROM pg_statio_user_tables WHERE {} \
         ORDER BY pg_table_size(relid) DESC NULLS LAST, schemaname, relname",
        select_list(COLUMNS, version),
        relation_filter("schemaname", "relname", 1)
    )
}

pub type Row = super::TableRow;

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let sql = sql(ctx.server_version_num);
        let rows = read_table_rows(client, ctx, "statio_user_tables", &sql, &[COLUMNS]).await?;
        Ok(families(&rows))
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    column_families(COLUMNS, LABELS, rows.iter().map(Row::labelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blks_columns_become_blocks_counters() {
        let rows = [Row {
            datname: "app".into(),
            schemaname: "public".into(),
            relname: "messages".into(),
            values: [("heap_blks_hit", 40.0), ("tidx_blks_read", 0.0)].into_iter().collect(),
        }];
        let f = families(&rows);
        assert_eq!(f.len(), 8);
        let get = |n: &str| {
            f.iter()
                .find(|f| f.name() == n)
                .and_then(|f| f.get(&["app", "public", "messages"]))
        };
        assert_eq!(get("pg_statio_user_tables_heap_blocks_hit"), Some(40.0));
        assert_eq!(get("pg_statio_user_tables_tidx_blocks_read"), Some(0.0));
        let text = String::from_utf8(crate::metrics::encode(f.clone()).to_vec()).unwrap();
        assert!(
            text.contains("# TYPE pg_statio_user_tables_heap_blocks_hit counter"),
            "{text}"
        );
        assert!(sql(150000).contains("heap_blks_hit::float8 AS heap_blks_hit"));
    }
}
