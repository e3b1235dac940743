//! `relation_sizes`: the disk space of tables, indexes and materialized
//! views, from `pg_class` and the size functions (`pg_table_size`,
//! `pg_indexes_size`, `pg_relation_size`, `pg_total_relation_size`), on its
//! own long interval (5 minutes unless configured).
//!
//! A size function stats every file of a relation and takes its
//! `AccessShareLock`, so it waits behind any `ACCESS EXCLUSIVE` lock (a
//! migration, a `REFRESH MATERIALIZED VIEW`, a `VACUUM FULL`). Sizes change
//! slowly, so they are read here, apart from the per-relation counters,
//! which run every round and take no relation lock at all. Each query first
//! reads `pg_locks` once and does not size a relation that has an
//! `AccessExclusiveLock` granted or awaited (for a table or a view, also on
//! its TOAST table or one of its indexes, which the size function opens): such a relation is skipped, counted and named in a note, and the
//! others are reported. A lock taken between that reading and the size
//! function is met by the session's `lock_timeout`, which fails only this
//! collector's run.
//!
//! Metrics (the same names and labels the per-relation collectors exported
//! before, which rules and dashboards use):
//! - `pg_stat_user_tables_table_size_bytes`, `pg_stat_user_tables_index_size_bytes`
//!   gauges, labels `datname`, `schemaname`, `relname`: the tables
//!   `stat_user_tables` reports (the same filter and cap, biggest first by
//!   `pg_class.relpages`).
//! - `pg_stat_user_indexes_size_bytes` gauge, labels `datname`, `schemaname`,
//!   `relname`, `indexrelname`: the indexes `stat_user_indexes` reports.
//! - `pg_matview_size_bytes` gauge, labels `datname`, `schemaname`,
//!   `matviewname`: size of every materialized view `checks.relations` lets
//!   through, with its indexes.
//! - `pgsidecar_relation_sizes_skipped` gauge, label `kind` (`table`,
//!   `index`, `matview`): relations of this run left unsized because of an
//!   `ACCESS EXCLUSIVE` lock.
//!
//! Three queries per run, whatever the number of relations. Version gates:
//! none (`MATERIALIZED` CTEs are PostgreSQL 12+).

use std::time::Duration;

use super::{Client, CollectFuture, Ctx, Definition, float, query, relation_filter, relation_params, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("relation_sizes", collect)
    .every(Duration::from_secs(300))
    .per_database();

/// The metric names that are postgres_exporter's.
pub const UPSTREAM: &[&str] = &[
    "pg_stat_user_tables_table_size_bytes",
    "pg_stat_user_tables_index_size_bytes",
];

/// The relations whose `AccessExclusiveLock` is granted or awaited in this
/// database, read once per query.
const LOCKED: &str = "WITH locked AS MATERIALIZED (\
     SELECT relation FROM pg_locks WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock' \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))";

/// Whether the relation `{oid}` with the TOAST table `{toast}`, or one of
/// its indexes, is in `locked`.
fn locked_with_indexes(oid: &str, toast: &str) -> String {
    format!(
        "({oid} IN (SELECT relation FROM locked) OR {toast} IN (SELECT relation FROM locked) \
         OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = {oid} \
         AND i.indexrelid IN (SELECT relation FROM locked)))"
    )
}

/// Tables: the filter and the cap of `stat_user_tables` (`$1`..`$5`); the
/// sizes computed only for the capped rows, outside the `LIMIT` subquery.
fn tables_sql() -> String {
    format!(
        "{LOCKED} SELECT current_database()::text AS datname, schemaname, relname, total, \
         locked::int::float8 AS locked, \
         CASE WHEN NOT locked THEN pg_table_size(relid)::float8 END AS table_size, \
         CASE WHEN NOT locked THEN pg_indexes_size(relid)::float8 END AS index_size \
         FROM (SELECT t.*, {} AS locked FROM (\
           SELECT s.relid, c.reltoastrelid, s.schemaname::text AS schemaname, s.relname::text AS relname, \
           count(*) OVER ()::float8 AS total \
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE {} \
           ORDER BY c.relpages DESC, s.schemaname, s.relname LIMIT $5) t OFFSET 0) u",
        locked_with_indexes("t.relid", "t.reltoastrelid"),
        relation_filter("s.schemaname::text", "s.relname::text", 1)
    )
}

/// Indexes: the filter and the cap of `stat_user_indexes`.
fn indexes_sql() -> String {
    format!(
        "{LOCKED} SELECT current_database()::text AS datname, schemaname, relname, indexrelname, total, \
         locked::int::float8 AS locked, \
         CASE WHEN NOT locked THEN pg_relation_size(indexrelid)::float8 END AS size_bytes \
         FROM (SELECT t.*, t.indexrelid IN (SELECT relation FROM locked) AS locked FROM (\
           SELECT s.indexrelid, s.schemaname::text AS schemaname, s.relname::text AS relname, \
           s.indexrelname::text AS indexrelname, count(*) OVER ()::float8 AS total \
           FROM pg_stat_user_indexes s JOIN pg_class ic ON ic.oid = s.indexrelid WHERE {} \
           ORDER BY ic.relpages DESC, s.schemaname, s.indexrelname LIMIT $5) t OFFSET 0) u",
        relation_filter("s.schemaname::text", "s.relname::text", 1)
    )
}

/// Materialized views: the filter of `matviews` (no cap there either).
fn matviews_sql() -> String {
    format!(
        "{LOCKED} SELECT current_database()::text AS datname, schemaname, matviewname, \
         locked::int::float8 AS locked, \
         CASE WHEN NOT locked THEN pg_total_relation_size(oid)::float8 END AS size_bytes \
         FROM (SELECT t.*, {} AS locked FROM (\
           SELECT c.oid, c.reltoastrelid, m.schemaname::text AS schemaname, m.matviewname::text AS matviewname \
           FROM pg_matviews m JOIN pg_namespace n ON n.nspname = m.schemaname \
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = m.matviewname WHERE {} \
           ORDER BY 2, 3 OFFSET 0) t OFFSET 0) u",
        locked_with_indexes("t.oid", "t.reltoastrelid"),
        relation_filter("m.schemaname", "m.matviewname", 1)
    )
}

/// What a relation is, for the skip count and the note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Table,
    Index,
    Matview,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Table, Kind::Index, Kind::Matview];

    fn label(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::Index => "index",
            Kind::Matview => "matview",
        }
    }
}

