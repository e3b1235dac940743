//! `replication_slots`: every replication slot and the WAL it holds back,
//! from `pg_replication_slots`.
//!
//! An inactive slot keeps every WAL segment from its `restart_lsn` on, until
//! the disk fills: the classic replication outage. These families show it
//! before it happens.
//!
//! Metrics, postgres_exporter's names, types and labels:
//! - labels `slot_name`, `database` ("" for a physical slot):
//!   `pg_replication_slots_active` gauge (1 while a consumer is connected),
//!   `pg_replication_slots_pg_wal_lsn_diff` gauge (bytes from the slot's
//!   `restart_lsn` to this server's WAL position: the WAL it retains).
//! - labels `slot_name`, `slot_type` (`physical` or `logical`):
//!   `pg_replication_slots_slot_current_wal_lsn` gauge (this server's WAL
//!   position in bytes), `pg_replication_slots_slot_confirmed_flush_lsn`
//!   gauge (a logical slot's confirmed position in bytes, 0 for a physical
//!   one), `pg_replication_slots_slot_is_active` gauge,
//!   `pg_replication_slots_safe_wal_size_bytes` gauge (bytes that can still
//!   be written before the slot loses WAL; only when
//!   `max_slot_wal_keep_size` is set).
//! - labels `slot_name`, `slot_type`, `wal_status`:
//!   `pg_replication_slots_wal_status` gauge, 1 for the slot's current
//!   status (`reserved`, `extended`, `unreserved` or `lost`).
//!
//! New in pgsidecar, labels `slot_name`, `slot_type`, `database`:
//! `pg_replication_slots_retained_wal_bytes` gauge, the WAL the slot keeps
//! (the same value as `pg_wal_lsn_diff`, under a name that says so; no
//! sample for a slot that reserves none).
//!
//! Not exported: upstream's `pg_replication_slots_pg_xlog_location_diff`,
//! which only PostgreSQL 9.x had.
//!
//! Version gates: none (`wal_status` and `safe_wal_size` exist since 13).
//! On a standby (whose slots serve cascading standbys) the position is the
//! received one, since `pg_current_wal_lsn()` is not allowed there.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("replication_slots", TABLE);

/// This server's WAL position, on a primary or a standby.
macro_rules! position {
    () => {
        "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END"
    };
}

const BY_DATABASE: &[&str] = &["slot_name", "database"];
const BY_TYPE: &[&str] = &["slot_name", "slot_type"];
const BY_STATUS: &[&str] = &["slot_name", "slot_type", "wal_status"];

const TABLE: Table = Table {
    from: "pg_replication_slots",
    labels: &[
        label("slot_name"),
        label("database"),
        label("slot_type"),
        label("wal_status"),
    ],
    columns: &[
        Column::gauge(
            "active",
            "pg_replication_slots_active",
            "1 while a consumer is connected to the slot",
        )
        .expr("active::int")
        .labels(BY_DATABASE)
        .upstream(),
        Column::gauge(
            "wal_lsn_diff",
            "pg_replication_slots_pg_wal_lsn_diff",
            "Bytes of WAL from the slot's restart_lsn to this server's position",
        )
        .expr(concat!("pg_wal_lsn_diff(", position!(), ", restart_lsn)"))
        .labels(BY_DATABASE)
        .upstream(),
        Column::gauge(
            "current_wal_lsn",
            "pg_replication_slots_slot_current_wal_lsn",
            "This server's WAL position, in bytes",
        )
        .expr(concat!("pg_wal_lsn_diff(", position!(), ", '0/0')"))
        .labels(BY_TYPE)
        .upstream(),
        Column::gauge(
            "confirmed_flush_lsn",
            "pg_replication_slots_slot_confirmed_flush_lsn",
            "The position up to which a logical slot's consumer confirmed receipt, in bytes (0 for a physical slot)",
        )
        .expr("pg_wal_lsn_diff(COALESCE(confirmed_flush_lsn, '0/0'), '0/0')")
        .labels(BY_TYPE)
        .upstream(),
        Column::gauge(
            "is_active",
            "pg_replication_slots_slot_is_active",
            "1 while a consumer is connected to the slot",
        )
        .expr("active::int")
        .labels(BY_TYPE)
        .upstream(),
        Column::gauge(
            "safe_wal_size",
            "pg_replication_slots_safe_wal_size_bytes",
            "Bytes of WAL that can still be written before this slot is in danger of losing WAL (needs max_slot_wal_keep_size)",
        )
        .labels(BY_TYPE)
        .skip_null()
        .upstream(),
        Column::gauge(
            "wal_status_one",
            "pg_replication_slots_wal_status",
            "1 for the slot's WAL status: reserved, extended, unreserved or lost",
        )
        .expr("1")
        .labels(BY_STATUS)
        .upstream(),
        Column::gauge(
            "retained_wal_bytes",
            "pg_replication_slots_retained_wal_bytes",
            "Bytes of WAL this slot keeps from being removed",
        )
        .expr(concat!("GREATEST(0, pg_wal_lsn_diff(", position!(), ", restart_lsn))"))
        .labels(&["slot_name", "slot_type", "database"])
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
    fn each_family_takes_upstreams_labels() {
        let f = TABLE.families(
            130000,
            &[
                Row::new(
                    &["standby1", "", "physical", "reserved"],
                    &[
                        ("active", 0.0),
                        ("wal_lsn_diff", 4096.0),
                        ("retained_wal_bytes", 4096.0),
                        ("wal_status_one", 1.0),
                    ],
                ),
                Row::new(
                    &["cdc", "app", "logical", "lost"],
                    &[("active", 1.0), ("wal_status_one", 1.0)],
                ),
            ],
        );
        assert_eq!(value(&f, "pg_replication_slots_active", &["standby1", ""]), Some(0.0));
        assert_eq!(
            value(&f, "pg_replication_slots_pg_wal_lsn_diff", &["standby1", ""]),
            Some(4096.0)
        );
        assert_eq!(
            value(&f, "pg_replication_slots_wal_status", &["cdc", "logical", "lost"]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &f,
                "pg_replication_slots_retained_wal_bytes",
                &["standby1", "physical", ""]
            ),
            Some(4096.0)
        );
        assert_eq!(
            value(
                &f,
                "pg_replication_slots_retained_wal_bytes",
                &["cdc", "logical", "app"]
            ),
            None
        );
        assert!(!TABLE.sql(180000).contains("pg_current_wal_lsn() -"));
    }
}
