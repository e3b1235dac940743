//! `pools`: the application's connection pools, recognised in
//! `pg_stat_activity` by the matchers of `checks.pools` (application name,
//! user, client address or network, database), against their capacity.
//!
//! In a sidecar, matching `client_addr: ${POD_IP}` counts the pod's own
//! connections, so this collector is per pod. pgsidecar's own sessions (its
//! pool and its lock session, which come from the same address) are left
//! out: they carry pgsidecar's `application_name`, which is this session's.
//!
//! Metrics (new in pgsidecar), label `pool` plus:
//! - `pgsidecar_pool_connections{pool,state}` gauge: connections by state
//!   (`active`, `idle`, `idle in transaction`, `idle in transaction (aborted)`
//!   always present, others when seen).
//! - `pgsidecar_pool_capacity{pool}` gauge: (size + overflow) × processes.
//! - `pgsidecar_pool_idle_in_transaction_max_seconds{pool}` gauge: how long the
//!   pool's oldest idle-in-transaction connection has been so (0 if none).
//!
//! Server-wide use against `max_connections` needs no metric of its own:
//! `sum(pg_stat_activity_count) / (pg_settings_max_connections -
//! pg_settings_superuser_reserved_connections)`.
//!
//! Version gates: none.

use std::net::IpAddr;

use super::{Client, CollectFuture, Ctx, Definition, float, query, text};
use crate::config::PoolCheck;
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("pools", collect).per_pod();

const SQL: &str = "SELECT COALESCE(application_name, '') AS application_name, COALESCE(usename::text, '') AS usename, \
     COALESCE(host(client_addr), '') AS client_addr, COALESCE(datname::text, '') AS datname, \
     COALESCE(state, '') AS state, count(*)::float8 AS count, \
     COALESCE(max(extract(epoch FROM now() - state_change)) FILTER (WHERE state LIKE 'idle in transaction%'), 0)::float8 AS idle_in_tx \
     FROM pg_stat_activity WHERE backend_type = 'client backend' \
     AND application_name IS DISTINCT FROM current_setting('application_name') \
     GROUP BY 1, 2, 3, 4, 5";

const STATES: [&str; 4] = ["active", "idle", "idle in transaction", "idle in transaction (aborted)"];

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub application_name: String,
    pub usename: String,
    pub client_addr: Option<IpAddr>,
    pub datname: String,
    pub state: String,
    pub count: f64,
    pub idle_in_tx_seconds: f64,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        if ctx.checks.pools.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = Vec::new();
        for r in query(client, "pg_stat_activity", SQL, &[]).await? {
            rows.push(Row {
                application_name: text(&r, "application_name")?,
                usename: text(&r, "usename")?,
                client_addr: text(&r, "client_addr")?.parse().ok(),
                datname: text(&r, "datname")?,
                state: text(&r, "state")?,
                count: float(&r, "count")?,
                idle_in_tx_seconds: float(&r, "idle_in_tx")?,
            });
        }
        Ok(families(&ctx.checks.pools, &rows))
    })
}

pub fn families(pools: &[PoolCheck], rows: &[Row]) -> Vec<Family> {
    let mut conns = Family::gauge(
        "pgsidecar_pool_connections",
        "Connections of the configured pool, by state",
        &["pool", "state"],
    );
    let mut capacity = Family::gauge(
        "pgsidecar_pool_capacity",
        "Most connections the pool may open: (size + overflow) x processes",
        &["pool"],
    );
    let mut idle_tx = Family::gauge(
        "pgsidecar_pool_idle_in_transaction_max_seconds",
        "Age of the pool's oldest idle-in-transaction state, in seconds (0: none)",
        &["pool"],
    );
    for pool in pools {
        let name = pool.name.as_str();
        capacity.set(&[name], f64::from(pool.capacity()));
        for state in STATES {
            conns.set(&[name, state], 0.0);
        }
        let mut oldest: f64 = 0.0;
        let mut by_state: std::collections::BTreeMap<&str, f64> = Default::default();
        for r in rows
            .iter()
            .filter(|r| pool.matches(&r.application_name, &r.usename, r.client_addr, &r.datname))
        {
            let state = if r.state.is_empty() {
                "unknown"
            } else {
                r.state.as_str()
            };
            *by_state.entry(state).or_default() += r.count;
            oldest = oldest.max(r.idle_in_tx_seconds);
        }
        for (state, n) in by_state {
            conns.set(&[name, state], n);
        }
        idle_tx.set(&[name], oldest);
    }
    vec![conns, capacity, idle_tx]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(app: &str, addr: &str, state: &str, count: f64, idle: f64) -> Row {
        Row {
            application_name: app.into(),
            usename: "app".into(),
            client_addr: addr.parse().ok(),
            datname: "db".into(),
            state: state.into(),
            count,
            idle_in_tx_seconds: idle,
        }
    }

    #[test]
    fn connections_are_matched_and_summed_per_state() {
        let pool = PoolCheck {
            name: "api".into(),
            application_name: Some("api".into()),
            usename: None,
            client_addr: Some("10.0.0.5".parse().unwrap()),
            datname: None,
            size: 20,
            overflow: 10,
            processes: 1,
        };
        let rows = [
            row("api", "10.0.0.5", "idle", 7.0, 0.0),
            row("api", "10.0.0.5", "active", 3.0, 0.0),
            row("api", "10.0.0.5", "idle in transaction", 1.0, 42.0),
            row("api", "10.0.0.6", "idle", 100.0, 0.0),
            row("worker", "10.0.0.5", "idle", 100.0, 0.0),
        ];
        let f = families(&[pool], &rows);
        assert_eq!(f[0].get(&["api", "idle"]), Some(7.0));
        assert_eq!(f[0].get(&["api", "active"]), Some(3.0));
        assert_eq!(f[0].get(&["api", "idle in transaction (aborted)"]), Some(0.0));
        assert_eq!(f[1].get(&["api"]), Some(30.0));
        assert_eq!(f[2].get(&["api"]), Some(42.0));
    }
}
