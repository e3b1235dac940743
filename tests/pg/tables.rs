//! The per-table collectors and the migration check against the application
//! schema (see `fixture`): each test makes a condition happen in a database
//! of its own and sees the metric flip.

use crate::support::fixture::create_app_db;
use crate::support::scrape::{Metrics, scrape, until};
use crate::support::{WAIT, pg, start, test_yaml};

fn table<'a>(db: &'a str, relname: &'a str) -> [(&'a str, &'a str); 3] {
    [("datname", db), ("schemaname", "public"), ("relname", relname)]
}

/// A workload session that forces sequential scans; dropping it flushes its stats.
async fn seq_scans(db: &str, n: usize) {
    let c = pg::shared().connect(db, "it-tables-work").await;
    c.batch_execute("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off")
        .await
        .unwrap();
    for _ in 0..n {
        c.query_one("SELECT count(*) FROM messages", &[]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_scans_sizes_and_live_rows() {
    let db = "tables_scan_db";
    let admin = create_app_db(pg::shared(), db).await;
    admin.batch_execute("ANALYZE messages").await.unwrap();
    let px = start(&test_yaml(&pg::shared().dsn(db), "")).await;
    let t = table(db, "messages");
    let seq = |m: &Metrics| m.get("pg_stat_user_tables_seq_scan", &t);
    let before = until(px.addr, WAIT, "messages seq_scan", seq).await;

    const N: usize = 12;
    seq_scans(db, N).await;
    until(px.addr, WAIT, "12 more seq scans on messages", |m| {
        seq(m).filter(|v| *v >= before + N as f64)
    })
    .await;
    let m = until(px.addr, WAIT, "about 5000 live rows in messages after ANALYZE", |m| {
        m.get("pg_stat_user_tables_n_live_tup", &t)
            .filter(|v| (4500.0..=5500.0).contains(v))
            .filter(|_| m.has("pg_stat_user_tables_table_size_bytes"))
            .map(|_| m.clone())
    })
    .await;
    let size = m.get("pg_stat_user_tables_table_size_bytes", &t).unwrap();
    assert!(size > 100_000.0, "table_size_bytes {size}");
    let idx = m.get("pg_stat_user_tables_index_size_bytes", &t).unwrap();
    assert!(idx > 0.0, "index_size_bytes {idx}");
    let read = m.get("pg_stat_user_tables_seq_tup_read", &t).unwrap();
    assert!(read >= N as f64 * 5000.0, "seq_tup_read {read}");
    assert!(m.text.contains("# TYPE pg_stat_user_tables_seq_scan counter"));
    assert!(m.text.contains("# TYPE pg_stat_user_tables_n_live_tup gauge"));
    // The schema's five tables and its materialized view; no system tables.
    assert_eq!(m.all("pg_stat_user_tables_seq_scan", &[("datname", db)]).len(), 6);
    assert!(
        m.all("pg_stat_user_tables_seq_scan", &[("schemaname", "pg_catalog")])
            .is_empty()
    );
    assert_eq!(
        m.get(
            "pgsidecar_collector_series_truncated",
            &[("collector", "stat_user_tables")]
        ),
        Some(0.0)
    );
    // Migrations are not configured here: only the marker.
    assert_eq!(m.get("pgsidecar_migration_configured", &[]), Some(0.0));
    assert!(!m.has("pgsidecar_migration_table_present"));
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "migrations")]),
        Some(1.0)
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tuples_rise_and_vacuum_clears_them() {
    let db = "tables_dead_db";
    let admin = create_app_db(pg::shared(), db).await;
    // Autovacuum would race the test for the dead rows.
    admin
        .batch_execute("ALTER TABLE messages SET (autovacuum_enabled = false)")
        .await
        .unwrap();
    let px = start(&test_yaml(&pg::shared().dsn(db), "")).await;
    let t = table(db, "messages");
    let m = until(px.addr, WAIT, "messages stats", |m| {
        m.has("pg_stat_user_tables_n_dead_tup").then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_stat_user_tables_last_vacuum", &t), Some(0.0));
    assert_eq!(m.get("pg_stat_user_tables_vacuum_count", &t), Some(0.0));

    let work = pg::shared().connect(db, "it-tables-work").await;
    work.batch_execute("DELETE FROM messages WHERE id % 2 = 0")
        .await
        .unwrap();
    drop(work);
    let m = until(px.addr, WAIT, "2500 dead tuples in messages", |m| {
        m.get("pg_stat_user_tables_n_dead_tup", &t)
            .filter(|v| *v >= 2400.0)
            .map(|_| m.clone())
    })
    .await;
    let ratio = m.get("pg_stat_user_tables_dead_tuple_ratio", &t).unwrap();
    assert!(ratio > 0.3, "dead_tuple_ratio {ratio}");
    assert!(m.get("pg_stat_user_tables_n_tup_del", &t).unwrap() >= 2500.0);

    admin.batch_execute("VACUUM messages").await.unwrap();
    let m = until(px.addr, WAIT, "a manual vacuum of messages", |m| {
        m.get("pg_stat_user_tables_vacuum_count", &t)
            .filter(|v| *v >= 1.0)
            .map(|_| m.clone())
    })
    .await;
    let last = m.get("pg_stat_user_tables_last_vacuum", &t).unwrap();
    assert!(last > 1_600_000_000.0, "last_vacuum {last}");
    let dead = m.get("pg_stat_user_tables_n_dead_tup", &t).unwrap();
    assert!(dead < 100.0, "n_dead_tup after VACUUM {dead}");
    assert!(m.get("pg_stat_user_tables_dead_tuple_ratio", &t).unwrap() < 0.05);
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statio_counts_buffer_hits() {
    let db = "tables_statio_db";
    let _admin = create_app_db(pg::shared(), db).await;
    let px = start(&test_yaml(&pg::shared().dsn(db), "")).await;
    let t = table(db, "messages");
    let hits = |m: &Metrics| m.get("pg_statio_user_tables_heap_blocks_hit", &t);
    let before = until(px.addr, WAIT, "messages heap hits", hits).await;
    seq_scans(db, 5).await;
    until(px.addr, WAIT, "more heap hits on messages", |m| {
        hits(m).filter(|v| *v > before)
    })
    .await;
    let m = scrape(px.addr).await;
    assert!(m.text.contains("# TYPE pg_statio_user_tables_heap_blocks_hit counter"));
    // daily_stats has no TOAST table: Postgres reports NULL, exported as 0.
    assert_eq!(
        m.get("pg_statio_user_tables_toast_blocks_hit", &table(db, "daily_stats")),
        Some(0.0)
    );
    assert_eq!(
        m.all("pg_statio_user_tables_idx_blocks_hit", &[("datname", db)]).len(),
        6
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_revision_follows_the_table() {
    let db = "tables_migrations_db";
    let admin = create_app_db(pg::shared(), db).await;
    let dsn = pg::shared().dsn(db);

    // A custom query reads the revision its own way.
    let custom = start(&test_yaml(
        &dsn,
        "checks:\n  migrations:\n    query: \"SELECT version_num || 'x' FROM alembic_version\"\n    expected: \"003x\"\n",
    ))
    .await;
    let m = until(custom.addr, WAIT, "the custom query's revision", |m| {
        m.has("pgsidecar_migration_at_expected").then(|| m.clone())
    })
    .await;
    let l = [("datname", db), ("table", "alembic_version")];
    assert_eq!(m.get("pgsidecar_migration_at_expected", &l), Some(1.0));
    assert_eq!(
        m.get("pgsidecar_migration_revision_info", &[("revision", "003x")]),
        Some(1.0)
    );
    assert!(!m.has("pgsidecar_migration_table_present"));
    custom.stop().await.unwrap();

    let px = start(&test_yaml(&dsn, "checks:\n  migrations:\n    expected: \"003\"\n")).await;
    let m = until(px.addr, WAIT, "at the expected revision", |m| {
        m.get("pgsidecar_migration_at_expected", &l)
            .filter(|v| *v == 1.0)
            .map(|_| m.clone())
    })
    .await;
    let rev = [("datname", db), ("table", "alembic_version"), ("revision", "003")];
    assert_eq!(m.get("pgsidecar_migration_revision_info", &rev), Some(1.0));
    assert_eq!(m.get("pgsidecar_migration_table_present", &l), Some(1.0));
    assert_eq!(m.get("pgsidecar_migration_configured", &[]), Some(1.0));

    admin
        .batch_execute("UPDATE alembic_version SET version_num = '002'")
        .await
        .unwrap();
    let m = until(px.addr, WAIT, "behind the expected revision", |m| {
        m.get("pgsidecar_migration_at_expected", &l)
            .filter(|v| *v == 0.0)
            .map(|_| m.clone())
    })
    .await;
    let revisions = m.all("pgsidecar_migration_revision_info", &l);
    assert_eq!(revisions.len(), 1, "{revisions:?}");
    assert_eq!(revisions[0].labels["revision"], "002");

    admin.batch_execute("DROP TABLE alembic_version").await.unwrap();
    let m = until(px.addr, WAIT, "the migration table gone", |m| {
        m.get("pgsidecar_migration_table_present", &l)
            .filter(|v| *v == 0.0)
            .map(|_| m.clone())
    })
    .await;
    assert_eq!(m.get("pgsidecar_migration_at_expected", &l), Some(0.0));
    assert!(!m.has("pgsidecar_migration_revision_info"));
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "migrations")]),
        Some(1.0)
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_series_caps_the_tables() {
    let db = "tables_cap_db";
    let _admin = create_app_db(pg::shared(), db).await;
    let px = start(&test_yaml(
        &pg::shared().dsn(db),
        "checks:\n  relations:\n    max_series: 2\n",
    ))
    .await;
    let m = until(px.addr, WAIT, "both table collectors", |m| {
        (m.has("pg_stat_user_tables_seq_scan") && m.has("pg_statio_user_tables_heap_blocks_hit")).then(|| m.clone())
    })
    .await;
    for (collector, metric) in [
        ("stat_user_tables", "pg_stat_user_tables_seq_scan"),
        ("statio_user_tables", "pg_statio_user_tables_heap_blocks_hit"),
    ] {
        let kept = m.all(metric, &[("datname", db)]);
        assert_eq!(kept.len(), 2, "{metric}: {kept:?}");
        // The biggest are kept: messages first of all.
        assert!(kept.iter().any(|s| s.labels["relname"] == "messages"), "{kept:?}");
        let c = [("collector", collector)];
        assert_eq!(m.get("pgsidecar_collector_series_truncated", &c), Some(1.0));
        assert_eq!(m.get("pgsidecar_collector_relations_omitted", &c), Some(4.0));
    }
    px.stop().await.unwrap();
}
