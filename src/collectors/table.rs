//! The declarative form of a collector over a wide view: a [`Table`] names
//! the view (`from`), its label columns and its value columns, and each value
//! column becomes one metric family. The SQL, the row reader and the families
//! are derived from the table, so such a collector is one file of
//! declarations (see `pg_stat_database.rs`). The per-relation collectors
//! (`Params::Relations`) read no view: their `from` follows a subquery `p`
//! that picks the capped rows from the catalogs ([`Pick`]), and their
//! columns are the views' `pg_stat_get_*` calls on `p` (see
//! `pg_stat_user_tables.rs`). The pick is sorted biggest first with the
//! count of every row on a collector's first run in a database and while
//! the schema is over the cap; below the cap it remembers the count
//! (`Ctx::recall`) and picks in no order, one row past the cap, which a
//! schema that grew past it exceeds (the run then picks again, sorted).
//! Sorting and counting every relation was an eighth of such a query.
//!
//! A [`Column`] says where its value comes from (the column itself or an SQL
//! expression), how it converts (a factor, or a timestamp read as unix time),
//! what a SQL NULL means (0, or no sample), and which server versions have it
//! (`since` inclusive, `until` exclusive).

use std::collections::BTreeMap;

use super::{Client, CollectError, Ctx, float, query_each, relation_filter, relation_params};
use crate::metrics::{Family, Key, key};

/// A metric type, as the exposition format names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
}

/// How a column's value becomes the metric's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// As Postgres reports it.
    Same,
    /// Multiplied by a factor (milliseconds to seconds is 1e-3).
    Scale(f64),
    /// A timestamp, exported as unix time.
    Epoch,
}

/// What a SQL NULL in a value column gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Null {
    /// 0: a counter that has not started, a time that never happened.
    Zero,
    /// No sample for this row.
    Skip,
}

/// One value column and the metric family it becomes.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The result column's name (and the view's column, unless `expr` is set).
    pub col: &'static str,
    /// The SQL expression that computes the value; empty: the column itself.
    pub expr: &'static str,
    pub metric: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub null: Null,
    /// The first `server_version_num` that has the column.
    pub since: u32,
    /// The first `server_version_num` that no longer has it (0: none).
    pub until: u32,
    /// The labels of this family when they are a subset of the table's.
    pub labels: Option<&'static [&'static str]>,
    /// The name is postgres_exporter's, kept for compatibility even where
    /// Prometheus's naming conventions would differ.
    pub upstream: bool,
}

impl Column {
    pub const fn counter(col: &'static str, metric: &'static str, help: &'static str) -> Self {
        Column {
            col,
            expr: "",
            metric,
            help,
            kind: Kind::Counter,
            unit: Unit::Same,
            null: Null::Zero,
            since: 0,
            until: 0,
            labels: None,
            upstream: false,
        }
    }

    pub const fn gauge(col: &'static str, metric: &'static str, help: &'static str) -> Self {
        Column {
            kind: Kind::Gauge,
            ..Column::counter(col, metric, help)
        }
    }

    pub const fn untyped(col: &'static str, metric: &'static str, help: &'static str) -> Self {
        Column {
            kind: Kind::Untyped,
            ..Column::counter(col, metric, help)
        }
    }

    /// Computed by an SQL expression instead of read from a column.
    pub const fn expr(self, expr: &'static str) -> Self {
        Column { expr, ..self }
    }

    pub const fn scaled(self, factor: f64) -> Self {
        Column {
            unit: Unit::Scale(factor),
            ..self
        }
    }

    /// A `timestamptz` exported as unix time (0 if NULL, unless `skip_null`).
    pub const fn epoch(self) -> Self {
        Column {
            unit: Unit::Epoch,
            ..self
        }
    }

    pub const fn skip_null(self) -> Self {
        Column {
            null: Null::Skip,
            ..self
        }
    }

    pub const fn since(self, since: u32) -> Self {
        Column { since, ..self }
    }

    pub const fn until(self, until: u32) -> Self {
        Column { until, ..self }
    }

