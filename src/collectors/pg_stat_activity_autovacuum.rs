//! `stat_activity_autovacuum` (opt-in, as upstream): the autovacuum
//! workers running now and for how long, from `pg_stat_activity`.
//!
//! Metrics, label `relname` (postgres_exporter's name, type and label):
//! `pg_stat_activity_autovacuum_timestamp_seconds` gauge, the age in
//! seconds of the worker's transaction (despite the name). `relname` is
//! what follows the schema in the worker's query text
//! (`autovacuum: VACUUM public.t` gives `t`; a wraparound vacuum keeps its
//! ` (to prevent wraparound)` suffix, as upstream).
//!
//! Version gates: none. Empty on a hot standby.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("stat_activity_autovacuum", TABLE).opt_in();

const TABLE: Table = Table {
    from: "pg_stat_activity WHERE backend_type = 'autovacuum worker' AND query LIKE 'autovacuum:%'",
    labels: &[label("relname").from("split_part(query, '.', 2)")],
    columns: &[Column::gauge(
        "timestamp_seconds",
        "pg_stat_activity_autovacuum_timestamp_seconds",
        "Age in seconds of the autovacuum worker's transaction",
    )
    .expr("extract(epoch FROM now() - xact_start)")
    .upstream()],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn age_per_table() {
        let f = TABLE.families(130000, &[Row::new(&["t"], &[("timestamp_seconds", 12.5)])]);
        assert_eq!(
            value(&f, "pg_stat_activity_autovacuum_timestamp_seconds", &["t"]),
            Some(12.5)
        );
        assert!(
            TABLE
                .sql(130000)
                .contains("(split_part(query, '.', 2))::text AS relname")
        );
    }
}
