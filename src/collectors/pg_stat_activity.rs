//! `stat_activity`: connections by database, state, user, application,
//! backend type and wait event, from `pg_stat_activity`.
//!
//! Metrics, labels `datname`, `state`, `usename`, `application_name`,
//! `backend_type`, `wait_event_type`, `wait_event` (postgres_exporter's):
//! - `pg_stat_activity_count` gauge: connections in the group.
//! - `pg_stat_activity_max_tx_duration` gauge: the age in seconds of the
//!   oldest open transaction in the group (0 if none).
//!
//! As in postgres_exporter, every database gets a zero sample for each of the
//! six states it has no connection in (other labels empty), so a state that
//! empties drops to 0 instead of vanishing. Background processes without a
//! database are reported with `datname=""`.
//!
//! Version gates: none (`backend_type` exists since PostgreSQL 10).

use std::collections::BTreeSet;

use super::{Client, CollectFuture, Ctx, Definition, float, query, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("stat_activity", collect);

const SQL: &str = "SELECT COALESCE(datname::text, '') AS datname, COALESCE(state, '') AS state, \
     COALESCE(usename::text, '') AS usename, COALESCE(application_name, '') AS application_name, \
     COALESCE(backend_type, '') AS backend_type, COALESCE(wait_event_type, '') AS wait_event_type, \
     COALESCE(wait_event, '') AS wait_event, count(*)::float8 AS count, \
     COALESCE(max(extract(epoch FROM now() - xact_start)), 0)::float8 AS max_tx_duration \
     FROM pg_stat_activity GROUP BY 1, 2, 3, 4, 5, 6, 7";

const DATABASES_SQL: &str = "SELECT datname::text AS datname FROM pg_database";

pub const STATES: [&str; 6] = [
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
];

const LABELS: &[&str] = &[
    "datname",
    "state",
    "usename",
    "application_name",
    "backend_type",
    "wait_event_type",
    "wait_event",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// In the order of `LABELS`.
    pub labels: [String; 7],
    pub count: f64,
    pub max_tx_duration: f64,
}

fn collect<'a>(client: &'a Client, _ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let mut rows = Vec::new();
        for r in query(client, "pg_stat_activity", SQL, &[]).await? {
            let mut labels: [String; 7] = Default::default();
            for (slot, name) in labels.iter_mut().zip(LABELS) {
                *slot = text(&r, name)?;
            }
            rows.push(Row {
                labels,
                count: float(&r, "count")?,
                max_tx_duration: float(&r, "max_tx_duration")?,
            });
        }
        let mut databases = Vec::new();
        for r in query(client, "pg_database", DATABASES_SQL, &[]).await? {
            databases.push(text(&r, "datname")?);
        }
        Ok(families(&rows, &databases))
    })
}

pub fn families(rows: &[Row], databases: &[String]) -> Vec<Family> {
    let mut count = Family::gauge("pg_stat_activity_count", "number of connections in this state", LABELS);
    let mut max_tx = Family::gauge(
        "pg_stat_activity_max_tx_duration",
        "max duration in seconds any active transaction has been running",
        LABELS,
    );
    let mut seen = BTreeSet::new();
    for r in rows {
        let labels: Vec<&str> = r.labels.iter().map(String::as_str).collect();
        count.set(&labels, r.count);
        max_tx.set(&labels, r.max_tx_duration);
        seen.insert((r.labels[0].as_str(), r.labels[1].as_str()));
    }
    for db in databases {
        for state in STATES {
            if !seen.contains(&(db.as_str(), state)) {
                let labels = [db.as_str(), state, "", "", "", "", ""];
                count.set(&labels, 0.0);
                max_tx.set(&labels, 0.0);
            }
        }
    }
    vec![count, max_tx]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_states_get_zero_samples() {
        let row = Row {
            labels: ["app", "idle", "u", "web", "client backend", "Client", "ClientRead"].map(String::from),
            count: 4.0,
            max_tx_duration: 0.0,
        };
        let f = families(&[row], &["app".to_string()]);
        assert_eq!(
            f[0].get(&["app", "idle", "u", "web", "client backend", "Client", "ClientRead"]),
            Some(4.0)
        );
        assert_eq!(f[0].get(&["app", "active", "", "", "", "", ""]), Some(0.0));
        assert_eq!(f[0].get(&["app", "idle", "", "", "", "", ""]), None);
        assert_eq!(f[0].len(), 6);
    }
}
