//! `pgbouncer_config`: PgBouncer's `SHOW CONFIG` and `SHOW VERSION`, with
//! pgbouncer_exporter's names.
//!
//! Metrics (pgbouncer_exporter's):
//! - `pgbouncer_config_max_client_connections` gauge (`max_client_conn`);
//! - `pgbouncer_config_max_user_connections` gauge (`max_user_connections`,
//!   0: no limit);
//! - `pgbouncer_version_info{version}` gauge, 1: the version string, e.g.
//!   `PgBouncer 1.18.0`.
//!
//! Version gates: none. `SHOW CONFIG` has three or four columns depending
//! on the release (`default` came later); both are read by name.

use super::console::{Row, Value, gauge, pairs, show};
use super::{Client, CollectFuture, Ctx, Definition};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("pgbouncer_config", collect).pgbouncer();

const VALUES: [Value; 2] = [
    gauge(
        "max_client_conn",
        "pgbouncer_config_max_client_connections",
        "Configured maximum number of client connections",
    ),
    gauge(
        "max_user_connections",
        "pgbouncer_config_max_user_connections",
        "Configured maximum number of server connections per user (0: no limit)",
    ),
];

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let config = show(client, "SHOW CONFIG").await?;
        let version = show(client, "SHOW VERSION").await?;
        let (fams, notes) = config_families(&config, &version);
        for n in notes {
            ctx.note(n);
        }
        Ok(fams)
    })
}

pub fn config_families(config: &[Row], version: &[Row]) -> (Vec<Family>, Vec<String>) {
    let (mut fams, notes) = pairs(config, "key", "value", &VALUES);
    let mut info = Family::gauge(
        "pgbouncer_version_info",
        "The PgBouncer version; always 1",
        &["version"],
    );
    for row in version {
        info.set(&[row.text("version")], 1.0);
    }
    fams.push(info);
    (fams, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::value;

    #[test]
    fn config_rows_of_three_or_four_columns_and_the_version() {
        let config = [
            Row::of(&[
                ("key", "max_client_conn"),
                ("value", "100"),
                ("default", "100"),
                ("changeable", "yes"),
            ]),
            Row::of(&[("key", "max_user_connections"), ("value", "0"), ("changeable", "yes")]),
            Row::of(&[("key", "listen_addr"), ("value", "127.0.0.1"), ("changeable", "no")]),
        ];
        let version = [Row::of(&[("version", "PgBouncer 1.18.0")])];
        let (f, notes) = config_families(&config, &version);
        assert!(notes.is_empty());
        assert_eq!(value(&f, "pgbouncer_config_max_client_connections", &[]), Some(100.0));
        assert_eq!(value(&f, "pgbouncer_config_max_user_connections", &[]), Some(0.0));
        assert_eq!(value(&f, "pgbouncer_version_info", &["PgBouncer 1.18.0"]), Some(1.0));
    }
}
