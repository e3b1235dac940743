//! `migrations`: the schema migration revision the database is at, read from
//! the table that `checks.migrations` names (alembic's `alembic_version` by
//! default) or from its custom `query` (first column, as text).
//!
//! Metrics (all new in pgsidecar):
//! - `pgsidecar_migration_configured` gauge, no labels: 1 if
//!   `checks.migrations` is set. When it is not, this is the only metric.
//!   With `databases:` the collector runs only in the other databases
//!   whose entry configures migrations, so this is 1 if any database has
//!   them.
//! - `pgsidecar_migration_revision_info` gauge, labels `datname`, `table`,
//!   `revision`: 1 per revision row (alembic can have several heads).
//! - `pgsidecar_migration_at_expected` gauge, labels `datname`, `table`: 1 if
//!   the expected revision is among them, else 0; only when `expected` is set.
//! - `pgsidecar_migration_table_present` gauge, labels `datname`, `table`: 0
//!   if the table does not exist (the collector still succeeds); not
//!   reported for a custom query.
//!
//! `datname` is the database pgsidecar is connected to; `table` is the
//! configured table name, also with a custom query. The table and column
//! names reach SQL only as bind parameters: Postgres resolves the table with
//! `to_regclass` and quotes both into the SELECT with `format`.
//!
//! Version gates: none.

use super::{Client, CollectError, CollectFuture, Ctx, Definition, query, text};
use crate::metrics::Family;

pub const DEFINITION: Definition =
    Definition::custom("migrations", collect).per_database_if(|c| c.migrations.is_some());

/// `$1` the table, `$2` the column; `select_sql` is the quoted query to run.
const RESOLVE_SQL: &str = "SELECT current_database()::text AS datname, \
     to_regclass($1::text) IS NOT NULL AS present, \
     format('SELECT %I::text AS revision FROM %s', $2::text, to_regclass($1::text)) AS select_sql";

/// What was read from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub datname: String,
    pub table: String,
    /// Whether the table exists; `None` for a custom query.
    pub present: Option<bool>,
    pub revisions: Vec<String>,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let Some(m) = &ctx.checks.migrations else {
            return Ok(families(None, None));
        };
        let reading = match &m.query {
            Some(custom) => {
                let datname = ctx.database(client).await?;
                let mut revisions = Vec::new();
                for msg in client
                    .simple_query(custom)
                    .await
                    .map_err(|e| CollectError::query("the migrations query", e))?
                {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = msg
                        && let Ok(Some(rev)) = r.try_get(0)
                    {
                        revisions.push(rev.to_string());
                    }
                }
                Reading {
                    datname,
                    table: m.table.clone(),
                    present: None,
                    revisions,
                }
            }
            None => {
                let rows = query(client, "the migration table", RESOLVE_SQL, &[&m.table, &m.column]).await?;
                let r = rows.first().ok_or(CollectError::NoRow {
                    what: "the migration table",
                })?;
                let present: bool = r.try_get("present").map_err(|e| CollectError::column("present", e))?;
                let mut revisions = Vec::new();
                if present {
                    let select = text(r, "select_sql")?;
                    for row in client
                        .query(select.as_str(), &[])
                        .await
                        .map_err(|e| CollectError::query("the migration table", e))?
                    {
                        revisions.push(text(&row, "revision")?);
                    }
                }
                Reading {
                    datname: text(r, "datname")?,
                    table: m.table.clone(),
                    present: Some(present),
                    revisions,
                }
            }
        };
        Ok(families(Some(&reading), m.expected.as_deref()))
    })
}

/// `None`: migrations are not configured.
pub fn families(reading: Option<&Reading>, expected: Option<&str>) -> Vec<Family> {
    let mut configured = Family::gauge(
        "pgsidecar_migration_configured",
        "1 if checks.migrations is configured, else 0",
        &[],
    );
    configured.set(&[], if reading.is_some() { 1.0 } else { 0.0 });
    let Some(r) = reading else {
        return vec![configured];
    };
    let labels = [r.datname.as_str(), r.table.as_str()];
    let mut info = Family::gauge(
        "pgsidecar_migration_revision_info",
        "1 for each migration revision recorded in the database",
        &["datname", "table", "revision"],
    );
    for rev in r.revisions.iter().filter(|v| !v.is_empty()) {
        info.set(&[labels[0], labels[1], rev], 1.0);
    }
    let mut out = vec![configured, info];
    if let Some(present) = r.present {
        let mut f = Family::gauge(
            "pgsidecar_migration_table_present",
            "1 if the migration table exists, else 0",
            &["datname", "table"],
        );
        f.set(&labels, if present { 1.0 } else { 0.0 });
        out.push(f);
    }
    if let Some(expected) = expected {
        let mut f = Family::gauge(
            "pgsidecar_migration_at_expected",
            "1 if the expected migration revision is among the recorded ones, else 0",
            &["datname", "table"],
        );
        let at = r.revisions.iter().any(|v| v == expected);
        f.set(&labels, if at { 1.0 } else { 0.0 });
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(present: Option<bool>, revisions: &[&str]) -> Reading {
        Reading {
            datname: "app".into(),
            table: "alembic_version".into(),
            present,
            revisions: revisions.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn find<'f>(f: &'f [Family], name: &str) -> Option<&'f Family> {
        f.iter().find(|f| f.name() == name)
    }

    #[test]
    fn not_configured_is_one_gauge() {
        let f = families(None, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name(), "pgsidecar_migration_configured");
        assert_eq!(f[0].get(&[]), Some(0.0));
    }

    #[test]
    fn every_head_is_a_revision_and_expected_is_matched() {
        let r = reading(Some(true), &["003", "003b"]);
        let f = families(Some(&r), Some("003b"));
        let info = find(&f, "pgsidecar_migration_revision_info").unwrap();
        assert_eq!(info.get(&["app", "alembic_version", "003"]), Some(1.0));
        assert_eq!(info.len(), 2);
        let at = find(&f, "pgsidecar_migration_at_expected").unwrap();
        assert_eq!(at.get(&["app", "alembic_version"]), Some(1.0));
        assert_eq!(
            find(&f, "pgsidecar_migration_table_present")
                .unwrap()
                .get(&["app", "alembic_version"]),
            Some(1.0)
        );
        assert_eq!(find(&f, "pgsidecar_migration_configured").unwrap().get(&[]), Some(1.0));

        let f = families(Some(&r), Some("004"));
        let at = find(&f, "pgsidecar_migration_at_expected").unwrap();
        assert_eq!(at.get(&["app", "alembic_version"]), Some(0.0));
    }

    #[test]
    fn a_missing_table_is_a_state_and_no_expected_means_no_verdict() {
        let r = reading(Some(false), &[]);
        let f = families(Some(&r), Some("003"));
        assert_eq!(
            find(&f, "pgsidecar_migration_table_present")
                .unwrap()
                .get(&["app", "alembic_version"]),
            Some(0.0)
        );
        assert_eq!(
            find(&f, "pgsidecar_migration_at_expected")
                .unwrap()
                .get(&["app", "alembic_version"]),
            Some(0.0)
        );
        assert!(find(&f, "pgsidecar_migration_revision_info").unwrap().is_empty());

        let f = families(Some(&reading(None, &["7"])), None);
        assert!(find(&f, "pgsidecar_migration_at_expected").is_none());
        assert!(find(&f, "pgsidecar_migration_table_present").is_none());
    }
}
