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
//! One histogram family, as upstream's: `histogram_quantile(0.9,
//! pg_process_idle_seconds_bucket)` works as with upstream.
//!
//! One row per idle session is read; the buckets are counted here, by the
//! pure [`families`]. Version gates: none. Works on a hot standby.

use std::collections::BTreeMap;

use super::{Client, CollectFuture, Ctx, Definition, float, query, text};
use crate::metrics::{Family, Histogram};

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
    let mut groups: BTreeMap<(&str, &str), Histogram> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.state.as_str(), r.application_name.as_str()))
            .or_insert_with(|| Histogram::new(BUCKETS.to_vec()))
            .observe(r.idle);
    }
    let mut idle = Family::histogram(
        "pg_process_idle_seconds",
        "Idle sessions by how long they have been idle, in seconds",
        &["state", "application_name"],
    );
    for ((state, app), h) in groups {
        idle.set_histogram(&[state, app], h);
    }
    vec![idle]
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
        let text = String::from_utf8(crate::metrics::encode(f).to_vec()).unwrap();
        for line in [
            "# TYPE pg_process_idle_seconds histogram",
            "pg_process_idle_seconds_bucket{state=\"idle\",application_name=\"web\",le=\"1\"} 1",
            "pg_process_idle_seconds_bucket{state=\"idle\",application_name=\"web\",le=\"5\"} 2",
            "pg_process_idle_seconds_bucket{state=\"idle\",application_name=\"web\",le=\"300\"} 2",
            "pg_process_idle_seconds_bucket{state=\"idle\",application_name=\"web\",le=\"+Inf\"} 3",
            "pg_process_idle_seconds_sum{state=\"idle\",application_name=\"web\"} 403.5",
            "pg_process_idle_seconds_count{state=\"idle\",application_name=\"web\"} 3",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }
}
