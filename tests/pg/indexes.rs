//! The `indexes` and `stat_user_indexes` collectors against the application
//! schema: drop an index, leave an invalid one behind, scan one, cap and
//! filter them, and see each change in the scrape.

use crate::support::fixture::{NAMED_INDEXES, create_app_db};
use crate::support::scrape::{Metrics, until};
use crate::support::{WAIT, pg, start, test_yaml};

const PRESENT: &str = "pgsidecar_expected_index_present";
const VALID: &str = "pgsidecar_expected_index_valid";
const PATTERN: &str = "pgsidecar_index_pattern_indexes";
const SCANS: &str = "pg_stat_user_indexes_idx_scan_total";
const SIZE: &str = "pg_stat_user_indexes_size_bytes";
const UNUSED: &str = "pgsidecar_index_unused";

/// A `checks.indexes` section expecting `expected`, with the pattern `idx_%`
/// required 11 times.
fn index_checks(expected: &[&str]) -> String {
    let list: String = expected.iter().map(|n| format!("      - {n}\n")).collect();
    format!(
        "checks:\n  indexes:\n    expected:\n{list}    patterns:\n      - pattern: \"idx_%\"\n        min_count: 11\n"
    )
}

fn idx_pattern(m: &Metrics) -> Option<f64> {
    m.get(PATTERN, &[("pattern", "idx_%")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_indexes_and_patterns_follow_a_drop() {
    let name = "idx_expected_db";
    let db = create_app_db(pg::shared(), name).await;
    let px = start(&test_yaml(&pg::shared().dsn(name), &index_checks(&NAMED_INDEXES))).await;
    let m = until(px.addr, WAIT, "11 idx_ indexes", |m| {
        (idx_pattern(m) == Some(11.0)).then(|| m.clone())
    })
    .await;
    for n in NAMED_INDEXES {
        let labels = [("datname", name), ("schemaname", "public"), ("indexname", n)];
        assert_eq!(m.get(PRESENT, &labels), Some(1.0), "{n}");
        assert_eq!(m.get(VALID, &labels), Some(1.0), "{n}");
    }
    assert_eq!(
        m.get(
            "pgsidecar_index_pattern_min_indexes",
            &[("datname", name), ("pattern", "idx_%")]
        ),
        Some(11.0)
    );
    assert_eq!(
        m.get("pgsidecar_expected_indexes_configured", &[("datname", name)]),
        Some(6.0)
    );

    db.batch_execute("DROP INDEX idx_saved_words_review").await.unwrap();
    let m = until(px.addr, WAIT, "idx_saved_words_review gone", |m| {
        let gone = m.get(PRESENT, &[("indexname", "idx_saved_words_review")]) == Some(0.0);
        (gone && idx_pattern(m) == Some(10.0)).then(|| m.clone())
    })
    .await;
    // Unqualified and absent: no schema to report.
    let labels = [("schemaname", ""), ("indexname", "idx_saved_words_review")];
    assert_eq!(m.get(VALID, &labels), Some(0.0));
    assert_eq!(m.get(PRESENT, &[("indexname", "idx_messages_user_created")]), Some(1.0));
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_concurrent_unique_build_leaves_an_invalid_index() {
    let name = "idx_invalid_db";
    let db = create_app_db(pg::shared(), name).await;
    let px = start(&test_yaml(&pg::shared().dsn(name), &index_checks(&["idx_dup"]))).await;
    until(px.addr, WAIT, "idx_dup absent", |m| {
        (m.get(PRESENT, &[("schemaname", ""), ("indexname", "idx_dup")]) == Some(0.0)).then_some(())
    })
    .await;

    db.batch_execute("INSERT INTO saved_words (user_id, word) VALUES (1, 'slovo1')")
        .await
        .unwrap();
    let err = db
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY idx_dup ON saved_words (word)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err:?}"
    );

    let m = until(px.addr, WAIT, "idx_dup invalid", |m| {
        (m.get("pg_index_invalid", &[("indexname", "idx_dup")]) == Some(1.0)).then(|| m.clone())
    })
    .await;
    let s = &m.all("pg_index_invalid", &[("indexname", "idx_dup")])[0];
    assert_eq!(
        (
            s.labels["datname"].as_str(),
            s.labels["schemaname"].as_str(),
            s.labels["relname"].as_str()
        ),
        (name, "public", "saved_words")
    );
    let labels = [("schemaname", "public"), ("indexname", "idx_dup")];
    assert_eq!(m.get(PRESENT, &labels), Some(1.0));
    assert_eq!(m.get(VALID, &labels), Some(0.0));
    // An invalid index does not count toward a pattern.
    assert_eq!(idx_pattern(&m), Some(11.0));

    // Repaired, it turns valid and leaves the invalid list.
    db.batch_execute("DELETE FROM saved_words WHERE id = (SELECT max(id) FROM saved_words); REINDEX INDEX idx_dup")
        .await
        .unwrap();
    until(px.addr, WAIT, "idx_dup valid", |m| {
        let valid = m.get(VALID, &labels) == Some(1.0);
        (valid && !m.has("pg_index_invalid") && idx_pattern(m) == Some(12.0)).then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_scans_are_counted_and_unused_indexes_flagged() {
    let name = "idx_scans_db";
    let db = create_app_db(pg::shared(), name).await;
    let version: i32 = db
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let px = start(&test_yaml(&pg::shared().dsn(name), "")).await;
    // Sizes come from relation_sizes, a collector of their own.
    let m = until(px.addr, WAIT, "idx_users_level unused, and index sizes", |m| {
        (m.get(UNUSED, &[("indexrelname", "idx_users_level")]) == Some(1.0) && m.has(SIZE)).then(|| m.clone())
    })
    .await;
    let target = [
        ("datname", name),
        ("relname", "messages"),
        ("indexrelname", "idx_messages_user_created"),
    ];
    let before = m.get(SCANS, &target).unwrap();
    assert!(m.get(SIZE, &target).unwrap() > 0.0);
    // Primary keys and unique indexes are never "unused", scanned or not.
    for pk in [
        "users_pkey",
        "messages_pkey",
        "users_telegram_id_key",
        "idx_user_stats_summary_user",
    ] {
        assert!(m.get(SCANS, &[("indexrelname", pk)]).is_some(), "{pk}");
        assert_eq!(m.get(UNUSED, &[("indexrelname", pk)]), None, "{pk}");
    }

    let session = pg::shared().connect(name, "it-index-scans").await;
    session.batch_execute("SET enable_seqscan = off").await.unwrap();
    const N: i32 = 20;
    for user_id in 1..=N {
        session
            .query("SELECT id FROM messages WHERE user_id = $1", &[&user_id])
            .await
            .unwrap();
    }
    session
        .batch_execute("SELECT count(*) FROM users WHERE level = 'beginner'")
        .await
        .unwrap();
    drop(session); // stats are flushed at the latest when the session ends

    let m = until(px.addr, WAIT, "20 more scans, idx_users_level used", |m| {
        let scans = m.get(SCANS, &target).unwrap_or(0.0);
        let used = m.get(UNUSED, &[("indexrelname", "idx_users_level")]).is_none();
        (scans >= before + f64::from(N)
            && used
            && m.get(SCANS, &[("indexrelname", "idx_users_level")])
                .is_some_and(|v| v >= 1.0))
        .then(|| m.clone())
    })
    .await;
    assert!(m.text.contains("# TYPE pg_stat_user_indexes_idx_scan_total counter"));
    assert!(m.get("pg_stat_user_indexes_idx_tup_read_total", &target).unwrap() > 0.0);
    let last_scan = m.get("pg_stat_user_indexes_last_idx_scan_timestamp_seconds", &target);
    assert_eq!(last_scan.is_some_and(|t| t > 1.6e9), version >= 160000, "{last_scan:?}");
    // The statio families keep postgres_exporter's three labels.
    let statio = m.all(
        "pg_statio_user_indexes_idx_blks_hit_total",
        &[("indexrelname", "idx_messages_user_created")],
    );
    let keys: Vec<&str> = statio[0].labels.keys().map(String::as_str).collect();
    assert_eq!(keys, ["indexrelname", "relname", "schemaname"]);
    assert!(statio[0].value > 0.0);
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_and_the_schema_filter_limit_the_indexes() {
    let name = "idx_cap_db";
    let db = create_app_db(pg::shared(), name).await;
    db.batch_execute(
        "CREATE SCHEMA other; \
         CREATE TABLE other.big AS SELECT g AS id FROM generate_series(1, 50000) g; \
         CREATE INDEX idx_other_big ON other.big (id)",
    )
    .await
    .unwrap();
    let dsn = pg::shared().dsn(name);
    let truncated = |m: &Metrics| {
        m.get(
            "pgsidecar_collector_series_truncated",
            &[("collector", "stat_user_indexes")],
        )
    };

    let px = start(&test_yaml(&dsn, "checks:\n  relations:\n    max_series: 3\n")).await;
    // Sizes come from relation_sizes, scans from stat_user_indexes: two
    // collectors, which run at different moments of the interval.
    let m = until(px.addr, WAIT, "truncated, index sizes and scans", |m| {
        (truncated(m) == Some(1.0)
            && m.has(SIZE)
            && m.has(SCANS)
            && m.has("pg_statio_user_indexes_idx_blks_read_total"))
        .then(|| m.clone())
    })
    .await;
    assert_eq!(m.all(SIZE, &[]).len(), 3, "{}", m.text);
    assert_eq!(m.all(SCANS, &[]).len(), 3);
    assert_eq!(m.all("pg_statio_user_indexes_idx_blks_read_total", &[]).len(), 3);
    let omitted = m
        .get(
            "pgsidecar_collector_relations_omitted",
            &[("collector", "stat_user_indexes")],
        )
        .unwrap();
    assert!(omitted > 0.0, "omitted {omitted}");
    // The biggest are kept: the other schema's index is the biggest of all.
    assert!(
        m.get(SIZE, &[("schemaname", "other"), ("indexrelname", "idx_other_big")])
            .is_some()
    );
    px.stop().await.unwrap();

    let yaml = test_yaml(&dsn, "checks:\n  relations:\n    include_schemas:\n      - public\n");
    let px = start(&yaml).await;
    let m = until(px.addr, WAIT, "public indexes only", |m| {
        (truncated(m) == Some(0.0) && m.has(SIZE)).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get(SIZE, &[("indexrelname", "idx_other_big")]), None);
    assert!(m.get(SIZE, &[("indexrelname", "idx_messages_user_created")]).is_some());
    assert!(m.all(SIZE, &[]).iter().all(|s| s.labels["schemaname"] == "public"));
    px.stop().await.unwrap();
}
