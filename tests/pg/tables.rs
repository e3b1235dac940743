//! The per-table collectors and the migration check against the application
//! schema (see `fixture`): each test makes a condition happen in a database
//! of its own and sees the metric flip.

use crate::support::fixture::create_app_db;
use crate::support::scrape::{Metrics, scrape, until};
use crate::support::{WAIT, eventually, pg, start, test_yaml};

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

/// The per-relation collectors read the views' definitions, not the views
/// (issue 13): for tables with and without indexes, a TOAST table, a
/// materialized view and a partitioned table (which `pg_stat_user_tables`
/// lists from PostgreSQL 14 on), every exported value equals what the views
/// themselves return on the same server, and the rows are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_equal_the_views() {
    let db = "tables_views_db";
    let admin = pg::shared().connect("postgres", "it-tables").await;
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    // Autovacuum off everywhere, so nothing changes the counters but the
    // work below.
    let work = pg::shared().connect(db, "it-tables-work").await;
    work.batch_execute(
        "CREATE TABLE with_pk (id int PRIMARY KEY, v int) WITH (autovacuum_enabled = off); \
         CREATE INDEX with_pk_v ON with_pk (v); \
         CREATE TABLE no_index (v int) WITH (autovacuum_enabled = off); \
         CREATE TABLE toasty (id int PRIMARY KEY, body text) \
           WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off); \
         ALTER TABLE toasty ALTER body SET STORAGE EXTERNAL; \
         CREATE TABLE parted (id int, v int) PARTITION BY RANGE (id); \
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000) \
           WITH (autovacuum_enabled = off); \
         CREATE INDEX parted_id ON parted (id); \
         INSERT INTO with_pk SELECT g, g % 7 FROM generate_series(1, 500) g; \
         INSERT INTO no_index SELECT g FROM generate_series(1, 300) g; \
         INSERT INTO toasty SELECT g, repeat('x', 5000) FROM generate_series(1, 5) g; \
         INSERT INTO parted SELECT g, g FROM generate_series(1, 100) g; \
         CREATE MATERIALIZED VIEW mv AS SELECT v, count(*) AS n FROM with_pk GROUP BY v; \
         CREATE INDEX mv_v ON mv (v); \
         ALTER MATERIALIZED VIEW mv SET (autovacuum_enabled = off); \
         UPDATE with_pk SET v = v + 1 WHERE id <= 50; \
         DELETE FROM no_index WHERE v <= 30; \
         ANALYZE with_pk",
    )
    .await
    .unwrap();
    work.batch_execute("VACUUM no_index").await.unwrap();
    work.batch_execute(
        "SET enable_seqscan = off; \
         SELECT * FROM with_pk WHERE id = 5; SELECT * FROM with_pk WHERE id BETWEEN 10 AND 20; \
         SELECT length(body) FROM toasty WHERE id = 2; SELECT * FROM mv WHERE v = 3; \
         SELECT * FROM parted WHERE id = 7; \
         RESET enable_seqscan; \
         SELECT count(*) FROM no_index; SELECT max(length(body)) FROM toasty",
    )
    .await
    .unwrap();
    // Ending the session flushes its statistics.
    drop(work);

    let px = start(&test_yaml(&pg::shared().dsn(db), "")).await;
    let reader = pg::shared().connect(db, "it-tables").await;
    let version: i32 = reader
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let epoch = |c: &str| format!("coalesce(extract(epoch FROM {c}), 0)::float8");
    let count = |c: &str| format!("coalesce({c}, 0)::float8");
    let mut tables: Vec<(String, String)> = [
        "seq_scan",
        "seq_tup_read",
        "idx_scan",
        "idx_tup_fetch",
        "n_tup_ins",
        "n_tup_upd",
        "n_tup_del",
        "n_tup_hot_upd",
        "n_live_tup",
        "n_dead_tup",
        "n_mod_since_analyze",
        "vacuum_count",
        "autovacuum_count",
        "analyze_count",
        "autoanalyze_count",
    ]
    .iter()
    .map(|c| (format!("pg_stat_user_tables_{c}"), count(c)))
    .collect();
    for c in ["last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze"] {
        tables.push((format!("pg_stat_user_tables_{c}"), epoch(c)));
    }
    let statio: Vec<(String, String)> = ["heap", "idx", "toast", "tidx"]
        .iter()
        .flat_map(|k| {
            ["read", "hit"].map(|w| {
                (
                    format!("pg_statio_user_tables_{k}_blocks_{w}"),
                    count(&format!("{k}_blks_{w}")),
                )
            })
        })
        .collect();
    let mut indexes: Vec<(String, String)> = ["idx_scan", "idx_tup_read", "idx_tup_fetch"]
        .iter()
        .map(|c| (format!("pg_stat_user_indexes_{c}_total"), count(&format!("s.{c}"))))
        .collect();
    if version >= 160000 {
        indexes.push((
            "pg_stat_user_indexes_last_idx_scan_timestamp_seconds".into(),
            epoch("s.last_idx_scan"),
        ));
    }
    for c in ["idx_blks_read", "idx_blks_hit"] {
        indexes.push((format!("pg_statio_user_indexes_{c}_total"), count(&format!("io.{c}"))));
    }
    let views = [
        ("pg_stat_user_tables", "relname", tables),
        ("pg_statio_user_tables", "relname", statio),
        (
            "pg_stat_user_indexes s JOIN pg_statio_user_indexes io ON io.indexrelid = s.indexrelid",
            "s.indexrelname",
            indexes,
        ),
    ];

    let compared = eventually(WAIT, "pgsidecar's values equal the views'", async || {
        let m = scrape(px.addr).await;
        let mut diffs = Vec::new();
        let mut compared = 0;
        for (from, name, columns) in &views {
            let select: Vec<&str> = columns.iter().map(|(_, e)| e.as_str()).collect();
            let sql = format!("SELECT {name}::text, {} FROM {from} ORDER BY 1", select.join(", "));
            let rows = reader.query(&sql, &[]).await.unwrap();
            let label = if name.contains("index") {
                "indexrelname"
            } else {
                "relname"
            };
            for (i, (metric, _)) in columns.iter().enumerate() {
                let mut exported: Vec<String> = m.all(metric, &[]).iter().map(|s| s.labels[label].clone()).collect();
                exported.sort();
                let listed: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                if exported != listed {
                    diffs.push(format!("{metric}: pgsidecar has {exported:?}, the view {listed:?}"));
                    continue;
                }
                for r in &rows {
                    let rel: String = r.get(0);
                    let want: f64 = r.get(i + 1);
                    let got = m.get(metric, &[(label, &rel)]);
                    if got.is_none_or(|g| (g - want).abs() > 1e-3) {
                        diffs.push(format!("{metric}{{{label}={rel}}}: pgsidecar {got:?}, the view {want}"));
                    }
                    compared += 1;
                }
            }
        }
        if diffs.is_empty() {
            Ok(compared)
        } else {
            Err(diffs.join("\n"))
        }
    })
    .await;
    // Every relkind the views list, and the partitioned table from 14 on.
    let m = scrape(px.addr).await;
    let mut listed: Vec<&str> = m
        .all("pg_stat_user_tables_seq_scan", &[("datname", db)])
        .iter()
        .map(|s| s.labels["relname"].as_str())
        .collect();
    listed.sort();
    let mut want = vec!["mv", "no_index", "parted_1", "toasty", "with_pk"];
    if version >= 140000 {
        want.insert(2, "parted");
    }
    assert_eq!(listed, want);
    assert!(compared >= want.len() * 27, "{compared} values compared");
}

