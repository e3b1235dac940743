//! `database`: size and connection limit of every database, from
//! `pg_database` and `pg_database_size()`.
//!
//! `pg_database_size()` walks every file of a database: it is the most
//! expensive query postgres_exporter runs, on every scrape. pgsidecar runs it
//! on its own long interval (5 minutes unless configured), and only for the
//! databases that changed (issue 13): each row carries a change key, the
//! database's oid and its inserted, updated and deleted row counts (catalog
//! rows included, so DDL, `TRUNCATE` and a rewrite count too), and a
//! database whose key is the one of its last reading keeps that reading
//! (see [`readings`]: the oldest twelfth is read again every run, which
//! also catches what no counter sees, such as a vacuum giving space back;
//! nothing is reused on a standby).
//!
//! Metrics, label `datname` (postgres_exporter's names):
//! - `pg_database_size_bytes` gauge (left out for databases the role may not
//!   connect to, where Postgres refuses to size them).
//! - `pg_database_connection_limit` gauge (-1: no limit).
//!
//! One query per run. Version gates: none.

use std::time::Duration;

use super::readings::{self, Readings};
use super::{Client, CollectFuture, Ctx, Definition, Exports, float, query, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("database", collect)
    .every(Duration::from_secs(300))
    .exports(Exports {
        families: FAMILIES,
        upstream: FAMILIES,
    });

/// What it exports: postgres_exporter's names.
const FAMILIES: &[&str] = &["pg_database_size_bytes", "pg_database_connection_limit"];

/// `$1`: the keys whose sizes may be reused.
fn sql() -> String {
    format!(
        "WITH {} SELECT datname, connection_limit, key, reused::int::float8 AS reused, sizable::int::float8 AS sizable, \
         CASE WHEN sizable AND NOT reused THEN pg_database_size(oid)::float8 END AS size_bytes \
         FROM (SELECT d.oid, d.datname::text AS datname, d.datconnlimit::float8 AS connection_limit, \
           has_database_privilege(d.oid, 'CONNECT') AS sizable, k.key, k.key IN (SELECT key FROM known) AS reused \
           FROM pg_database d CROSS JOIN LATERAL (SELECT concat_ws(':', d.oid, \
             pg_stat_get_db_tuples_inserted(d.oid), pg_stat_get_db_tuples_updated(d.oid), \
             pg_stat_get_db_tuples_deleted(d.oid)) AS key) k OFFSET 0) u",
        readings::known(1)
    )
}

/// One database: its name, connection limit and size (`None`: not sizable).
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub datname: String,
    pub connection_limit: f64,
    pub size: Option<f64>,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let last: Readings = ctx.recall("database");
        let known = last.reusable();
        let mut next = last.next();
        let mut out = Vec::new();
        for r in query(client, "pg_database", &sql(), &[&known]).await? {
            let key = text(&r, "key")?;
            let size = match float(&r, "sizable")? == 1.0 {
                true => last
                    .sizes(&mut next, key, float(&r, "reused")? == 1.0, || {
                        Ok((float(&r, "size_bytes")?, 0.0))
                    })?
                    .map(|(size, _)| size),
                false => None,
            };
            out.push(Database {
                datname: text(&r, "datname")?,
                connection_limit: float(&r, "connection_limit")?,
                size,
            });
        }
        ctx.keep("database", next);
        Ok(families(&out))
    })
}

pub fn families(rows: &[Database]) -> Vec<Family> {
    let mut size = Family::gauge(
        "pg_database_size_bytes",
        "Disk space used by the database",
        &["datname"],
    );
    let mut limit = Family::gauge(
        "pg_database_connection_limit",
        "Connection limit set for the database (-1: none)",
        &["datname"],
    );
    for d in rows {
        if let Some(s) = d.size {
            size.set(&[&d.datname], s);
        }
        limit.set(&[&d.datname], d.connection_limit);
    }
    vec![size, limit]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::value;

    #[test]
    fn unsizable_databases_keep_their_limit() {
        let f = families(&[
            Database {
                datname: "app".into(),
                connection_limit: -1.0,
                size: Some(8e6),
            },
            Database {
                datname: "secret".into(),
                connection_limit: 5.0,
                size: None,
            },
        ]);
        assert_eq!(value(&f, "pg_database_size_bytes", &["app"]), Some(8e6));
        assert_eq!(value(&f, "pg_database_size_bytes", &["secret"]), None);
        assert_eq!(value(&f, "pg_database_connection_limit", &["secret"]), Some(5.0));
    }

    #[test]
    fn the_size_function_runs_only_for_changed_databases_it_may_size() {
        let sql = sql();
        assert!(
            sql.starts_with("WITH known AS MATERIALIZED (SELECT key FROM unnest($1::text[])"),
            "{sql}"
        );
        assert!(
            sql.contains("CASE WHEN sizable AND NOT reused THEN pg_database_size(oid)::float8 END"),
            "{sql}"
        );
        assert_eq!(sql.matches("pg_database_size(").count(), 1, "{sql}");
    }

    #[test]
    fn the_listed_families_are_the_exported_ones() {
        let names: Vec<String> = families(&[]).iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, DEFINITION.exports.families);
    }
}
