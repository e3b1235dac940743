//! `buffercache_summary` (opt-in, as upstream): the state of shared buffers,
//! from the `pg_buffercache` extension's `pg_buffercache_summary()`
//! (PostgreSQL 16+).
//!
//! Metrics, no labels (postgres_exporter's names and types), gauges:
//! `pg_buffercache_summary_buffers_used`, `_buffers_unused`,
//! `_buffers_dirty`, `_buffers_pinned`, `_usagecount_avg` (average usage
//! count of the used buffers).
//!
//! The function visits every buffer header without locking the buffers, so
//! its cost grows with `shared_buffers`: give it a long interval on a large
//! server. It is unavailable (`pgsidecar_collector_unavailable`, logged
//! once) on PostgreSQL 13–15, where the function does not exist, and where
//! the extension is not created in pgsidecar's database or the role lacks
//! `pg_monitor`. Works on a hot standby (the standby's own buffers).

use tokio_postgres::error::SqlState;

use super::table::{Column, Params, Table};
use super::{Client, CollectError, CollectFuture, Ctx, Definition};

pub const DEFINITION: Definition = Definition::custom("buffercache_summary", collect).opt_in();

const PG16: u32 = 160000;

const TABLE: Table = Table {
    from: "pg_buffercache_summary()",
    labels: &[],
    columns: &[
        Column::gauge(
            "buffers_used",
            "pg_buffercache_summary_buffers_used",
            "Shared buffers in use",
        )
        .upstream(),
        Column::gauge(
            "buffers_unused",
            "pg_buffercache_summary_buffers_unused",
            "Shared buffers not in use",
        )
        .upstream(),
        Column::gauge(
            "buffers_dirty",
            "pg_buffercache_summary_buffers_dirty",
            "Dirty shared buffers",
        )
        .upstream(),
        Column::gauge(
            "buffers_pinned",
            "pg_buffercache_summary_buffers_pinned",
            "Pinned shared buffers",
        )
        .upstream(),
        Column::gauge(
            "usagecount_avg",
            "pg_buffercache_summary_usagecount_avg",
            "Average usage count of the used shared buffers",
        )
        .upstream(),
    ],
    params: Params::None,
};

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        if ctx.server_version_num < PG16 {
            return Err(CollectError::Unavailable(format!(
                "pg_buffercache_summary() needs PostgreSQL 16 or later; this server is {}",
                ctx.server_version_num / 10000
            )));
        }
        TABLE.collect(client, ctx).await.map_err(|e| match e {
            CollectError::Query { source, .. } if source.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {
                CollectError::Unavailable(
                    "pg_buffercache is not installed in pgsidecar's database: CREATE EXTENSION pg_buffercache".into(),
                )
            }
            CollectError::Query { source, .. } if source.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                CollectError::Unavailable(
                    "pg_buffercache_summary() needs the pg_monitor role: GRANT pg_monitor TO <pgsidecar's role>".into(),
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
    fn reads_the_summary_function() {
        assert_eq!(
            TABLE.sql(160000),
            "SELECT buffers_used::float8 AS buffers_used, buffers_unused::float8 AS buffers_unused, \
             buffers_dirty::float8 AS buffers_dirty, buffers_pinned::float8 AS buffers_pinned, \
             usagecount_avg::float8 AS usagecount_avg FROM pg_buffercache_summary()"
        );
    }
}
