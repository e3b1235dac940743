//! `relation_sizes`: the disk space of tables, indexes and materialized
//! views, from `pg_class` and the size functions (`pg_table_size`,
//! `pg_indexes_size`, `pg_relation_size`, `pg_total_relation_size`), on its
//! own long interval (5 minutes unless configured).
//!
//! A size function stats every file of a relation and takes its
//! `AccessShareLock`, so it waits behind any `ACCESS EXCLUSIVE` lock (a
//! migration, a `REFRESH MATERIALIZED VIEW`, a `VACUUM FULL`). Sizes change
//! slowly, so they are read here, apart from the per-relation counters,
//! which run every round and take no relation lock at all.
//!
//! Only what changed is sized (issue 13). Each row carries a change key:
//! the relation's oid and file node, its inserted, updated and deleted row
//! counts and its (auto)vacuum counts (for an index, its table's), its TOAST
//! table's vacuum counts and, for a table or a view, its indexes' oids and
//! file nodes. A relation grows only by writes, shrinks only by a vacuum
//! or a rewrite (a new file node), and gains or loses index space only with
//! those or with an index made or dropped, so an unchanged key means an
//! unchanged size: the run reports the size read before and calls no size
//! function for it. The keys of the last readings go to the server as a
//! `text[]` parameter; the statement sizes the rows whose key is not among
//! them. What the keys cannot see is made up for by re-reading: each run
//! leaves out the [`readings::REREAD_EVERY`]th part of the readings, the
//! oldest, so that every size is read again at least once in that many runs
//! (an hour at the default interval), whatever happened. Two cases reuse nothing: a standby (replay
//! moves no counter) and `track_counts = off` (no counter moves at all).
//! The readings are kept per database in the collector's memory
//! ([`super::Memory`], [`readings`]); a failed run forgets them, and the
//! next one sizes everything.
//!
//! Each query reads `pg_locks` once and does not size a relation that has
//! an `AccessExclusiveLock` granted or awaited (for a table or a view, also
//! on its TOAST table or one of its indexes, which the size function opens):
//! such a relation is reported with the size read before if its key has not
//! changed, and otherwise skipped, counted and named in a note. A lock taken
//! between that reading and the size function is met by the session's
//! `lock_timeout`, which fails only this collector's run.
//!
//! Metrics (the same names and labels the per-relation collectors exported
//! before, which rules and dashboards use):
//! - `pg_stat_user_tables_table_size_bytes`, `pg_stat_user_tables_index_size_bytes`
//!   gauges, labels `datname`, `schemaname`, `relname`: the tables
//!   `stat_user_tables` reports (its picking subquery: the same filter and
//!   cap, biggest first by `pg_class.relpages`).
//! - `pg_stat_user_indexes_size_bytes` gauge, labels `datname`, `schemaname`,
//!   `relname`, `indexrelname`: the indexes `stat_user_indexes` reports (its
//!   picking subquery).
//! - `pg_matview_size_bytes` gauge, labels `datname`, `schemaname`,
//!   `matviewname`: size of every materialized view `checks.relations` lets
//!   through, with its indexes.
//! - `pgsidecar_relation_sizes_skipped` gauge, label `kind` (`table`,
//!   `index`, `matview`): relations of this run left unsized because of an
//!   `ACCESS EXCLUSIVE` lock.
//! - `pgsidecar_relation_sizes_reused` gauge, label `kind`: relations whose
//!   size this run reported from an earlier reading, their key unchanged.
//!
//! Three queries per run, whatever the number of relations. Version gates:
//! none (`MATERIALIZED` CTEs are PostgreSQL 12+).

use std::time::Duration;

