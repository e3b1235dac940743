//! Probes (`checks.probes`) against a real server, on every version: a plan
//! that loses its expected index and gets it back (a parameterized query,
//! so the generic-plan path of the version runs: `EXPLAIN (GENERIC_PLAN)` on
//! 16+, `PREPARE` before), a forbidden sequential scan, `execute` mode
//! timing a slow function against its budget, a write refused by the
//! read-only transaction, and a probe that times out and backs off while
//! the other collectors keep succeeding.
//!
//! pgsidecar runs as `pgsidecar_probes`, a `pg_monitor` member that may
//! read the application's tables, as the README says a probe needs; it
//! connects over the cluster's Unix socket.

use std::time::Instant;

use crate::support::pg::{self, Cluster};
use crate::support::scrape::{Metrics, get, until};
use crate::support::{WAIT, start, test_yaml};

const ROLE: &str = "pgsidecar_probes";

/// The application's database `dbname`, readable by the probes' role;
/// returns a superuser connection and the role's DSN. The connection's
/// statements wait at most 10 s for a lock: a probe that left its
/// transaction open fails the test instead of hanging its `DROP INDEX`.
async fn app_db(cluster: &Cluster, dbname: &str) -> (tokio_postgres::Client, String) {
    let db = crate::support::fixture::create_app_db(cluster, dbname).await;
    db.batch_execute(&format!(
        "SET lock_timeout = '10s'; \
         DO $$ BEGIN CREATE ROLE {ROLE} LOGIN IN ROLE pg_monitor; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}"
    ))
    .await
    .unwrap();
    (db, cluster.socket_dsn(ROLE, dbname))
}

/// `checks.probes` with these items. The `database` collector, which sizes
/// every database of the shared cluster and can overrun its 900 ms while
/// other tests create theirs, is off: the tests that say every other
/// collector succeeds are about the probes.
fn probes(yaml: &str) -> String {
    format!("collectors:\n  database:\n    enabled: false\nchecks:\n  probes:\n{yaml}")
}

fn fingerprint(m: &Metrics, probe: &str) -> Option<String> {
    match m.all("pgsidecar_probe_plan_info", &[("probe", probe)]).as_slice() {
        [one] => Some(one.labels["fingerprint"].clone()),
        _ => None,
    }
}