    pub const fn labels(self, labels: &'static [&'static str]) -> Self {
        Column {
            labels: Some(labels),
            ..self
        }
    }

    pub const fn upstream(self) -> Self {
        Column { upstream: true, ..self }
    }

    /// Whether a server version has this column.
    pub fn exists_in(&self, version: u32) -> bool {
        version >= self.since && (self.until == 0 || version < self.until)
    }

    fn select(&self) -> String {
        let expr = if self.expr.is_empty() { self.col } else { self.expr };
        match self.unit {
            // date_part gives float8 directly (extract gives numeric from
            // PostgreSQL 14 on, four numeric steps per value), and the same
            // value: microseconds since the epoch, divided by 10^6 once.
            Unit::Epoch => format!("date_part('epoch', {expr}) AS {}", self.col),
            _ if self.expr.is_empty() => format!("{expr}::float8 AS {}", self.col),
            _ => format!("({expr})::float8 AS {}", self.col),
        }
    }

    fn factor(&self) -> f64 {
        match self.unit {
            Unit::Scale(f) => f,
            Unit::Same | Unit::Epoch => 1.0,
        }
    }

    fn family(&self, labels: &[&'static str]) -> Family {
        let labels = self.labels.unwrap_or(labels);
        match self.kind {
            Kind::Counter => Family::counter(self.metric, self.help, labels),
            Kind::Gauge => Family::gauge(self.metric, self.help, labels),
            Kind::Untyped => Family::untyped(self.metric, self.help, labels),
        }
    }
}

/// A label column: read as text (NULL reads as "").
#[derive(Debug, Clone, Copy)]
pub struct Label {
    pub name: &'static str,
    /// The SQL expression; empty: the column of that name.
    pub expr: &'static str,
    /// The session's database (`Ctx::datname`), filled in here rather than
    /// selected: `current_database()` in the select list is a call and a
    /// text per row.
    pub session_database: bool,
}

/// A label read from the column of the same name.
pub const fn label(name: &'static str) -> Label {
    Label {
        name,
        expr: "",
        session_database: false,
    }
}

impl Label {
    /// A label computed by an SQL expression.
    pub const fn from(self, expr: &'static str) -> Label {
        Label { expr, ..self }
    }

    /// A label whose value is the session's database.
    pub const fn session_database(self) -> Label {
        Label {
            session_database: true,
            ..self
        }
    }

    fn select(&self) -> String {
        let expr = if self.expr.is_empty() { self.name } else { self.expr };
        format!("({expr})::text AS {}", self.name)
    }
}

/// The bind parameters a table's SQL takes.
#[derive(Debug, Clone, Copy)]
pub enum Params {
    None,
    /// `checks.relations` as `$1`..`$4`, applied to these schema and
    /// relation-name columns of `pick_from`, and capped at `max_series`
    /// (`$5`). The query reads the catalogs once: a subquery `p` picks the
    /// rows (`pick`, from `pick_from` where `kinds` and the filter hold),
    /// biggest first by `order` over `pg_class.relpages`, with the count
    /// before the cap; the labels and columns then read `p` and the
    /// `pg_stat_get_*` functions, so those run only for the picked rows.
    /// `Table::from` is what follows `p` (joins, `LATERAL` sums). No size
    /// function: it would stat every file of every relation on every round
    /// and wait behind any `ACCESS EXCLUSIVE` lock (sizes are
    /// `relation_sizes`'s, on a longer interval).
    Relations(Pick),
    /// `checks.slow_queries.threshold` in seconds, as `$1` (`float8`).
    SlowQueryThreshold,
}

/// How a [`Params::Relations`] query picks its rows (see there).
#[derive(Debug, Clone, Copy)]
pub struct Pick {
    /// The view whose definition the query reads, for errors.
    pub view: &'static str,
    /// The picking subquery's select list (`count(*) OVER ()` follows).
    pub pick: &'static str,
    pub pick_from: &'static str,
    /// The relkind condition, by server version: the last entry whose
    /// version is at most the server's applies.
    pub kinds: &'static [(u32, &'static str)],
    pub schema: &'static str,
    pub relname: &'static str,
    pub order: &'static str,
}

