//! `postmaster`: the server's identity and start time, from `version()`,
//! `server_version_num` and `pg_postmaster_start_time()`.
//!
//! This collector is also pgsidecar's liveness probe: it decides `pg_up` (in
//! the health families, see `health`), which is 1 exactly when its last run
//! succeeded.
//!
//! Metrics:
//! - `pg_static{version,short_version}` untyped, always 1: the full version
//!   string and `major.minor.0` (postgres_exporter's shape).
//! - `pg_postmaster_start_time_seconds` gauge, unix time the server started.
//!
//! Version gates: none (all of PostgreSQL 13–18; `server_version_num` is
//! `major * 10000 + minor` since 10).

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("postmaster", TABLE).decides_up();

const TABLE: Table = Table {
    from: "pg_postmaster_start_time() AS started",
    labels: &[
        label("version").from("version()"),
        label("short_version").from(
            "(current_setting('server_version_num')::int / 10000)::text || '.' \
             || (current_setting('server_version_num')::int % 10000)::text || '.0'",
        ),
    ],
    columns: &[
        Column::untyped("one", "pg_static", "Version string as reported by postgres")
            .expr("1")
            .upstream(),
        Column::gauge(
            "start_time",
            "pg_postmaster_start_time_seconds",
            "Time at which postmaster started",
        )
        .expr("started")
        .epoch()
        .labels(&[])
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
    fn one_row_gives_the_version_and_the_start_time() {
        let f = TABLE.families(
            170002,
            &[Row::new(
                &["PostgreSQL 17.2 on x86_64", "17.2.0"],
                &[("one", 1.0), ("start_time", 1_700_000_000.5)],
            )],
        );
        assert_eq!(
            value(&f, "pg_static", &["PostgreSQL 17.2 on x86_64", "17.2.0"]),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "pg_postmaster_start_time_seconds", &[]),
            Some(1_700_000_000.5)
        );
        let sql = TABLE.sql(170002);
        assert!(sql.contains("date_part('epoch', started) AS start_time"), "{sql}");
    }
}
