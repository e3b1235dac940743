//! `active_queries`: queries running now, from `pg_stat_activity`: how many
//! run longer than the slow-query threshold, the oldest one's age, and
//! connections idle in a transaction, by database and application.
//!
//! `pg_stat_statements` shows what was slow; this shows what is slow right
//! now, including the statement that never finishes.
//!
//! Metrics (new in pgsidecar), labels `datname`, `application_name`, for
//! client backends other than the session running this query. pgsidecar's
//! other sessions count like any client's: a collector stuck behind a lock
//! is a slow query too.
//! - `pg_stat_activity_slow_queries` gauge: active queries running longer
//!   than `checks.slow_queries.threshold`.
//! - `pg_stat_activity_oldest_query_seconds` gauge: age of the oldest active
//!   query (0 if none).
//! - `pg_stat_activity_idle_in_transaction_connections` gauge.
//! - `pg_stat_activity_idle_in_transaction_oldest_seconds` gauge (0 if none).
//!
//! The threshold itself is `pgsidecar_slow_query_threshold_seconds` (health).
//! Version gates: none.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("active_queries", TABLE);

const TABLE: Table = Table {
    from: "pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1, 2",
    labels: &[label("datname"), label("application_name")],
    columns: &[
        Column::gauge(
            "slow",
            "pg_stat_activity_slow_queries",
            "Active queries running longer than the slow-query threshold",
        )
        .expr("count(*) FILTER (WHERE state = 'active' AND now() - query_start > make_interval(secs => $1))"),
        Column::gauge(
            "oldest",
            "pg_stat_activity_oldest_query_seconds",
            "Age of the oldest active query, in seconds (0: none)",
        )
        .expr("max(extract(epoch FROM now() - query_start)) FILTER (WHERE state = 'active')"),
        Column::gauge(
            "idle_in_tx",
            "pg_stat_activity_idle_in_transaction_connections",
            "Connections idle inside an open transaction",
        )
        .expr("count(*) FILTER (WHERE state LIKE 'idle in transaction%')"),
        Column::gauge(
            "idle_in_tx_oldest",
            "pg_stat_activity_idle_in_transaction_oldest_seconds",
            "How long the oldest idle-in-transaction connection has been idle, in seconds (0: none)",
        )
        .expr("max(extract(epoch FROM now() - state_change)) FILTER (WHERE state LIKE 'idle in transaction%')"),
    ],
    params: Params::SlowQueryThreshold,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn one_sample_per_database_and_application() {
        let f = TABLE.families(
            150000,
            &[Row::new(
                &["app", "api"],
                &[
                    ("slow", 2.0),
                    ("oldest", 0.4),
                    ("idle_in_tx", 1.0),
                    ("idle_in_tx_oldest", 9.5),
                ],
            )],
        );
        assert_eq!(value(&f, "pg_stat_activity_slow_queries", &["app", "api"]), Some(2.0));
        assert_eq!(
            value(&f, "pg_stat_activity_oldest_query_seconds", &["app", "api"]),
            Some(0.4)
        );
        assert_eq!(
            value(&f, "pg_stat_activity_idle_in_transaction_connections", &["app", "api"]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &f,
                "pg_stat_activity_idle_in_transaction_oldest_seconds",
                &["app", "api"]
            ),
            Some(9.5)
        );
        assert!(TABLE.sql(150000).contains("make_interval(secs => $1)"));
    }
}