/// One relation's sizes; `None` when it was skipped for a lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Sized {
    pub kind: Kind,
    /// `datname`, `schemaname`, the relation's name and, for an index, its
    /// table's name before it.
    pub labels: Vec<String>,
    /// Table and index size for a table; the size for an index or a view.
    pub sizes: Option<(f64, f64)>,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let [a, b, c, d] = relation_params(&ctx.checks.relations);
        let limit = i64::try_from(ctx.checks.relations.max_series).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut omitted = 0;

        let rows = query(client, "table sizes", &tables_sql(), &[a, b, c, d, &limit]).await?;
        omitted += left_out(&rows)?;
        for r in &rows {
            let sizes = (float(r, "locked")? == 0.0).then(|| (float(r, "table_size"), float(r, "index_size")));
            out.push(Sized {
                kind: Kind::Table,
                labels: vec![text(r, "datname")?, text(r, "schemaname")?, text(r, "relname")?],
                sizes: match sizes {
                    Some((t, i)) => Some((t?, i?)),
                    None => None,
                },
            });
        }

        let rows = query(client, "index sizes", &indexes_sql(), &[a, b, c, d, &limit]).await?;
        omitted += left_out(&rows)?;
        for r in &rows {
            let size = if float(r, "locked")? == 0.0 {
                Some(float(r, "size_bytes")?)
            } else {
                None
            };
            out.push(Sized {
                kind: Kind::Index,
                labels: vec![
                    text(r, "datname")?,
                    text(r, "schemaname")?,
                    text(r, "relname")?,
                    text(r, "indexrelname")?,
                ],
                sizes: size.map(|s| (s, 0.0)),
            });
        }

        for r in query(client, "materialized view sizes", &matviews_sql(), &[a, b, c, d]).await? {
            let size = if float(&r, "locked")? == 0.0 {
                Some(float(&r, "size_bytes")?)
            } else {
                None
            };
            out.push(Sized {
                kind: Kind::Matview,
                labels: vec![text(&r, "datname")?, text(&r, "schemaname")?, text(&r, "matviewname")?],
                sizes: size.map(|s| (s, 0.0)),
            });
        }
        ctx.omitted(omitted);
        if let Some(note) = skipped_note(&out) {
            ctx.note(note);
        }
        Ok(families(&out))
    })
}

/// Rows the cap left out of a capped query (its `total` counts them all).
fn left_out(rows: &[tokio_postgres::Row]) -> Result<usize, super::CollectError> {
    Ok(match rows.first() {
        Some(r) => (float(r, "total")? as usize).saturating_sub(rows.len()),
        None => 0,
    })
}

/// The note naming the relations skipped for a lock (at most ten by name).
pub fn skipped_note(rows: &[Sized]) -> Option<String> {
    let skipped: Vec<String> = rows
        .iter()
        .filter(|r| r.sizes.is_none())
        .map(|r| format!("{} {}.{}", r.kind.label(), r.labels[1], r.labels[r.labels.len() - 1]))
        .collect();
    if skipped.is_empty() {
        return None;
    }
    let more = match skipped.len() {
        n if n > 10 => format!(" and {} more", n - 10),
        _ => String::new(),
    };
    Some(format!(
        "sizes not read for {} relation(s) with an ACCESS EXCLUSIVE lock held or awaited: {}{more}",
        skipped.len(),
        skipped[..skipped.len().min(10)].join(", ")
    ))
}

