//! `stat_checkpointer`: checkpoints and restartpoints, from
//! `pg_stat_checkpointer` (PostgreSQL 17+).
//!
//! Metrics, no labels, all counters (postgres_exporter's names; times in
//! milliseconds, as Postgres reports them):
//! `pg_stat_checkpointer_num_timed_total`, `_num_requested_total`,
//! `_restartpoints_timed_total`, `_restartpoints_req_total`,
//! `_restartpoints_done_total`, `_write_time_total`, `_sync_time_total`,
//! `_buffers_written_total`, `_stats_reset_total` (unix time of the last
//! reset). New in pgsidecar, PostgreSQL 18+:
//! `pg_stat_checkpointer_num_done_total` (checkpoints completed; `num_timed`
//! and `num_requested` also count skipped ones) and
//! `pg_stat_checkpointer_slru_written_total`.
//!
//! Upstream leaves this collector off, so on PostgreSQL 17 its checkpoint
//! dashboards go blank. pgsidecar runs it by default. On PostgreSQL 13–16
//! the view does not exist and the checkpoint counters are in
//! `stat_bgwriter`: the collector then reads nothing and says so in a note
//! (status page, logged once). That is not a failure and not a missing
//! prerequisite: `pg_scrape_collector_success` stays 1 and no
//! `pgsidecar_collector_unavailable` is reported.

use super::Definition;
use super::table::{Column, Params, Table};

pub const DEFINITION: Definition = Definition::table("stat_checkpointer", TABLE).since(
    PG17,
    "pg_stat_checkpointer exists from PostgreSQL 17; this server's checkpoints are counted by stat_bgwriter",
);

const PG17: u32 = 170000;
const PG18: u32 = 180000;

const TABLE: Table = Table {
    from: "pg_stat_checkpointer",
    labels: &[],
    columns: &[
        Column::counter(
            "num_timed",
            "pg_stat_checkpointer_num_timed_total",
            "Scheduled checkpoints due to timeout",
        )
        .upstream(),
        Column::counter(
            "num_requested",
            "pg_stat_checkpointer_num_requested_total",
            "Requested checkpoints",
        )
        .upstream(),
        Column::counter(
            "num_done",
            "pg_stat_checkpointer_num_done_total",
            "Checkpoints that have been performed",
        )
        .since(PG18),
        Column::counter(
            "restartpoints_timed",
            "pg_stat_checkpointer_restartpoints_timed_total",
            "Scheduled restartpoints due to timeout or after a failed attempt",
        )
        .upstream(),
        Column::counter(
            "restartpoints_req",
            "pg_stat_checkpointer_restartpoints_req_total",
            "Requested restartpoints",
        )
        .upstream(),
        Column::counter(
            "restartpoints_done",
            "pg_stat_checkpointer_restartpoints_done_total",
            "Restartpoints that have been performed",
        )
        .upstream(),
        Column::counter(
            "write_time",
            "pg_stat_checkpointer_write_time_total",
            "Time spent writing files to disk during checkpoints and restartpoints, in milliseconds",
        )
        .upstream(),
        Column::counter(
            "sync_time",
            "pg_stat_checkpointer_sync_time_total",
            "Time spent synchronizing files to disk during checkpoints and restartpoints, in milliseconds",
        )
        .upstream(),
        Column::counter(
            "buffers_written",
            "pg_stat_checkpointer_buffers_written_total",
            "Shared buffers written during checkpoints and restartpoints",
        )
        .upstream(),
        Column::counter(
            "slru_written",
            "pg_stat_checkpointer_slru_written_total",
            "SLRU buffers written during checkpoints and restartpoints",
        )
        .since(PG18),
        Column::counter(
            "stats_reset",
            "pg_stat_checkpointer_stats_reset_total",
            "Time at which these statistics were last reset (unix time)",
        )
        .epoch()
        .upstream(),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_17_with_18s_columns_from_18() {
        assert_eq!(DEFINITION.since, PG17);
        assert!(!TABLE.sql(170000).contains("num_done"));
        assert!(TABLE.sql(180000).contains("num_done::float8") && TABLE.sql(180000).contains("slru_written"));
    }
}
