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

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("database", TABLE).every(Duration::from_secs(300));

const TABLE: Table = Table {
    from: "pg_database",
    labels: &[label("datname")],
    columns: &[
        Column::gauge(
            "size_bytes",
            "pg_database_size_bytes",
            "Disk space used by the database",
        )
        .expr("CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END")
        .skip_null()
        .upstream(),
        Column::gauge(
            "connection_limit",
            "pg_database_connection_limit",
            "Connection limit set for the database (-1: none)",
        )
        .expr("datconnlimit")
        .upstream(),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn unsizable_databases_keep_their_limit() {
        let f = TABLE.families(
            150000,
            &[
                Row::new(&["app"], &[("connection_limit", -1.0), ("size_bytes", 8e6)]),
                Row::new(&["secret"], &[("connection_limit", 5.0)]),
            ],
        );
        assert_eq!(value(&f, "pg_database_size_bytes", &["app"]), Some(8e6));
        assert_eq!(value(&f, "pg_database_size_bytes", &["secret"]), None);
        assert_eq!(value(&f, "pg_database_connection_limit", &["secret"]), Some(5.0));
    }
}