pub fn families(rows: &[Sized]) -> Vec<Family> {
    let t = &["datname", "schemaname", "relname"];
    let mut table = Family::gauge(
        "pg_stat_user_tables_table_size_bytes",
        "Disk space used by the table without its indexes (TOAST included), in bytes",
        t,
    );
    let mut index = Family::gauge(
        "pg_stat_user_tables_index_size_bytes",
        "Total disk space used by the table's indexes, in bytes",
        t,
    );
    let mut one_index = Family::gauge(
        "pg_stat_user_indexes_size_bytes",
        "Disk space used by this index",
        &["datname", "schemaname", "relname", "indexrelname"],
    );
    let mut matview = Family::gauge(
        "pg_matview_size_bytes",
        "Disk space used by the materialized view and its indexes",
        &["datname", "schemaname", "matviewname"],
    );
    let mut skipped = Family::gauge(
        "pgsidecar_relation_sizes_skipped",
        "Relations left unsized by the last run because an ACCESS EXCLUSIVE lock was held or awaited",
        &["kind"],
    );
    for kind in Kind::ALL {
        let n = rows.iter().filter(|r| r.kind == kind && r.sizes.is_none()).count();
        skipped.set(&[kind.label()], n as f64);
    }
    for r in rows {
        let labels: Vec<&str> = r.labels.iter().map(String::as_str).collect();
        let Some((size, index_size)) = r.sizes else {
            continue;
        };
        match r.kind {
            Kind::Table => {
                table.set(&labels, size);
                index.set(&labels, index_size);
            }
            Kind::Index => one_index.set(&labels, size),
            Kind::Matview => matview.set(&labels, size),
        }
    }
    vec![table, index, one_index, matview, skipped]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::value;

    fn row(kind: Kind, labels: &[&str], sizes: Option<(f64, f64)>) -> Sized {
        Sized {
            kind,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            sizes,
        }
    }

    #[test]
    fn sizes_keep_the_old_names_and_locked_relations_are_counted_and_named() {
        let rows = [
            row(Kind::Table, &["app", "public", "messages"], Some((8192.0, 4096.0))),
            row(Kind::Table, &["app", "public", "locked"], None),
            row(
                Kind::Index,
                &["app", "public", "messages", "messages_pkey"],
                Some((900.0, 0.0)),
            ),
            row(Kind::Matview, &["app", "public", "summary"], Some((16384.0, 0.0))),
        ];
        let f = families(&rows);
        let m = ["app", "public", "messages"];
        assert_eq!(value(&f, "pg_stat_user_tables_table_size_bytes", &m), Some(8192.0));
        assert_eq!(value(&f, "pg_stat_user_tables_index_size_bytes", &m), Some(4096.0));
        assert_eq!(
            value(&f, "pg_stat_user_tables_table_size_bytes", &["app", "public", "locked"]),
            None
        );
        assert_eq!(
            value(
                &f,
                "pg_stat_user_indexes_size_bytes",
                &["app", "public", "messages", "messages_pkey"]
            ),
            Some(900.0)
        );
        assert_eq!(
            value(&f, "pg_matview_size_bytes", &["app", "public", "summary"]),
            Some(16384.0)
        );
        assert_eq!(value(&f, "pgsidecar_relation_sizes_skipped", &["table"]), Some(1.0));
        assert_eq!(value(&f, "pgsidecar_relation_sizes_skipped", &["matview"]), Some(0.0));
        let note = skipped_note(&rows).unwrap();
        assert!(
            note.contains("1 relation(s)") && note.contains("table public.locked"),
            "{note}"
        );
        assert_eq!(skipped_note(&rows[..1]), None);
        let many: Vec<_> = (0..12)
            .map(|i| row(Kind::Index, &["app", "s", "t", &format!("i{i}")], None))
            .collect();
        assert!(skipped_note(&many).unwrap().ends_with("index s.i9 and 2 more"));
    }

    #[test]
    fn sizes_are_computed_after_the_cap_and_never_for_a_locked_relation() {
        for sql in [tables_sql(), indexes_sql(), matviews_sql()] {
            assert!(
                sql.starts_with("WITH locked AS MATERIALIZED (SELECT relation FROM pg_locks"),
                "{sql}"
            );
            assert!(sql.contains("CASE WHEN NOT locked THEN pg_"), "{sql}");
            // The size functions appear only in the outer query.
            let inner = &sql[sql.find("FROM (SELECT t.*").unwrap()..];
            assert!(!inner.contains("_size("), "{sql}");
        }
        assert!(tables_sql().contains("ORDER BY c.relpages DESC, s.schemaname, s.relname LIMIT $5"));
        assert!(indexes_sql().contains("ORDER BY ic.relpages DESC, s.schemaname, s.indexrelname LIMIT $5"));
    }
}