/// How many of the role's statements in `pg_stat_statements` start so.
async fn statements_like(db: &tokio_postgres::Client, pattern: &str) -> i64 {
    db.query_one(
        &format!(
            "SELECT count(*) FROM pg_stat_statements WHERE userid = '{ROLE}'::regrole AND query LIKE $1 \
             AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        &[&pattern],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_loses_its_index_and_gets_it_back() {
    let cluster = pg::shared();
    let (db, dsn) = app_db(cluster, "probe_plan_db").await;
    let yaml = probes(
        "    - name: history\n      query: |\n        SELECT id, text, created_at FROM messages\n        WHERE user_id = $1 ORDER BY created_at DESC LIMIT 10\n      \
         interval: 1s\n      expect_index: idx_messages_user_created\n      forbid_seq_scan_on: messages\n\
         \x20   - name: words\n      query: SELECT count(*) FROM saved_words WHERE user_id = $1\n      interval: 1s\n      \
         expect_index: public.idx_saved_words_user_word\n      forbid_seq_scan_on: public.saved_words\n",
    );
    let px = start(&test_yaml(&dsn, &yaml)).await;
    let uses = |m: &Metrics, probe: &str, index: &str| {
        m.get("pgsidecar_probe_plan_uses_index", &[("probe", probe), ("index", index)])
    };
    let forbidden = |m: &Metrics, probe: &str, table: &str| {
        m.get(
            "pgsidecar_probe_plan_forbidden_seq_scans",
            &[("probe", probe), ("table", table)],
        )
    };
    let m = until(px.addr, WAIT, "both plans use their index", |m| {
        (uses(m, "history", "idx_messages_user_created") == Some(1.0)
            && uses(m, "words", "public.idx_saved_words_user_word") == Some(1.0))
        .then(|| m.clone())
    })
    .await;
    assert_eq!(forbidden(&m, "history", "messages"), Some(0.0), "{}", m.text);
    assert_eq!(forbidden(&m, "words", "public.saved_words"), Some(0.0), "{}", m.text);
    assert!(!m.has("pgsidecar_probe_plan_seq_scans"), "{}", m.text);
    assert_eq!(m.get("pgsidecar_probe_success", &[("probe", "history")]), Some(1.0));
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "probe:history")]),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "pgsidecar_probe_plan_index_scans",
            &[
                ("probe", "history"),
                ("schemaname", "public"),
                ("indexname", "idx_messages_user_created")
            ]
        ),
        Some(1.0)
    );
    assert!(
        m.get("pgsidecar_probe_plan_total_cost", &[("probe", "history")])
            .unwrap()
            > 0.0
    );
    assert!(m.get("pgsidecar_probe_plan_rows", &[("probe", "history")]).unwrap() >= 1.0);
    // Plan mode: the duration is the planning time, well under a second.
    let planning = m
        .get("pgsidecar_probe_duration_seconds", &[("probe", "history")])
        .unwrap();
    assert!(planning > 0.0 && planning < 1.0, "{planning}");
    assert!(
        !m.has("pgsidecar_probe_execution_seconds_count"),
        "plan mode executes nothing"
    );
    let with_index = fingerprint(&m, "history").unwrap();

    // The generic-plan path of this server version ran.
    let version: i32 = db
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let generic = statements_like(&db, "EXPLAIN (GENERIC_PLAN, %").await;
    let prepared = statements_like(&db, "EXPLAIN (VERBOSE, SUMMARY, FORMAT JSON) EXECUTE pgsidecar_plan(%").await;
    if version >= 160000 {
        assert!(
            generic > 0 && prepared == 0,
            "PG {version}: {generic} generic, {prepared} prepared"
        );
    } else {
        assert!(
            generic == 0 && prepared > 0,
            "PG {version}: {generic} generic, {prepared} prepared"
        );
    }
    db.batch_execute("DROP INDEX idx_messages_user_created; DROP INDEX idx_saved_words_user_word")
        .await
        .unwrap();
    let m = until(px.addr, WAIT, "the plans without their index", |m| {
        (uses(m, "history", "idx_messages_user_created") == Some(0.0)
            && forbidden(m, "words", "public.saved_words") == Some(1.0)
            && fingerprint(m, "history").is_some_and(|f| f != with_index))
        .then(|| m.clone())
    })
    .await;
    assert_eq!(uses(&m, "words", "public.idx_saved_words_user_word"), Some(0.0));
    assert_eq!(
        m.get(
            "pgsidecar_probe_plan_seq_scans",
            &[("probe", "words"), ("schemaname", "public"), ("relname", "saved_words")]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    assert!(m.get("pgsidecar_probe_plan_changes_total", &[("probe", "history")]) >= Some(1.0));
    assert_eq!(m.get("pgsidecar_probe_success", &[("probe", "history")]), Some(1.0));

    db.batch_execute("CREATE INDEX idx_messages_user_created ON messages (user_id, created_at DESC)")
        .await
        .unwrap();
    let m = until(px.addr, WAIT, "the plan with its index again", |m| {
        (uses(m, "history", "idx_messages_user_created") == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(fingerprint(&m, "history"), Some(with_index), "the same shape as before");
    assert!(m.get("pgsidecar_probe_plan_changes_total", &[("probe", "history")]) >= Some(2.0));
    // Each probe's transaction ended with its run (they take milliseconds):
    // none of pgsidecar's sessions is in one that began seconds ago.
    let open: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = current_database() \
             AND xact_start < now() - interval '2 seconds'",
            &[&ROLE],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "a probe left its transaction open");
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_mode_times_a_slow_query_against_its_budget() {
    let cluster = pg::shared();
    let (db, dsn) = app_db(cluster, "probe_exec_db").await;
    // Slow without holding a lock: it sleeps, then counts.
    db.batch_execute(
        "CREATE FUNCTION slow_stats(u int) RETURNS bigint LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(0.3); RETURN (SELECT count(*) FROM messages WHERE user_id = u); END $$",
    )
    .await
    .unwrap();
    let yaml = probes(
        "    - name: slow\n      query: SELECT slow_stats($1)\n      params: [5]\n      mode: execute\n      \
         interval: 1s\n      timeout: 900ms\n      budget: 100ms\n\
         \x20   - name: fast\n      query: SELECT count(*) FROM messages WHERE user_id = $1\n      params: [\"5\"]\n      \
         mode: execute\n      interval: 1s\n      budget: 200ms\n      expect_index: idx_messages_user_created\n",
    );
    let px = start(&test_yaml(&dsn, &yaml)).await;
    let count = |m: &Metrics, probe: &str| m.get("pgsidecar_probe_execution_seconds_count", &[("probe", probe)]);
    let m = until(px.addr, WAIT, "two timed runs of each probe", |m| {
        (count(m, "slow") >= Some(2.0) && count(m, "fast") >= Some(2.0)).then(|| m.clone())
    })
    .await;
    let get = |name: &str, probe: &str| {
        m.get(name, &[("probe", probe)])
            .unwrap_or_else(|| panic!("{name} of {probe}:\n{}", m.text))
    };
    assert_eq!(get("pgsidecar_probe_budget_seconds", "slow"), 0.1);
    let slow = get("pgsidecar_probe_duration_seconds", "slow");
    assert!(slow >= 0.3, "the slow probe took {slow} s");
    assert!(slow > get("pgsidecar_probe_budget_seconds", "slow"));
    let within = |probe: &str, le: &str| {
        m.get(
            "pgsidecar_probe_execution_seconds_bucket",
            &[("probe", probe), ("le", le)],
        )
    };
    // The budget is a bucket bound: no slow run within it, every fast one.
    assert_eq!(within("slow", "0.1"), Some(0.0), "{}", m.text);
    assert!(
        get("pgsidecar_probe_execution_seconds_sum", "slow")
            >= 0.3 * get("pgsidecar_probe_execution_seconds_count", "slow")
    );
    assert_eq!(within("fast", "0.2"), count(&m, "fast"), "{}", m.text);
    let fast = get("pgsidecar_probe_duration_seconds", "fast");
    assert!(fast < 0.2, "the fast probe took {fast} s");
    // The query ran: the function's count came back, and the fast probe's rows.
    assert_eq!(get("pgsidecar_probe_rows", "slow"), 1.0);
    assert_eq!(get("pgsidecar_probe_rows", "fast"), 1.0);
    assert!(get("pgsidecar_probe_shared_blocks_hit", "fast") + get("pgsidecar_probe_shared_blocks_read", "fast") > 0.0);
    assert_eq!(get("pgsidecar_probe_success", "slow"), 1.0);
    assert!(m.text.contains("# TYPE pgsidecar_probe_execution_seconds histogram"));
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_writes_is_stopped_by_the_read_only_transaction() {
    let cluster = pg::shared();
    let (db, dsn) = app_db(cluster, "probe_write_db").await;
    // A function the lexer cannot see into, and a table pgsidecar's role may
    // write: only the read-only transaction stands in the way.
    db.batch_execute(&format!(
        "CREATE TABLE probe_log (at timestamptz); GRANT INSERT ON probe_log TO {ROLE}; \
         CREATE FUNCTION log_visit() RETURNS int LANGUAGE sql AS $$ INSERT INTO probe_log VALUES (now()) RETURNING 1 $$"
    ))
    .await
    .unwrap();
    let yaml = probes(
        "    - name: writer\n      query: SELECT log_visit()\n      mode: execute\n      interval: 1s\n\
         \x20   - name: reader\n      query: SELECT count(*) FROM users\n      mode: execute\n      interval: 1s\n",
    );
    let px = start(&test_yaml(&dsn, &yaml)).await;
    // The writer fails while every other collector succeeds (their first
    // runs, all at once on a fresh pool, may time out: their next ones do not).
    let m = until(
        px.addr,
        WAIT,
        "the writer failed and every other collector succeeded",
        |m| {
            let others_ok = m
                .all("pg_scrape_collector_success", &[])
                .iter()
                .all(|s| s.value == 1.0 || s.labels["collector"] == "probe:writer");
            (m.get("pgsidecar_probe_success", &[("probe", "writer")]) == Some(0.0)
                && m.get("pgsidecar_probe_success", &[("probe", "reader")]) == Some(1.0)
                && others_ok)
                .then(|| m.clone())
        },
    )
    .await;
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "probe:writer")]),
        Some(0.0)
    );
    assert_eq!(
        m.get("pgsidecar_probe_last_success_timestamp_seconds", &[("probe", "writer")]),
        Some(0.0)
    );
    assert_eq!(fingerprint(&m, "writer"), None);
    let page = get(px.addr, "/").await.text();
    assert!(
        page.contains("cannot execute INSERT in a read-only transaction"),
        "{page}"
    );
    let written: i64 = db
        .query_one("SELECT count(*) FROM probe_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0);
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_times_out_backs_off_while_the_others_succeed() {
    let cluster = pg::shared();
    let (db, dsn) = app_db(cluster, "probe_timeout_db").await;
    let yaml = probes(
        "    - name: stuck\n      query: SELECT pg_sleep(5)\n      mode: execute\n      interval: 1s\n      timeout: 300ms\n\
         \x20   - name: reader\n      query: SELECT count(*) FROM users\n      interval: 1s\n",
    );
    let px = start(&test_yaml(&dsn, &yaml)).await;
    let failures = |m: &Metrics| m.get("pgsidecar_collector_failures_total", &[("collector", "probe:stuck")]);
    until(px.addr, WAIT, "two failures", |m| {
        (failures(m) == Some(2.0)).then_some(())
    })
    .await;
    let second = Instant::now();
    // Without a backoff the 4th attempt would come 2 s after the 2nd; with
    // it, after 1 + 3 skipped ticks: 6 s.
    until(px.addr, WAIT, "four failures", |m| {
        (failures(m) >= Some(4.0)).then_some(())
    })
    .await;
    let waited = second.elapsed();
    assert!(
        waited.as_secs_f64() > 4.5,
        "the 4th attempt came {waited:?} after the 2nd"
    );
    // The server cancels the statement after the probe's 300 ms; on a
    // loaded machine the run's own limit (1.3 s, with the wait for a
    // connection) may come first.
    let page = get(px.addr, "/").await.text();
    assert!(
        page.contains("canceling statement due to statement timeout") || page.contains("timed out after 1300ms"),
        "{page}"
    );
    // Meanwhile the others succeed, the other probe among them.
    let m = until(px.addr, WAIT, "every other collector succeeding", |m| {
        let others_ok = m
            .all("pg_scrape_collector_success", &[])
            .iter()
            .all(|s| s.value == 1.0 || s.labels["collector"] == "probe:stuck");
        (others_ok && m.get("pg_up", &[]) == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pgsidecar_probe_success", &[("probe", "stuck")]), Some(0.0));
    assert!(failures(&m) < Some(6.0), "{:?} failures: no backoff", failures(&m));
    let reader_ok = m
        .get("pgsidecar_probe_last_success_timestamp_seconds", &[("probe", "reader")])
        .unwrap();
    until(px.addr, WAIT, "the other probe succeeding again", |m| {
        (m.get("pgsidecar_probe_last_success_timestamp_seconds", &[("probe", "reader")]) > Some(reader_ok))
            .then_some(())
    })
    .await;
    // The server cancelled the statement and the transaction ended: no
    // session of pgsidecar's sleeps or sits in a transaction.
    let busy: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = current_database() \
             AND (state LIKE 'idle in transaction%' OR (state = 'active' AND query LIKE '%pg_sleep%'))",
            &[&ROLE],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(busy, 0);
    px.stop().await.unwrap();
}
