//! `database`: size and connection limit of every database, from
//! `pg_database` and `pg_database_size()`.
//!
//! `pg_database_size()` walks every file of a database: it is the most
//! expensive query postgres_exporter runs, on every scrape. pgsidecar runs it
//! on its own long interval (5 minutes unless configured).
//!
//! Metrics, label `datname` (postgres_exporter's names):
//! - `pg_database_size_bytes` gauge (left out for databases the role may not
//!   connect to, where Postgres refuses to size them).
//! - `pg_database_connection_limit` gauge (-1: no limit).
//!
//! Version gates: none.

use std::time::Duration;

use super::{Client, CollectFuture, Ctx, Definition, Scope, float, query, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "database",
    enabled_by_default: true,
    default_interval: Some(Duration::from_secs(300)),
    scope: Scope::Server,
    collect,
};

const SQL: &str = "SELECT datname::text AS datname, datconnlimit::float8 AS connection_limit, \
     CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid)::float8 END AS size_bytes \
     FROM pg_database";

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub datname: String,
    pub connection_limit: f64,
    pub size_bytes: Option<f64>,
}

fn collect<'a>(client: &'a Client, _ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let what = "database";
        let mut rows = Vec::new();
        for r in query(client, what, SQL).await? {
            rows.push(Row {
                datname: text(&r, what, "datname")?,
                connection_limit: float(&r, what, "connection_limit")?,
                size_bytes: r.try_get::<_, Option<f64>>("size_bytes").ok().flatten(),
            });
        }
        Ok(families(&rows))
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
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
    for r in rows {
        if let Some(s) = r.size_bytes {
            size.set(&[&r.datname], s);
        }
        limit.set(&[&r.datname], r.connection_limit);
    }
    vec![size, limit]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsizable_databases_keep_their_limit() {
        let f = families(&[
            Row {
                datname: "app".into(),
                connection_limit: -1.0,
                size_bytes: Some(8e6),
            },
            Row {
                datname: "secret".into(),
                connection_limit: 5.0,
                size_bytes: None,
            },
        ]);
        assert_eq!(f[0].get(&["app"]), Some(8e6));
        assert_eq!(f[0].get(&["secret"]), None);
        assert_eq!(f[1].get(&["secret"]), Some(5.0));
    }
}
