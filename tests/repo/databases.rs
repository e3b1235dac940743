//! Every database of the server (`databases:`, issue 12): databases created
//! and dropped while pgsidecar runs gain and lose their per-database series
//! within a discovery interval, one the role may not connect to is skipped
//! with its state, a database's own checks apply to it alone, and the
//! sessions to the other databases never exceed `databases.max_connections`
//! (counted in `pg_stat_activity` all along).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::support::scrape::{Metrics, until};
use crate::support::{WAIT, pg, start, test_yaml};

const APP: &str = "mdb-pgsidecar";
const BUDGET: i64 = 2;

fn tables_of(m: &Metrics, db: &str) -> usize {
    m.all("pg_stat_user_tables_seq_scan", &[("datname", db)]).len()
}

async fn create_db(admin: &tokio_postgres::Client, name: &str) {
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let db = pg::shared().connect(name, "it-fixture").await;
    db.batch_execute(&format!(
        "CREATE TABLE t_{name} (id int PRIMARY KEY, v text); \
         INSERT INTO t_{name} SELECT g, 'x' FROM generate_series(1, 50) g; ANALYZE"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_come_and_go_within_the_connection_budget() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-fixture").await;
    for db in ["mdb_main", "mdb_a", "mdb_b", "mdb_d", "mdb_secret", "mdb_skip"] {
        create_db(&admin, db).await;
    }
    admin
        .batch_execute("DROP DATABASE IF EXISTS mdb_c WITH (FORCE)")
        .await
        .unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mdb_watch') THEN \
               CREATE ROLE mdb_watch LOGIN; END IF; END $$; \
             GRANT pg_monitor TO mdb_watch; \
             REVOKE CONNECT ON DATABASE mdb_secret FROM PUBLIC",
        )
        .await
        .unwrap();

    // Sessions of this pgsidecar to databases other than its DSN's, counted
    // every 20 ms for the whole test.
    let (most, seen, stop) = (
        Arc::new(AtomicI64::new(0)),
        Arc::new(AtomicI64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let counter = {
        let (most, seen, stop) = (most.clone(), seen.clone(), stop.clone());
        let watcher = cluster.connect("postgres", "it-watcher").await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let row = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname <> 'mdb_main'",
                        &[&APP],
                    )
                    .await
                    .unwrap();
                let n: i64 = row.get(0);
                most.fetch_max(n, Ordering::Relaxed);
                seen.fetch_add(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let dsn = cluster.socket_dsn("mdb_watch", "mdb_main");
    let yaml = test_yaml(
        &dsn,
        &format!(
            "databases:\n  include:\n    - \"mdb_*\"\n    - name: mdb_a\n      checks:\n        migrations:\n          table: schema_migrations\n  exclude: [mdb_skip]\n  discovery_interval: 1s\n  max_connections: {BUDGET}\nqueries:\n  mdb_user:\n    query: SELECT count(*) AS tables FROM pg_stat_user_tables\n    databases: [mdb_a, \"mdb_?\"]\n    interval: 1s\n    metrics:\n      - tables:\n          usage: GAUGE\n          description: user tables\n"
        ),
    )
    .replace("  dsn:", &format!("  application_name: {APP}\n  dsn:"));
    let px = start(&yaml).await;

    until(px.addr, WAIT, "the tables of mdb_main, mdb_a, mdb_b and mdb_d", |m| {
        ["mdb_main", "mdb_a", "mdb_b", "mdb_d"]
            .iter()
            .all(|db| tables_of(m, db) == 1)
            .then_some(())
    })
    .await;
    let m = until(
        px.addr,
        WAIT,
        "each database's state, every per-database collector in mdb_a and mdb_b",
        |m| {
            let state = |db: &str, s: &str| m.get("pgsidecar_database_discovered", &[("datname", db), ("state", s)]);
            let read = |c: &str, db: &str| {
                m.get(
                    "pgsidecar_collector_database_success",
                    &[("collector", c), ("datname", db)],
                ) == Some(1.0)
            };
            let all_read = ["mdb_a", "mdb_b"].iter().all(|db| {
                [
                    "stat_user_tables",
                    "statio_user_tables",
                    "stat_user_indexes",
                    "indexes",
                    "matviews",
                    "relation_sizes",
                ]
                .iter()
                .all(|c| read(c, db))
            });
            (all_read
                && read("migrations", "mdb_a")
                && state("mdb_main", "dsn") == Some(1.0)
                && state("mdb_a", "read") == Some(1.0)
                && state("mdb_secret", "no_connect_privilege") == Some(1.0)
                && state("mdb_skip", "excluded") == Some(1.0))
            .then(|| m.clone())
        },
    )
    .await;
    assert_eq!(tables_of(&m, "mdb_secret"), 0, "a database without CONNECT is not read");
    assert_eq!(tables_of(&m, "mdb_skip"), 0, "an excluded database is not read");
    assert!(
        m.all(
            "pgsidecar_collector_database_success",
            &[("collector", "migrations"), ("datname", "mdb_b")]
        )
        .is_empty(),
        "migrations run only where they are configured"
    );
    assert_eq!(
        m.get(
            "pg_stat_user_indexes_idx_scan_total",
            &[("datname", "mdb_b"), ("indexrelname", "t_mdb_b_pkey")]
        ),
        Some(0.0)
    );
    // mdb_a's own check, in mdb_a alone.
    assert_eq!(
        m.get(
            "pgsidecar_migration_table_present",
            &[("datname", "mdb_a"), ("table", "schema_migrations")]
        ),
        Some(0.0)
    );
    assert!(
        m.all("pgsidecar_migration_table_present", &[("datname", "mdb_b")])
            .is_empty()
    );
    // A custom query runs where its databases say, each series with its datname.
    let user: Vec<String> = m
        .all("mdb_user_tables", &[])
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(user.len(), 3, "mdb_a, mdb_b and mdb_d, not mdb_main: {user:?}");
    assert_eq!(m.get("mdb_user_tables", &[("datname", "mdb_d")]), Some(1.0));
    assert!(m.get("mdb_user_tables", &[("datname", "mdb_main")]).is_none());
    // Series are unique: the merged families hold each database once.
    let text = &m.text;
    let helps = text.matches("# HELP pg_stat_user_tables_seq_scan ").count();
    assert_eq!(helps, 1, "one family, however many databases");

    // A new database is read, a dropped one loses its series.
    create_db(&admin, "mdb_c").await;
    admin.batch_execute("DROP DATABASE mdb_b WITH (FORCE)").await.unwrap();
    until(px.addr, WAIT, "mdb_c read and mdb_b gone", |m| {
        (tables_of(m, "mdb_c") == 1
            && tables_of(m, "mdb_b") == 0
            && m.all("pgsidecar_database_discovered", &[("datname", "mdb_b")])
                .is_empty())
        .then_some(())
    })
    .await;
    // Several rounds more, to give the budget every chance to be exceeded.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    counter.await.unwrap();
    assert!(
        seen.load(Ordering::Relaxed) > 0,
        "no session to another database was ever seen"
    );
    let most = most.load(Ordering::Relaxed);
    assert!(
        most <= BUDGET,
        "{most} sessions to other databases at once, over the budget of {BUDGET}"
    );
    px.stop().await.unwrap();
    for db in ["mdb_main", "mdb_a", "mdb_c", "mdb_d", "mdb_secret", "mdb_skip"] {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
            .unwrap();
    }
}