impl Pick {
    /// The subquery `p` that picks the rows: the view's kinds and the filter
    /// (`$1`..`$4`), biggest first, capped at `$5`, with `total` counting
    /// every row before the cap. Other collectors over the same relations
    /// (`relation_sizes`) start from it too, so that they report the same
    /// rows.
    pub fn sql(&self, version: u32) -> String {
        let kinds = self.kinds_for(version);
        format!(
            "(SELECT {}, count(*) OVER () AS total FROM {} \
             WHERE {kinds} AND {} ORDER BY {} LIMIT $5) p",
            self.pick,
            self.pick_from,
            relation_filter(self.schema, self.relname, 1),
            self.order,
        )
    }

    /// The same rows in no order and without the count, one past the cap
    /// (`$5 + 1`), for when the last run found no more than the cap: no
    /// sort and no window over every relation. More rows than the cap mean
    /// the schema has grown past it; the caller then asks again with
    /// [`Pick::sql`].
    pub fn unsorted_sql(&self, version: u32) -> String {
        format!(
            "(SELECT {}, NULL::int8 AS total FROM {} WHERE {} AND {} LIMIT $5::int8 + 1) p",
            self.pick,
            self.pick_from,
            self.kinds_for(version),
            relation_filter(self.schema, self.relname, 1),
        )
    }

    /// The relkind condition of a server version.
    fn kinds_for(&self, version: u32) -> &'static str {
        self.kinds
            .iter()
            .rev()
            .find(|(since, _)| version >= *since)
            .map_or("true", |(_, k)| k)
    }
}

/// What a [`Params::Relations`] collector keeps between runs: how many rows
/// its filter let through last time.
#[derive(Debug, Default)]
struct Picked {
    total: Option<usize>,
}

/// The result column of a capped query that counts every row the filter
/// let through, before the cap.
const RELATIONS_TOTAL: &str = "pgsidecar_relations_total";

/// A collector over one wide view.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// What follows `FROM`: the view, and any `WHERE` and `ORDER BY`. For
    /// [`Params::Relations`], what follows the picked rows `p`.
    pub from: &'static str,
    pub labels: &'static [Label],
    pub columns: &'static [Column],
    pub params: Params,
}

/// One row: label values in the table's order, and the value of each column
/// that the server has and that was not a skipped NULL.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub labels: Vec<String>,
    pub values: BTreeMap<&'static str, f64>,
}

impl Row {
    /// A hand-built row, for unit tests of a table's families.
    #[cfg(test)]
    pub fn new(labels: &[&str], values: &[(&'static str, f64)]) -> Row {
        Row {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            values: values.iter().copied().collect(),
        }
    }
}

impl Table {
    /// The columns a server version has.
    pub fn columns_for(&self, version: u32) -> impl Iterator<Item = &'static Column> + use<> {
        self.columns.iter().filter(move |c| c.exists_in(version))
    }

    fn label_names(&self) -> Vec<&'static str> {
        self.labels.iter().map(|l| l.name).collect()
    }

    /// The query for a server version.
    pub fn sql(&self, version: u32) -> String {
        self.sql_picked(version, false)
    }

    /// The query, with [`Pick::unsorted_sql`] if `unsorted` (and picking).
    fn sql_picked(&self, version: u32, unsorted: bool) -> String {
        let select: Vec<String> = self
            .labels
            .iter()
            .filter(|l| !l.session_database)
            .map(Label::select)
            .chain(self.columns_for(version).map(Column::select))
            .collect();
        match self.params {
            // The cap in SQL, with the count it left out.
            Params::Relations(pick) => format!(
                "SELECT {}, p.total::float8 AS {RELATIONS_TOTAL} FROM {picked} {}",
                select.join(", "),
                self.from,
                picked = match unsorted {
                    true => pick.unsorted_sql(version),
                    false => pick.sql(version),
                },
            )
            .trim_end()
            .to_string(),
            _ => format!("SELECT {} FROM {}", select.join(", "), self.from),
        }
    }

