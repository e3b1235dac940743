//! `stat_user_indexes`: per-index scans, size and block I/O, from
//! `pg_stat_user_indexes`, `pg_statio_user_indexes`, `pg_index` and
//! `pg_relation_size()`.
//!
//! Metrics, labels `datname`, `schemaname`, `relname`, `indexrelname`
//! (postgres_exporter has no per-index scans; these names are pgsidecar's):
//! - counters `pg_stat_user_indexes_idx_scan_total`,
//!   `_idx_tup_read_total`, `_idx_tup_fetch_total`.
//! - `pg_stat_user_indexes_size_bytes` gauge.
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
//! `checks.relations` picks the tables; at most `max_series` indexes are
//! reported, the biggest first (see [`super::cap`]).

use std::collections::BTreeMap;

use super::{
    Client, CollectFuture, Column, Ctx, Definition, Scope, cap, column_families, float, query_params, read_columns,
    relation_filter, relation_params, select_list, text,
};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "stat_user_indexes",
    enabled_by_default: true,
    default_interval: None,
    scope: Scope::Server,
    collect,
};

const PG16: u32 = 160000;

const COLUMNS: &[Column] = &[
    Column::counter(
        "idx_scan",
        "pg_stat_user_indexes_idx_scan_total",
        "Number of index scans initiated on this index",
    ),
    Column::counter(
        "idx_tup_read",
        "pg_stat_user_indexes_idx_tup_read_total",
        "Number of index entries returned by scans on this index",
    ),
    Column::counter(
        "idx_tup_fetch",
        "pg_stat_user_indexes_idx_tup_fetch_total",
        "Number of live table rows fetched by simple index scans using this index",
    ),
    Column::gauge(
        "size_bytes",
        "pg_stat_user_indexes_size_bytes",
        "Disk space used by this index",
    ),
];

/// A timestamp, read apart from the numeric columns.
const LAST_SCAN: &[Column] = &[Column::gauge(
    "last_idx_scan",
    "pg_stat_user_indexes_last_idx_scan_timestamp_seconds",
    "Time of the last scan on this index (unix time, 0 if never)",
)
.since(PG16)];

const STATIO_COLUMNS: &[Column] = &[
    Column::counter(
        "idx_blks_read",
        "pg_statio_user_indexes_idx_blks_read_total",
        "Number of disk blocks read from this index",
    ),
    Column::counter(
        "idx_blks_hit",
        "pg_statio_user_indexes_idx_blks_hit_total",
        "Number of buffer hits in this index",
    ),
];

const LABELS: &[&str] = &["datname", "schemaname", "relname", "indexrelname"];

/// The SQL for a server version; `$1`..`$4` are [`relation_params`].
pub fn sql(version: u32) -> String {
    let last_scan = if version >= PG16 {
        ", COALESCE(extract(epoch FROM last_idx_scan), 0)::float8 AS last_idx_scan"
    } else {
        ""
    };
    format!(
        "SELECT current_database()::text AS datname, schemaname, relname, indexrelname, {}, {}, \
         unused::int::float8 AS unused{last_scan} \
         FROM (SELECT s.*, pg_relation_size(s.indexrelid) AS size_bytes, io.idx_blks_read, io.idx_blks_hit, \
           s.idx_scan = 0 AND NOT x.indisunique AND NOT x.indisprimary \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = s.indexrelid) AS unused \
           FROM pg_stat_user_indexes s JOIN pg_index x ON x.indexrelid = s.indexrelid \
           LEFT JOIN pg_statio_user_indexes io ON io.indexrelid = s.indexrelid) i \
         WHERE {} ORDER BY size_bytes DESC, schemaname, indexrelname",
        select_list(COLUMNS, version),
        select_list(STATIO_COLUMNS, version),
        relation_filter("schemaname::text", "relname::text", 1)
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub datname: String,
    pub schemaname: String,
    pub relname: String,
    pub indexrelname: String,
    pub unused: bool,
    /// Column name → value; only the columns this server version has.
    pub values: BTreeMap<&'static str, f64>,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let what = "stat_user_indexes";
        let v = ctx.server_version_num;
        let [a, b, c, d] = relation_params(&ctx.checks.relations);
        let mut rows = Vec::new();
        for r in query_params(client, what, &sql(v), &[a, b, c, d]).await? {
            let mut values = read_columns(&r, what, COLUMNS, v)?;
            values.extend(read_columns(&r, what, LAST_SCAN, v)?);
            values.extend(read_columns(&r, what, STATIO_COLUMNS, v)?);
            rows.push(Row {
                datname: text(&r, what, "datname")?,
                schemaname: text(&r, what, "schemaname")?,
                relname: text(&r, what, "relname")?,
                indexrelname: text(&r, what, "indexrelname")?,
                unused: float(&r, what, "unused")? > 0.0,
                values,
            });
        }
        Ok(families(&cap(ctx, rows)))
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    let mut out = Vec::new();
    let it = rows.iter().map(|r| {
        (
            vec![
                r.datname.as_str(),
                r.schemaname.as_str(),
                r.relname.as_str(),
                r.indexrelname.as_str(),
            ],
            &r.values,
        )
    });
    out.extend(column_families(COLUMNS, LABELS, it.clone()));
    out.extend(column_families(LAST_SCAN, LABELS, it.clone()));
    let statio = it.map(|(labels, values)| (labels[1..].to_vec(), values));
    out.extend(column_families(STATIO_COLUMNS, &LABELS[1..], statio));
    let mut unused = Family::gauge(
        "pgsidecar_index_unused",
        "1 for an index never scanned that is not unique, not a primary key and backs no constraint",
        LABELS,
    );
    for r in rows.iter().filter(|r| r.unused) {
        unused.set(&[&r.datname, &r.schemaname, &r.relname, &r.indexrelname], 1.0);
    }
    out.push(unused);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, unused: bool, size: f64) -> Row {
        Row {
            datname: "app".into(),
            schemaname: "public".into(),
            relname: "t".into(),
            indexrelname: name.into(),
            unused,
            values: [("idx_scan", 0.0), ("size_bytes", size), ("idx_blks_hit", 5.0)]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn version_gates_pick_columns() {
        assert!(!sql(150000).contains("last_idx_scan"));
        assert!(sql(160000).contains("extract(epoch FROM last_idx_scan)"));
    }

    #[test]
    fn statio_keeps_the_peers_labels_and_only_unused_ones_are_flagged() {
        let f = families(&[row("big", false, 900.0), row("small", true, 10.0)]);
        let get = |n: &str, l: &[&str]| f.iter().find(|f| f.name() == n).and_then(|f| f.get(l));
        let big = ["app", "public", "t", "big"];
        assert_eq!(get("pg_stat_user_indexes_size_bytes", &big), Some(900.0));
        assert_eq!(get("pg_statio_user_indexes_idx_blks_hit_total", &big[1..]), Some(5.0));
        assert_eq!(get("pgsidecar_index_unused", &big), None);
        assert_eq!(
            get("pgsidecar_index_unused", &["app", "public", "t", "small"]),
            Some(1.0)
        );
        assert_eq!(get("pg_stat_user_indexes_last_idx_scan_timestamp_seconds", &big), None);
    }
}
