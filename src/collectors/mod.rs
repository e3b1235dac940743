//! The collectors and their one registration list, [`ALL`].
//!
//! A collector is a file named after the Postgres view it reads. It holds its
//! SQL as a `const`, a typed row struct, its version gates, a pure function
//! that maps rows to [`Family`] values (unit-tested with hand-built rows), and
//! a [`Definition`] that the scheduler runs. Adding a collector is one new file
//! plus one line in [`ALL`]. Collectors never touch HTTP or the snapshot.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::metrics::Family;

pub mod migrations;
pub mod pg_database;
pub mod pg_indexes;
pub mod pg_matviews;
pub mod pg_postmaster;
pub mod pg_settings;
pub mod pg_stat_activity;
pub mod pg_stat_activity_pools;
pub mod pg_stat_activity_queries;
pub mod pg_stat_database;
pub mod pg_stat_database_conflicts;
pub mod pg_stat_statements;
pub mod pg_stat_user_indexes;
pub mod pg_stat_user_tables;
pub mod pg_statio_user_tables;

/// What a collector knows (the server it talks to, the configured checks),
/// and what it reports besides its families (relations its cap left out).
/// One per run.
#[derive(Debug)]
pub struct Ctx {
    /// `server_version_num`, e.g. 150004; read once per new connection.
    pub server_version_num: u32,
    pub checks: std::sync::Arc<crate::config::Checks>,
    /// Set by [`cap`]: relations left out by `checks.relations.max_series`.
    pub omitted: std::sync::Mutex<Option<usize>>,
}

impl Ctx {
    pub fn new(server_version_num: u32, checks: std::sync::Arc<crate::config::Checks>) -> Self {
        Ctx {
            server_version_num,
            checks,
            omitted: std::sync::Mutex::new(None),
        }
    }

    /// Relations left out by the cap in this run (`None`: no cap applied).
    pub fn omitted(&self) -> Option<usize> {
        *self.omitted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub type Client = deadpool_postgres::Client;
pub type CollectFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Family>, CollectError>> + Send + 'a>>;

/// Where a collector's data comes from, which decides who runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// About this pod (its pools' connections): every sidecar runs it.
    Pod,
    /// About the whole server or its databases: only the leader runs it.
    Server,
}

/// A collector as the scheduler sees it.
pub struct Definition {
    /// The name used in the config and in the `collector` label.
    pub name: &'static str,
    pub enabled_by_default: bool,
    /// Overrides `collection.interval` when the collector is costly.
    pub default_interval: Option<Duration>,
    pub scope: Scope,
    pub collect: for<'a> fn(&'a Client, &'a Ctx) -> CollectFuture<'a>,
}

/// The registration list.
pub const ALL: &[Definition] = &[
    pg_postmaster::DEFINITION,
    pg_settings::DEFINITION,
    pg_stat_database::DEFINITION,
    pg_stat_database_conflicts::DEFINITION,
    pg_database::DEFINITION,
    pg_stat_activity::DEFINITION,
    pg_stat_statements::DEFINITION,
    pg_stat_activity_queries::DEFINITION,
    pg_stat_activity_pools::DEFINITION,
    pg_matviews::DEFINITION,
    pg_indexes::DEFINITION,
    pg_stat_user_indexes::DEFINITION,
    pg_stat_user_tables::DEFINITION,
    pg_statio_user_tables::DEFINITION,
    migrations::DEFINITION,
];

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{0}")]
    Connect(#[from] crate::db::DbError),
    #[error("query {what}: {message}")]
    Query { what: &'static str, message: String },
    #[error("timed out after {}", crate::config::show(*.0))]
    Timeout(Duration),
    #[error("collector panicked: {0}")]
    Panic(String),
    /// A prerequisite is missing (an extension not installed, a permission):
    /// reported once in the log and as `pgsidecar_collector_unavailable`.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl CollectError {
    pub fn query(what: &'static str, e: &tokio_postgres::Error) -> Self {
        CollectError::Query {
            what,
            message: crate::db::describe(e),
        }
    }
}

/// Runs `sql` (prepared once per connection) and returns its rows.
pub async fn query(client: &Client, what: &'static str, sql: &str) -> Result<Vec<tokio_postgres::Row>, CollectError> {
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(|e| CollectError::query(what, &e))?;
    client
        .query(&stmt, &[])
        .await
        .map_err(|e| CollectError::query(what, &e))
}

/// Reads a column that the SQL cast to `float8`; SQL NULL reads as 0.
pub fn float(row: &tokio_postgres::Row, what: &'static str, name: &str) -> Result<f64, CollectError> {
    row.try_get::<_, Option<f64>>(name)
        .map(|v| v.unwrap_or(0.0))
        .map_err(|e| CollectError::Query {
            what,
            message: format!("column {name}: {e}"),
        })
}

/// Reads a text-like column (`text`, `name`); SQL NULL reads as "".
pub fn text(row: &tokio_postgres::Row, what: &'static str, name: &str) -> Result<String, CollectError> {
    row.try_get::<_, Option<String>>(name)
        .map(Option::unwrap_or_default)
        .map_err(|e| CollectError::Query {
            what,
            message: format!("column {name}: {e}"),
        })
}

/// One numeric column of a statistics view and the metric it becomes. Used
/// by the collectors whose views are wide tables of counters.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub col: &'static str,
    pub metric: &'static str,
    pub help: &'static str,
    pub counter: bool,
    /// Multiplies the value into the metric's unit (ms → s is 1e-3).
    pub factor: f64,
    /// The first `server_version_num` that has the column.
    pub since: u32,
}

impl Column {
    pub const fn counter(col: &'static str, metric: &'static str, help: &'static str) -> Self {
        Column {
            col,
            metric,
            help,
            counter: true,
            factor: 1.0,
            since: 0,
        }
    }