use super::readings::{self, Readings};
use super::{Client, CollectFuture, Ctx, Definition, Exports, float, query, relation_filter, relation_params, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("relation_sizes", collect)
    .every(Duration::from_secs(300))
    .per_database()
    .exports(Exports {
        families: &[
            "pg_stat_user_tables_table_size_bytes",
            "pg_stat_user_tables_index_size_bytes",
            "pg_stat_user_indexes_size_bytes",
            "pg_matview_size_bytes",
            "pgsidecar_relation_sizes_skipped",
            "pgsidecar_relation_sizes_reused",
        ],
        // The metric names that are postgres_exporter's.
        upstream: &[
            "pg_stat_user_tables_table_size_bytes",
            "pg_stat_user_tables_index_size_bytes",
        ],
    });

/// The relations whose `AccessExclusiveLock` is granted or awaited in this
/// database, read once per query, and the change keys (`${known}`) whose
/// sizes may be reused.
fn with(known: usize) -> String {
    format!(
        "WITH locked AS MATERIALIZED (\
         SELECT relation FROM pg_locks WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())), {}",
        readings::known(known)
    )
}

/// Whether the relation `{r}.oid` with the TOAST table `{r}.reltoastrelid`,
/// or one of its indexes, is in `locked`.
fn locked_with_indexes(r: &str) -> String {
    format!(
        "({r}.oid IN (SELECT relation FROM locked) OR {r}.reltoastrelid IN (SELECT relation FROM locked) \
         OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = {r}.oid \
         AND i.indexrelid IN (SELECT relation FROM locked)))"
    )
}

/// The change key of a table or materialized view `{r}` (`oid`,
/// `relfilenode`, `reltoastrelid`), prefixed by `kind`.
fn relation_key(kind: &str, r: &str) -> String {
    format!(
        "'{kind}:' || concat_ws(':', {r}.oid, {r}.relfilenode, pg_stat_get_tuples_inserted({r}.oid), \
         pg_stat_get_tuples_updated({r}.oid), pg_stat_get_tuples_deleted({r}.oid), \
         pg_stat_get_vacuum_count({r}.oid), pg_stat_get_autovacuum_count({r}.oid), \
         pg_stat_get_vacuum_count({r}.reltoastrelid), pg_stat_get_autovacuum_count({r}.reltoastrelid), \
         (SELECT string_agg(x.indexrelid || '.' || pg_relation_filenode(x.indexrelid), ',') \
          FROM pg_index x WHERE x.indrelid = {r}.oid))"
    )
}

/// The select list around a keyed subquery `k`: whether the key is known
/// and whether a lock is in the way (`locked`), as `float8` 0/1.
fn reused_and_locked(locked: &str) -> String {
    format!("k.*, k.key IN (SELECT key FROM known) AS reused, {locked} AS locked")
}

/// A size expression, evaluated only for a row that needs it.
fn size(expr: &str) -> String {
    format!("CASE WHEN NOT reused AND NOT locked THEN {expr}::float8 END")
}

/// Tables: the rows `stat_user_tables` picks (`$1`..`$5`), sized outside
/// the picking subquery.
fn tables_sql(version: u32) -> String {
    let picked = super::pg_stat_user_tables::PICK.sql(version);
    format!(
        "{} SELECT schemaname, relname, total, key, \
         reused::int::float8 AS reused, locked::int::float8 AS locked, \
         {} AS table_size, {} AS index_size \
         FROM (SELECT {} FROM (\
           SELECT p.oid, p.reltoastrelid, p.nspname::text AS schemaname, p.relname::text AS relname, \
           p.total::float8 AS total, {} AS key FROM {picked}) k OFFSET 0) u",
        with(6),
        size("pg_table_size(oid)"),
        size("pg_indexes_size(oid)"),
        reused_and_locked(&locked_with_indexes("k")),
        relation_key("t", "p"),
    )
}

/// Indexes: the rows `stat_user_indexes` picks.
fn indexes_sql(version: u32) -> String {
    let picked = super::pg_stat_user_indexes::PICK.sql(version);
    format!(
        "{} SELECT schemaname, relname, indexrelname, total, key, \
         reused::int::float8 AS reused, locked::int::float8 AS locked, {} AS size_bytes \
         FROM (SELECT {} FROM (\
           SELECT p.oid, p.nspname::text AS schemaname, p.relname::text AS relname, \
           p.indexrelname::text AS indexrelname, p.total::float8 AS total, \
           'i:' || concat_ws(':', p.oid, p.relfilenode, pg_stat_get_tuples_inserted(p.indrelid), \
           pg_stat_get_tuples_updated(p.indrelid), pg_stat_get_tuples_deleted(p.indrelid), \
           pg_stat_get_vacuum_count(p.indrelid), pg_stat_get_autovacuum_count(p.indrelid)) AS key \
           FROM {picked}) k OFFSET 0) u",
        with(6),
        size("pg_relation_size(oid)"),
        reused_and_locked("k.oid IN (SELECT relation FROM locked)"),
    )
}

/// Materialized views: the filter of `matviews` (no cap there either).
fn matviews_sql() -> String {
    format!(
        "{} SELECT schemaname, matviewname, key, \
         reused::int::float8 AS reused, locked::int::float8 AS locked, {} AS size_bytes \
         FROM (SELECT {} FROM (\
           SELECT c.oid, c.reltoastrelid, m.schemaname::text AS schemaname, m.matviewname::text AS matviewname, \
           {} AS key \
           FROM pg_matviews m JOIN pg_namespace n ON n.nspname = m.schemaname \
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = m.matviewname WHERE {} \
           ORDER BY 3, 4 OFFSET 0) k OFFSET 0) u",
        with(5),
        size("pg_total_relation_size(oid)"),
        reused_and_locked(&locked_with_indexes("k")),
        relation_key("m", "c"),
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
    /// Whether the sizes are an earlier reading's (the key unchanged).
    pub reused: bool,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let version = ctx.server_version_num;
        let [a, b, c, d] = relation_params(&ctx.checks.relations);
        let limit = i64::try_from(ctx.checks.relations.max_series).unwrap_or(i64::MAX);
        let last: Readings = ctx.recall("relation_sizes");
        let known = last.reusable();
        let mut next = last.next();
        // Every row's `datname`, the session's.
        let datname = ctx.database(client).await?;
        let mut out = Vec::new();
        let mut omitted = 0;

        let rows = query(
            client,
            "table sizes",
            &tables_sql(version),
            &[a, b, c, d, &limit, &known],
        )
        .await?;
        omitted += left_out(&rows)?;
        for r in &rows {
            let labels = vec![datname.clone(), text(r, "schemaname")?, text(r, "relname")?];
            let read = || Ok((float(r, "table_size")?, float(r, "index_size")?));
            out.extend(sized(Kind::Table, labels, r, read, &last, &mut next)?);
        }

        let rows = query(
            client,
            "index sizes",
            &indexes_sql(version),
            &[a, b, c, d, &limit, &known],
        )
        .await?;
        omitted += left_out(&rows)?;
        for r in &rows {
            let labels = vec![
                datname.clone(),
                text(r, "schemaname")?,
                text(r, "relname")?,
                text(r, "indexrelname")?,
            ];
            let read = || Ok((float(r, "size_bytes")?, 0.0));
            out.extend(sized(Kind::Index, labels, r, read, &last, &mut next)?);
        }

        let rows = query(
            client,
            "materialized view sizes",
            &matviews_sql(),
            &[a, b, c, d, &known],
        )
        .await?;
        for r in &rows {
            let labels = vec![datname.clone(), text(r, "schemaname")?, text(r, "matviewname")?];
            let read = || Ok((float(r, "size_bytes")?, 0.0));
            out.extend(sized(Kind::Matview, labels, r, read, &last, &mut next)?);
        }
        ctx.omitted(omitted);
        if let Some(note) = skipped_note(&out) {
            ctx.note(note);
        }
        ctx.keep("relation_sizes", next);
        Ok(families(&out))
    })
}

