//! `stat_replication`: every standby (or logical replication client)
//! connected to this server, and how far behind it is, from
//! `pg_stat_replication` joined to the slot it uses in
//! `pg_replication_slots`.
//!
//! Metrics, labels `application_name`, `client_addr`, `state`, `slot_name`
//! (postgres_exporter's names, types and labels):
//! - `pg_stat_replication_pg_current_wal_lsn_bytes` gauge: this server's WAL
//!   position (on a cascading standby, the position it has received).
//! - `pg_stat_replication_pg_wal_lsn_diff` gauge: bytes between that
//!   position and the standby's replay position.
//!
//! New in pgsidecar, same labels:
//! - `pg_stat_replication_sent_lag_bytes`, `_write_lag_bytes`,
//!   `_flush_lag_bytes`, `_replay_lag_bytes` gauges: bytes between this
//!   server's WAL position and what the standby was sent, wrote, flushed
//!   and replayed.
//! - `pg_stat_replication_write_lag_seconds`, `_flush_lag_seconds`,
//!   `_replay_lag_seconds` gauges: Postgres's own `write_lag`, `flush_lag`
//!   and `replay_lag`, the time between a commit here and the standby
//!   confirming it. Postgres resets them to NULL once the standby has caught
//!   up and no new WAL comes (an idle primary): NULL reads 0.
//! - `pg_stat_replication_reply_age_seconds` gauge: time since the standby
//!   last sent a status reply. A connected standby replies at least every
//!   `wal_receiver_status_interval` (10 s), idle primary or not, so this is
//!   what tells an idle primary (bytes 0, replies fresh) from a stuck
//!   standby (replies stale); a standby that is gone has no row at all (see
//!   `pg_replication_slots_active`).
//!
//! `client_addr` is the standby's address without a netmask ("" for a Unix
//! socket); `slot_name` is "" for a standby without a slot.
//!
//! Version gates: none (13–18 have these columns). On a standby
//! `pg_current_wal_lsn()` is not allowed, so the position is the received
//! one there, as upstream does.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("stat_replication", TABLE);

/// This server's WAL position, on a primary or a (cascading) standby, where
/// `pg_current_wal_lsn()` is not allowed.
macro_rules! position {
    () => {
        "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END"
    };
}

/// Bytes from a standby's position to this server's.
macro_rules! behind {
    ($lsn:literal) => {
        concat!("GREATEST(0, pg_wal_lsn_diff(", position!(), ", ", $lsn, "))")
    };
}

const TABLE: Table = Table {
    from: "pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid",
    labels: &[
        label("application_name").from("r.application_name"),
        label("client_addr").from("COALESCE(host(r.client_addr), '')"),
        label("state").from("r.state"),
        label("slot_name").from("COALESCE(s.slot_name::text, '')"),
    ],
    columns: &[
        Column::gauge(
            "current_wal_lsn_bytes",
            "pg_stat_replication_pg_current_wal_lsn_bytes",
            "WAL position of this server (received position on a standby), in bytes",
        )
        .expr(concat!("pg_wal_lsn_diff(", position!(), ", '0/0')"))
        .upstream(),
        Column::gauge(
            "wal_lsn_diff",
            "pg_stat_replication_pg_wal_lsn_diff",
            "Bytes between this server's WAL position and the standby's replay position",
        )
        .expr(concat!("pg_wal_lsn_diff(", position!(), ", r.replay_lsn)"))
        .upstream(),
        Column::gauge(
            "sent_lag_bytes",
            "pg_stat_replication_sent_lag_bytes",
            "Bytes of WAL not yet sent to the standby",
        )
        .expr(behind!("r.sent_lsn"))
        .skip_null(),
        Column::gauge(
            "write_lag_bytes",
            "pg_stat_replication_write_lag_bytes",
            "Bytes of WAL the standby has not yet written",
        )
        .expr(behind!("r.write_lsn"))
        .skip_null(),
        Column::gauge(
            "flush_lag_bytes",
            "pg_stat_replication_flush_lag_bytes",
            "Bytes of WAL the standby has not yet flushed",
        )
        .expr(behind!("r.flush_lsn"))
        .skip_null(),
        Column::gauge(
            "replay_lag_bytes",
            "pg_stat_replication_replay_lag_bytes",
            "Bytes of WAL the standby has not yet replayed",
        )
        .expr(behind!("r.replay_lsn"))
        .skip_null(),
        Column::gauge(
            "write_lag",
            "pg_stat_replication_write_lag_seconds",
            "Time between a commit here and the standby writing it (Postgres's write_lag; 0 when caught up and idle)",
        )
        .expr("extract(epoch FROM r.write_lag)"),
        Column::gauge(
            "flush_lag",
            "pg_stat_replication_flush_lag_seconds",
            "Time between a commit here and the standby flushing it (Postgres's flush_lag; 0 when caught up and idle)",
        )
        .expr("extract(epoch FROM r.flush_lag)"),
        Column::gauge(
            "replay_lag",
            "pg_stat_replication_replay_lag_seconds",
            "Time between a commit here and the standby replaying it (Postgres's replay_lag; 0 when caught up and idle)",
        )
        .expr("extract(epoch FROM r.replay_lag)"),
        Column::gauge(
            "reply_age",
            "pg_stat_replication_reply_age_seconds",
            "Time since the standby last sent a status reply",
        )
        .expr("GREATEST(0, extract(epoch FROM now() - r.reply_time))")
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
    fn positions_work_on_a_standby_and_idle_lag_reads_zero() {
        let sql = TABLE.sql(130000);
        assert!(
            sql.contains("GREATEST(0, pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, r.flush_lsn))"),
            "{sql}"
        );
        let labels = ["standby1", "127.0.0.1", "streaming", "s1"];
        // Caught up on an idle primary: Postgres's lag columns are NULL.
        let f = TABLE.families(
            160000,
            &[Row::new(
                &labels,
                &[("replay_lag_bytes", 0.0), ("replay_lag", 0.0), ("reply_age", 1.5)],
            )],
        );
        assert_eq!(value(&f, "pg_stat_replication_replay_lag_seconds", &labels), Some(0.0));
        assert_eq!(value(&f, "pg_stat_replication_reply_age_seconds", &labels), Some(1.5));
    }
}
