//! `long_running_transactions` (opt-in, as upstream): open transactions and
//! the oldest one's age, from `pg_stat_activity`.
//!
//! Metrics, no labels (postgres_exporter's names and types), gauges:
//! - `pg_long_running_transactions`: transactions open now in sessions that
//!   are not idle (active, idle in transaction, …), autovacuum left out.
//! - `pg_long_running_transactions_oldest_timestamp_seconds`: the age in
//!   seconds of the oldest of them (0 if none), despite upstream's name.
//!
//! Version gates: none. Works on a hot standby (its read-only
//! transactions).

use super::Definition;
use super::table::{Column, Params, Table};

pub const DEFINITION: Definition = Definition::table("long_running_transactions", TABLE).opt_in();

const TABLE: Table = Table {
    from: "pg_stat_activity WHERE state IS DISTINCT FROM 'idle' \
           AND backend_type <> 'autovacuum worker' AND xact_start IS NOT NULL",
    labels: &[],
    columns: &[
        Column::gauge(
            "transactions",
            "pg_long_running_transactions",
            "Open transactions in sessions that are not idle",
        )
        .expr("count(*)")
        .upstream(),
        Column::gauge(
            "oldest",
            "pg_long_running_transactions_oldest_timestamp_seconds",
            "Age in seconds of the oldest open transaction (0 if none)",
        )
        .expr("COALESCE(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)")
        .upstream(),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_aggregate_row() {
        let sql = TABLE.sql(130000);
        assert!(
            sql.starts_with("SELECT (count(*))::float8 AS transactions, (COALESCE(max("),
            "{sql}"
        );
    }
}
