//! The server-health collectors against a real server, each with a state
//! created for real and its value watched: a lock held and counted by mode,
//! a checkpoint forced and counted (by `stat_bgwriter` before PostgreSQL
//! 17, by `stat_checkpointer` from 17), a slow VACUUM seen in progress, XID
//! age rising after a burst of transactions, WAL files, roles, idle and
//! long-running sessions, an autovacuum worker and the buffer cache.

use crate::support::pg::{self, Cluster};
use crate::support::scrape::{Metrics, get, scrape, until};
use crate::support::{WAIT, shared_yaml, start, test_yaml};

async fn server_version(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_counted_by_mode() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-locks").await;
    admin.batch_execute("DROP DATABASE IF EXISTS locks_db").await.unwrap();
    admin.batch_execute("CREATE DATABASE locks_db").await.unwrap();
    let db = cluster.connect("locks_db", "it-locks").await;
    db.batch_execute("CREATE TABLE t (id int)").await.unwrap();
    let px = start(&shared_yaml()).await;
    let mode = |m: &Metrics, mode: &str| m.get("pg_locks_count", &[("datname", "locks_db"), ("mode", mode)]);
    let m = until(px.addr, WAIT, "locks_db's lock modes", |m| {
        (mode(m, "sharerowexclusivelock") == Some(0.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.all("pg_locks_count", &[("datname", "locks_db")]).len(),
        9,
        "{}",
        m.text
    );

    db.batch_execute("BEGIN; LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let m = until(px.addr, WAIT, "one share row exclusive lock in locks_db", |m| {
        (mode(m, "sharerowexclusivelock") == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(mode(&m, "accessexclusivelock"), Some(0.0));
    db.batch_execute("COMMIT").await.unwrap();
    until(px.addr, WAIT, "the lock released", |m| {
        (mode(m, "sharerowexclusivelock") == Some(0.0)).then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_checkpoint_is_counted_where_the_server_counts_it() {
    let cluster = pg::shared();
    let c = cluster.connect("postgres", "it-checkpoint").await;
    let version = server_version(&c).await;
    let px = start(&shared_yaml()).await;
    // Before 17 the bgwriter counts requested checkpoints; from 17 the checkpointer does.
    let (counter, gone) = if version >= 170000 {
        (
            "pg_stat_checkpointer_num_requested_total",
            "pg_stat_bgwriter_checkpoints_req_total",
        )
    } else {
        (
            "pg_stat_bgwriter_checkpoints_req_total",
            "pg_stat_checkpointer_num_requested_total",
        )
    };
    let before = until(px.addr, WAIT, counter, |m| m.get(counter, &[])).await;
    c.batch_execute("CREATE TABLE IF NOT EXISTS checkpoint_t (v int); INSERT INTO checkpoint_t VALUES (1); CHECKPOINT")
        .await
        .unwrap();
    let ran = |m: &Metrics, c: &str| m.get("pg_scrape_collector_success", &[("collector", c)]) == Some(1.0);
    let m = until(px.addr, WAIT, "the checkpoint counted", |m| {
        m.get(counter, &[])
            .filter(|n| *n > before && ran(m, "stat_bgwriter") && ran(m, "stat_checkpointer"))
            .map(|_| m.clone())
    })
    .await;
    assert!(!m.has(gone), "{gone} on server {version}:\n{}", m.text);
    assert!(m.has("pg_stat_bgwriter_buffers_alloc_total"));
    // stat_checkpointer runs on every version (it succeeded, above): before
    // 17 it reads nothing, and says so.
    assert!(
        m.all("pgsidecar_collector_unavailable", &[("collector", "stat_checkpointer")])
            .is_empty()
    );
    let status = get(px.addr, "/").await.text();
    assert_eq!(
        status.contains("pg_stat_checkpointer exists from PostgreSQL 17"),
        version < 170000,
        "{status}"
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_vacuum_shows_its_progress() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-vacuum").await;
    admin.batch_execute("DROP DATABASE IF EXISTS vacuum_db").await.unwrap();
    admin.batch_execute("CREATE DATABASE vacuum_db").await.unwrap();
    let db = cluster.connect("vacuum_db", "it-vacuum").await;
    db.batch_execute(
        "CREATE TABLE big WITH (autovacuum_enabled = off) AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 100000) g",
    )
    .await
    .unwrap();
    let pages: i32 = db
        .query_one(
            "SELECT pg_relation_size('big')::int / current_setting('block_size')::int",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // pgsidecar in vacuum_db, where it can name the table.
    let px = start(&test_yaml(&cluster.dsn("vacuum_db"), "")).await;
    // About ten pages a second: every page costs at least 1, the limit is 1,
    // and each time it is reached the vacuum sleeps 100 ms.
    let vacuum = cluster.connect("vacuum_db", "it-vacuum-slow").await;
    let pid: i32 = vacuum.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    vacuum
        .batch_execute("SET vacuum_cost_delay = '100ms'; SET vacuum_cost_limit = 1")
        .await
        .unwrap();
    // (VACUUM cannot share a multi-statement batch: its own call.)
    let running = tokio::spawn(async move { vacuum.batch_execute("VACUUM big").await });
    let table = [("datname", "vacuum_db"), ("relname", "big")];
    let m = until(px.addr, WAIT, "the vacuum scanning the heap", |m| {
        (m.get(
            "pg_stat_progress_vacuum_phase",
            &[("relname", "big"), ("phase", "scanning heap")],
        ) == Some(1.0)
            && m.get("pg_stat_progress_vacuum_heap_blks_scanned", &table)
                .is_some_and(|n| n > 0.0))
        .then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.get("pg_stat_progress_vacuum_heap_blks", &table),
        Some(f64::from(pages))
    );
    assert_eq!(
        m.get(
            "pg_stat_progress_vacuum_phase",
            &[("relname", "big"), ("phase", "vacuuming indexes")]
        ),
        Some(0.0)
    );
    assert_eq!(m.all("pg_stat_progress_vacuum_phase", &table).len(), 7);
    let scanned = m.get("pg_stat_progress_vacuum_heap_blks_scanned", &table).unwrap();
    until(px.addr, WAIT, "the vacuum moving on", |m| {
        m.get("pg_stat_progress_vacuum_heap_blks_scanned", &table)
            .filter(|n| *n > scanned)
    })
    .await;
    admin.execute("SELECT pg_cancel_backend($1)", &[&pid]).await.unwrap();
    assert!(running.await.unwrap().is_err(), "the vacuum was cancelled");
    until(px.addr, WAIT, "no vacuum in progress", |m| {
        (!m.has("pg_stat_progress_vacuum_phase")).then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xid_age_rises_after_a_burst_of_transactions() {
    let cluster = pg::shared();
    let c = cluster.connect("postgres", "it-wraparound").await;
    let px = start(&test_yaml(
        &cluster.dsn("postgres"),
        "collectors:\n  database_wraparound:\n    enabled: true\n",
    ))
    .await;
    let age = |m: &Metrics| {
        m.get(
            "pg_database_wraparound_age_datfrozenxid_seconds",
            &[("datname", "postgres")],
        )
    };
    let before = until(px.addr, WAIT, "postgres's XID age", age).await;
    const N: f64 = 300.0;
    for _ in 0..N as usize {
        c.batch_execute("SELECT txid_current()").await.unwrap();
    }
    let m = until(px.addr, WAIT, "300 more XIDs of age", |m| {
        age(m).filter(|a| *a >= before + N).map(|_| m.clone())
    })
    .await;
    let freeze_max: f64 = c
        .query_one("SELECT current_setting('autovacuum_freeze_max_age')::float8", &[])
        .await
        .unwrap()
        .get(0);
    let ratio = m
        .get("pg_database_wraparound_datfrozenxid_ratio", &[("datname", "postgres")])
        .unwrap();
    assert!((ratio - age(&m).unwrap() / freeze_max).abs() < 1e-12, "{ratio}");
    assert!(
        m.get(
            "pg_database_wraparound_age_datminmxid_seconds",
            &[("datname", "postgres")]
        )
        .is_some()
    );
    assert!(
        m.get("pg_database_wraparound_datminmxid_ratio", &[("datname", "postgres")])
            .is_some()
    );
    assert!(
        m.all(
            "pg_database_wraparound_age_datfrozenxid_seconds",
            &[("datname", "template0")]
        )
        .is_empty(),
        "template0 accepts no connections"
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_files_roles_and_wal_statistics() {
    let cluster = pg::shared();
    let c = cluster.connect("postgres", "it-wal").await;
    let version = server_version(&c).await;
    c.batch_execute(
        "DROP ROLE IF EXISTS it_roles_limited; CREATE ROLE it_roles_limited LOGIN CONNECTION LIMIT 3; \
         DROP ROLE IF EXISTS it_roles_group; CREATE ROLE it_roles_group NOLOGIN",
    )
    .await
    .unwrap();
    let px = start(&shared_yaml()).await;
    let m = until(px.addr, WAIT, "wal, stat_wal and roles", |m| {
        (m.has("pg_wal_segments")
            && m.has("pg_roles_connection_limit")
            && m.get("pg_scrape_collector_success", &[("collector", "stat_wal")]) == Some(1.0))
        .then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.get("pg_roles_connection_limit", &[("rolname", "it_roles_limited")]),
        Some(3.0)
    );
    assert_eq!(
        m.get("pg_roles_connection_limit", &[("rolname", "postgres")]),
        Some(-1.0)
    );
    assert!(
        m.all("pg_roles_connection_limit", &[("rolname", "it_roles_group")])
            .is_empty()
    );
    let segments = m.get("pg_wal_segments", &[]).unwrap();
    let segment_size: f64 = c
        .query_one(
            "SELECT setting::float8 FROM pg_settings WHERE name = 'wal_segment_size'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(segments >= 1.0);
    assert_eq!(
        m.get("pg_wal_size_bytes", &[]),
        Some(segments * segment_size),
        "{}",
        m.text
    );

    // pg_stat_wal from 14: records counted as they are written.
    if version >= 140000 {
        let before = m.get("pg_stat_wal_records_total", &[]).unwrap();
        c.batch_execute("CREATE TABLE IF NOT EXISTS wal_t (v int); INSERT INTO wal_t SELECT generate_series(1, 1000)")
            .await
            .unwrap();
        until(px.addr, WAIT, "1000 more WAL records", |m| {
            m.get("pg_stat_wal_records_total", &[])
                .filter(|n| *n >= before + 1000.0)
        })
        .await;
        assert!(scrape(px.addr).await.get("pg_stat_wal_bytes_total", &[]).unwrap() > 0.0);
    } else {
        assert!(!m.has("pg_stat_wal_records_total"));
        assert_eq!(
            m.get("pg_scrape_collector_success", &[("collector", "stat_wal")]),
            Some(1.0)
        );
        assert!(
            get(px.addr, "/")
                .await
                .text()
                .contains("pg_stat_wal exists from PostgreSQL 14")
        );
    }
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_long_running_sessions() {
    let cluster = pg::shared();
    let px = start(&test_yaml(
        &cluster.dsn("postgres"),
        "collectors:\n  process_idle:\n    enabled: true\n  long_running_transactions:\n    enabled: true\n",
    ))
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(cluster.connect("postgres", "it-process-idle").await);
    }
    let group = [("state", "idle"), ("application_name", "it-process-idle")];
    let m = until(px.addr, WAIT, "three sessions idle for over a second", |m| {
        (m.get("pg_process_idle_seconds_count", &group) == Some(3.0)
            && m.get("pg_process_idle_seconds_bucket", &[group[0], group[1], ("le", "1")]) == Some(0.0))
        .then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.get("pg_process_idle_seconds_bucket", &[group[0], group[1], ("le", "+Inf")]),
        Some(3.0)
    );
    assert!(m.get("pg_process_idle_seconds_sum", &group).unwrap() >= 3.0);

    let open = cluster.connect("postgres", "it-long-running").await;
    open.batch_execute("BEGIN; SELECT txid_current()").await.unwrap();
    until(px.addr, WAIT, "a transaction open for 2 s", |m| {
        (m.get("pg_long_running_transactions", &[]).is_some_and(|n| n >= 1.0)
            && m.get("pg_long_running_transactions_oldest_timestamp_seconds", &[])
                .is_some_and(|s| s >= 2.0))
        .then_some(())
    })
    .await;
    open.batch_execute("COMMIT").await.unwrap();
    drop(idle);
    until(px.addr, WAIT, "the idle sessions gone", |m| {
        m.all("pg_process_idle_seconds_count", &group).is_empty().then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

/// An autovacuum worker made slow on one table of a cluster of its own
/// (autovacuum wakes every second there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_autovacuum_worker_is_seen() {
    let cluster = Cluster::primary();
    let c = cluster.connect("postgres", "it-autovacuum").await;
    for sql in [
        "CREATE TABLE av (id int, pad text) WITH (autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1, \
         autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 1000000000)",
        "INSERT INTO av SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g",
        "DELETE FROM av WHERE id % 2 = 0",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    // The deletions reach the statistics when the session ends.
    drop(c);
    let px = start(&test_yaml(
        &cluster.dsn("postgres"),
        "collectors:\n  stat_activity_autovacuum:\n    enabled: true\n",
    ))
    .await;
    let m = until(px.addr, WAIT * 2, "the autovacuum worker on av", |m| {
        m.get("pg_stat_activity_autovacuum_timestamp_seconds", &[("relname", "av")])
            .map(|_| m.clone())
    })
    .await;
    let first = m
        .get("pg_stat_activity_autovacuum_timestamp_seconds", &[("relname", "av")])
        .unwrap();
    until(px.addr, WAIT, "its age growing", |m| {
        m.get("pg_stat_activity_autovacuum_timestamp_seconds", &[("relname", "av")])
            .filter(|a| *a >= first + 1.0)
    })
    .await;
    // The same vacuum, as progress (pgsidecar is in its database).
    until(px.addr, WAIT, "the autovacuum's progress", |m| {
        m.get(
            "pg_stat_progress_vacuum_heap_blks",
            &[("datname", "postgres"), ("relname", "av")],
        )
        .filter(|n| *n > 0.0)
    })
    .await;
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_cache_summary_needs_16_and_the_extension() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-buffercache").await;
    let version = server_version(&admin).await;
    admin
        .batch_execute("DROP DATABASE IF EXISTS buffercache_db")
        .await
        .unwrap();
    admin.batch_execute("CREATE DATABASE buffercache_db").await.unwrap();
    let px = start(&test_yaml(
        &cluster.dsn("buffercache_db"),
        "collectors:\n  buffercache_summary:\n    enabled: true\n",
    ))
    .await;
    let reason = |m: &Metrics| {
        m.all(
            "pgsidecar_collector_unavailable",
            &[("collector", "buffercache_summary")],
        )
        .first()
        .map(|s| s.labels["reason"].clone())
    };
    let first = until(px.addr, WAIT, "buffercache_summary unavailable", reason).await;
    if version < 160000 {
        assert_eq!(
            first,
            format!(
                "pg_buffercache_summary() needs PostgreSQL 16 or later; this server is {}",
                version / 10000
            )
        );
        px.stop().await.unwrap();
        return;
    }
    assert_eq!(
        first,
        "pg_buffercache is not installed in pgsidecar's database: CREATE EXTENSION pg_buffercache"
    );
    let db = cluster.connect("buffercache_db", "it-buffercache").await;
    db.batch_execute("CREATE EXTENSION pg_buffercache").await.unwrap();
    let m = until(px.addr, WAIT, "the summary", |m| {
        m.get("pg_buffercache_summary_buffers_used", &[]).map(|_| m.clone())
    })
    .await;
    let buffers: f64 = db
        .query_one(
            "SELECT setting::float8 FROM pg_settings WHERE name = 'shared_buffers'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let used = m.get("pg_buffercache_summary_buffers_used", &[]).unwrap();
    let unused = m.get("pg_buffercache_summary_buffers_unused", &[]).unwrap();
    assert!(used > 0.0, "{}", m.text);
    assert_eq!(used + unused, buffers);
    assert!(m.get("pg_buffercache_summary_usagecount_avg", &[]).unwrap() >= 1.0);
    assert!(reason(&m).is_none());
    px.stop().await.unwrap();
}