    /// Reads one result row of a session connected to `datname`.
    pub fn read(&self, row: &tokio_postgres::Row, version: u32, datname: &str) -> Result<Row, CollectError> {
        let mut labels = Vec::with_capacity(self.labels.len());
        for l in self.labels {
            labels.push(match l.session_database {
                true => datname.to_string(),
                false => super::text(row, l.name)?,
            });
        }
        let mut values = BTreeMap::new();
        for c in self.columns_for(version) {
            let v: Option<f64> = row.try_get(c.col).map_err(|e| CollectError::column(c.col, e))?;
            match (v, c.null) {
                (Some(v), _) => values.insert(c.col, v),
                (None, Null::Zero) => values.insert(c.col, 0.0),
                (None, Null::Skip) => None,
            };
        }
        Ok(Row { labels, values })
    }

    /// One family per column the server version has.
    pub fn families(&self, version: u32, rows: &[Row]) -> Vec<Family> {
        let mut b = self.builder(version);
        for r in rows {
            b.add(r);
        }
        b.finish()
    }

    /// The families, to be filled one row at a time.
    fn builder(&self, version: u32) -> Builder {
        let names = self.label_names();
        let families = self
            .columns_for(version)
            .map(|c| {
                // Positions of the family's labels among the table's.
                let picks = c.labels.map(|subset| {
                    subset
                        .iter()
                        .filter_map(|l| names.iter().position(|n| n == l))
                        .collect()
                });
                (c.family(&names), c, picks)
            })
            .collect();
        Builder { names, families }
    }

    /// Runs the query and maps its rows to families, one row at a time as
    /// they arrive (a wide result is never held whole, nor its rows).
    pub async fn collect(&self, client: &Client, ctx: &Ctx) -> Result<Vec<Family>, CollectError> {
        let version = ctx.server_version_num;
        let threshold = ctx.checks.slow_query_threshold.as_secs_f64();
        // Errors name the view.
        let what = match self.params {
            Params::Relations(pick) => pick.view,
            _ => self.from.split_whitespace().next().unwrap_or(""),
        };
        let datname = match self.labels.iter().any(|l| l.session_database) {
            true => ctx.database(client).await?,
            false => String::new(),
        };
        // Reads `sql`'s rows into a builder; with a total column, its value.
        let read = async |sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)], counted: bool| {
            let mut b = self.builder(version);
            let mut total = None;
            let n = query_each(client, what, sql, params, |r| {
                if counted && total.is_none() {
                    total = Some(float(&r, RELATIONS_TOTAL)? as usize);
                }
                b.add(&self.read(&r, version, &datname)?);
                Ok(())
            })
            .await?;
            Ok::<_, CollectError>((b, n, total))
        };
        let families = match self.params {
            Params::None => read(&self.sql(version), &[], false).await?.0,
            Params::SlowQueryThreshold => read(&self.sql(version), &[&threshold], false).await?.0,
            Params::Relations(pick) => {
                let [a, b, c, d] = relation_params(&ctx.checks.relations);
                let cap = ctx.checks.relations.max_series;
                let limit = i64::try_from(cap).unwrap_or(i64::MAX);
                let last: Picked = ctx.recall(pick.view);
                let mut unsorted = None;
                if last.total.is_some_and(|t| t <= cap) {
                    let sql = self.sql_picked(version, true);
                    let (b, n, _) = read(&sql, &[a, b, c, d, &limit], false).await?;
                    unsorted = (n <= cap).then_some((b, n));
                }
                let (families, n, total) = match unsorted {
                    Some((b, n)) => (b, n, n),
                    None => {
                        let (b, n, total) = read(&self.sql(version), &[a, b, c, d, &limit], true).await?;
                        (b, n, total.unwrap_or(0))
                    }
                };
                ctx.keep(pick.view, Picked { total: Some(total) });
                ctx.omitted(total.saturating_sub(n));
                families
            }
        };
        Ok(families.finish())
    }
}

/// A table's families being filled row by row. The families with all the
/// table's labels (most) share each row's label pairs ([`Key`]).
struct Builder {
    names: Vec<&'static str>,
    families: Vec<(Family, &'static Column, Option<Vec<usize>>)>,
}

impl Builder {
    fn add(&mut self, r: &Row) {
        let values: Vec<&str> = r.labels.iter().map(String::as_str).collect();
        let mut shared: Option<Key> = None;
        for (f, c, picks) in &mut self.families {
            let Some(v) = r.values.get(c.col) else {
                continue;
            };
            match picks {
                None => {
                    let k = shared.get_or_insert_with(|| key(&self.names, &values));
                    f.set_key(k, v * c.factor());
                }
                Some(picks) => {
                    let labels: Vec<&str> = picks.iter().map(|&i| values[i]).collect();
                    f.set(&labels, v * c.factor());
                }
            }
        }
    }

