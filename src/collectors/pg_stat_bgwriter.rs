//! `stat_bgwriter`: the background writer's and (before PostgreSQL 17) the
//! checkpointer's counters, from `pg_stat_bgwriter`.
//!
//! Metrics, no labels, all counters (postgres_exporter's names; times in
//! milliseconds, as Postgres reports them):
//! - every version: `pg_stat_bgwriter_buffers_clean_total`,
//!   `_maxwritten_clean_total`, `_buffers_alloc_total`,
//!   `_stats_reset_total` (unix time of the last reset, as upstream exports
//!   it).
//! - PostgreSQL 13–16 only: `pg_stat_bgwriter_checkpoints_timed_total`,
//!   `_checkpoints_req_total`, `_checkpoint_write_time_total`,
//!   `_checkpoint_sync_time_total`, `_buffers_checkpoint_total`,
//!   `_buffers_backend_total`, `_buffers_backend_fsync_total`.
//!
//! PostgreSQL 17 moved the checkpoint columns to `pg_stat_checkpointer`
//! (the `stat_checkpointer` collector, on by default) and the backend writes
//! to `pg_stat_io`; here they are version-gated away (`until`), so a
//! PostgreSQL 17 server neither fails this collector nor reports zeros for
//! what it no longer counts here.

use super::Definition;
use super::table::{Column, Params, Table};

pub const DEFINITION: Definition = Definition::table("stat_bgwriter", TABLE);

const PG17: u32 = 170000;

const TABLE: Table = Table {
    from: "pg_stat_bgwriter",
    labels: &[],
    columns: &[
        Column::counter(
            "checkpoints_timed",
            "pg_stat_bgwriter_checkpoints_timed_total",
            "Scheduled checkpoints that have been performed",
        )
        .until(PG17)
        .upstream(),
        Column::counter(
            "checkpoints_req",
            "pg_stat_bgwriter_checkpoints_req_total",
            "Requested checkpoints that have been performed",
        )
        .until(PG17)
        .upstream(),
        Column::counter(
            "checkpoint_write_time",
            "pg_stat_bgwriter_checkpoint_write_time_total",
            "Time spent writing files to disk during checkpoints, in milliseconds",
        )
        .until(PG17)
        .upstream(),
        Column::counter(
            "checkpoint_sync_time",
            "pg_stat_bgwriter_checkpoint_sync_time_total",
            "Time spent synchronizing files to disk during checkpoints, in milliseconds",
        )
        .until(PG17)
        .upstream(),
        Column::counter(
            "buffers_checkpoint",
            "pg_stat_bgwriter_buffers_checkpoint_total",
            "Buffers written during checkpoints",
        )
        .until(PG17)
        .upstream(),
        Column::counter(
            "buffers_clean",
            "pg_stat_bgwriter_buffers_clean_total",
            "Buffers written by the background writer",
        )
        .upstream(),
        Column::counter(
            "maxwritten_clean",
            "pg_stat_bgwriter_maxwritten_clean_total",
            "Times the background writer stopped a cleaning scan because it had written too many buffers",
        )
        .upstream(),
        Column::counter(
            "buffers_backend",
            "pg_stat_bgwriter_buffers_backend_total",
            "Buffers written directly by a backend",
        )
        .until(PG17)
        .upstream(),
        Column::counter(
            "buffers_backend_fsync",
            "pg_stat_bgwriter_buffers_backend_fsync_total",
            "Times a backend had to execute its own fsync call",
        )
        .until(PG17)
        .upstream(),
        Column::counter(
            "buffers_alloc",
            "pg_stat_bgwriter_buffers_alloc_total",
            "Buffers allocated",
        )
        .upstream(),
        Column::counter(
            "stats_reset",
            "pg_stat_bgwriter_stats_reset_total",
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
    fn checkpoint_columns_stop_at_17() {
        let old = TABLE.sql(160000);
        assert!(
            old.contains("checkpoints_req::float8") && old.contains("buffers_backend_fsync"),
            "{old}"
        );
        let new = TABLE.sql(170000);
        for gone in [
            "checkpoints_timed",
            "checkpoints_req",
            "checkpoint_write_time",
            "buffers_checkpoint",
            "buffers_backend",
        ] {
            assert!(!new.contains(gone), "{gone} in {new}");
        }
        assert!(
            new.contains("buffers_clean::float8") && new.contains("buffers_alloc::float8"),
            "{new}"
        );
    }
}
