//! `process_idle` (opt-in, as upstream): how long idle sessions have been
//! idle, from `pg_stat_activity`.
//!
//! Metrics, labels `state` (`idle`, `idle in transaction`,
//! `idle in transaction (aborted)`) and `application_name`: the series of
//! postgres_exporter's histogram `pg_process_idle_seconds`, with its
//! buckets (1, 2, 5, 15, 30, 60, 90, 120 and 300 seconds, and `+Inf`):
//! - `pg_process_idle_seconds_bucket{le}`: sessions idle for at most `le`
//!   seconds (cumulative, as in any histogram);
//! - `pg_process_idle_seconds_sum`: their idle seconds added up;
//! - `pg_process_idle_seconds_count`: the sessions.
//!
//! These are three untyped families with the histogram's series names:
//! queries such as `histogram_quantile(0.9, pg_process_idle_seconds_bucket)`
//! work as with upstream, but the `# TYPE` line says `untyped`, since
//! pgsidecar's family builder has no histogram type.
//!
//! One row per idle session is read; the buckets are counted here, by the
//! pure [`families`]. Version gates: none. Works on a hot standby.

use std::collections::BTreeMap;

use super::{Client, CollectFuture, Ctx, Definition, float, query, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("process_idle", collect).opt_in();

const SQL: &str = "SELECT state, COALESCE(application_name, '') AS application_name, \
     GREATEST(0, extract(epoch FROM now() - state_change))::float8 AS idle \
     FROM pg_stat_activity WHERE state ~ '^idle' AND state_change IS NOT NULL";

/// Upstream's bucket bounds, in seconds.
pub const BUCKETS: [f64; 9] = [1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 300.0];

/// One idle session.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub state: String,
    pub application_name: String,
    pub idle: f64,
}

fn collect<'a>(client: &'a Client, _ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let mut rows = Vec::new();
        for r in query(client, "pg_stat_activity", SQL, &[]).await? {
            rows.push(Row {
                state: text(&r, "state")?,
                application_name: text(&r, "application_name")?,
                idle: float(&r, "idle")?,
            });
        }
        Ok(families(&rows))
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    let mut groups: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.state.as_str(), r.application_name.as_str()))
            .or_default()
            .push(r.idle);
    }
    let mut bucket = Family::untyped(
        "pg_process_idle_seconds_bucket",
        "Idle sessions by how long they have been idle: those idle at most le seconds",
        &["state", "application_name", "le"],
    );
    let mut sum = Family::untyped(
        "pg_process_idle_seconds_sum",
        "Seconds the idle sessions have been idle, added up",
        &["state", "application_name"],
    );
    let mut count = Family::untyped(
        "pg_process_idle_seconds_count",
        "Idle sessions",
        &["state", "application_name"],
    );
    for ((state, app), ages) in &groups {
        for le in BUCKETS {
            let n = ages.iter().filter(|a| **a <= le).count();
            bucket.set(&[state, app, &le.to_string()], n as f64);
        }
        bucket.set(&[state, app, "+Inf"], ages.len() as f64);
        sum.set(&[state, app], ages.iter().sum());
        count.set(&[state, app], ages.len() as f64);
    }
    vec![bucket, sum, count]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let row = |idle| Row {
            state: "idle".into(),
            application_name: "web".into(),
            idle,
        };
        let f = families(&[row(0.5), row(3.0), row(400.0)]);
        assert_eq!(f[0].get(&["idle", "web", "1"]), Some(1.0));
        assert_eq!(f[0].get(&["idle", "web", "5"]), Some(2.0));
        assert_eq!(f[0].get(&["idle", "web", "300"]), Some(2.0));
        assert_eq!(f[0].get(&["idle", "web", "+Inf"]), Some(3.0));
        assert_eq!(f[1].get(&["idle", "web"]), Some(403.5));
        assert_eq!(f[2].get(&["idle", "web"]), Some(3.0));
    }
}
