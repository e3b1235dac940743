//! `database_wraparound` (opt-in, as upstream): how close each database is
//! to transaction ID and multixact wraparound, from `pg_database`,
//! `age(datfrozenxid)`, `mxid_age(datminmxid)` and the
//! `autovacuum_freeze_max_age` / `autovacuum_multixact_freeze_max_age`
//! settings.
//!
//! Metrics, label `datname`, gauges:
//! - postgres_exporter's: `pg_database_wraparound_age_datfrozenxid_seconds`
//!   and `pg_database_wraparound_age_datminmxid_seconds`: the ages in
//!   transactions and multixacts (not seconds, despite upstream's names).
//! - new in pgsidecar: `pg_database_wraparound_datfrozenxid_ratio` (XID age
//!   / `autovacuum_freeze_max_age`) and
//!   `pg_database_wraparound_datminmxid_ratio` (multixact age /
//!   `autovacuum_multixact_freeze_max_age`). At 1 autovacuum forces
//!   anti-wraparound vacuums; a ratio is what a rule can alert on whatever
//!   the server's settings.
//!
//! Only databases that accept connections, as upstream (the others cannot
//! be vacuumed by anyone). Version gates: none. Works on a hot standby,
//! where the ages are the primary's.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("database_wraparound", TABLE).opt_in();

const TABLE: Table = Table {
    from: "pg_database WHERE datallowconn",
    labels: &[label("datname")],
    columns: &[
        Column::gauge(
            "age_datfrozenxid",
            "pg_database_wraparound_age_datfrozenxid_seconds",
            "Age of the database's oldest unfrozen transaction ID, in transactions",
        )
        .expr("age(datfrozenxid)")
        .upstream(),
        Column::gauge(
            "age_datminmxid",
            "pg_database_wraparound_age_datminmxid_seconds",
            "Age of the database's oldest multixact ID, in multixacts",
        )
        .expr("mxid_age(datminmxid)")
        .upstream(),
        Column::gauge(
            "datfrozenxid_ratio",
            "pg_database_wraparound_datfrozenxid_ratio",
            "Transaction ID age over autovacuum_freeze_max_age (1: anti-wraparound autovacuum is forced)",
        )
        .expr("age(datfrozenxid)::float8 / current_setting('autovacuum_freeze_max_age')::float8"),
        Column::gauge(
            "datminmxid_ratio",
            "pg_database_wraparound_datminmxid_ratio",
            "Multixact age over autovacuum_multixact_freeze_max_age (1: anti-wraparound autovacuum is forced)",
        )
        .expr("mxid_age(datminmxid)::float8 / current_setting('autovacuum_multixact_freeze_max_age')::float8"),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn ages_and_ratios_per_database() {
        let f = TABLE.families(
            130000,
            &[Row::new(
                &["app"],
                &[("age_datfrozenxid", 1e8), ("datfrozenxid_ratio", 0.5)],
            )],
        );
        assert_eq!(
            value(&f, "pg_database_wraparound_age_datfrozenxid_seconds", &["app"]),
            Some(1e8)
        );
        assert_eq!(
            value(&f, "pg_database_wraparound_datfrozenxid_ratio", &["app"]),
            Some(0.5)
        );
    }
}
