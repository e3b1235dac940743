//! The `stat_statements` collector against a real server: slow and fast
//! statements, pgsidecar's own statements left out, query texts only on
//! request, the top-N cut, and a database without the extension.
//!
//! pgsidecar runs as the dedicated role `pgsidecar_it` (a `pg_monitor`
//! member), the workload as `postgres`, so that leaving out pgsidecar's own
//! role leaves the workload in.

use std::collections::BTreeSet;

use crate::support::pg::{self, Cluster};
use crate::support::scrape::{Metrics, until};
use crate::support::{WAIT, start, test_yaml};

const ROLE: &str = "pgsidecar_it";

/// Creates pgsidecar's test role once (tests race for it) and returns its DSN.
async fn monitor_dsn(cluster: &Cluster, db: &tokio_postgres::Client, dbname: &str) -> String {
    db.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE {ROLE} LOGIN PASSWORD 'it-secret' IN ROLE pg_monitor; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    .await
    .unwrap();
    format!(
        "host=127.0.0.1 port={} user={ROLE} password=it-secret dbname={dbname} sslmode=disable",
        cluster.port()
    )
}

/// The queryid of a statement run by `postgres` in the current database.
async fn queryid(db: &tokio_postgres::Client, text: &str) -> String {
    db.query_one(
        "SELECT queryid::text FROM pg_stat_statements WHERE query = $1 AND userid = 'postgres'::regrole \
         AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[&text],
    )
    .await
    .unwrap_or_else(|e| panic!("queryid of {text:?}: {e}"))
    .get(0)
}

/// The block read and write times of statement `queryid` run by `postgres`
/// in the current database, in milliseconds, as pg_stat_statements reports
/// them (`blk_*_time` before PostgreSQL 17, `shared_blk_*_time` since).
async fn block_times(db: &tokio_postgres::Client, queryid: &str) -> (f64, f64) {
    let row = db
        .query_one(
            "SELECT COALESCE(j->>'shared_blk_read_time', j->>'blk_read_time')::float8, \
             COALESCE(j->>'shared_blk_write_time', j->>'blk_write_time')::float8 \
             FROM (SELECT to_jsonb(s) AS j FROM pg_stat_statements s WHERE queryid::text = $1 \
             AND userid = 'postgres'::regrole \
             AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())) AS s",
            &[&queryid],
        )
        .await
        .unwrap_or_else(|e| panic!("block times of {queryid}: {e}"));
    (row.get(0), row.get(1))
}