    fn finish(self) -> Vec<Family> {
        self.families.into_iter().map(|(f, _, _)| f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: Table = Table {
        from: "LEFT JOIN LATERAL (SELECT 1 AS one) o ON true",
        labels: &[label("datname").session_database(), label("relname").from("p.relname")],
        columns: &[
            Column::counter("n", "t_n", "n"),
            Column::gauge("size", "t_size_bytes", "size").expr("f(p.oid)"),
            Column::gauge("ms", "t_seconds", "ms").scaled(1e-3).since(140000),
            Column::gauge("old", "t_old", "old").until(170000),
            Column::gauge("at", "t_at", "at").epoch().labels(&["relname"]),
            Column::gauge("flag", "t_flag", "flag").skip_null(),
        ],
        params: Params::Relations(Pick {
            view: "v",
            pick: "c.oid, n.nspname, c.relname",
            pick_from: "pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
            kinds: &[(0, "c.relkind = 'r'"), (140000, "c.relkind IN ('r', 'p')")],
            schema: "n.nspname",
            relname: "c.relname",
            order: "c.relpages DESC",
        }),
    };

    #[test]
    fn sql_follows_the_version_gates_and_expressions() {
        let s = TABLE.sql(130000);
        assert!(s.starts_with("SELECT (p.relname)::text AS relname, n::float8 AS n, (f(p.oid))::float8 AS size, old::float8 AS old, date_part('epoch', at) AS at, flag::float8 AS flag, p.total::float8 AS pgsidecar_relations_total FROM (SELECT c.oid, n.nspname, c.relname, count(*) OVER () AS total FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN"), "{s}");
        assert!(
            s.ends_with("ORDER BY c.relpages DESC LIMIT $5) p LEFT JOIN LATERAL (SELECT 1 AS one) o ON true"),
            "{s}"
        );
        assert!(!s.contains("AS ms"), "{s}");
        let s = TABLE.sql(170000);
        assert!(s.contains("ms::float8 AS ms") && !s.contains("AS old"), "{s}");
        assert!(s.contains("WHERE c.relkind IN ('r', 'p') AND"), "{s}");
        // Below the cap: no sort, no count, one row past the cap.
        let u = TABLE.sql_picked(170000, true);
        assert!(
            u.contains("FROM (SELECT c.oid, n.nspname, c.relname, NULL::int8 AS total FROM pg_class c"),
            "{u}"
        );
        assert!(u.contains("WHERE c.relkind IN ('r', 'p') AND"), "{u}");
        assert!(
            u.ends_with("LIMIT $5::int8 + 1) p LEFT JOIN LATERAL (SELECT 1 AS one) o ON true"),
            "{u}"
        );
        assert!(!u.contains("ORDER BY") && !u.contains("OVER ()"), "{u}");
    }

    #[test]
    fn families_convert_pick_labels_and_skip() {
        let rows = [
            Row::new(
                &["app", "a"],
                &[("n", 3.0), ("ms", 2500.0), ("at", 10.0), ("flag", 1.0)],
            ),
            Row::new(&["app", "b"], &[("n", 4.0)]),
        ];
        let f = TABLE.families(160000, &rows);
        let get = |name: &str, l: &[&str]| crate::metrics::value(&f, name, l);
        assert_eq!(get("t_n", &["app", "b"]), Some(4.0));
        assert_eq!(get("t_seconds", &["app", "a"]), Some(2.5));
        assert_eq!(get("t_at", &["a"]), Some(10.0));
        assert_eq!(get("t_flag", &["app", "a"]), Some(1.0));
        assert_eq!(get("t_flag", &["app", "b"]), None);
        assert!(f.iter().any(|f| f.name() == "t_old"));
        assert!(!TABLE.families(170000, &rows).iter().any(|f| f.name() == "t_old"));
    }
}
