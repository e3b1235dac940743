//! `locks`: locks held or awaited, per database and lock mode, from
//! `pg_locks`.
//!
//! Metrics, labels `datname`, `mode` (postgres_exporter's name, type and
//! labels): `pg_locks_count` gauge, the number of locks in that mode on
//! objects of that database, granted or waiting. Every database that
//! accepts connections gets a sample for each of the nine lock modes
//! (`accesssharelock` … `accessexclusivelock`, `sireadlock`, lowercase as
//! upstream spells them), 0 when none is held, so a mode that empties drops
//! to 0 instead of vanishing.
//!
//! Locks on no database (virtual transaction ids, shared catalogs) are not
//! counted, as upstream. The cost grows with the locks held (`pg_locks` is
//! read once) and the databases.
//!
//! Version gates: none. Works on a hot standby (its locks are the
//! read-only queries' and the startup process's).

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("locks", TABLE);

const TABLE: Table = Table {
    from: "pg_database d CROSS JOIN (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), \
           ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'), ('exclusivelock'), \
           ('accessexclusivelock'), ('sireadlock')) AS m(mode) \
           LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS n FROM pg_locks \
           WHERE database IS NOT NULL GROUP BY 1, 2) l ON l.database = d.oid AND l.mode = m.mode \
           WHERE d.datallowconn",
    labels: &[label("datname").from("d.datname"), label("mode").from("m.mode")],
    columns: &[Column::gauge(
        "count",
        "pg_locks_count",
        "Number of locks in this mode on objects of this database, granted or waiting",
    )
    .expr("COALESCE(l.n, 0)")
    .upstream()],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn one_sample_per_database_and_mode() {
        let sql = TABLE.sql(130000);
        assert!(sql.contains("(COALESCE(l.n, 0))::float8 AS count"), "{sql}");
        let f = TABLE.families(
            130000,
            &[
                Row::new(&["app", "accesssharelock"], &[("count", 3.0)]),
                Row::new(&["app", "sireadlock"], &[("count", 0.0)]),
            ],
        );
        assert_eq!(value(&f, "pg_locks_count", &["app", "accesssharelock"]), Some(3.0));
        assert_eq!(value(&f, "pg_locks_count", &["app", "sireadlock"]), Some(0.0));
    }
}
