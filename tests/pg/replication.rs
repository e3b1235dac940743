//! Replication, slots and archiving against a real primary and a streaming
//! standby made by `pg_basebackup` (see `support::pg::Cluster::standby`):
//! replay lag that grows while replay is paused and is told apart from an
//! idle primary, a slot that retains WAL while inactive, archive failures,
//! the WAL receiver, and every collector on a hot standby.

use crate::support::pg::{self, Cluster};
use crate::support::scrape::{Metrics, get, scrape, until};
use crate::support::{WAIT, start, test_yaml};

/// The Postgres collectors (the PgBouncer ones need a PgBouncer).
pub fn postgres_collectors() -> impl Iterator<Item = &'static pgsidecar::collectors::Definition> {
    pgsidecar::collectors::ALL
        .iter()
        .filter(|d| d.target == pgsidecar::collectors::Target::Postgres)
}

/// Every Postgres collector on, the opt-in ones too.
pub fn all_collectors() -> String {
    let mut yaml = String::from("collectors:\n");
    for d in postgres_collectors() {
        yaml.push_str(&format!("  {}:\n    enabled: true\n", d.name));
    }
    yaml
}

/// The README's rule for a standby: it lags while received WAL waits to be
/// replayed, and replication is broken while its WAL receiver does not
/// stream. Time since the last replay alone says nothing: on an idle
/// primary it grows while nothing waits.
fn lagging(m: &Metrics) -> bool {
    m.get("pg_replication_replay_lag_bytes", &[]).unwrap_or(0.0) > 0.0
        || m.get("pg_replication_wal_receiver_streaming", &[]) != Some(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_standby_lags_an_idle_primary_does_not_and_a_broken_one_is_seen() {
    let primary = Cluster::primary();
    let standby = primary.standby("standby1");
    let p = primary.connect("postgres", "it-replication").await;
    let s = standby.connect("postgres", "it-replication").await;
    p.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let on_primary = start(&test_yaml(&primary.dsn("postgres"), "")).await;
    let on_standby = start(&test_yaml(&standby.dsn("postgres"), "")).await;
    let row = [
        ("application_name", "standby1"),
        ("client_addr", "127.0.0.1"),
        ("state", "streaming"),
        ("slot_name", "standby1"),
    ];

    // Streaming and caught up: the primary sees the standby reply, its slot in use.
    let m = until(on_primary.addr, WAIT, "standby1 streaming and caught up", |m| {
        (m.get("pg_stat_replication_replay_lag_bytes", &row) == Some(0.0)
            && m.get("pg_stat_replication_reply_age_seconds", &row)
                .is_some_and(|a| a < 5.0)
            && m.has("pg_replication_slots_active")
            && m.has("pg_replication_is_replica"))
        .then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_stat_replication_pg_wal_lsn_diff", &row), Some(0.0));
    assert!(m.get("pg_stat_replication_pg_current_wal_lsn_bytes", &row).unwrap() > 0.0);
    assert_eq!(
        m.get(
            "pg_replication_slots_active",
            &[("slot_name", "standby1"), ("database", "")]
        ),
        Some(1.0)
    );
    assert_eq!(m.get("pg_replication_is_replica", &[]), Some(0.0));
    assert!(
        !m.has("pg_replication_replay_lag_bytes"),
        "a primary has no standby families"
    );

    // Idle primary: the time since the last replay grows, nothing waits to be
    // replayed and the receiver streams, so the standby is not lagging (and
    // upstream's lag reads 0, rightly here).
    let m = until(
        on_standby.addr,
        WAIT,
        "an idle primary, 3 s after the last replay",
        |m| {
            (m.get("pg_replication_last_replay_seconds", &[])
                .is_some_and(|s| s >= 3.0)
                && m.get("pg_replication_replay_lag_bytes", &[]) == Some(0.0)
                && m.get("pg_replication_wal_receiver_streaming", &[]) == Some(1.0))
            .then(|| m.clone())
        },
    )
    .await;
    assert!(!lagging(&m), "{}", m.text);
    assert_eq!(m.get("pg_replication_is_replica", &[]), Some(1.0));
    assert_eq!(m.get("pg_replication_lag_seconds", &[]), Some(0.0));
    assert_eq!(m.get("pg_replication_replay_paused", &[]), Some(0.0));
    assert!(
        m.get("pg_replication_wal_receiver_last_message_age_seconds", &[])
            .unwrap()
            < 10.0
    );

    // Paused replay: WAL arrives and waits, and the bytes grow with each write.
    s.batch_execute("SELECT pg_wal_replay_pause()").await.unwrap();
    let write = async || {
        p.batch_execute("INSERT INTO t SELECT g FROM generate_series(1, 20000) g")
            .await
            .unwrap()
    };
    write().await;
    let first = until(on_standby.addr, WAIT, "WAL waiting to be replayed", |m| {
        m.get("pg_replication_replay_lag_bytes", &[])
            .filter(|b| *b > 100_000.0 && m.get("pg_replication_replay_paused", &[]) == Some(1.0))
    })
    .await;
    write().await;
    let m = until(on_standby.addr, WAIT, "the replay lag growing", |m| {
        m.get("pg_replication_replay_lag_bytes", &[])
            .filter(|b| *b > first + 100_000.0)
            .map(|_| m.clone())
    })
    .await;
    assert!(lagging(&m), "{}", m.text);
    assert!(m.get("pg_replication_lag_seconds", &[]).unwrap() > 0.0, "{}", m.text);
    // The primary sees the same: flushed there, not replayed.
    until(
        on_primary.addr,
        WAIT,
        "the primary sees WAL flushed but not replayed",
        |m| {
            (m.get("pg_stat_replication_flush_lag_bytes", &row) == Some(0.0)
                && m.get("pg_stat_replication_replay_lag_bytes", &row)
                    .is_some_and(|b| b > 100_000.0))
            .then_some(())
        },
    )
    .await;

    // Resumed: caught up again.
    s.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap();
    until(on_standby.addr, WAIT, "replay caught up", |m| {
        (m.get("pg_replication_replay_lag_bytes", &[]) == Some(0.0)
            && m.get("pg_replication_replay_paused", &[]) == Some(0.0))
        .then_some(())
    })
    .await;

    // Broken: the primary is gone. Upstream's lag reads 0 (everything
    // received is replayed); the rule says broken.
    drop(p);
    primary.stop();
    let m = until(on_standby.addr, WAIT, "the WAL receiver no longer streaming", |m| {
        (m.get("pg_replication_wal_receiver_streaming", &[]) == Some(0.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_replication_lag_seconds", &[]), Some(0.0), "{}", m.text);
    assert!(lagging(&m), "{}", m.text);
    // The primary's pgsidecar says its collectors fail.
    until(on_primary.addr, WAIT, "pg_exporter_last_scrape_error 1", |m| {
        (m.get("pg_exporter_last_scrape_error", &[]) == Some(1.0) && m.get("pg_up", &[]) == Some(0.0)).then_some(())
    })
    .await;
    on_primary.stop().await.unwrap();
    on_standby.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_slot_retains_more_and_more_wal() {
    let primary = Cluster::primary();
    let c = primary.connect("postgres", "it-slots").await;
    c.batch_execute(
        "SELECT pg_create_physical_replication_slot('idle_slot', true); \
         SELECT pg_create_logical_replication_slot('cdc', 'test_decoding'); \
         CREATE TABLE w (v text)",
    )
    .await
    .unwrap();
    let px = start(&test_yaml(&primary.dsn("postgres"), "")).await;
    let physical = [("slot_name", "idle_slot"), ("slot_type", "physical")];
    let m = until(px.addr, WAIT, "both slots", |m| {
        (m.has("pg_replication_slots_retained_wal_bytes")
            && m.get(
                "pg_replication_slots_active",
                &[("slot_name", "cdc"), ("database", "postgres")],
            ) == Some(0.0))
        .then(|| m.clone())
    })
    .await;
    assert_eq!(
        m.get(
            "pg_replication_slots_active",
            &[("slot_name", "idle_slot"), ("database", "")]
        ),
        Some(0.0)
    );
    assert_eq!(m.get("pg_replication_slots_slot_is_active", &physical), Some(0.0));
    assert_eq!(
        m.get(
            "pg_replication_slots_wal_status",
            &[
                ("slot_name", "idle_slot"),
                ("slot_type", "physical"),
                ("wal_status", "reserved")
            ]
        ),
        Some(1.0)
    );
    assert!(
        m.get(
            "pg_replication_slots_slot_confirmed_flush_lsn",
            &[("slot_name", "cdc"), ("slot_type", "logical")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        m.get("pg_replication_slots_slot_confirmed_flush_lsn", &physical),
        Some(0.0)
    );
    // max_slot_wal_keep_size is 1GB (counted from the slot's segment on).
    let safe = m.get("pg_replication_slots_safe_wal_size_bytes", &physical).unwrap();
    assert!(safe > 0.5e9 && safe < 1.2e9, "{safe}");
    let retained = |m: &Metrics| {
        m.get(
            "pg_replication_slots_retained_wal_bytes",
            &[("slot_name", "idle_slot"), ("slot_type", "physical"), ("database", "")],
        )
    };
    let before = retained(&m).unwrap();
    assert_eq!(
        m.get(
            "pg_replication_slots_pg_wal_lsn_diff",
            &[("slot_name", "idle_slot"), ("database", "")]
        ),
        Some(before)
    );
    // Writes that nobody consumes: the slot keeps them all.
    c.batch_execute("INSERT INTO w SELECT repeat('x', 1000) FROM generate_series(1, 4000)")
        .await
        .unwrap();
    let after = until(px.addr, WAIT, "4 MB more WAL retained", |m| {
        retained(m).filter(|r| *r > before + 4_000_000.0)
    })
    .await;
    let m = scrape(px.addr).await;
    assert!(
        m.get("pg_replication_slots_safe_wal_size_bytes", &physical).unwrap() < safe,
        "safe_wal_size shrinks as the slot retains {after} bytes"
    );
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_counts_successes_and_failures() {
    let primary = Cluster::primary();
    let c = primary.connect("postgres", "it-archiver").await;
    let px = start(&test_yaml(&primary.dsn("postgres"), "")).await;
    let count = |name: &'static str| move |m: &Metrics| m.get(name, &[]);
    let archived0 = until(px.addr, WAIT, "stat_archiver", count("pg_stat_archiver_archived_count")).await;
    let m = scrape(px.addr).await;
    assert_eq!(m.get("pg_stat_archiver_enabled", &[]), Some(1.0));
    let failed0 = m.get("pg_stat_archiver_failed_count", &[]).unwrap();
    let switch = async || {
        c.batch_execute("CREATE TABLE IF NOT EXISTS a (v int); INSERT INTO a VALUES (1); SELECT pg_switch_wal()")
            .await
            .unwrap()
    };
    switch().await;
    until(px.addr, WAIT, "a segment archived", |m| {
        count("pg_stat_archiver_archived_count")(m).filter(|n| *n > archived0)
    })
    .await;
    let m = scrape(px.addr).await;
    assert!(
        m.get("pg_stat_archiver_last_archive_age", &[]).unwrap() < 60.0,
        "{}",
        m.text
    );
    assert!(m.get("pg_stat_archiver_last_archived_timestamp_seconds", &[]).unwrap() > 1.0e9);
    assert!(std::fs::read_dir(primary.archive()).unwrap().count() >= 1);

    // An archive_command that fails, switched at run time.
    // (ALTER SYSTEM cannot share a multi-statement batch: its own call.)
    c.batch_execute("ALTER SYSTEM SET archive_command = 'false'")
        .await
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let archived1 = scrape(px.addr)
        .await
        .get("pg_stat_archiver_archived_count", &[])
        .unwrap();
    switch().await;
    let m = until(px.addr, WAIT, "a failed archive attempt counted", |m| {
        count("pg_stat_archiver_failed_count")(m)
            .filter(|n| *n > failed0)
            .map(|_| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_stat_archiver_archived_count", &[]), Some(archived1));
    assert!(m.get("pg_stat_archiver_last_failed_timestamp_seconds", &[]).unwrap() > 1.0e9);

    // Back to cp: the waiting segment is archived.
    c.batch_execute(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        primary.archive_command()
    ))
    .await
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    until(px.addr, WAIT, "archiving again", |m| {
        count("pg_stat_archiver_archived_count")(m).filter(|n| *n > archived1)
    })
    .await;
    px.stop().await.unwrap();
}

/// On a hot standby, every collector (opt-in ones too) succeeds, except
/// `buffercache_summary` before PostgreSQL 16, which is unavailable for the
/// version, as on a primary. None needs the standby reason today; the test
/// allows it (reported once, never an error) so that a collector that adds
/// it stays covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_collector_works_on_a_hot_standby() {
    let (_, standby) = pg::replicated();
    let s = standby.connect("postgres", "it-standby").await;
    let version: i32 = s
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        s.query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    );
    let px = start(&test_yaml(&standby.dsn("postgres"), &all_collectors())).await;
    let expected: Vec<&str> = postgres_collectors()
        .map(|d| d.name)
        .filter(|n| *n != "statio_user_indexes")
        .collect();
    let m = until(px.addr, WAIT, "every collector ran twice", |m| {
        expected
            .iter()
            .all(|n| {
                m.get("pg_exporter_scrapes_total", &[]).is_some()
                    && m.get("pg_scrape_collector_success", &[("collector", n)]).is_some()
            })
            .then(|| m.clone())
    })
    .await;
    let mut wrong = Vec::new();
    for name in &expected {
        let ok = m.get("pg_scrape_collector_success", &[("collector", name)]);
        let unavailable = m.all("pgsidecar_collector_unavailable", &[("collector", name)]);
        let fine = match (*name, ok) {
            (_, Some(1.0)) => unavailable.is_empty(),
            ("buffercache_summary", Some(0.0)) if version < 160000 => {
                unavailable.len() == 1 && unavailable[0].labels["reason"].contains("needs PostgreSQL 16")
            }
            (_, Some(0.0)) => unavailable.len() == 1 && unavailable[0].labels["reason"] == "standby",
            _ => false,
        };
        if !fine {
            wrong.push(format!("{name}: success {ok:?}, unavailable {unavailable:?}"));
        }
    }
    assert!(wrong.is_empty(), "on a standby:\n{}\n{}", wrong.join("\n"), m.text);
    // An unavailable prerequisite is not a scrape error.
    assert_eq!(m.get("pg_exporter_last_scrape_error", &[]), Some(0.0), "{}", m.text);
    // What the standby says about itself.
    assert_eq!(m.get("pg_replication_is_replica", &[]), Some(1.0));
    let receiver = [
        ("upstream_host", "127.0.0.1"),
        ("slot_name", "standby1"),
        ("status", "streaming"),
    ];
    assert_eq!(
        m.get("pg_stat_wal_receiver_received_tli", &receiver),
        Some(1.0),
        "{}",
        m.text
    );
    assert!(m.get("pg_stat_wal_receiver_flushed_lsn", &receiver).unwrap() > 0.0);
    assert!(m.get("pg_stat_wal_receiver_last_msg_receipt_time", &receiver).unwrap() > 1.0e9);
    assert!(!m.has("pg_stat_wal_receiver_upstream_node"), "not a repmgr slot name");
    // stat_checkpointer before 17 (and stat_wal before 14) say why they read nothing.
    let status = get(px.addr, "/").await.text();
    assert_eq!(
        status.contains("pg_stat_checkpointer exists from PostgreSQL 17"),
        version < 170000,
        "{status}"
    );
    if version >= 170000 {
        // A standby's checkpoints are restartpoints.
        assert!(m.has("pg_stat_checkpointer_restartpoints_done_total"), "{}", m.text);
    }
    px.stop().await.unwrap();
}

/// On a standby replay moves no statistics counter, so `relation_sizes`
/// reuses no reading there (issue 13): a table written on the primary shows
/// its new size on the standby within a few runs, and every run reads every
/// size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reads_every_size_each_run() {
    const DB: &str = "standby_sizes_db";
    let (primary, standby) = pg::replicated();
    let p = primary.connect("postgres", "it-standby-sizes").await;
    for sql in [format!("DROP DATABASE IF EXISTS {DB}"), format!("CREATE DATABASE {DB}")] {
        p.batch_execute(&sql).await.unwrap();
    }
    let p = primary.connect(DB, "it-standby-sizes").await;
    p.batch_execute(
        "DO $$ BEGIN FOR i IN 1..30 LOOP \
           EXECUTE format('CREATE TABLE s%s (id int) WITH (autovacuum_enabled = off)', i); \
           EXECUTE format('INSERT INTO s%s SELECT generate_series(1, 50)', i); \
         END LOOP; END $$",
    )
    .await
    .unwrap();
    let size_of = "SELECT pg_table_size('s1')::float8";
    let grown = async |c: &tokio_postgres::Client| c.query_one(size_of, &[]).await.map(|r| r.get::<_, f64>(0));
    crate::support::eventually(WAIT, "the tables on the standby", async || {
        let (s, conn) = tokio_postgres::connect(&standby.dsn(DB), tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        grown(&s).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let px = start(&test_yaml(
        &standby.dsn(DB),
        "collectors:\n  relation_sizes:\n    interval: 1s\n",
    ))
    .await;
    let s1 = [("datname", DB), ("schemaname", "public"), ("relname", "s1")];
    let last_success = |m: &Metrics| {
        m.get(
            "pgsidecar_collector_last_success_timestamp_seconds",
            &[("collector", "relation_sizes")],
        )
        .unwrap_or(0.0)
    };
    until(px.addr, WAIT, "three runs of relation_sizes", |m| {
        (last_success(m) > started + 2.5).then_some(())
    })
    .await;

    let s = standby.connect(DB, "it-standby-sizes").await;
    let before = grown(&s).await.unwrap();
    p.batch_execute("INSERT INTO s1 SELECT generate_series(1, 20000)")
        .await
        .unwrap();
    // pgsidecar reports what the standby has now, grown by the replayed
    // rows (compared at each look: the standby's size moves as it replays).
    let m = crate::support::eventually(
        std::time::Duration::from_secs(5),
        "s1's new size from the standby",
        async || {
            let m = scrape(px.addr).await;
            let now = grown(&s).await.map_err(|e| e.to_string())?;
            match m.get("pg_stat_user_tables_table_size_bytes", &s1) {
                Some(v) if v == now && now > before => Ok(m),
                v => Err(format!(
                    "reported {v:?}, the standby has {now} (before the rows: {before})"
                )),
            }
        },
    )
    .await;
    assert_eq!(
        m.get("pgsidecar_relation_sizes_reused", &[("kind", "table")]),
        Some(0.0),
        "{}",
        m.text
    );
    px.stop().await.unwrap();
}
