//! Postgres down, stopped, killed or slow: pgsidecar keeps running, says so in
//! its metrics, and recovers by itself. Each test owns its cluster.

use std::time::{Duration, Instant};

use crate::support::pg::Cluster;
use crate::support::scrape::{get, scrape, until, until_pg_up};
use crate::support::{WAIT, start, test_yaml};

/// How soon pgsidecar has data again once Postgres is back: one interval
/// (1 s) plus the time a slow CI machine may need. A bound the tests assert,
/// not how long they wait (that is `WAIT`).
const RECOVERS_WITHIN: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_at_start_then_comes_up() {
    let cluster = Cluster::init();
    let px = start(&test_yaml(&cluster.dsn("postgres"), "")).await;
    let m = until(px.addr, WAIT, "pg_up 0 while down", |m| {
        let failed = m.all("pg_scrape_collector_success", &[]);
        (m.get("pg_up", &[]) == Some(0.0)
            && failed.len() == crate::support::default_collectors()
            && failed.iter().all(|s| s.value == 0.0))
        .then(|| m.clone())
    })
    .await;
    assert!(!m.has("pg_stat_database_xact_commit"));
    assert_eq!(
        get(px.addr, "/readyz").await.status,
        200,
        "ready once every collector has run, even failing"
    );
    let page = get(px.addr, "/").await.text();
    assert!(page.contains("class=fail"), "{page}");
    assert!(page.contains("Connection refused"), "{page}");

    cluster.start();
    let up_at = Instant::now();
    until_pg_up(px.addr, WAIT, 1.0).await;
    until(px.addr, WAIT, "stat_database data", |m| {
        m.has("pg_stat_database_xact_commit").then_some(())
    })
    .await;
    assert!(
        up_at.elapsed() < RECOVERS_WITHIN,
        "data again {:?} after the start",
        up_at.elapsed()
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_started_mid_run_with_stale_series_dropped() {
    let cluster = Cluster::init();
    cluster.start();
    // stat_database keeps the default stale_after (3 intervals);
    // stat_database_conflicts keeps its series far longer than this test
    // waits for anything, so they must still be there when the failure shows.
    let extra = "collectors:\n  stat_database_conflicts:\n    stale_after: 10m\n";
    let px = start(&test_yaml(&cluster.dsn("postgres"), extra)).await;
    until_pg_up(px.addr, WAIT, 1.0).await;
    until(px.addr, WAIT, "xact_commit and confl_lock", |m| {
        (m.has("pg_stat_database_xact_commit") && m.has("pg_stat_database_conflicts_confl_lock")).then_some(())
    })
    .await;

    cluster.stop();
    let m = until(
        px.addr,
        WAIT,
        "pg_up 0 and stat_database_conflicts failed after stop",
        |m| {
            (m.get("pg_up", &[]) == Some(0.0)
                && m.get(
                    "pg_scrape_collector_success",
                    &[("collector", "stat_database_conflicts")],
                ) == Some(0.0))
            .then(|| m.clone())
        },
    )
    .await;
    // The failure shows at once; the last good series stay until stale.
    assert!(
        m.has("pg_stat_database_conflicts_confl_lock"),
        "series dropped before stale_after:\n{}",
        m.text
    );
    let last_success = scrape(px.addr)
        .await
        .get(
            "pgsidecar_collector_last_success_timestamp_seconds",
            &[("collector", "stat_database")],
        )
        .unwrap();
    let m = until(px.addr, WAIT, "stale series dropped", |m| {
        (!m.has("pg_stat_database_xact_commit")
            && m.get("pg_scrape_collector_success", &[("collector", "stat_database")]) == Some(0.0))
        .then(|| m.clone())
    })
    .await;
    assert!(
        m.has("pg_stat_database_conflicts_confl_lock"),
        "stat_database_conflicts' series dropped with stat_database's, before its own stale_after:\n{}",
        m.text
    );
    // Staleness counts from the last success, which may precede the stop by an interval.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - last_success >= 3.0,
        "dropped {:.2}s after the last success, before stale_after",
        now - last_success
    );

    cluster.start();
    until_pg_up(px.addr, WAIT, 1.0).await;
    until(px.addr, WAIT, "series back", |m| {
        m.has("pg_stat_database_xact_commit").then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmaster_killed_with_sigkill() {
    let cluster = Cluster::init();
    cluster.start();
    let px = start(&test_yaml(&cluster.dsn("postgres"), "")).await;
    until_pg_up(px.addr, WAIT, 1.0).await;

    cluster.kill();
    cluster.wait_down().await;
    until_pg_up(px.addr, WAIT, 0.0).await;
    assert_eq!(get(px.addr, "/healthz").await.status, 200);

    cluster.start();
    let m = until(px.addr, WAIT, "pg_up 1 after crash recovery", |m| {
        (m.get("pg_up", &[]) == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert!(
        m.get("pgsidecar_collector_failures_total", &[("collector", "postmaster")])
            .unwrap()
            >= 1.0
    );
    px.stop().await.unwrap();
}

/// A collector blocked behind a lock exceeds its timeout: it is marked failed
/// and its query is cancelled, the other collectors keep succeeding, and
/// `/metrics` still answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_over_its_timeout_leaves_the_others_running() {
    let cluster = Cluster::init();
    cluster.start();
    // Long lock_timeout so that the collector's own timeout is what fires.
    // Only postmaster, settings and database run: every other collector reads
    // a view that joins pg_database too. And a custom query that holds its
    // session for 0.6 s of every second: with the three others starting at
    // the same moment, the pool opens all its 3 sessions in the first
    // seconds, which it must have before the lock (a new session reads
    // pg_database while it starts, so it would wait behind the lock). Without
    // it the pool filled only when three runs happened to overlap.
    let mut collectors = String::from("collectors:\n  database:\n    interval: 1s\n    timeout: 500ms\n");
    for def in pgsidecar::collectors::ALL {
        if !["postmaster", "settings", "database"].contains(&def.name) {
            collectors.push_str(&format!("  {}:\n    enabled: false\n", def.name));
        }
    }
    collectors.push_str(
        "queries:\n  it_hold:\n    query: \"SELECT 1::float8 AS held FROM pg_sleep(0.6)\"\n    interval: 1s\n    \
         metrics:\n      - held: {usage: GAUGE, description: held}\n",
    );
    let yaml = test_yaml(&cluster.dsn("postgres"), &collectors).replace(
        "datasource:\n",
        "datasource:\n  lock_timeout: 30s\n  statement_timeout: 30s\n",
    );
    let px = start(&yaml).await;
    // Connection start-up reads pg_database too: wait until the pool holds all its connections.
    until(px.addr, WAIT, "pool filled", |m| {
        (m.get("pgsidecar_db_pool_size", &[]) == Some(3.0)
            && m.get("pg_scrape_collector_success", &[("collector", "database")]) == Some(1.0))
        .then_some(())
    })
    .await;

    // Connect before taking the lock: new sessions would wait for it.
    let locker = cluster.connect("postgres", "it-locker").await;
    let watcher = cluster.connect("postgres", "it-watcher").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE pg_database IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let m = until(px.addr, WAIT, "database collector timed out", |m| {
        (m.get("pg_scrape_collector_success", &[("collector", "database")]) == Some(0.0)).then(|| m.clone())
    })
    .await;
    let failed_at = m
        .get(
            "pgsidecar_collector_last_success_timestamp_seconds",
            &[("collector", "database")],
        )
        .unwrap();

    for _ in 0..6 {
        let started = Instant::now();
        let m = scrape(px.addr).await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "/metrics took {:?}",
            started.elapsed()
        );
        assert_eq!(
            m.get("pg_scrape_collector_success", &[("collector", "postmaster")]),
            Some(1.0),
            "{}",
            m.text
        );
        assert_eq!(
            m.get("pg_scrape_collector_success", &[("collector", "settings")]),
            Some(1.0),
            "{}",
            m.text
        );
        assert_eq!(m.get("pg_up", &[]), Some(1.0));
        // Timed-out queries are cancelled: never more than the one in flight waits on the lock.
        // (The function, not the view: the view joins the locked pg_database.)
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_get_activity(NULL) WHERE application_name = 'pgsidecar' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(waiting <= 1, "{waiting} pgsidecar queries wait on the lock");
        // Lets time pass on purpose: the six scrapes spread over more than
        // two of the collector's timeouts.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let page = get(px.addr, "/").await.text();
    assert!(page.contains("timed out after 500ms"), "{page}");

    locker.batch_execute("COMMIT").await.unwrap();
    until(px.addr, WAIT, "database collector recovered", |m| {
        m.get(
            "pgsidecar_collector_last_success_timestamp_seconds",
            &[("collector", "database")],
        )
        .filter(|t| *t > failed_at && m.get("pg_scrape_collector_success", &[("collector", "database")]) == Some(1.0))
    })
    .await;
    px.stop().await.unwrap();
}

/// Regression: in a `SQL_ASCII` database names and statement texts are
/// stored unchecked, so a role with `CREATEDB` can make a database whose
/// name is not UTF-8, and any role can run a statement whose text is not.
/// Read strictly, that one name failed `stat_database`,
/// `stat_database_conflicts`, `stat_activity` and `database` for every
/// database, and the text failed `stat_statements`. Now the name reads with
/// U+FFFD for the bytes; the server itself refuses to send the texts (ERROR
/// 22021), so they are left out, said on the status page, and the
/// statistics stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_texts_that_are_not_utf8_blind_nothing() {
    let cluster = Cluster::init();
    cluster.start();
    cluster.create_extension_in_postgres_db();
    let admin = cluster.connect("postgres", "it-encoding").await;
    for sql in [
        "CREATE DATABASE ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
        "CREATE DATABASE victim",
    ] {
        admin.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // chr(233) is the single byte 0xE9 in a SQL_ASCII database: "caf\xe9",
    // not UTF-8. The rename runs there, the shared catalog keeps the bytes.
    let ascii = cluster.connect("ascii", "it-encoding").await;
    ascii
        .batch_execute(
            "SET pg_stat_statements.track = 'all'; \
             DO $$ BEGIN EXECUTE 'ALTER DATABASE victim RENAME TO ' || quote_ident('caf' || chr(233)); \
             EXECUTE 'SELECT 1 AS ' || quote_ident('caf' || chr(233)); END $$",
        )
        .await
        .unwrap();
    let bad: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname::bytea = '\\x636166e9'::bytea",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad, 1, "the database with a name that is not UTF-8 exists");

    let extra = "checks:\n  slow_queries:\n    include_query_text: true\n    exclude_own_role: false\n";
    let px = start(&test_yaml(&cluster.dsn("postgres"), extra)).await;
    let collectors = [
        "stat_database",
        "stat_database_conflicts",
        "stat_activity",
        "database",
        "stat_statements",
    ];
    let m = until(px.addr, WAIT, "every collector succeeding, caf\u{FFFD} included", |m| {
        let ok = collectors
            .iter()
            .all(|c| m.get("pg_scrape_collector_success", &[("collector", c)]) == Some(1.0));
        (ok && !m
            .all("pg_stat_database_xact_commit", &[("datname", "caf\u{FFFD}")])
            .is_empty())
        .then(|| m.clone())
    })
    .await;
    assert!(
        !m.all("pg_database_size_bytes", &[("datname", "caf\u{FFFD}")])
            .is_empty(),
        "{}",
        m.text
    );
    assert!(
        !m.all("pg_stat_database_xact_commit", &[("datname", "postgres")])
            .is_empty(),
        "the other databases are still there:\n{}",
        m.text
    );
    // The server itself refuses to send the texts then (ERROR 22021), so
    // they are left out, said on the status page, and the statistics stay.
    assert!(
        !m.all("pg_stat_statements_calls_total", &[("datname", "ascii")])
            .is_empty(),
        "{}",
        m.text
    );
    let page = get(px.addr, "/").await.text();
    assert!(page.contains("query texts left out"), "{page}");
    px.stop().await.unwrap();
}
