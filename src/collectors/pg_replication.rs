//! `replication`: whether this server is a standby and how far its replay
//! is behind, from `pg_is_in_recovery()`, `pg_last_wal_receive_lsn()`,
//! `pg_last_wal_replay_lsn()`, `pg_last_xact_replay_timestamp()`,
//! `pg_is_wal_replay_paused()` and `pg_stat_wal_receiver`.
//!
//! Metrics, no labels. postgres_exporter's names and meanings:
//! - `pg_replication_is_replica` gauge: 1 on a standby, 0 on a primary.
//! - `pg_replication_lag_seconds` gauge: on a standby, the time since the
//!   last replayed transaction, but 0 whenever everything received is
//!   replayed; 0 on a primary. Upstream's formula, kept for its dashboards:
//!   it reads 0 on a standby that stopped receiving, so it cannot tell
//!   broken replication from an idle primary.
//! - `pg_replication_last_replay_seconds` gauge: time since the last
//!   replayed transaction committed on the primary (0 on a primary). On an
//!   idle primary it grows without anything being wrong.
//!
//! New in pgsidecar, only on a standby (no sample on a primary):
//! - `pg_replication_replay_lag_bytes` gauge: WAL received but not yet
//!   replayed (`pg_last_wal_receive_lsn() - pg_last_wal_replay_lsn()`).
//! - `pg_replication_replay_paused` gauge: 1 while replay is paused
//!   (`pg_wal_replay_pause()`).
//! - `pg_replication_wal_receiver_streaming` gauge: 1 while a WAL receiver
//!   streams from the primary, 0 when none runs or it is not streaming.
//! - `pg_replication_wal_receiver_last_message_age_seconds` gauge: time
//!   since the WAL receiver last heard from the primary (no sample without a
//!   receiver). The primary sends WAL or, when idle, a keepalive at least
//!   every `wal_sender_timeout / 2` (30 s by default), so on an idle primary
//!   this stays below `wal_sender_timeout`.
//!
//! What "lagging" means (the rule the README gives for alerts): a standby is
//! behind when `pg_replication_replay_lag_bytes > 0` lasts (WAL waits to be
//! replayed), and replication is broken when
//! `pg_replication_wal_receiver_streaming == 0` or the last message is older
//! than `wal_sender_timeout`. Time since the last replay alone is not lag:
//! an idle primary sends nothing to replay, and the bytes stay 0 while the
//! receiver keeps streaming. On the primary the same question is answered
//! per standby by `stat_replication`.
//!
//! Version gates: none (all of these exist in PostgreSQL 13–18).

use super::Definition;
use super::table::{Column, Params, Table};

pub const DEFINITION: Definition = Definition::table("replication", TABLE);

const TABLE: Table = Table {
    from: "(SELECT pg_is_in_recovery() AS standby) s \
           LEFT JOIN pg_stat_wal_receiver w ON s.standby",
    labels: &[],
    columns: &[
        Column::gauge(
            "is_replica",
            "pg_replication_is_replica",
            "1 if this server is a standby (in recovery), 0 on a primary",
        )
        .expr("s.standby::int")
        .upstream(),
        Column::gauge(
            "lag",
            "pg_replication_lag_seconds",
            "On a standby, seconds since the last replayed transaction while received WAL waits to be replayed; else 0",
        )
        .expr(
            "CASE WHEN NOT s.standby THEN 0 \
             WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
             ELSE GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END",
        )
        .upstream(),
        Column::gauge(
            "last_replay",
            "pg_replication_last_replay_seconds",
            "Seconds since the last transaction replayed on this standby committed (0 on a primary)",
        )
        .expr("GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))")
        .upstream(),
        Column::gauge(
            "replay_lag_bytes",
            "pg_replication_replay_lag_bytes",
            "WAL received by this standby but not yet replayed, in bytes",
        )
        .expr(
            "CASE WHEN s.standby THEN \
             GREATEST(0, pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())) END",
        )
        .skip_null(),
        Column::gauge(
            "replay_paused",
            "pg_replication_replay_paused",
            "1 while WAL replay on this standby is paused",
        )
        .expr("CASE WHEN s.standby THEN pg_is_wal_replay_paused()::int END")
        .skip_null(),
        Column::gauge(
            "streaming",
            "pg_replication_wal_receiver_streaming",
            "1 while this standby's WAL receiver streams from the primary",
        )
        .expr("CASE WHEN s.standby THEN COALESCE(w.status = 'streaming', false)::int END")
        .skip_null(),
        Column::gauge(
            "last_message_age",
            "pg_replication_wal_receiver_last_message_age_seconds",
            "Time since this standby's WAL receiver last received a message from the primary",
        )
        .expr("GREATEST(0, extract(epoch FROM now() - w.last_msg_receipt_time))")
        .skip_null(),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn a_primary_has_only_the_upstream_families_filled() {
        let f = TABLE.families(
            150000,
            &[Row::new(
                &[],
                &[("is_replica", 0.0), ("lag", 0.0), ("last_replay", 0.0)],
            )],
        );
        assert_eq!(value(&f, "pg_replication_is_replica", &[]), Some(0.0));
        assert_eq!(value(&f, "pg_replication_replay_lag_bytes", &[]), None);
        assert_eq!(value(&f, "pg_replication_wal_receiver_streaming", &[]), None);
        let sql = TABLE.sql(130000);
        assert!(sql.contains("LEFT JOIN pg_stat_wal_receiver w ON s.standby"), "{sql}");
        assert!(!sql.contains("pg_current_wal_lsn"), "a standby cannot call it: {sql}");
    }
}
