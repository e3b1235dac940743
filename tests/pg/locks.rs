//! Relation locks held by the application (issue 10, "one lock empties a
//! whole collector"): a migration holding `ACCESS EXCLUSIVE` on one table,
//! and a slow `REFRESH MATERIALIZED VIEW`, for longer than several
//! collection intervals. The per-relation collectors must keep succeeding
//! and keep reporting the other relations, `relation_sizes` must keep the
//! sizes it read before the locks and skip (and name) the locked ones it
//! never read, and neither the lock holder nor pgsidecar may wait on the
//! other.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::fixture::create_app_db;
use crate::support::scrape::{Metrics, get, until};
use crate::support::{WAIT, pg, start, test_yaml};

const DB: &str = "locks_db";

/// The collectors that read one row per relation.
const PER_RELATION: [&str; 5] = [
    "stat_user_tables",
    "statio_user_tables",
    "stat_user_indexes",
    "matviews",
    "relation_sizes",
];

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn last_success(m: &Metrics, collector: &str) -> f64 {
    m.get(
        "pgsidecar_collector_last_success_timestamp_seconds",
        &[("collector", collector)],
    )
    .unwrap_or(0.0)
}

fn has(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> bool {
    !m.all(name, labels).is_empty()
}

fn rel(relname: &str) -> [(&str, &str); 3] {
    [("datname", DB), ("schemaname", "public"), ("relname", relname)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_and_a_slow_refresh_leave_the_other_relations_reported() {
    let admin = create_app_db(pg::shared(), DB).await;
    admin
        .batch_execute(
            "CREATE TABLE migrating AS SELECT g AS id FROM generate_series(1, 1000) g; \
             CREATE INDEX migrating_id ON migrating (id); \
             CREATE FUNCTION slow_rows() RETURNS SETOF int LANGUAGE sql AS \
               $$ SELECT 1 FROM pg_sleep(coalesce(current_setting('it.sleep', true), '0')::float8) $$; \
             CREATE MATERIALIZED VIEW slow_mv AS SELECT * FROM slow_rows() AS x; \
             ANALYZE",
        )
        .await
        .unwrap();
    // The default lock_timeout (1 s) is shorter than the lock is held.
    let yaml = test_yaml(
        &pg::shared().dsn(DB),
        "collectors:\n  relation_sizes:\n    interval: 1s\n",
    );
    let px = start(&yaml).await;
    until(px.addr, WAIT, "sizes of migrating and slow_mv", |m| {
        (has(m, "pg_stat_user_tables_table_size_bytes", &rel("migrating"))
            && m.get(
                "pg_matview_size_bytes",
                &[("datname", DB), ("schemaname", "public"), ("matviewname", "slow_mv")],
            )
            .is_some())
        .then_some(())
    })
    .await;

    // The migration: its lock is granted at once, pgsidecar holds none.
    let locker = pg::shared().connect(DB, "it-migration").await;
    let started = Instant::now();
    locker
        .batch_execute("SET lock_timeout = '2s'; BEGIN; LOCK TABLE migrating IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("the migration gets its lock while pgsidecar runs every second");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The slow refresh: ACCESS EXCLUSIVE on slow_mv for 10 s.
    let refresher = pg::shared().connect(DB, "it-refresh").await;
    let refresh = tokio::spawn(async move {
        let started = Instant::now();
        refresher
            .batch_execute("SET it.sleep = '10'; SET lock_timeout = '2s'; REFRESH MATERIALIZED VIEW slow_mv")
            .await
            .map(|_| started.elapsed())
    });
    let watcher = pg::shared().connect(DB, "it-watcher").await;
    eventually_locked(&watcher).await;
    let locked_at = now();

    // Several rounds later, every per-relation collector has succeeded with
    // both locks held, and no pgsidecar session waits on a lock.
    let m = until(
        px.addr,
        WAIT,
        "per-relation collectors succeed 3 s into the locks",
        |m| {
            PER_RELATION
                .iter()
                .all(|c| last_success(m, c) > locked_at + 3.0)
                .then(|| m.clone())
        },
    )
    .await;
    assert!(now() < locked_at + 10.0, "the locks were released before the check");
    let waiting: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsidecar' AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0, "pgsidecar sessions wait on a lock");
    for c in PER_RELATION {
        assert_eq!(
            m.get("pg_scrape_collector_success", &[("collector", c)]),
            Some(1.0),
            "{c}"
        );
    }
    // The other relations are reported, the locked table's counters too
    // (reading them takes no lock).
    for relname in ["messages", "users", "migrating"] {
        assert!(has(&m, "pg_stat_user_tables_seq_scan", &rel(relname)), "{relname}");
        assert!(
            has(&m, "pg_statio_user_tables_heap_blocks_hit", &rel(relname)),
            "{relname}"
        );
    }
    assert!(has(
        &m,
        "pg_stat_user_indexes_idx_scan_total",
        &[("datname", DB), ("indexrelname", "idx_messages_user_created")]
    ));
    assert!(has(
        &m,
        "pg_stat_user_indexes_idx_scan_total",
        &[("indexrelname", "migrating_id")]
    ));
    let view = |name: &'static str| [("datname", DB), ("schemaname", "public"), ("matviewname", name)];
    assert_eq!(m.get("pg_matview_populated", &view("slow_mv")), Some(1.0));
    assert_eq!(m.get("pg_matview_populated", &view("user_stats_summary")), Some(1.0));
    // Sizes: the locked ones were read before the locks and have not
    // changed since (a lock moves no counter and no file), so they keep
    // their last reading; the others are read or reused as well.
    assert!(has(&m, "pg_stat_user_tables_table_size_bytes", &rel("messages")));
    assert!(has(&m, "pg_stat_user_tables_table_size_bytes", &rel("migrating")));
    assert!(m.get("pg_matview_size_bytes", &view("user_stats_summary")).is_some());
    assert!(m.get("pg_matview_size_bytes", &view("slow_mv")).is_some());
    assert_eq!(
        m.get("pgsidecar_relation_sizes_skipped", &[("kind", "table")]),
        Some(0.0)
    );
    assert!(m.get("pgsidecar_relation_sizes_reused", &[("kind", "table")]) >= Some(2.0));

    // A pgsidecar started now has read nothing before: it skips the locked
    // ones, counts them and names them, and reads the others.
    let fresh = start(&yaml).await;
    let m = until(
        fresh.addr,
        WAIT,
        "a first relation_sizes run with the locks held",
        |m| (last_success(m, "relation_sizes") > 0.0).then(|| m.clone()),
    )
    .await;
    assert!(now() < locked_at + 10.0, "the locks were released before the check");
    assert!(has(&m, "pg_stat_user_tables_table_size_bytes", &rel("messages")));
    assert!(!has(&m, "pg_stat_user_tables_table_size_bytes", &rel("migrating")));
    assert!(m.get("pg_matview_size_bytes", &view("user_stats_summary")).is_some());
    assert_eq!(m.get("pg_matview_size_bytes", &view("slow_mv")), None);
    // pg_stat_user_tables lists materialized views too: migrating and slow_mv.
    assert_eq!(
        m.get("pgsidecar_relation_sizes_skipped", &[("kind", "table")]),
        Some(2.0)
    );
    assert_eq!(
        m.get("pgsidecar_relation_sizes_skipped", &[("kind", "matview")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("pgsidecar_relation_sizes_reused", &[("kind", "table")]),
        Some(0.0)
    );

    // The status page names what was skipped.
    let page = get(fresh.addr, "/").await.text();
    assert!(
        page.contains("with an ACCESS EXCLUSIVE lock held or awaited") && page.contains("table public.migrating"),
        "{page}"
    );

    // Both finish undisturbed, and the sizes come back.
    locker.batch_execute("ROLLBACK").await.unwrap();
    let took = refresh.await.unwrap().expect("the refresh is not blocked by pgsidecar");
    assert!(took < Duration::from_secs(13), "the refresh took {took:?}");
    until(fresh.addr, WAIT, "sizes of migrating and slow_mv again", |m| {
        (has(m, "pg_stat_user_tables_table_size_bytes", &rel("migrating"))
            && m.get("pg_matview_size_bytes", &view("slow_mv")).is_some()
            && m.get("pgsidecar_relation_sizes_skipped", &[("kind", "table")]) == Some(0.0))
        .then_some(())
    })
    .await;
    fresh.stop().await.unwrap();
    px.stop().await.unwrap();
}

/// Waits until both ACCESS EXCLUSIVE locks are granted.
async fn eventually_locked(watcher: &tokio_postgres::Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE l.mode = 'AccessExclusiveLock' AND l.granted AND c.relname IN ('migrating', 'slow_mv')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 2 {
            return;
        }
        assert!(Instant::now() < deadline, "the locks were not granted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