/// One row: its sizes read now (`read`), or reused from `last` if the server
/// found its key among the known ones, or none if a lock was in the way.
/// What the row ends with goes into `next`.
fn sized(
    kind: Kind,
    labels: Vec<String>,
    r: &tokio_postgres::Row,
    read: impl FnOnce() -> Result<(f64, f64), super::CollectError>,
    last: &Readings,
    next: &mut Readings,
) -> Result<Option<Sized>, super::CollectError> {
    let key = text(r, "key")?;
    let reused = float(r, "reused")? == 1.0;
    let sizes = if !reused && float(r, "locked")? == 1.0 {
        None
    } else {
        // The server reuses only keys it was sent, which are all in `last`.
        let Some(sizes) = last.sizes(next, key, reused, read)? else {
            return Ok(None);
        };
        Some(sizes)
    };
    Ok(Some(Sized {
        kind,
        labels,
        sizes,
        reused,
    }))
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
    let mut reused = Family::gauge(
        "pgsidecar_relation_sizes_reused",
        "Relations whose size the last run reported from an earlier reading: no write, vacuum or rewrite since",
        &["kind"],
    );
    for kind in Kind::ALL {
        let n = rows.iter().filter(|r| r.kind == kind && r.sizes.is_none()).count();
        skipped.set(&[kind.label()], n as f64);
        let n = rows.iter().filter(|r| r.kind == kind && r.reused).count();
        reused.set(&[kind.label()], n as f64);
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
    vec![table, index, one_index, matview, skipped, reused]
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
            reused: false,
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
    fn sizes_are_computed_after_the_cap_and_only_for_changed_unlocked_relations() {
        for sql in [tables_sql(150000), indexes_sql(150000), matviews_sql()] {
            assert!(
                sql.starts_with("WITH locked AS MATERIALIZED (SELECT relation FROM pg_locks"),
                "{sql}"
            );
            assert!(sql.contains("known AS MATERIALIZED (SELECT key FROM unnest($"), "{sql}");
            assert!(sql.contains("CASE WHEN NOT reused AND NOT locked THEN pg_"), "{sql}");
            // The size functions appear only in the outer query.
            let inner = &sql[sql.find("FROM (SELECT k.*").unwrap()..];
            assert!(!inner.contains("_size("), "{sql}");
        }
        // The rows are the per-relation collectors' own.
        assert!(tables_sql(150000).contains(&super::super::pg_stat_user_tables::PICK.sql(150000)));
        assert!(indexes_sql(150000).contains(&super::super::pg_stat_user_indexes::PICK.sql(150000)));
        assert!(tables_sql(150000).contains("ORDER BY c.relpages DESC, n.nspname, c.relname LIMIT $5"));
        assert!(indexes_sql(150000).contains("ORDER BY ic.relpages DESC, n.nspname, ic.relname LIMIT $5"));
    }

    #[test]
    fn the_listed_families_are_the_exported_ones() {
        let names: Vec<String> = families(&[]).iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, DEFINITION.exports.families);
    }
}
