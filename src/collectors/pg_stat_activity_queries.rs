//! `active_queries`: queries running now, from `pg_stat_activity`: how many
//! run longer than the slow-query threshold, the oldest one's age, and
//! connections idle in a transaction, by database and application.
//!
//! `pg_stat_statements` shows what was slow; this shows what is slow right
//! now, including the statement that never finishes.
//!
//! Metrics (new in pgsidecar), labels `datname`, `application_name`, for
//! client backends other than pgsidecar's own:
//! - `pg_stat_activity_slow_queries` gauge: active queries running longer
//!   than `checks.slow_queries.threshold`.
//! - `pg_stat_activity_oldest_query_seconds` gauge: age of the oldest active
//!   query (0 if none).
//! - `pg_stat_activity_idle_in_transaction_connections` gauge.
//! - `pg_stat_activity_idle_in_transaction_oldest_seconds` gauge (0 if none).
//!
//! The threshold itself is `pgsidecar_slow_query_threshold_seconds` (health).
//! Version gates: none.

use super::{Client, CollectFuture, Ctx, Definition, Scope, float, query_params, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "active_queries",
    enabled_by_default: true,
    default_interval: None,
    scope: Scope::Server,
    collect,
};

const SQL: &str = "SELECT COALESCE(datname::text, '') AS datname, COALESCE(application_name, '') AS application_name, \
     (count(*) FILTER (WHERE state = 'active' AND now() - query_start > make_interval(secs => $1)))::float8 AS slow, \
     COALESCE(max(extract(epoch FROM now() - query_start)) FILTER (WHERE state = 'active'), 0)::float8 AS oldest, \
     (count(*) FILTER (WHERE state LIKE 'idle in transaction%'))::float8 AS idle_in_tx, \
     COALESCE(max(extract(epoch FROM now() - state_change)) FILTER (WHERE state LIKE 'idle in transaction%'), 0)::float8 AS idle_in_tx_oldest \
     FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
     GROUP BY 1, 2";

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub datname: String,
    pub application_name: String,
    pub slow: f64,
    pub oldest: f64,
    pub idle_in_tx: f64,
    pub idle_in_tx_oldest: f64,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let what = "active_queries";
        let threshold = ctx.checks.slow_query_threshold.as_secs_f64();
        let mut rows = Vec::new();
        for r in query_params(client, what, SQL, &[&threshold]).await? {
            rows.push(Row {
                datname: text(&r, what, "datname")?,
                application_name: text(&r, what, "application_name")?,
                slow: float(&r, what, "slow")?,
                oldest: float(&r, what, "oldest")?,
                idle_in_tx: float(&r, what, "idle_in_tx")?,
                idle_in_tx_oldest: float(&r, what, "idle_in_tx_oldest")?,
            });
        }
        Ok(families(&rows))
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    let labels = &["datname", "application_name"];
    let mut slow = Family::gauge(
        "pg_stat_activity_slow_queries",
        "Active queries running longer than the slow-query threshold",
        labels,
    );
    let mut oldest = Family::gauge(
        "pg_stat_activity_oldest_query_seconds",
        "Age of the oldest active query, in seconds (0: none)",
        labels,
    );
    let mut idle = Family::gauge(
        "pg_stat_activity_idle_in_transaction_connections",
        "Connections idle inside an open transaction",
        labels,
    );
    let mut idle_oldest = Family::gauge(
        "pg_stat_activity_idle_in_transaction_oldest_seconds",
        "How long the oldest idle-in-transaction connection has been idle, in seconds (0: none)",
        labels,
    );
    for r in rows {
        let l = &[r.datname.as_str(), r.application_name.as_str()];
        slow.set(l, r.slow);
        oldest.set(l, r.oldest);
        idle.set(l, r.idle_in_tx);
        idle_oldest.set(l, r.idle_in_tx_oldest);
    }
    vec![slow, oldest, idle, idle_oldest]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sample_per_database_and_application() {
        let f = families(&[Row {
            datname: "app".into(),
            application_name: "api".into(),
            slow: 2.0,
            oldest: 0.4,
            idle_in_tx: 1.0,
            idle_in_tx_oldest: 9.5,
        }]);
        assert_eq!(f[0].get(&["app", "api"]), Some(2.0));
        assert_eq!(f[1].get(&["app", "api"]), Some(0.4));
        assert_eq!(f[2].get(&["app", "api"]), Some(1.0));
        assert_eq!(f[3].get(&["app", "api"]), Some(9.5));
    }
}
