//! `stat_statements`: the top statements by total execution time, from the
//! `pg_stat_statements` extension.
//!
//! Metrics, labels `user`, `datname`, `queryid`:
//! - counters (postgres_exporter's names): `pg_stat_statements_calls_total`,
//!   `pg_stat_statements_seconds_total` (total execution time),
//!   `pg_stat_statements_rows_total`,
//!   `pg_stat_statements_block_read_seconds_total` and
//!   `pg_stat_statements_block_write_seconds_total` (time spent reading and
//!   writing shared blocks; 0 unless `track_io_timing` is on).
//! - gauges, new in pgsidecar: `pg_stat_statements_mean_seconds` and
//!   `pg_stat_statements_max_seconds` (mean and longest execution).
//! - `pg_stat_statements_query_id{queryid,query}` gauge, always 1, only with
//!   `checks.slow_queries.include_query_text`: the statement's text with its
//!   whitespace collapsed, cut to `query_text_length` characters.
//! - `pgsidecar_stat_statements_top` gauge: how many statements are read.
//!
//! Only the top `checks.slow_queries.top` statements by total execution time
//! are read, and pgsidecar's own (those of its role) are left out unless
//! `exclude_own_role` is false. The texts are read only when they are
//! exported. A missing extension, a missing `shared_preload_libraries` entry
//! or a missing permission makes the collector unavailable, with the reason.
//!
//! Version gates: PostgreSQL 17 renamed `blk_read_time` and `blk_write_time`
//! to `shared_blk_read_time` and `shared_blk_write_time`.

use tokio_postgres::error::SqlState;

use super::{Client, CollectError, CollectFuture, Ctx, Definition, float, text};
use crate::config::Statements;
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("stat_statements", collect);

const PG17: u32 = 170000;

const LABELS: &[&str] = &["user", "datname", "queryid"];

/// The SQL for a server version. `$1`: how many statements, `$2`: read the
/// texts, `$3`: leave out the current role's statements.
///
/// With `pg_stat_statements.track = all` (PostgreSQL 14+), a statement run
/// both at top level and nested has two rows (`toplevel` true and false).
/// They are summed into one, as the peer's labels cannot tell them apart:
/// two rows under one label set made the counters jump backwards. The
/// first row is a summary (`queryid` NULL) that counts the statements the
/// own-role filter left out, so the count arrives even when nothing else does.
pub fn sql(version: u32) -> String {
    let (read, write) = if version >= PG17 {
        ("shared_blk_read_time", "shared_blk_write_time")
    } else {
        ("blk_read_time", "blk_write_time")
    };
    format!(
        "WITH s AS (SELECT userid, dbid, queryid, min(query) AS query, sum(calls) AS calls, \
           sum(total_exec_time) AS total_exec_time, sum(rows) AS rows, max(max_exec_time) AS max_exec_time, \
           sum({read}) AS blk_read_time, sum({write}) AS blk_write_time \
           FROM pg_stat_statements($2) WHERE queryid IS NOT NULL GROUP BY userid, dbid, queryid), \
         own AS (SELECT oid FROM pg_roles WHERE rolname = current_user) \
         SELECT current_user::text AS own_role, \
           (SELECT count(*) FROM s WHERE $3 AND s.userid = (SELECT oid FROM own))::float8 AS left_out, \
           NULL::text AS \"user\", NULL::text AS datname, NULL::text AS queryid, NULL::text AS query, \
           NULL::float8 AS calls, NULL::float8 AS total_exec_time, NULL::float8 AS rows, \
           NULL::float8 AS mean_exec_time, NULL::float8 AS max_exec_time, \
           NULL::float8 AS blk_read_time, NULL::float8 AS blk_write_time \
         UNION ALL (SELECT NULL, NULL, r.rolname::text, d.datname::text, s.queryid::text, COALESCE(s.query, ''), \
           s.calls::float8, s.total_exec_time::float8, s.rows::float8, \
           (s.total_exec_time / NULLIF(s.calls, 0))::float8, s.max_exec_time::float8, \
           s.blk_read_time::float8, s.blk_write_time::float8 \
           FROM s JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid \
           WHERE NOT ($3 AND s.userid = (SELECT oid FROM own)) \
           ORDER BY s.total_exec_time DESC LIMIT $1)"
    )
}