    pub const fn gauge(col: &'static str, metric: &'static str, help: &'static str) -> Self {
        Column {
            counter: false,
            ..Column::counter(col, metric, help)
        }
    }

    pub const fn scaled(self, factor: f64) -> Self {
        Column { factor, ..self }
    }

    pub const fn since(self, since: u32) -> Self {
        Column { since, ..self }
    }
}

/// The columns a server version has.
pub fn columns_for(cols: &'static [Column], version: u32) -> impl Iterator<Item = &'static Column> {
    cols.iter().filter(move |c| version >= c.since)
}

/// `a::float8 AS a, b::float8 AS b, ...` for the columns a server version has.
pub fn select_list(cols: &'static [Column], version: u32) -> String {
    columns_for(cols, version)
        .map(|c| format!("{0}::float8 AS {0}", c.col))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the values of the columns a server version has.
pub fn read_columns(
    row: &tokio_postgres::Row,
    what: &'static str,
    cols: &'static [Column],
    version: u32,
) -> Result<std::collections::BTreeMap<&'static str, f64>, CollectError> {
    columns_for(cols, version)
        .map(|c| Ok((c.col, float(row, what, c.col)?)))
        .collect()
}

/// One family per column; each row gives its label values and its column values.
pub fn column_families<'r>(
    cols: &'static [Column],
    labels: &[&'static str],
    rows: impl Iterator<Item = (Vec<&'r str>, &'r std::collections::BTreeMap<&'static str, f64>)> + Clone,
) -> Vec<Family> {
    cols.iter()
        .map(|c| {
            let mut f = if c.counter {
                Family::counter(c.metric, c.help, labels)
            } else {
                Family::gauge(c.metric, c.help, labels)
            };
            for (label_values, values) in rows.clone() {
                if let Some(v) = values.get(c.col) {
                    f.set(&label_values, v * c.factor);
                }
            }
            f
        })
        .collect()
}

/// Runs `sql` with bind parameters (prepared once per connection).
pub async fn query_params(
    client: &Client,
    what: &'static str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, CollectError> {
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(|e| CollectError::query(what, &e))?;
    client
        .query(&stmt, params)
        .await
        .map_err(|e| CollectError::query(what, &e))
}

/// A `WHERE` fragment that applies `checks.relations` to a schema column and
/// a relation-name column, reading its four `text[]` parameters from
/// `$first`..`$first+3` (see [`relation_params`]). System schemas are always
/// left out.
pub fn relation_filter(schema_col: &str, rel_col: &str, first: usize) -> String {
    let (a, b, c, d) = (first, first + 1, first + 2, first + 3);
    format!(
        "{schema_col} NOT IN ('pg_catalog', 'information_schema') AND {schema_col} NOT LIKE 'pg\\_toast%' \
         AND (cardinality(${a}::text[]) = 0 OR {schema_col} = ANY(${a}::text[])) \
         AND NOT ({schema_col} = ANY(${b}::text[])) \
         AND (cardinality(${c}::text[]) = 0 OR {rel_col} LIKE ANY(${c}::text[])) \
         AND NOT ({rel_col} LIKE ANY(${d}::text[]))"
    )
}

/// The four parameters of [`relation_filter`], in order.
pub fn relation_params(r: &crate::config::Relations) -> [&Vec<String>; 4] {
    [&r.include_schemas, &r.exclude_schemas, &r.include, &r.exclude]
}

/// One row of a per-table view: the table and its numeric columns.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub datname: String,
    pub schemaname: String,
    pub relname: String,
    /// Column name → value (NULL read as 0).
    pub values: std::collections::BTreeMap<&'static str, f64>,
}

impl TableRow {
    /// The label values (`datname`, `schemaname`, `relname`) and the column
    /// values, as [`column_families`] takes them.
    pub fn labelled(&self) -> (Vec<&str>, &std::collections::BTreeMap<&'static str, f64>) {
        (
            vec![self.datname.as_str(), self.schemaname.as_str(), self.relname.as_str()],
            &self.values,
        )
    }
}

/// Runs a per-table query whose `$1`..`$4` are [`relation_params`], reads the
/// columns of `tables` that the server has, and applies the cap.
pub async fn read_table_rows(
    client: &Client,
    ctx: &Ctx,
    what: &'static str,
    sql: &str,
    tables: &[&'static [Column]],
) -> Result<Vec<TableRow>, CollectError> {
    let p = relation_params(&ctx.checks.relations);
    let mut rows = Vec::new();
    for r in query_params(client, what, sql, &[p[0], p[1], p[2], p[3]]).await? {
        let mut values = std::collections::BTreeMap::new();
        for cols in tables {
            values.extend(read_columns(&r, what, cols, ctx.server_version_num)?);
        }
        rows.push(TableRow {
            datname: text(&r, what, "datname")?,
            schemaname: text(&r, what, "schemaname")?,
            relname: text(&r, what, "relname")?,
            values,
        });
    }
    Ok(cap(ctx, rows))
}

/// Keeps the first `checks.relations.max_series` items (callers sort the
/// biggest first) and records how many were left out in `ctx`; the health
/// families report it as `pgsidecar_collector_series_truncated` and
/// `pgsidecar_collector_relations_omitted`, once per collector.
pub fn cap<T>(ctx: &Ctx, mut items: Vec<T>) -> Vec<T> {
    let limit = ctx.checks.relations.max_series;
    let omitted = items.len().saturating_sub(limit);
    items.truncate(limit);
    let mut slot = ctx.omitted.lock().unwrap_or_else(|p| p.into_inner());
    *slot = Some(slot.unwrap_or(0) + omitted);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_the_first_items_and_records_the_rest() {
        let mut checks = crate::config::Checks::default();
        checks.relations.max_series = 2;
        let ctx = Ctx::new(150000, std::sync::Arc::new(checks));
        assert_eq!(ctx.omitted(), None);
        assert_eq!(cap(&ctx, vec![3, 2, 1]), vec![3, 2]);
        assert_eq!(ctx.omitted(), Some(1));
        assert_eq!(cap(&ctx, vec![9]), vec![9]);
        assert_eq!(ctx.omitted(), Some(1));
    }
}