fn statements(yaml: &str) -> String {
    format!("checks:\n  slow_queries:\n{yaml}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_fast_statements_without_pgsidecars_own() {
    let cluster = pg::shared();
    let dbname = "stmt_slow_db";
    let db = crate::support::fixture::create_app_db(cluster, dbname).await;
    let dsn = monitor_dsn(cluster, &db, dbname).await;
    const SLOW: &str = "SELECT pg_sleep($1), count(*) FROM slow_reads";
    const FAST: &str = "SELECT count(*) FROM users WHERE level = $1";
    // VACUUM FULL writes a table anew past the shared buffers (with no index
    // to build from it, nothing reads it back): the first slow statement
    // reads its blocks from disk, and track_io_timing times that.
    db.batch_execute(
        "CREATE TABLE slow_reads WITH (autovacuum_enabled = false) AS SELECT g FROM generate_series(1, 1000) g",
    )
    .await
    .unwrap();
    db.batch_execute("VACUUM FULL slow_reads").await.unwrap();
    for _ in 0..4 {
        db.query(SLOW, &[&0.15f64]).await.unwrap();
    }
    for _ in 0..50 {
        db.query(FAST, &[&"beginner"]).await.unwrap();
    }
    let (slow, fast) = (queryid(&db, SLOW).await, queryid(&db, FAST).await);

    // The cluster is shared: a high `top` keeps the fast statement in.
    let px = start(&test_yaml(&dsn, &statements("    threshold: 100ms\n    top: 5000\n"))).await;
    let calls = |m: &Metrics, id: &str| {
        m.get(
            "pg_stat_statements_calls_total",
            &[("datname", dbname), ("queryid", id)],
        )
    };
    let m = until(px.addr, WAIT, "both statements", |m| {
        (calls(m, &slow) >= Some(4.0) && calls(m, &fast) >= Some(50.0)).then(|| m.clone())
    })
    .await;
    let get = |name: &str, id: &str| {
        m.get(name, &[("datname", dbname), ("queryid", id), ("user", "postgres")])
            .unwrap_or_else(|| panic!("{name} of {id}:\n{}", m.text))
    };
    let threshold = m.get("pgsidecar_slow_query_threshold_seconds", &[]).unwrap();
    assert_eq!(threshold, 0.1);
    assert_eq!(m.get("pgsidecar_stat_statements_top", &[]), Some(5000.0));
    let slow_mean = get("pg_stat_statements_mean_seconds", &slow);
    assert!(slow_mean >= 0.15 && slow_mean > threshold, "slow mean {slow_mean}");
    assert!(get("pg_stat_statements_max_seconds", &slow) >= 0.15);
    let slow_calls = get("pg_stat_statements_calls_total", &slow);
    let slow_total = get("pg_stat_statements_seconds_total", &slow);
    assert!(slow_total >= slow_calls * 0.15, "{slow_total} s for {slow_calls} calls");
    assert_eq!(get("pg_stat_statements_rows_total", &slow), slow_calls);
    // The block times mirror pg_stat_statements' (nobody runs the slow
    // statement any more, so they hold still); the read time is not zero.
    let (read_ms, write_ms) = block_times(&db, &slow).await;
    assert!(
        read_ms > 0.0,
        "the slow statement read no block from disk: {read_ms} ms"
    );
    let read = get("pg_stat_statements_block_read_seconds_total", &slow);
    let write = get("pg_stat_statements_block_write_seconds_total", &slow);
    assert!(
        (read - read_ms / 1000.0).abs() < 1e-9,
        "block read {read} s, Postgres {read_ms} ms"
    );
    assert!(
        (write - write_ms / 1000.0).abs() < 1e-9,
        "block write {write} s, Postgres {write_ms} ms"
    );
    let fast_mean = get("pg_stat_statements_mean_seconds", &fast);
    assert!(fast_mean < threshold, "fast mean {fast_mean}");
    assert!(m.text.contains("# TYPE pg_stat_statements_seconds_total counter"));
    assert!(m.text.contains("# TYPE pg_stat_statements_mean_seconds gauge"));
    assert!(!m.has("pg_stat_statements_query_id"), "texts are off by default");

    // pgsidecar's role has statements of its own, and they are left out.
    let own: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_statements WHERE userid = 'pgsidecar_it'::regrole",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(own > 0, "pgsidecar_it ran nothing?");
    let mine = |m: &Metrics| {
        m.samples
            .iter()
            .filter(|s| {
                s.name.starts_with("pg_stat_statements_") && s.labels.get("user").map(String::as_str) == Some(ROLE)
            })
            .count()
    };
    assert_eq!(mine(&m), 0, "{}", m.text);
    px.stop().await.unwrap();

    // ...only because of exclude_own_role.
    let yaml = statements("    top: 5000\n    exclude_own_role: false\n");
    let px = start(&test_yaml(&dsn, &yaml)).await;
    until(px.addr, WAIT, "pgsidecar_it's statements", |m| {
        (mine(m) > 0).then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_texts_only_on_request_and_cut() {
    let cluster = pg::shared();
    let dbname = "stmt_text_db";
    let db = crate::support::fixture::create_app_db(cluster, dbname).await;
    let dsn = monitor_dsn(cluster, &db, dbname).await;
    let yaml = statements("    include_query_text: true\n    query_text_length: 40\n");
    let px = start(&test_yaml(&dsn, &yaml)).await;
    let texts = until(px.addr, WAIT, "query texts", |m| {
        let texts: Vec<String> = m
            .all("pg_stat_statements_query_id", &[])
            .iter()
            .map(|s| s.labels["query"].clone())
            .collect();
        (!texts.is_empty()).then_some(texts)
    })
    .await;
    for t in &texts {
        assert!(t.chars().count() <= 40, "{t:?}");
        assert!(!t.chars().any(char::is_control), "{t:?}");
        assert!(!t.contains("  "), "{t:?}");
    }
    assert!(
        texts.iter().any(|t| t.chars().count() == 40),
        "no text was cut: {texts:?}"
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_top_n_statements() {
    let cluster = pg::shared();
    let dbname = "stmt_top_db";
    let db = crate::support::fixture::create_app_db(cluster, dbname).await;
    let dsn = monitor_dsn(cluster, &db, dbname).await;
    let px = start(&test_yaml(&dsn, &statements("    top: 3\n"))).await;
    let m = until(px.addr, WAIT, "statements", |m| {
        m.has("pg_stat_statements_calls_total").then(|| m.clone())
    })
    .await;
    let ids: BTreeSet<&str> = m
        .all("pg_stat_statements_calls_total", &[])
        .iter()
        .map(|s| s.labels["queryid"].as_str())
        .collect();
    assert!(!ids.is_empty() && ids.len() <= 3, "{ids:?}");
    assert_eq!(m.get("pgsidecar_stat_statements_top", &[]), Some(3.0));
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_without_the_extension() {
    let cluster = pg::shared();
    let dbname = "stmt_noext_db";
    let admin = cluster.connect("postgres", "it-stmt").await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
        .await
        .unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {dbname}")).await.unwrap();
    let yaml = test_yaml(&cluster.dsn(dbname), "collectors:\n  database:\n    interval: 1s\n");
    let px = start(&yaml).await;
    let collectors = crate::support::default_collectors();
    let m = until(px.addr, WAIT, "every collector ran", |m| {
        (m.all("pg_scrape_collector_success", &[]).len() == collectors && m.has("pgsidecar_collector_unavailable"))
            .then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_up", &[]), Some(1.0));
    for s in m.all("pg_scrape_collector_success", &[]) {
        let ok = s.labels["collector"] != "stat_statements";
        assert_eq!(s.value, if ok { 1.0 } else { 0.0 }, "{:?}\n{}", s.labels, m.text);
    }
    let unavailable = m.all("pgsidecar_collector_unavailable", &[("collector", "stat_statements")]);
    let [u] = unavailable.as_slice() else {
        panic!("one unavailable sample expected:\n{}", m.text)
    };
    assert_eq!(u.value, 1.0);
    assert_eq!(
        u.labels["reason"],
        format!("pg_stat_statements is not installed in database {dbname}: CREATE EXTENSION pg_stat_statements")
    );
    assert!(!m.has("pg_stat_statements_calls_total"));
    px.stop().await.unwrap();
}

/// The calls of `queryid` by `postgres` in the current database, summed
/// over its rows (one per `toplevel` value with `track = all`), and how
/// many rows it has.
async fn calls_in_postgres(db: &tokio_postgres::Client, queryid: &str) -> (f64, i64) {
    let row = db
        .query_one(
            "SELECT COALESCE(sum(calls), 0)::float8, count(*) FROM pg_stat_statements \
             WHERE queryid::text = $1 AND userid = 'postgres'::regrole \
             AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&queryid],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Regression: with `pg_stat_statements.track = all`, a statement run at
/// top level and nested has two rows (PostgreSQL 14+ `toplevel`); both
/// mapped to one series and the last one won, so the counters jumped
/// backwards (a false counter reset). They are one series, the sum, and it
/// never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_level_and_nested_rows_are_one_series_that_never_goes_back() {
    let cluster = pg::shared();
    let dbname = "stmt_nested_db";
    let db = crate::support::fixture::create_app_db(cluster, dbname).await;
    let dsn = monitor_dsn(cluster, &db, dbname).await;
    // The same statement at top level and through EXECUTE in a function:
    // constants do not change the queryid.
    const TOP: &str = "SELECT count(*) FROM users WHERE level = 'expert'";
    db.batch_execute(
        "SET pg_stat_statements.track = 'all'; \
         CREATE FUNCTION nested() RETURNS bigint LANGUAGE plpgsql AS $$ DECLARE n bigint; BEGIN \
         EXECUTE 'SELECT count(*) FROM users WHERE level = ''beginner''' INTO n; RETURN n; END $$",
    )
    .await
    .unwrap();
    let round = async |top: usize, nested: usize| {
        for _ in 0..top {
            db.batch_execute(TOP).await.unwrap();
        }
        for _ in 0..nested {
            db.batch_execute("SELECT nested()").await.unwrap();
        }
    };
    round(5, 3).await;
    let id: String = db
        .query_one(
            "SELECT queryid::text FROM pg_stat_statements WHERE query = 'SELECT count(*) FROM users WHERE level = $1' \
             AND userid = 'postgres'::regrole \
             AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (_, rows) = calls_in_postgres(&db, &id).await;
    let version: i32 = db
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    if version >= 140000 {
        assert_eq!(rows, 2, "the fixture should give a top-level and a nested row");
    }

    let px = start(&test_yaml(&dsn, &statements("    top: 5000\n"))).await;
    let series = |m: &Metrics| {
        m.all(
            "pg_stat_statements_calls_total",
            &[("datname", dbname), ("queryid", id.as_str())],
        )
        .len()
    };
    let calls = |m: &Metrics| {
        m.get(
            "pg_stat_statements_calls_total",
            &[("datname", dbname), ("queryid", id.as_str())],
        )
    };
    let mut last = 0.0;
    for n in 1..=4 {
        round(n, n + 1).await;
        let (want, _) = calls_in_postgres(&db, &id).await;
        let seen = until(px.addr, WAIT, "the summed calls", |m| {
            calls(m).filter(|c| *c == want).map(|c| (c, series(m)))
        })
        .await;
        assert_eq!(seen.1, 1, "one series for the statement");
        assert!(seen.0 > last, "calls went from {last} to {}", seen.0);
        last = seen.0;
    }
    px.stop().await.unwrap();
}

/// Regression: one queryid run by two roles with two spellings had two
/// `pg_stat_statements_query_id` series, which broke the Queries
/// dashboard's join on `queryid` ("many-to-many matching not allowed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_text_series_per_queryid() {
    let cluster = pg::shared();
    let dbname = "stmt_spelling_db";
    let db = crate::support::fixture::create_app_db(cluster, dbname).await;
    let dsn = monitor_dsn(cluster, &db, dbname).await;
    db.batch_execute(
        "DO $$ BEGIN CREATE ROLE stmt_reader LOGIN PASSWORD 'reader-secret'; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         GRANT SELECT ON users TO stmt_reader",
    )
    .await
    .unwrap();
    db.batch_execute("SELECT count(*) FROM users WHERE level = 'x'")
        .await
        .unwrap();
    let (reader, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=stmt_reader password=reader-secret dbname={dbname}",
            cluster.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    reader
        .batch_execute("select COUNT(*)   from USERS where LEVEL = 'y'")
        .await
        .unwrap();
    let ids: Vec<(String, String)> = db
        .query(
            "SELECT s.queryid::text, r.rolname::text FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
             WHERE s.query ILIKE 'select count(*)%users%level%' \
             AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let id = ids[0].0.clone();
    assert!(
        ids.iter().filter(|(q, _)| *q == id).count() >= 2,
        "the fixture should give one queryid to two roles: {ids:?}"
    );

    let yaml = statements("    top: 5000\n    include_query_text: true\n");
    let px = start(&test_yaml(&dsn, &yaml)).await;
    let m = until(px.addr, WAIT, "both roles' rows", |m| {
        (m.all("pg_stat_statements_calls_total", &[("queryid", id.as_str())])
            .len()
            >= 2)
            .then(|| m.clone())
    })
    .await;
    let texts = m.all("pg_stat_statements_query_id", &[("queryid", id.as_str())]);
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(m.text.contains("# TYPE pg_stat_statements_query_id counter"));
    px.stop().await.unwrap();
}

/// Regression: run as the application's own role (common in development),
/// `exclude_own_role` left every statement out and said nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_out_the_own_role_is_said() {
    let cluster = pg::shared();
    let dbname = "stmt_own_db";
    let db = crate::support::fixture::create_app_db(cluster, dbname).await;
    for _ in 0..3 {
        db.batch_execute("SELECT count(*) FROM users").await.unwrap();
    }
    // pgsidecar as `postgres`, the same role as the workload.
    let px = start(&test_yaml(&cluster.dsn(dbname), &statements("    top: 5000\n"))).await;
    let m = until(px.addr, WAIT, "the count of what was left out", |m| {
        m.get("pgsidecar_stat_statements_excluded", &[("reason", "own_role")])
            .filter(|n| *n > 0.0)
            .map(|_| m.clone())
    })
    .await;
    assert!(
        m.all(
            "pg_stat_statements_calls_total",
            &[("datname", dbname), ("user", "postgres")]
        )
        .is_empty(),
        "{}",
        m.text
    );
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "stat_statements")]),
        Some(1.0)
    );
    let page = crate::support::scrape::get(px.addr, "/").await.text();
    assert!(
        page.contains("statements of role postgres, pgsidecar&#39;s own, are left out")
            || page.contains("statements of role postgres, pgsidecar's own, are left out"),
        "{page}"
    );
    px.stop().await.unwrap();
}
