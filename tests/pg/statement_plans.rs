//! `checks.slow_queries.explain` against a real server: the slow
//! statements of `pg_stat_statements` are planned (generic plans, nothing
//! executed) within the hourly budget; a statement whose table lost its
//! index shows a sequential scan once its plan is fetched again; one that
//! cannot be planned is not tried again; the budget is never exceeded.

use crate::support::pg;
use crate::support::scrape::{Metrics, until};
use crate::support::{WAIT, start, test_yaml};

const ROLE: &str = "pgsidecar_plans";

const ON_MESSAGES: &str = "SELECT pg_sleep($1), count(*) FROM messages WHERE user_id = $2";
const ON_GONE: &str = "SELECT pg_sleep($1), count(*) FROM gone WHERE user_id = $2";
const ON_WORDS: &str = "SELECT pg_sleep($1), count(*) FROM saved_words WHERE user_id = $2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_are_planned_within_the_budget() {
    let cluster = pg::shared();
    let dbname = "stmt_plans_db";
    let db = crate::support::fixture::create_app_db(cluster, dbname).await;
    // At most 10 s for a lock, so that a plan's transaction left open fails
    // the test instead of hanging its DROP INDEX.
    db.batch_execute(&format!(
        "SET lock_timeout = '10s'; DO $$ BEGIN CREATE ROLE {ROLE} LOGIN IN ROLE pg_monitor; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         CREATE TABLE gone (user_id int); GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}; \
         SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
    ))
    .await
    .unwrap();
    // Three slow statements, slowest first; then the table of the second
    // goes, so it cannot be planned.
    for (sql, secs) in [(ON_MESSAGES, 0.4f64), (ON_GONE, 0.3), (ON_WORDS, 0.2)] {
        db.query(sql, &[&secs, &5i32]).await.unwrap();
    }
    let queryid = async |text: &str| -> String {
        db.query_one(
            "SELECT queryid::text FROM pg_stat_statements WHERE query = $1 \
             AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&text],
        )
        .await
        .unwrap_or_else(|e| panic!("queryid of {text}: {e}"))
        .get(0)
    };
    let (messages, words) = (queryid(ON_MESSAGES).await, queryid(ON_WORDS).await);
    db.batch_execute("DROP TABLE gone").await.unwrap();

    let dsn = cluster.socket_dsn(ROLE, dbname);
    // Four EXPLAINs an hour; a plan is fetched again after 5 s.
    let yaml = test_yaml(
        &dsn,
        "checks:\n  slow_queries:\n    threshold: 100ms\n    explain:\n      enabled: true\n      per_hour: 4\n      \
         refresh: 5s\n      interval: 1s\n      timeout: 500ms\n",
    );
    let px = start(&yaml).await;
    let explains = |m: &Metrics, result: &str| m.get("pgsidecar_statement_explains_total", &[("result", result)]);
    let seq = |m: &Metrics, id: &str, rel: &str| {
        m.get(
            "pgsidecar_statement_plan_seq_scans",
            &[("queryid", id), ("schemaname", "public"), ("relname", rel)],
        )
    };
    let index = |m: &Metrics, id: &str, idx: &str| {
        m.get(
            "pgsidecar_statement_plan_index_scans",
            &[("queryid", id), ("indexname", idx)],
        )
    };
    let fingerprint = |m: &Metrics, id: &str| {
        m.all("pgsidecar_statement_plan_info", &[("queryid", id)])
            .first()
            .map(|s| s.labels["fingerprint"].clone())
    };
    // The slowest is planned, the second fails, the third is planned: three
    // of the four.
    let m = until(px.addr, WAIT, "three statements explained", |m| {
        (explains(m, "ok") == Some(2.0) && explains(m, "failed") == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(
        index(&m, &messages, "idx_messages_user_created"),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(seq(&m, &messages, "messages"), None, "{}", m.text);
    assert_eq!(index(&m, &words, "idx_saved_words_user_word"), Some(1.0), "{}", m.text);
    assert_eq!(m.get("pgsidecar_statement_explains_last_hour", &[]), Some(3.0));
    assert_eq!(m.get("pgsidecar_statement_explain_per_hour", &[]), Some(4.0));
    assert_eq!(
        m.get("pgsidecar_statement_explain_skipped", &[("reason", "failed")]),
        Some(1.0)
    );
    let page = crate::support::scrape::get(px.addr, "/").await.text();
    assert!(page.contains("relation &quot;gone&quot; does not exist"), "{page}");
    let before = fingerprint(&m, &messages).unwrap();

    // The table loses its index; when the plan is due again, the budget's
    // last EXPLAIN goes to the slowest statement, which now reads messages
    // sequentially. The other waits for the next hour.
    db.batch_execute("DROP INDEX idx_messages_user_created").await.unwrap();
    let m = until(px.addr, WAIT, "the slowest statement planned anew", |m| {
        (seq(m, &messages, "messages") == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_ne!(fingerprint(&m, &messages).unwrap(), before);
    assert_eq!(index(&m, &messages, "idx_messages_user_created"), None);
    assert_eq!(explains(&m, "ok"), Some(3.0));
    assert_eq!(m.get("pgsidecar_statement_explains_last_hour", &[]), Some(4.0));
    let ok_at = |m: &Metrics| {
        m.get(
            "pgsidecar_collector_last_success_timestamp_seconds",
            &[("collector", "statement_plans")],
        )
    };
    let seen = ok_at(&m);
    let m = until(px.addr, WAIT, "two more runs", |m| {
        (ok_at(m) > seen.map(|t| t + 1.5)).then(|| m.clone())
    })
    .await;
    // Nothing more within the hour: the failed one is not retried, the
    // stale one waits, its last plan still shown.
    assert_eq!(explains(&m, "ok"), Some(3.0), "{}", m.text);
    assert_eq!(explains(&m, "failed"), Some(1.0), "{}", m.text);
    assert_eq!(m.get("pgsidecar_statement_explains_last_hour", &[]), Some(4.0));
    assert_eq!(
        m.get("pgsidecar_statement_explain_skipped", &[("reason", "rate_limited")]),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(index(&m, &words, "idx_saved_words_user_word"), Some(1.0));
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "statement_plans")]),
        Some(1.0)
    );
    px.stop().await.unwrap();
}
