//! `pgbouncer_lists`: PgBouncer's `SHOW LISTS`, the sizes of its internal
//! lists, with pgbouncer_exporter's names.
//!
//! Metrics, unlabelled gauges (pgbouncer_exporter's): `pgbouncer_databases`,
//! `pgbouncer_users`, `pgbouncer_pools`, `pgbouncer_free_clients`,
//! `pgbouncer_used_clients`, `pgbouncer_login_clients`,
//! `pgbouncer_free_servers`, `pgbouncer_used_servers`,
//! `pgbouncer_cached_dns_names`, `pgbouncer_cached_dns_zones`,
//! `pgbouncer_in_flight_dns_queries`.
//!
//! Version gates: none; a list a release lacks gives no sample, a list this
//! file does not know (1.18's `dns_pending`) is ignored.

use super::console::{Row, Value, gauge, pairs, show};
use super::{Client, CollectFuture, Ctx, Definition};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("pgbouncer_lists", collect).pgbouncer();

const VALUES: [Value; 11] = [
    gauge("databases", "pgbouncer_databases", "Count of databases"),
    gauge("users", "pgbouncer_users", "Count of users"),
    gauge("pools", "pgbouncer_pools", "Count of pools"),
    gauge("free_clients", "pgbouncer_free_clients", "Count of free clients"),
    gauge("used_clients", "pgbouncer_used_clients", "Count of used clients"),
    gauge(
        "login_clients",
        "pgbouncer_login_clients",
        "Count of clients in login state",
    ),
    gauge("free_servers", "pgbouncer_free_servers", "Count of free servers"),
    gauge("used_servers", "pgbouncer_used_servers", "Count of used servers"),
    gauge(
        "dns_names",
        "pgbouncer_cached_dns_names",
        "Count of DNS names in the cache",
    ),
    gauge(
        "dns_zones",
        "pgbouncer_cached_dns_zones",
        "Count of DNS zones in the cache",
    ),
    gauge(
        "dns_queries",
        "pgbouncer_in_flight_dns_queries",
        "Count of in-flight DNS queries",
    ),
];

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let rows = show(client, "SHOW LISTS").await?;
        let (fams, notes) = lists_families(&rows);
        for n in notes {
            ctx.note(n);
        }
        Ok(fams)
    })
}

pub fn lists_families(rows: &[Row]) -> (Vec<Family>, Vec<String>) {
    pairs(rows, "list", "items", &VALUES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::value;

    #[test]
    fn each_known_list_is_a_gauge() {
        let rows: Vec<Row> = [("databases", "2"), ("used_clients", "1"), ("dns_pending", "0")]
            .iter()
            .map(|(l, n)| Row::of(&[("list", l), ("items", n)]))
            .collect();
        let (f, _) = lists_families(&rows);
        assert_eq!(value(&f, "pgbouncer_databases", &[]), Some(2.0));
        assert_eq!(value(&f, "pgbouncer_used_clients", &[]), Some(1.0));
        assert_eq!(f.len(), 2);
    }
}
