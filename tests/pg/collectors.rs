//! Each collector against a real server: create a known state, see it in the
//! scrape.

use crate::support::scrape::{scrape, until};
use crate::support::{WAIT, eventually, pg, shared_yaml, start, test_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmaster_reports_up_version_and_start_time() {
    let cluster = pg::shared();
    let client = cluster.connect("postgres", "it-postmaster").await;
    let row = client
        .query_one(
            "SELECT version(), current_setting('server_version'), extract(epoch FROM pg_postmaster_start_time())::float8",
            &[],
        )
        .await
        .unwrap();
    let (version, server_version, started): (String, String, f64) = (row.get(0), row.get(1), row.get(2));
    let short: String = server_version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();

    let px = start(&shared_yaml()).await;
    let m = until(px.addr, WAIT, "pg_up 1", |m| {
        (m.get("pg_up", &[]) == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.get("pg_static", &[("version", version.as_str())]),
        Some(1.0),
        "{}",
        m.text
    );
    let static_short = &m.all("pg_static", &[])[0].labels["short_version"];
    assert!(
        static_short.starts_with(&short),
        "short_version {static_short} vs {server_version}"
    );
    assert_eq!(static_short.split('.').count(), 3);
    let start_time = m.get("pg_postmaster_start_time_seconds", &[]).unwrap();
    assert!((start_time - started).abs() < 1.0, "{start_time} vs {started}");
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_exported_with_converted_units() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-settings").await;
    admin
        .batch_execute("DROP DATABASE IF EXISTS settings_db")
        .await
        .unwrap();
    admin.batch_execute("CREATE DATABASE settings_db").await.unwrap();
    admin
        .batch_execute(
            "ALTER DATABASE settings_db SET work_mem = '6MB'; \
             ALTER DATABASE settings_db SET enable_seqscan = off; \
             ALTER DATABASE settings_db SET vacuum_cost_delay = '3ms'",
        )
        .await
        .unwrap();
    let yaml =
        test_yaml(&cluster.dsn("settings_db"), "").replace("datasource:\n", "datasource:\n  statement_timeout: 7s\n");
    let px = start(&yaml).await;
    let m = until(px.addr, WAIT, "settings", |m| {
        m.has("pg_settings_work_mem_bytes").then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_settings_work_mem_bytes", &[]), Some(6.0 * 1024.0 * 1024.0));
    assert_eq!(m.get("pg_settings_enable_seqscan", &[]), Some(0.0));
    assert_eq!(m.get("pg_settings_vacuum_cost_delay_seconds", &[]), Some(0.003));
    // pgsidecar's own session settings, visible through its own session.
    assert_eq!(m.get("pg_settings_statement_timeout_seconds", &[]), Some(7.0));
    assert_eq!(m.get("pg_settings_lock_timeout_seconds", &[]), Some(1.0));
    assert_eq!(m.get("pg_settings_default_transaction_read_only", &[]), Some(1.0));
    assert_eq!(m.get("pg_settings_max_connections", &[]), Some(60.0));
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_database_counts_committed_transactions() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-xact").await;
    admin.batch_execute("DROP DATABASE IF EXISTS xact_db").await.unwrap();
    admin.batch_execute("CREATE DATABASE xact_db").await.unwrap();
    let px = start(&shared_yaml()).await;
    let commits =
        |m: &crate::support::scrape::Metrics| m.get("pg_stat_database_xact_commit", &[("datname", "xact_db")]);
    let before = until(px.addr, WAIT, "xact_db commits", commits).await;

    let db = cluster.connect("xact_db", "it-xact").await;
    db.batch_execute("CREATE TABLE t (id int)").await.unwrap();
    const N: f64 = 40.0;
    for i in 0..N as i32 {
        db.execute("INSERT INTO t VALUES ($1)", &[&i]).await.unwrap();
    }
    drop(db); // stats are flushed at the latest when the session ends

    until(px.addr, WAIT, "40 more commits in xact_db", |m| {
        commits(m).filter(|v| *v >= before + N)
    })
    .await;
    // The counter mirrors Postgres: pgsidecar exports the value Postgres
    // reports (nothing else commits in xact_db, so the two meet).
    eventually(WAIT, "xact_db's xact_commit as Postgres reports it", async || {
        let postgres: f64 = admin
            .query_one(
                "SELECT xact_commit::float8 FROM pg_stat_database WHERE datname = 'xact_db'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        match commits(&scrape(px.addr).await) {
            Some(v) if v == postgres => Ok(()),
            v => Err(format!("pgsidecar {v:?}, Postgres {postgres}")),
        }
    })
    .await;
    let m = scrape(px.addr).await;
    let ins = m
        .get("pg_stat_database_tup_inserted", &[("datname", "xact_db")])
        .unwrap();
    assert!(ins >= N, "tup_inserted {ins}");
    assert!(m.text.contains("# TYPE pg_stat_database_xact_commit counter"));
    assert!(m.text.contains("# TYPE pg_stat_database_numbackends gauge"));
    let datid = &m.all("pg_stat_database_xact_commit", &[("datname", "xact_db")])[0].labels["datid"];
    assert!(datid.parse::<u32>().is_ok(), "datid {datid}");
    // Conflicts exist for every database, all zero on a primary.
    assert_eq!(
        m.get("pg_stat_database_conflicts_confl_lock", &[("datname", "xact_db")]),
        Some(0.0)
    );
    assert_eq!(
        m.get("pg_stat_database_conflicts_confl_snapshot", &[("datname", "xact_db")]),
        Some(0.0)
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_size_and_connection_limit() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-size").await;
    admin.batch_execute("DROP DATABASE IF EXISTS size_db").await.unwrap();
    admin
        .batch_execute("CREATE DATABASE size_db CONNECTION LIMIT 7")
        .await
        .unwrap();
    let db = cluster.connect("size_db", "it-size").await;
    db.batch_execute("CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 50000) g")
        .await
        .unwrap();
    let expected: i64 = db
        .query_one("SELECT pg_database_size('size_db')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(expected > 10_000_000, "fixture should be over 10 MB, is {expected}");

    let px = start(&shared_yaml()).await;
    let size = until(px.addr, WAIT, "size_db size", |m| {
        m.get("pg_database_size_bytes", &[("datname", "size_db")])
            .filter(|s| *s > 10_000_000.0)
    })
    .await;
    assert!((size - expected as f64).abs() < 2_000_000.0, "{size} vs {expected}");
    let m = scrape(px.addr).await;
    assert_eq!(
        m.get("pg_database_connection_limit", &[("datname", "size_db")]),
        Some(7.0)
    );
    assert_eq!(
        m.get("pg_database_connection_limit", &[("datname", "postgres")]),
        Some(-1.0)
    );
    px.stop().await.unwrap();
}

/// The size of a database is read again only when it changed (issue 13):
/// rows written, or a table dropped, show within a few runs, while the
/// quiet databases are reused and only a twelfth of them (at least one) is
/// read again per run: with 15 or more databases, reading again in turn
/// would take 8 runs or more to reach a given one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_sizes_follow_writes_and_drops() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-size").await;
    // Enough quiet databases that reading them again in turn takes more
    // runs than the checks below wait for.
    for i in 0..12 {
        for sql in [
            format!("DROP DATABASE IF EXISTS size_quiet_{i}"),
            format!("CREATE DATABASE size_quiet_{i}"),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
    }
    admin
        .batch_execute("DROP DATABASE IF EXISTS size_follow_db")
        .await
        .unwrap();
    admin.batch_execute("CREATE DATABASE size_follow_db").await.unwrap();
    let server_size = async || -> f64 {
        admin
            .query_one("SELECT pg_database_size('size_follow_db')::float8", &[])
            .await
            .unwrap()
            .get(0)
    };
    // shared_yaml runs `database` every second.
    let px = start(&shared_yaml()).await;
    let reported =
        |m: &crate::support::scrape::Metrics| m.get("pg_database_size_bytes", &[("datname", "size_follow_db")]);
    let before = until(px.addr, WAIT, "size_follow_db sized", reported).await;
    let near = |a: f64, b: f64| (a - b).abs() < 1_000_000.0;
    assert!(near(before, server_size().await), "{before}");

    {
        // The session ends: its counters reach the statistics.
        let w = cluster.connect("size_follow_db", "it-size-writer").await;
        w.batch_execute("CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 80000) g")
            .await
            .unwrap();
    }
    let grown = server_size().await;
    assert!(grown > before + 15_000_000.0, "{before} -> {grown}");
    let within = std::time::Duration::from_secs(4);
    until(px.addr, within, "size_follow_db's new size", |m| {
        reported(m).filter(|s| near(*s, grown))
    })
    .await;

    {
        let w = cluster.connect("size_follow_db", "it-size-writer").await;
        w.batch_execute("DROP TABLE big").await.unwrap();
    }
    let dropped = server_size().await;
    assert!(dropped < grown - 15_000_000.0, "{grown} -> {dropped}");
    until(px.addr, within, "size_follow_db's size after the drop", |m| {
        reported(m).filter(|s| near(*s, dropped))
    })
    .await;
    px.stop().await.unwrap();
    for i in 0..12 {
        admin
            .batch_execute(&format!("DROP DATABASE size_quiet_{i}"))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_activity_counts_connections_by_application() {
    let cluster = pg::shared();
    const M: usize = 4;
    let app = "it-activity-app";
    let mut clients = Vec::new();
    for _ in 0..M {
        clients.push(cluster.connect("postgres", app).await);
    }
    let px = start(&shared_yaml()).await;
    let m = until(px.addr, WAIT, "4 idle it-activity-app connections", |m| {
        let n: f64 = m
            .all(
                "pg_stat_activity_count",
                &[("application_name", app), ("state", "idle")],
            )
            .iter()
            .map(|s| s.value)
            .sum();
        (n == M as f64).then(|| m.clone())
    })
    .await;
    let s = &m.all("pg_stat_activity_count", &[("application_name", app)])[0];
    assert_eq!(s.labels["datname"], "postgres");
    assert_eq!(s.labels["usename"], "postgres");
    assert_eq!(s.labels["backend_type"], "client backend");
    // Every database gets a zero sample for the states it has no connection in.
    assert_eq!(
        m.get(
            "pg_stat_activity_count",
            &[("datname", "template1"), ("state", "disabled")]
        ),
        Some(0.0)
    );

    // An open transaction shows its age.
    clients[0].batch_execute("BEGIN; SELECT txid_current()").await.unwrap();
    until(px.addr, WAIT, "a transaction older than 1s", |m| {
        m.get(
            "pg_stat_activity_max_tx_duration",
            &[("application_name", app), ("state", "idle in transaction")],
        )
        .filter(|age| *age >= 1.0)
    })
    .await;
    clients[0].batch_execute("COMMIT").await.unwrap();

    drop(clients);
    until(px.addr, WAIT, "connections gone", |m| {
        m.all("pg_stat_activity_count", &[("application_name", app)])
            .is_empty()
            .then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

/// Columns that exist only on newer servers appear exactly there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_gated_columns_follow_the_server() {
    let cluster = pg::shared();
    let client = cluster.connect("postgres", "it-version").await;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let px = start(&shared_yaml()).await;
    let m = until(px.addr, WAIT, "stat_database and conflicts", |m| {
        (m.has("pg_stat_database_xact_commit") && m.has("pg_stat_database_conflicts_confl_lock")).then(|| m.clone())
    })
    .await;
    let by_version = [
        ("pg_stat_database_active_time_seconds_total", 140000),
        ("pg_stat_database_sessions_total", 140000),
        ("pg_stat_database_conflicts_confl_active_logicalslot_total", 160000),
        ("pg_stat_database_checksum_failures_total", 0),
    ];
    for (name, since) in by_version {
        assert_eq!(m.has(name), version >= since, "{name} on server {version}");
    }
    if version >= 140000 {
        let sessions = m
            .get("pg_stat_database_sessions_total", &[("datname", "postgres")])
            .unwrap();
        assert!(sessions >= 1.0, "sessions {sessions}");
    }
    px.stop().await.unwrap();
}

/// The fixture schema builds on every supported version and has its eleven indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_schema_has_the_guides_indexes() {
    let db = crate::support::fixture::create_app_db(pg::shared(), "fixture_db").await;
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND indexname LIKE 'idx\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 11);
    for name in crate::support::fixture::NAMED_INDEXES {
        let found: i64 = db
            .query_one("SELECT count(*) FROM pg_indexes WHERE indexname = $1", &[&name])
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 1, "{name}");
    }
}

/// 25 connections from the pool's application against a capacity of 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_connections_against_capacity() {
    let cluster = pg::shared();
    let extra = "checks:\n  pools:\n    - name: api\n      application_name: it-pool-api\n      client_addr: 127.0.0.0/8\n      size: 20\n      overflow: 10\n    - name: other\n      application_name: it-pool-none\n      size: 5\n";
    let px = start(&test_yaml(&cluster.dsn("postgres"), extra)).await;
    let mut clients = Vec::new();
    for _ in 0..25 {
        clients.push(cluster.connect("postgres", "it-pool-api").await);
    }
    clients[0].batch_execute("BEGIN; SELECT 1").await.unwrap();
    let m = until(px.addr, WAIT, "25 pool connections", |m| {
        let n: f64 = m
            .all("pgsidecar_pool_connections", &[("pool", "api")])
            .iter()
            .map(|s| s.value)
            .sum();
        (n == 25.0).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pgsidecar_pool_capacity", &[("pool", "api")]), Some(30.0));
    assert_eq!(
        m.get("pgsidecar_pool_connections", &[("pool", "api"), ("state", "idle")]),
        Some(24.0)
    );
    assert_eq!(
        m.get(
            "pgsidecar_pool_connections",
            &[("pool", "api"), ("state", "idle in transaction")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("pgsidecar_pool_connections", &[("pool", "other"), ("state", "idle")]),
        Some(0.0)
    );
    assert_eq!(m.get("pgsidecar_pool_capacity", &[("pool", "other")]), Some(5.0));
    until(px.addr, WAIT, "idle in transaction for over 1s", |m| {
        m.get("pgsidecar_pool_idle_in_transaction_max_seconds", &[("pool", "api")])
            .filter(|s| *s >= 1.0)
    })
    .await;
    drop(clients);
    until(px.addr, WAIT, "pool empty", |m| {
        let n: f64 = m
            .all("pgsidecar_pool_connections", &[("pool", "api")])
            .iter()
            .map(|s| s.value)
            .sum();
        (n == 0.0).then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

/// A statement running over the 100 ms threshold shows while it runs; fast ones never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_slow_queries_and_idle_transactions() {
    let cluster = pg::shared();
    // pgsidecar's one session, under a name no other test's pgsidecar uses.
    const OWN: &str = "it-active-queries-pgsidecar";
    let yaml = test_yaml(
        &cluster.dsn("postgres"),
        "checks:\n  slow_queries:\n    threshold: 100ms\n",
    )
    .replace(
        "datasource:\n",
        &format!("datasource:\n  application_name: {OWN}\n  pool_size: 1\n"),
    );
    let px = start(&yaml).await;
    // (The families may be empty here: pgsidecar's one session is left out.)
    let m = until(px.addr, WAIT, "the active_queries collector ran", |m| {
        (m.get("pg_scrape_collector_success", &[("collector", "active_queries")]) == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pgsidecar_slow_query_threshold_seconds", &[]), Some(0.1));

    // A fast query running nearly all the time: 20 ms statements back to back.
    let fast = cluster.connect("postgres", "it-fast").await;
    let fast = tokio::spawn(async move {
        loop {
            fast.batch_execute("SELECT pg_sleep(0.02)").await.unwrap();
        }
    });
    let slow = cluster.connect("postgres", "it-slow").await;
    let sleeper = tokio::spawn(async move { slow.batch_execute("SELECT pg_sleep(4)").await });
    let idle = cluster.connect("postgres", "it-idle-tx").await;
    idle.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // A collection that saw both the slow query and a fast one running (an
    // oldest age above 0, below the threshold).
    let m = until(px.addr, WAIT, "one slow active query and a fast one running", |m| {
        let slow = m.get("pg_stat_activity_slow_queries", &[("application_name", "it-slow")]) == Some(1.0);
        let fast = m.get(
            "pg_stat_activity_oldest_query_seconds",
            &[("application_name", "it-fast")],
        );
        (slow && fast.is_some_and(|age| age > 0.0 && age < 0.1)).then(|| m.clone())
    })
    .await;
    fast.abort();
    let age = m
        .get(
            "pg_stat_activity_oldest_query_seconds",
            &[("application_name", "it-slow")],
        )
        .unwrap();
    assert!(age > 0.1, "age {age}");
    assert_eq!(
        m.get("pg_stat_activity_slow_queries", &[("application_name", "it-fast")]),
        Some(0.0),
        "a running query under the threshold is not slow:\n{}",
        m.text
    );
    assert_eq!(
        m.get(
            "pg_stat_activity_idle_in_transaction_connections",
            &[("application_name", "it-idle-tx")]
        ),
        Some(1.0)
    );
    // pgsidecar's own running query is left out: its pool's one session is
    // the one that runs it, so pgsidecar's application has no series at all.
    for name in ["pg_stat_activity_slow_queries", "pg_stat_activity_oldest_query_seconds"] {
        assert!(
            m.all(name, &[("application_name", OWN)]).is_empty(),
            "{name} counts pgsidecar's own session:\n{}",
            m.text
        );
    }
    sleeper.await.unwrap().unwrap();
    until(px.addr, WAIT, "slow query done", |m| {
        m.all("pg_stat_activity_slow_queries", &[("application_name", "it-slow")])
            .iter()
            .all(|s| s.value == 0.0)
            .then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

/// Regression: a pool matched only by `client_addr` (a sidecar's
/// `${POD_IP}`) counted pgsidecar's own sessions, which come from the same
/// address: its pool and, with leader election, its lock session. A cluster
/// of its own, so that no other test's sessions come from 127.0.0.1 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_matched_by_address_leaves_out_pgsidecars_own_sessions() {
    let cluster = pg::Cluster::init();
    cluster.start();
    let extra = "coordination:\n  mode: leader-election\n  check_interval: 500ms\n\
                 checks:\n  pools:\n    - name: pod\n      client_addr: 127.0.0.1\n      size: 10\n";
    let px = start(&test_yaml(&cluster.dsn("postgres"), extra)).await;
    let total = |m: &crate::support::scrape::Metrics| -> Option<f64> {
        let s = m.all("pgsidecar_pool_connections", &[("pool", "pod")]);
        (!s.is_empty()).then(|| s.iter().map(|s| s.value).sum())
    };
    // Leader, so the lock session is open, and the pool has several sessions.
    let m = until(px.addr, WAIT, "leader with a full pool", |m| {
        (m.get("pgsidecar_leader", &[]) == Some(1.0) && m.get("pgsidecar_db_pool_size", &[]) >= Some(2.0))
            .then(|| m.clone())
    })
    .await;
    let watcher = cluster.connect("postgres", "it-watcher").await;
    let ours: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsidecar'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        ours >= 3,
        "pgsidecar should hold its pool and its lock session: {ours}\n{}",
        m.text
    );
    // The watcher is the only other session from 127.0.0.1.
    until(px.addr, WAIT, "only the watcher counted", |m| {
        total(m).filter(|n| *n == 1.0)
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(cluster.connect("postgres", "it-app").await);
    }
    until(px.addr, WAIT, "the watcher and four clients", |m| {
        total(m).filter(|n| *n == 5.0)
    })
    .await;
    drop(clients);
    px.stop().await.unwrap();
}