/// One statement; times in milliseconds, as Postgres reports them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub user: String,
    pub datname: String,
    pub queryid: String,
    /// Empty unless the texts were read.
    pub query: String,
    pub calls: f64,
    pub total_exec_time: f64,
    pub rows: f64,
    pub mean_exec_time: f64,
    pub max_exec_time: f64,
    pub blk_read_time: f64,
    pub blk_write_time: f64,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let st = &ctx.checks.statements;
        let top = i64::try_from(st.top).unwrap_or(i64::MAX);
        let sql = sql(ctx.server_version_num);
        let run = async |texts: bool| {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&top, &texts, &st.exclude_own_role];
            client.query(&client.prepare_cached(&sql).await?, &params).await
        };
        let mut texts = st.include_query_text;
        let mut result = run(texts).await;
        // The server refuses to send every text when one is not valid in its
        // encoding (a statement run in a SQL_ASCII database); the statistics
        // are still worth having.
        if let Err(e) = &result
            && texts
            && e.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE)
        {
            ctx.note(format!(
                "query texts left out: {}: a statement's text is not valid in the server's encoding \
                 (it ran in a SQL_ASCII database); the statistics are complete",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string())
            ));
            texts = false;
            result = run(texts).await;
        }
        let found = match result {
            Ok(found) => found,
            Err(e) => {
                return Err(match unavailable(client, &e).await {
                    Some(u) => u,
                    None => CollectError::query("pg_stat_statements", e),
                });
            }
        };
        let mut rows = Vec::new();
        let mut left_out = 0.0;
        for r in found {
            if r.try_get::<_, Option<String>>("queryid").ok().flatten().is_none() {
                left_out = float(&r, "left_out")?;
                if left_out > 0.0 {
                    let role = text(&r, "own_role")?;
                    ctx.note(format!(
                        "statements of role {role}, pgsidecar's own, are left out (checks.slow_queries.exclude_own_role): \
                         give pgsidecar a role of its own to see the application's"
                    ));
                }
                continue;
            }
            rows.push(Row {
                user: text(&r, "user")?,
                datname: text(&r, "datname")?,
                queryid: text(&r, "queryid")?,
                query: text(&r, "query")?,
                calls: float(&r, "calls")?,
                total_exec_time: float(&r, "total_exec_time")?,
                rows: float(&r, "rows")?,
                mean_exec_time: float(&r, "mean_exec_time")?,
                max_exec_time: float(&r, "max_exec_time")?,
                blk_read_time: float(&r, "blk_read_time")?,
                blk_write_time: float(&r, "blk_write_time")?,
            });
        }
        if texts == st.include_query_text {
            Ok(families(&rows, left_out, st))
        } else {
            let without = Statements {
                include_query_text: false,
                ..st.clone()
            };
            Ok(families(&rows, left_out, &without))
        }
    })
}

/// The missing prerequisite behind a failed query, if that is what failed.
pub(super) async fn unavailable(client: &Client, e: &tokio_postgres::Error) -> Option<CollectError> {
    let db = e.as_db_error()?;
    let code = db.code();
    let reason = if *code == SqlState::UNDEFINED_FUNCTION || *code == SqlState::UNDEFINED_TABLE {
        let datname = match client.query_one("SELECT current_database()::text", &[]).await {
            Ok(row) => row
                .try_get::<_, super::Lossy>(0)
                .map(|super::Lossy(s)| s)
                .unwrap_or_default(),
            Err(_) => "(unknown)".to_string(),
        };
        format!("pg_stat_statements is not installed in database {datname}: CREATE EXTENSION pg_stat_statements")
    } else if *code == SqlState::UNDEFINED_COLUMN {
        format!(
            "{}: the pg_stat_statements extension is older than the server, ALTER EXTENSION pg_stat_statements UPDATE",
            db.message()
        )
    } else if *code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE || *code == SqlState::INSUFFICIENT_PRIVILEGE {
        db.message().to_string()
    } else {
        return None;
    };
    Some(CollectError::Unavailable(reason))
}

