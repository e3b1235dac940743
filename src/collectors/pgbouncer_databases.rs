//! `pgbouncer_databases`: PgBouncer's `SHOW DATABASES`, one row per
//! configured database (and the admin console's own `pgbouncer`), with
//! pgbouncer_exporter's names. A team's 20 + 10 pool shows as
//! `pool_size` 20 and `reserve_pool` 10.
//!
//! Metrics, gauges labelled `name` (PgBouncer's name for the database),
//! `host`, `port`, `database` (the server's database), `force_user` and
//! `pool_mode` (pgbouncer_exporter's):
//! - `pgbouncer_databases_pool_size`, `_reserve_pool`: most server
//!   connections of a pool, and how many more it may open under load;
//! - `pgbouncer_databases_max_connections` (0: no limit),
//!   `_current_connections`: server connections of the database;
//! - `pgbouncer_databases_paused`, `_disabled`: 1 while PAUSEd or DISABLEd.
//!
//! Version gates: none; a column a release lacks gives no sample.

use super::console::{Row, Value, families, gauge, show};
use super::{Client, CollectFuture, Ctx, Definition};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("pgbouncer_databases", collect).pgbouncer();

const LABELS: [&str; 6] = ["name", "host", "port", "database", "force_user", "pool_mode"];

const VALUES: [Value; 6] = [
    gauge(
        "pool_size",
        "pgbouncer_databases_pool_size",
        "Most server connections of a pool of this database",
    ),
    gauge(
        "reserve_pool",
        "pgbouncer_databases_reserve_pool",
        "Additional server connections a pool of this database may open",
    ),
    gauge(
        "max_connections",
        "pgbouncer_databases_max_connections",
        "Most server connections of this database (0: no limit)",
    ),
    gauge(
        "current_connections",
        "pgbouncer_databases_current_connections",
        "Server connections of this database",
    ),
    gauge(
        "paused",
        "pgbouncer_databases_paused",
        "1 if this database is paused, else 0",
    ),
    gauge(
        "disabled",
        "pgbouncer_databases_disabled",
        "1 if this database is disabled, else 0",
    ),
];

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let rows = show(client, "SHOW DATABASES").await?;
        let (fams, notes) = databases_families(&rows);
        for n in notes {
            ctx.note(n);
        }
        Ok(fams)
    })
}

pub fn databases_families(rows: &[Row]) -> (Vec<Family>, Vec<String>) {
    families(rows, &LABELS, &VALUES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::value;

    #[test]
    fn a_database_row_gives_its_pool_size_under_its_labels() {
        // SHOW DATABASES of PgBouncer 1.18: force_user NULL (absent), pool_mode empty.
        let row = Row::of(&[
            ("name", "app"),
            ("host", "db"),
            ("port", "5432"),
            ("database", "mluvme"),
            ("pool_size", "20"),
            ("min_pool_size", "0"),
            ("reserve_pool", "10"),
            ("pool_mode", ""),
            ("max_connections", "0"),
            ("current_connections", "3"),
            ("paused", "0"),
            ("disabled", "0"),
        ]);
        let (f, notes) = databases_families(&[row]);
        assert!(notes.is_empty());
        let l = ["app", "db", "5432", "mluvme", "", ""];
        assert_eq!(value(&f, "pgbouncer_databases_pool_size", &l), Some(20.0));
        assert_eq!(value(&f, "pgbouncer_databases_reserve_pool", &l), Some(10.0));
        assert_eq!(value(&f, "pgbouncer_databases_current_connections", &l), Some(3.0));
        assert_eq!(value(&f, "pgbouncer_databases_paused", &l), Some(0.0));
    }
}
