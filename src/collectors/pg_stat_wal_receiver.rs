//! `stat_wal_receiver` (opt-in, as upstream): this standby's WAL receiver,
//! from `pg_stat_wal_receiver`.
//!
//! Metrics, labels `upstream_host` (the `host` of its `conninfo`),
//! `slot_name`, `status` (postgres_exporter's names, types and labels), all
//! gauges: `pg_stat_wal_receiver_receive_start_lsn`,
//! `_flushed_lsn`, `_latest_end_lsn` (positions in bytes),
//! `_receive_start_tli`, `_received_tli` (timelines),
//! `_last_msg_send_time`, `_last_msg_receipt_time`, `_latest_end_time`
//! (unix time), `_upstream_node` (the node number in a repmgr slot name
//! `repmgr_slot_N`; no sample for other names).
//!
//! On a primary, or a standby whose receiver is not running, the view is
//! empty: a success with no series. The default-on `replication` collector
//! has the status a rule needs (`pg_replication_wal_receiver_streaming`).
//!
//! Version gates: none (`flushed_lsn` exists since 13).

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("stat_wal_receiver", TABLE).opt_in();

const TABLE: Table = Table {
    from: "pg_stat_wal_receiver",
    labels: &[
        label("upstream_host").from("COALESCE(trim(both '''' from substring(conninfo from 'host=([^ ]*)')), '')"),
        label("slot_name"),
        label("status"),
    ],
    columns: &[
        Column::gauge(
            "receive_start_lsn",
            "pg_stat_wal_receiver_receive_start_lsn",
            "First WAL position used when the WAL receiver started, in bytes",
        )
        .expr("pg_wal_lsn_diff(receive_start_lsn, '0/0')")
        .upstream(),
        Column::gauge(
            "receive_start_tli",
            "pg_stat_wal_receiver_receive_start_tli",
            "First timeline used when the WAL receiver started",
        )
        .upstream(),
        Column::gauge(
            "flushed_lsn",
            "pg_stat_wal_receiver_flushed_lsn",
            "Last WAL position received and flushed to disk, in bytes",
        )
        .expr("pg_wal_lsn_diff(flushed_lsn, '0/0')")
        .upstream(),
        Column::gauge(
            "received_tli",
            "pg_stat_wal_receiver_received_tli",
            "Timeline of the last WAL position received and flushed",
        )
        .upstream(),
        Column::gauge(
            "last_msg_send_time",
            "pg_stat_wal_receiver_last_msg_send_time",
            "Send time of the last message received from the primary (unix time)",
        )
        .epoch()
        .upstream(),
        Column::gauge(
            "last_msg_receipt_time",
            "pg_stat_wal_receiver_last_msg_receipt_time",
            "Receipt time of the last message received from the primary (unix time)",
        )
        .epoch()
        .upstream(),
        Column::gauge(
            "latest_end_lsn",
            "pg_stat_wal_receiver_latest_end_lsn",
            "Last WAL position reported to the primary, in bytes",
        )
        .expr("pg_wal_lsn_diff(latest_end_lsn, '0/0')")
        .upstream(),
        Column::gauge(
            "latest_end_time",
            "pg_stat_wal_receiver_latest_end_time",
            "Time of the last WAL position reported to the primary (unix time)",
        )
        .epoch()
        .upstream(),
        Column::gauge(
            "upstream_node",
            "pg_stat_wal_receiver_upstream_node",
            "The node number of a repmgr slot name (repmgr_slot_N)",
        )
        .expr("substring(slot_name from '^repmgr_slot_([0-9]+)$')::int")
        .skip_null()
        .upstream(),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_bytes_and_times_unix() {
        let sql = TABLE.sql(130000);
        assert!(
            sql.contains("(pg_wal_lsn_diff(flushed_lsn, '0/0'))::float8 AS flushed_lsn"),
            "{sql}"
        );
        assert!(
            sql.contains("date_part('epoch', latest_end_time) AS latest_end_time"),
            "{sql}"
        );
    }
}
