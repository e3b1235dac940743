//! Materialized views: `pgsidecar install` records plain and concurrent
//! refreshes through event triggers (by a role with no new privileges), a
//! freshness query stands in where the log is not installed, and an
//! untracked view says so.

use std::time::Duration;

use crate::support::fixture::create_app_db;
use crate::support::pg;
use crate::support::scrape::{Metrics, until};
use crate::support::{WAIT, run_pgsidecar, start, test_yaml};

fn mv(m: &Metrics, name: &str, view: &str) -> Option<f64> {
    m.get(name, &[("matviewname", view)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_are_recorded_by_the_event_triggers() {
    let cluster = pg::shared();
    let db = create_app_db(cluster, "matview_db").await;
    let dsn = cluster.dsn("matview_db");
    for _ in 0..2 {
        let (code, out) = run_pgsidecar(&["install"], &dsn);
        assert_eq!(code, 0, "install (twice: idempotent): {out}");
    }
    // The refreshing role owns the view and reads its tables: nothing more.
    db.batch_execute(
        "DROP ROLE IF EXISTS refresher; CREATE ROLE refresher LOGIN PASSWORD 'refresher-pw'; \
         GRANT SELECT ON users, messages TO refresher; \
         ALTER MATERIALIZED VIEW user_stats_summary OWNER TO refresher; \
         CREATE MATERIALIZED VIEW never_filled AS SELECT 1 AS x WITH NO DATA",
    )
    .await
    .unwrap();

    let extra = "checks:\n  materialized_views:\n    - name: public.user_stats_summary\n      max_age: 1h\n    - name: public.not_there\n      max_age: 5m\n";
    let px = start(&test_yaml(&dsn, extra)).await;
    // The size comes from relation_sizes, a collector of its own.
    let m = until(px.addr, WAIT, "matviews and their sizes", |m| {
        (m.has("pg_matview_populated") && m.has("pg_matview_size_bytes")).then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.get("pgsidecar_refresh_log_installed", &[("datname", "matview_db")]),
        Some(1.0)
    );
    assert_eq!(mv(&m, "pg_matview_populated", "user_stats_summary"), Some(1.0));
    assert_eq!(mv(&m, "pg_matview_populated", "never_filled"), Some(0.0));
    assert!(mv(&m, "pg_matview_rows_estimate", "user_stats_summary").unwrap() >= 100.0);
    assert!(mv(&m, "pg_matview_size_bytes", "user_stats_summary").unwrap() > 0.0);
    assert_eq!(
        mv(&m, "pgsidecar_matview_max_age_seconds", "user_stats_summary"),
        Some(3600.0)
    );
    assert_eq!(
        mv(&m, "pg_matview_last_refresh_timestamp_seconds", "user_stats_summary"),
        None,
        "never refreshed yet"
    );
    assert_eq!(
        m.get(
            "pgsidecar_matview_refresh_tracking",
            &[("matviewname", "not_there"), ("source", "missing")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "pgsidecar_matview_refresh_tracking",
            &[("matviewname", "user_stats_summary"), ("source", "event_trigger")]
        ),
        Some(1.0)
    );

    let (refresher, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=refresher password=refresher-pw dbname=matview_db",
            cluster.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    refresher
        .batch_execute("REFRESH MATERIALIZED VIEW user_stats_summary")
        .await
        .unwrap();
    let first = until(px.addr, WAIT, "plain refresh recorded", |m| {
        mv(m, "pg_matview_last_refresh_timestamp_seconds", "user_stats_summary").map(|t| (t, m.clone()))
    })
    .await;
    assert!(first.0 >= before - 1.0, "refresh time {} vs {before}", first.0);
    assert!(
        mv(
            &first.1,
            "pg_matview_last_refresh_duration_seconds",
            "user_stats_summary"
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        mv(&first.1, "pg_matview_refreshes_total", "user_stats_summary"),
        Some(1.0)
    );

    // Lets time pass on purpose, not to wait for anything: the two refreshes
    // are then over a second apart, and the second one's time is told from
    // the first's below.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    refresher
        .batch_execute("REFRESH MATERIALIZED VIEW CONCURRENTLY user_stats_summary")
        .await
        .unwrap();
    let second = until(px.addr, WAIT, "concurrent refresh recorded", |m| {
        mv(m, "pg_matview_last_refresh_timestamp_seconds", "user_stats_summary")
            .filter(|t| *t > first.0 + 1.0)
            .map(|_| m.clone())
    })
    .await;
    assert_eq!(
        mv(&second, "pg_matview_refreshes_total", "user_stats_summary"),
        Some(2.0)
    );
    px.stop().await.unwrap();

    let (code, out) = run_pgsidecar(&["uninstall"], &dsn);
    assert_eq!(code, 0, "{out}");
    let gone: bool = db
        .query_one("SELECT to_regnamespace('pgsidecar') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(gone, "uninstall drops the schema");
    refresher
        .batch_execute("REFRESH MATERIALIZED VIEW user_stats_summary")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_query_or_a_clear_untracked_state() {
    let cluster = pg::shared();
    create_app_db(cluster, "freshness_db").await;
    let extra = "checks:\n  materialized_views:\n    - name: user_stats_summary\n      max_age: 1h\n      \
                 freshness_query: \"SELECT now() - interval '2 hours'\"\n";
    let px = start(&test_yaml(&cluster.dsn("freshness_db"), extra)).await;
    let m = until(px.addr, WAIT, "freshness", |m| {
        m.has("pg_matview_last_refresh_timestamp_seconds").then(|| m.clone())
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let t = mv(&m, "pg_matview_last_refresh_timestamp_seconds", "user_stats_summary").unwrap();
    assert!((now - t - 7200.0).abs() < 30.0, "freshness {t}, now {now}");
    assert_eq!(
        m.get(
            "pgsidecar_matview_refresh_tracking",
            &[("matviewname", "user_stats_summary"), ("source", "freshness_query")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("pgsidecar_refresh_log_installed", &[("datname", "freshness_db")]),
        Some(0.0)
    );
    px.stop().await.unwrap();

    // Neither the log nor a query: the view is reported as untracked.
    let px = start(&test_yaml(&cluster.dsn("freshness_db"), "")).await;
    let m = until(px.addr, WAIT, "untracked", |m| {
        m.has("pgsidecar_matview_refresh_tracking").then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.get(
            "pgsidecar_matview_refresh_tracking",
            &[("matviewname", "user_stats_summary"), ("source", "none")]
        ),
        Some(1.0)
    );
    assert_eq!(
        mv(&m, "pg_matview_last_refresh_timestamp_seconds", "user_stats_summary"),
        None
    );
    px.stop().await.unwrap();
}

/// Regression: one failing freshness query (a dropped table, here) failed
/// the whole matviews collector, so every view's series went stale. It now
/// fails only its view, which says so; the other views are reported, and a
/// trailing `-- comment` in a query no longer breaks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_freshness_query_fails_only_its_view() {
    let cluster = pg::shared();
    let db = create_app_db(cluster, "freshness_fail_db").await;
    db.batch_execute(
        "CREATE TABLE refresh_times (t timestamptz); INSERT INTO refresh_times VALUES (now() - interval '1 hour'); \
         CREATE TABLE second_times AS SELECT * FROM refresh_times; \
         CREATE MATERIALIZED VIEW second_view AS SELECT 1 AS x",
    )
    .await
    .unwrap();
    let extra = "checks:\n  materialized_views:\n    - name: user_stats_summary\n      max_age: 2h\n      \
                 freshness_query: \"SELECT max(t) FROM refresh_times -- newest refresh\"\n    \
                 - name: second_view\n      max_age: 2h\n      freshness_query: \"SELECT max(t) FROM second_times\"\n";
    let px = start(&test_yaml(&cluster.dsn("freshness_fail_db"), extra)).await;
    until(px.addr, WAIT, "both views' refresh times", |m| {
        (mv(m, "pg_matview_last_refresh_timestamp_seconds", "user_stats_summary").is_some()
            && mv(m, "pg_matview_last_refresh_timestamp_seconds", "second_view").is_some())
        .then_some(())
    })
    .await;
    // The table second_view's query reads is dropped.
    db.batch_execute("DROP TABLE second_times").await.unwrap();
    let m = until(px.addr, WAIT, "the failed freshness query", |m| {
        m.get(
            "pgsidecar_matview_refresh_tracking",
            &[("matviewname", "second_view"), ("source", "freshness_query_failed")],
        )
        .map(|_| m.clone())
    })
    .await;
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "matviews")]),
        Some(1.0)
    );
    assert!(
        mv(&m, "pg_matview_last_refresh_timestamp_seconds", "user_stats_summary").is_some(),
        "{}",
        m.text
    );
    assert_eq!(mv(&m, "pg_matview_last_refresh_timestamp_seconds", "second_view"), None);
    assert_eq!(mv(&m, "pg_matview_populated", "second_view"), Some(1.0));
    let page = crate::support::scrape::get(px.addr, "/").await.text();
    assert!(page.contains("the freshness query of public.second_view"), "{page}");
    assert!(page.contains("second_times"), "{page}");
    px.stop().await.unwrap();
}

#[test]
fn print_sql_needs_no_database() {
    let (code, out) = run_pgsidecar(&["install", "--print-sql"], "host=127.0.0.1 port=1");
    assert_eq!(code, 0);
    assert!(
        out.contains("CREATE EVENT TRIGGER pgsidecar_refresh_ended ON ddl_command_end"),
        "{out}"
    );
    let (code, out) = run_pgsidecar(&["uninstall", "--print-sql"], "host=127.0.0.1 port=1");
    assert_eq!(code, 0);
    assert!(out.contains("DROP SCHEMA IF EXISTS pgsidecar CASCADE"), "{out}");
    let (code, out) = run_pgsidecar(&["install"], "host=127.0.0.1 port=1 user=x dbname=y sslmode=disable");
    assert_eq!(code, 1);
    assert!(out.starts_with("pgsidecar: connect to x@127.0.0.1:1/y:"), "{out}");
}