/// What the server says the sizes of `relname` are: table, its indexes.
async fn server_sizes(c: &tokio_postgres::Client, relname: &str) -> (f64, f64) {
    let r = c
        .query_one(
            "SELECT pg_table_size(oid)::float8, pg_indexes_size(oid)::float8 FROM pg_class \
             WHERE relname = $1 AND relnamespace = 'public'::regnamespace",
            &[&relname],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// `relation_sizes` sizes only what changed (issue 13): after a write, a
/// rewrite and a new index, the next runs report the server's new sizes,
/// while the unchanged relations' readings are reused. With 30 more tables
/// and their indexes, re-reading alone (a twelfth of the readings per run)
/// would take about 12 runs to reach a given relation, so a change the keys
/// missed would most likely not show within the few runs waited here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_follow_writes_rewrites_and_new_indexes() {
    let db = "tables_sizes_db";
    let admin = create_app_db(pg::shared(), db).await;
    admin
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..30 LOOP \
               EXECUTE format('CREATE TABLE s%s (id int, v text) WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off)', i); \
               EXECUTE format('CREATE INDEX ON s%s (id)', i); \
               EXECUTE format('INSERT INTO s%s SELECT g, md5(g::text) FROM generate_series(1, 50) g', i); \
             END LOOP; END $$",
        )
        .await
        .unwrap();
    let px = start(&test_yaml(
        &pg::shared().dsn(db),
        "collectors:\n  relation_sizes:\n    interval: 1s\n",
    ))
    .await;
    let size = |m: &Metrics, relname: &str| {
        (
            m.get("pg_stat_user_tables_table_size_bytes", &table(db, relname)),
            m.get("pg_stat_user_tables_index_size_bytes", &table(db, relname)),
        )
    };
    let reused = |m: &Metrics| {
        m.get("pgsidecar_relation_sizes_reused", &[("kind", "table")])
            .unwrap_or(0.0)
    };
    // A second run reuses most of the first one's readings.
    until(px.addr, WAIT, "a run that reuses sizes", |m| {
        (reused(m) >= 20.0).then_some(())
    })
    .await;
    let quiet = server_sizes(&admin, "s30").await;
    assert_eq!(size(&scrape(px.addr).await, "s30"), (Some(quiet.0), Some(quiet.1)));

    // A write (its session ends, so its counters reach the statistics).
    let before = server_sizes(&admin, "s1").await;
    {
        let w = pg::shared().connect(db, "it-sizes-writer").await;
        w.batch_execute("INSERT INTO s1 SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
            .await
            .unwrap();
    }
    let after = server_sizes(&admin, "s1").await;
    assert!(after.0 > before.0 && after.1 > before.1, "{before:?} -> {after:?}");
    let within = std::time::Duration::from_secs(5);
    until(px.addr, within, "s1's new sizes", |m| {
        (size(m, "s1") == (Some(after.0), Some(after.1))).then_some(())
    })
    .await;

    // A rewrite: TRUNCATE moves no row counter, only the file node.
    let full = server_sizes(&admin, "s2").await;
    admin.batch_execute("TRUNCATE s2").await.unwrap();
    let truncated = server_sizes(&admin, "s2").await;
    assert!(truncated.0 < full.0, "{full:?} -> {truncated:?}");
    until(px.addr, within, "s2's size after TRUNCATE", |m| {
        (size(m, "s2") == (Some(truncated.0), Some(truncated.1))).then_some(())
    })
    .await;

    // A new index on a table nobody writes to.
    admin.batch_execute("CREATE INDEX s3_v ON s3 (v)").await.unwrap();
    let indexed = server_sizes(&admin, "s3").await;
    let new_index = [
        ("datname", db),
        ("schemaname", "public"),
        ("relname", "s3"),
        ("indexrelname", "s3_v"),
    ];
    let m = until(px.addr, within, "s3's index size with the new index", |m| {
        (size(m, "s3").1 == Some(indexed.1) && m.get("pg_stat_user_indexes_size_bytes", &new_index).is_some())
            .then(|| m.clone())
    })
    .await;

    // The quiet table kept its size, read or reused.
    assert_eq!(size(&m, "s30"), (Some(quiet.0), Some(quiet.1)));
    assert!(reused(&m) >= 20.0, "{}", m.text);
    px.stop().await.unwrap();
}

/// Below the cap the per-relation queries pick their rows without sorting
/// or counting every relation (issue 13), one row past the cap: a schema
/// that grows past the cap is seen at once, and the biggest relations are
/// kept as before; when it shrinks back, nothing is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_growing_past_the_cap_keeps_the_biggest() {
    let db = "tables_growing_db";
    let admin = create_app_db(pg::shared(), db).await;
    let px = start(&test_yaml(
        &pg::shared().dsn(db),
        "checks:\n  relations:\n    max_series: 8\n",
    ))
    .await;
    let c = [("collector", "stat_user_tables")];
    let omitted = |m: &Metrics| m.get("pgsidecar_collector_relations_omitted", &c);
    let seq_scans = |m: &Metrics| m.all("pg_stat_user_tables_seq_scan", &[("datname", db)]).len();
    // Two runs under the cap: the second picks without sorting.
    let first = until(px.addr, WAIT, "stat_user_tables", |m| {
        m.get(
            "pgsidecar_collector_last_success_timestamp_seconds",
            &[("collector", "stat_user_tables")],
        )
    })
    .await;
    let m = until(px.addr, WAIT, "a second run of stat_user_tables", |m| {
        m.get(
            "pgsidecar_collector_last_success_timestamp_seconds",
            &[("collector", "stat_user_tables")],
        )
        .filter(|t| *t > first)
        .map(|_| m.clone())
    })
    .await;
    assert_eq!(omitted(&m), Some(0.0), "{}", m.text);
    let under = seq_scans(&m);
    assert!(under < 8, "{under} tables");

    admin
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..6 LOOP \
               EXECUTE format('CREATE TABLE grown_%s (id int)', i); \
             END LOOP; END $$",
        )
        .await
        .unwrap();
    let m = until(px.addr, WAIT, "8 of the grown schema's tables", |m| {
        (seq_scans(m) == 8).then(|| m.clone())
    })
    .await;
    assert_eq!(omitted(&m), Some((under + 6 - 8) as f64), "{}", m.text);
    assert_eq!(m.get("pgsidecar_collector_series_truncated", &c), Some(1.0));
    // The biggest first: the new tables are empty, messages is not.
    assert!(
        m.all(
            "pg_stat_user_tables_seq_scan",
            &[("datname", db), ("relname", "messages")]
        )
        .len()
            == 1,
        "{}",
        m.text
    );

    admin
        .batch_execute("DROP TABLE grown_1, grown_2, grown_3, grown_4, grown_5, grown_6")
        .await
        .unwrap();
    let m = until(px.addr, WAIT, "the schema back under the cap", |m| {
        (seq_scans(m) == under && omitted(m) == Some(0.0)).then(|| m.clone())
    })
    .await;
    // Every run succeeded, sorted or not.
    for collector in ["stat_user_tables", "statio_user_tables", "stat_user_indexes"] {
        assert_eq!(
            m.get("pgsidecar_collector_failures_total", &[("collector", collector)]),
            Some(0.0),
            "{collector}: {}",
            m.text
        );
    }
    px.stop().await.unwrap();
}