/// The text as a label value: whitespace runs become one space, control
/// characters are dropped, and at most `max` characters are kept.
pub fn query_label(query: &str, max: usize) -> String {
    query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// `left_out`: statements the own-role filter left out.
pub fn families(rows: &[Row], left_out: f64, st: &Statements) -> Vec<Family> {
    let mut calls = Family::counter(
        "pg_stat_statements_calls_total",
        "Number of times the statement was executed",
        LABELS,
    );
    let mut seconds = Family::counter(
        "pg_stat_statements_seconds_total",
        "Total time spent executing the statement, in seconds",
        LABELS,
    );
    let mut rows_total = Family::counter(
        "pg_stat_statements_rows_total",
        "Total number of rows retrieved or affected by the statement",
        LABELS,
    );
    let mut read = Family::counter(
        "pg_stat_statements_block_read_seconds_total",
        "Total time the statement spent reading shared blocks, in seconds",
        LABELS,
    );
    let mut write = Family::counter(
        "pg_stat_statements_block_write_seconds_total",
        "Total time the statement spent writing shared blocks, in seconds",
        LABELS,
    );
    let mut mean = Family::gauge(
        "pg_stat_statements_mean_seconds",
        "Mean execution time of the statement, in seconds",
        LABELS,
    );
    let mut max = Family::gauge(
        "pg_stat_statements_max_seconds",
        "Longest execution of the statement, in seconds",
        LABELS,
    );
    // A counter always 1, as upstream types it; one series per queryid, the
    // text of its costliest row, so a join on queryid stays one-to-one.
    let mut texts = Family::counter(
        "pg_stat_statements_query_id",
        "The text of a statement, by queryid (always 1)",
        &["queryid", "query"],
    );
    let mut texted = std::collections::BTreeSet::new();
    for r in rows {
        let l = [r.user.as_str(), r.datname.as_str(), r.queryid.as_str()];
        calls.set(&l, r.calls);
        seconds.set(&l, r.total_exec_time / 1000.0);
        rows_total.set(&l, r.rows);
        read.set(&l, r.blk_read_time / 1000.0);
        write.set(&l, r.blk_write_time / 1000.0);
        mean.set(&l, r.mean_exec_time / 1000.0);
        max.set(&l, r.max_exec_time / 1000.0);
        if st.include_query_text && texted.insert(r.queryid.as_str()) {
            texts.set(&[&r.queryid, &query_label(&r.query, st.query_text_length)], 1.0);
        }
    }
    let mut top = Family::gauge(
        "pgsidecar_stat_statements_top",
        "How many statements, the top ones by total execution time, the stat_statements collector reads",
        &[],
    );
    top.set(&[], st.top as f64);
    let mut excluded = Family::gauge(
        "pgsidecar_stat_statements_excluded",
        "Statements left out by a filter; reason own_role: pgsidecar's own role's (checks.slow_queries.exclude_own_role)",
        &["reason"],
    );
    if st.exclude_own_role {
        excluded.set(&["own_role"], left_out);
    }
    vec![calls, seconds, rows_total, read, write, mean, max, texts, top, excluded]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Checks;

    fn row() -> Row {
        Row {
            user: "app".into(),
            datname: "shop".into(),
            queryid: "-42".into(),
            query: "SELECT *\n\tFROM   orders\r\nWHERE id = $1".into(),
            calls: 4.0,
            total_exec_time: 1000.0,
            rows: 8.0,
            mean_exec_time: 250.0,
            max_exec_time: 400.0,
            blk_read_time: 30.0,
            blk_write_time: 5.0,
        }
    }

    use crate::metrics::value as get;

    #[test]
    fn version_gates_pick_the_block_time_columns() {
        assert!(sql(160000).contains("sum(blk_read_time) AS blk_read_time"));
        assert!(sql(170000).contains("sum(shared_blk_read_time) AS blk_read_time"));
        assert!(sql(180000).contains("sum(shared_blk_write_time) AS blk_write_time"));
        assert!(sql(140000).contains("GROUP BY userid, dbid, queryid"));
    }

    #[test]
    fn milliseconds_become_seconds() {
        let mut checks = Checks {
            slow_query_threshold: Duration::from_millis(200),
            ..Checks::default()
        };
        checks.statements.top = 7;
        let f = families(&[row()], 3.0, &checks.statements);
        let l = ["app", "shop", "-42"];
        assert_eq!(get(&f, "pg_stat_statements_calls_total", &l), Some(4.0));
        assert_eq!(get(&f, "pg_stat_statements_seconds_total", &l), Some(1.0));
        assert_eq!(get(&f, "pg_stat_statements_rows_total", &l), Some(8.0));
        assert_eq!(get(&f, "pg_stat_statements_block_read_seconds_total", &l), Some(0.03));
        assert_eq!(get(&f, "pg_stat_statements_block_write_seconds_total", &l), Some(0.005));
        assert_eq!(get(&f, "pg_stat_statements_mean_seconds", &l), Some(0.25));
        assert_eq!(get(&f, "pg_stat_statements_max_seconds", &l), Some(0.4));
        assert_eq!(get(&f, "pgsidecar_stat_statements_top", &[]), Some(7.0));
        assert_eq!(get(&f, "pgsidecar_stat_statements_excluded", &["own_role"]), Some(3.0));
        assert!(
            f.iter()
                .any(|f| f.name() == "pg_stat_statements_query_id" && f.is_empty())
        );
    }

    #[test]
    fn query_text_only_when_asked_collapsed_and_cut() {
        let mut checks = Checks::default();
        checks.statements.include_query_text = true;
        checks.statements.query_text_length = 20;
        // The same queryid as another user, with another spelling: one text series.
        let other = Row {
            user: "report".into(),
            query: "select * from ORDERS where id = $1".into(),
            total_exec_time: 10.0,
            ..row()
        };
        let f = families(&[row(), other], 0.0, &checks.statements);
        assert_eq!(
            get(&f, "pg_stat_statements_query_id", &["-42", "SELECT * FROM orders"]),
            Some(1.0)
        );
        let texts = f.iter().find(|f| f.name() == "pg_stat_statements_query_id").unwrap();
        assert_eq!(texts.len(), 1);
        let text = String::from_utf8(crate::metrics::encode(f.clone()).to_vec()).unwrap();
        assert!(text.contains("# TYPE pg_stat_statements_query_id counter"), "{text}");
        assert_eq!(
            get(&f, "pg_stat_statements_calls_total", &["report", "shop", "-42"]),
            Some(4.0)
        );
        assert_eq!(query_label("a\u{1b}b\n\nž\u{0}ř", 4), "ab ž");
        assert_eq!(query_label("žžž", 2), "žž");
    }
}
