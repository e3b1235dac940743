//! `wal`: the WAL segments in `pg_wal`, from `pg_ls_waldir()`.
//!
//! Metrics, no labels (postgres_exporter's names and types):
//! - `pg_wal_segments` gauge: WAL segment files in `pg_wal`.
//! - `pg_wal_size_bytes` gauge: their total size.
//!
//! `pg_ls_waldir()` needs `pg_monitor` (or superuser). Without it the
//! collector is unavailable (`pgsidecar_collector_unavailable`, logged once)
//! rather than failing every interval. The cost grows with the files in
//! `pg_wal`, which is what it reads.
//!
//! Version gates: none. Works on a hot standby.

use tokio_postgres::error::SqlState;

use super::table::{Column, Params, Table};
use super::{Client, CollectError, CollectFuture, Ctx, Definition};

pub const DEFINITION: Definition = Definition::custom("wal", collect);

const TABLE: Table = Table {
    from: "pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
    labels: &[],
    columns: &[
        Column::gauge("segments", "pg_wal_segments", "Number of WAL segments")
            .expr("count(*)")
            .upstream(),
        Column::gauge("size", "pg_wal_size_bytes", "Total size of WAL segments")
            .expr("COALESCE(sum(size), 0)")
            .upstream(),
    ],
    params: Params::None,
};

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        TABLE.collect(client, ctx).await.map_err(|e| match e {
            CollectError::Query { source, .. } if source.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                CollectError::Unavailable(
                    "pg_ls_waldir() needs the pg_monitor role: GRANT pg_monitor TO <pgsidecar's role>".into(),
                )
            }
            other => other,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_segment_files_only() {
        let sql = TABLE.sql(130000);
        assert_eq!(
            sql,
            "SELECT (count(*))::float8 AS segments, (COALESCE(sum(size), 0))::float8 AS size FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'"
        );
    }
}
