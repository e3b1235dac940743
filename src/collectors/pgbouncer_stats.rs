//! `pgbouncer_stats`: PgBouncer's `SHOW STATS_TOTALS` (PgBouncer ≥ 1.8), the
//! cumulative totals per database, with pgbouncer_exporter's names (it reads
//! the same command since its 0.11, hence the `stats_totals` in the names).
//! PgBouncer's counters are exported as it reports them; `SHOW STATS`'s
//! averages are left out, since a rate belongs in the query.
//!
//! Metrics, counters labelled `database` (pgbouncer_exporter's):
//! - `pgbouncer_stats_totals_queries_pooled_total` (`query_count`);
//! - `pgbouncer_stats_totals_sql_transactions_pooled_total` (`xact_count`);
//! - `pgbouncer_stats_totals_queries_duration_seconds_total` (`query_time`, µs);
//! - `pgbouncer_stats_totals_server_in_transaction_seconds_total` (`xact_time`, µs);
//! - `pgbouncer_stats_totals_client_wait_seconds_total` (`wait_time`, µs);
//! - `pgbouncer_stats_totals_received_bytes_total` (`bytes_received`),
//!   `pgbouncer_stats_totals_sent_bytes_total` (`bytes_sent`);
//! - `pgbouncer_stats_totals_server_assignments_total`
//!   (`server_assignment_count`, PgBouncer ≥ 1.23);
//! - `pgbouncer_stats_totals_client_parses_total`, `_server_parses_total`,
//!   `_binds_total` (`client_parse_count`, `server_parse_count`,
//!   `bind_count`, PgBouncer ≥ 1.24).
//!
//! Version gates: none; a column a release lacks gives no sample.

use super::console::{Row, Value, counter, families, show};
use super::{Client, CollectFuture, Ctx, Definition};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("pgbouncer_stats", collect).pgbouncer();

const VALUES: [Value; 11] = [
    counter(
        "query_count",
        "pgbouncer_stats_totals_queries_pooled_total",
        "Total number of SQL queries pooled by PgBouncer",
    ),
    counter(
        "xact_count",
        "pgbouncer_stats_totals_sql_transactions_pooled_total",
        "Total number of SQL transactions pooled by PgBouncer",
    ),
    counter(
        "query_time",
        "pgbouncer_stats_totals_queries_duration_seconds_total",
        "Total seconds PgBouncer spent actively connected to PostgreSQL, executing queries",
    )
    .micros(),
    counter(
        "xact_time",
        "pgbouncer_stats_totals_server_in_transaction_seconds_total",
        "Total seconds PgBouncer spent connected to PostgreSQL in a transaction, idle in it or executing queries",
    )
    .micros(),
    counter(
        "wait_time",
        "pgbouncer_stats_totals_client_wait_seconds_total",
        "Total seconds clients spent waiting for a server connection",
    )
    .micros(),
    counter(
        "bytes_received",
        "pgbouncer_stats_totals_received_bytes_total",
        "Total bytes of network traffic PgBouncer received from clients",
    ),
    counter(
        "bytes_sent",
        "pgbouncer_stats_totals_sent_bytes_total",
        "Total bytes of network traffic PgBouncer sent to clients",
    ),
    counter(
        "server_assignment_count",
        "pgbouncer_stats_totals_server_assignments_total",
        "Total times a server connection was assigned to a client",
    ),
    counter(
        "client_parse_count",
        "pgbouncer_stats_totals_client_parses_total",
        "Total prepared statements clients asked PgBouncer to parse",
    ),
    counter(
        "server_parse_count",
        "pgbouncer_stats_totals_server_parses_total",
        "Total prepared statements PgBouncer had servers parse",
    ),
    counter(
        "bind_count",
        "pgbouncer_stats_totals_binds_total",
        "Total prepared statements bound",
    ),
];

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let rows = show(client, "SHOW STATS_TOTALS").await?;
        let (fams, notes) = stats_families(&rows);
        for n in notes {
            ctx.note(n);
        }
        Ok(fams)
    })
}

pub fn stats_families(rows: &[Row]) -> (Vec<Family>, Vec<String>) {
    families(rows, &["database"], &VALUES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::value;

    #[test]
    fn totals_are_counters_in_seconds_and_bytes() {
        // SHOW STATS_TOTALS of PgBouncer 1.18 (no server_assignment_count yet).
        let row = Row::of(&[
            ("database", "app"),
            ("xact_count", "10"),
            ("query_count", "12"),
            ("bytes_received", "2048"),
            ("bytes_sent", "4096"),
            ("xact_time", "1500000"),
            ("query_time", "750000"),
            ("wait_time", "2000000"),
        ]);
        let (f, notes) = stats_families(&[row]);
        assert!(notes.is_empty());
        let l = ["app"];
        assert_eq!(value(&f, "pgbouncer_stats_totals_queries_pooled_total", &l), Some(12.0));
        assert_eq!(
            value(&f, "pgbouncer_stats_totals_sql_transactions_pooled_total", &l),
            Some(10.0)
        );
        assert_eq!(
            value(&f, "pgbouncer_stats_totals_queries_duration_seconds_total", &l),
            Some(0.75)
        );
        assert_eq!(
            value(&f, "pgbouncer_stats_totals_server_in_transaction_seconds_total", &l),
            Some(1.5)
        );
        assert_eq!(
            value(&f, "pgbouncer_stats_totals_client_wait_seconds_total", &l),
            Some(2.0)
        );
        assert_eq!(
            value(&f, "pgbouncer_stats_totals_received_bytes_total", &l),
            Some(2048.0)
        );
        assert_eq!(value(&f, "pgbouncer_stats_totals_server_assignments_total", &l), None);
        let text = String::from_utf8(crate::metrics::encode(f).to_vec()).unwrap();
        assert!(
            text.contains("# TYPE pgbouncer_stats_totals_sent_bytes_total counter"),
            "{text}"
        );
    }
}
