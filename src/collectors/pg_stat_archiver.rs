//! `stat_archiver`: WAL archiving, from `pg_stat_archiver`.
//!
//! Metrics, no labels (postgres_exporter's names and types):
//! - `pg_stat_archiver_archived_count` counter: WAL files archived.
//! - `pg_stat_archiver_failed_count` counter: failed attempts to archive.
//! - `pg_stat_archiver_last_archive_age` gauge: seconds since the last WAL
//!   file was archived; no sample if none ever was (upstream would read 0,
//!   which looks like "just archived").
//!
//! New in pgsidecar:
//! - `pg_stat_archiver_last_archived_timestamp_seconds`,
//!   `pg_stat_archiver_last_failed_timestamp_seconds` gauges: unix time of
//!   the last success and of the last failure (0: never).
//! - `pg_stat_archiver_enabled` gauge: 1 when `archive_mode` is `on` or
//!   `always`, so a rule about stalled archiving can leave out servers that
//!   do not archive.
//!
//! Version gates: none. On a standby the view counts what the standby
//! itself archives (`archive_mode = always`).

use super::Definition;
use super::table::{Column, Params, Table};

pub const DEFINITION: Definition = Definition::table("stat_archiver", TABLE);

const TABLE: Table = Table {
    from: "pg_stat_archiver",
    labels: &[],
    columns: &[
        Column::counter(
            "archived_count",
            "pg_stat_archiver_archived_count",
            "Number of WAL files that have been successfully archived",
        )
        .upstream(),
        Column::counter(
            "failed_count",
            "pg_stat_archiver_failed_count",
            "Number of failed attempts for archiving WAL files",
        )
        .upstream(),
        Column::gauge(
            "last_archive_age",
            "pg_stat_archiver_last_archive_age",
            "Seconds since the last WAL file was archived",
        )
        .expr("extract(epoch FROM now() - last_archived_time)")
        .skip_null()
        .upstream(),
        Column::gauge(
            "last_archived_time",
            "pg_stat_archiver_last_archived_timestamp_seconds",
            "Time of the last successful archive operation (unix time, 0 if never)",
        )
        .epoch(),
        Column::gauge(
            "last_failed_time",
            "pg_stat_archiver_last_failed_timestamp_seconds",
            "Time of the last failed archive operation (unix time, 0 if never)",
        )
        .epoch(),
        Column::gauge(
            "enabled",
            "pg_stat_archiver_enabled",
            "1 when archive_mode is on or always",
        )
        .expr("(current_setting('archive_mode') <> 'off')::int"),
    ],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn never_archived_has_no_age() {
        let f = TABLE.families(
            150000,
            &[Row::new(
                &[],
                &[("archived_count", 0.0), ("failed_count", 2.0), ("enabled", 1.0)],
            )],
        );
        assert_eq!(value(&f, "pg_stat_archiver_failed_count", &[]), Some(2.0));
        assert_eq!(value(&f, "pg_stat_archiver_last_archive_age", &[]), None);
        assert_eq!(value(&f, "pg_stat_archiver_enabled", &[]), Some(1.0));
    }
}
