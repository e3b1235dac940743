//! What pgsidecar costs the database (issue 13), counted by
//! `pg_stat_statements` for a role of pgsidecar's own, on a cluster of its
//! own (no other test's statements can evict the entries counted):
//! a scrape causes no query at all, and one collection round sends the same
//! statements, each once, whether the database has 10 tables or 200.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::pg::Cluster;
use crate::support::scrape::{get, scrape};
use crate::support::{WAIT, eventually, start};

const ROLE: &str = "cost_px";

/// A cluster with pgsidecar's role and `pg_stat_statements` in `postgres`.
async fn cluster() -> Cluster {
    let cluster = Cluster::init();
    cluster.start();
    let admin = cluster.connect("postgres", "it-cost").await;
    admin
        .batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE ROLE {ROLE} LOGIN IN ROLE pg_monitor"
        ))
        .await
        .unwrap();
    cluster
}

/// Database `name` with `tables` tables, each with a primary key and a few rows.
async fn database(cluster: &Cluster, name: &str, tables: usize) {
    let admin = cluster.connect("postgres", "it-cost").await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let db = cluster.connect(name, "it-cost").await;
    db.batch_execute(&format!(
        "CREATE EXTENSION pg_stat_statements; \
         DO $$ BEGIN FOR i IN 1..{tables} LOOP \
           EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i); \
           EXECUTE format('INSERT INTO t%s SELECT g, g::text FROM generate_series(1, 10) g', i); \
         END LOOP; END $$; \
         CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x; ANALYZE"
    ))
    .await
    .unwrap();
}

/// Every collector once, at start, and then not for an hour.
fn yaml(cluster: &Cluster, db: &str) -> String {
    format!(
        "datasource:\n  dsn: \"{}\"\ncollection:\n  interval: 1h\n  timeout: 20s\n",
        cluster.socket_dsn(ROLE, db)
    )
}

/// Starts pgsidecar and waits until every enabled collector has run once.
async fn started_and_ready(yaml: &str) -> pgsidecar::Running {
    let px = start(yaml).await;
    eventually(WAIT, "/readyz 200: every collector ran once", async || {
        let r = get(px.addr, "/readyz").await;
        if r.status == 200 { Ok(()) } else { Err(r.text()) }
    })
    .await;
    px
}

/// The statements pgsidecar's role ran in `db` (all databases if `None`)
/// and their calls, by normalized text, leaving out the pool's
/// per-connection read of the version and the database name.
async fn statements(cluster: &Cluster, db: Option<&str>) -> BTreeMap<String, i64> {
    let admin = cluster.connect("postgres", "it-cost").await;
    let rows = admin
        .query(
            "SELECT query, sum(calls)::int8 FROM pg_stat_statements \
             WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = $1) \
             AND ($2::text IS NULL OR dbid = (SELECT oid FROM pg_database WHERE datname = $2)) \
             AND query NOT LIKE 'SELECT current_setting(%)::int4, current_database()::text' GROUP BY query",
            &[&ROLE, &db],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_causes_no_query() {
    let cluster = cluster().await;
    database(&cluster, "scraped", 10).await;
    let px = started_and_ready(&yaml(&cluster, "scraped")).await;
    // The round's statements are counted: the check below can see one.
    let before = eventually(WAIT, "the first round's statements counted", async || {
        let s = statements(&cluster, None).await;
        if s.len() > 10 { Ok(s) } else { Err(format!("{s:#?}")) }
    })
    .await;
    // Many scrapes, of every page, over more than one health refresh (5 s).
    let started = std::time::Instant::now();
    let mut scrapes = 0;
    while started.elapsed() < Duration::from_secs(6) || scrapes < 300 {
        let m = scrape(px.addr).await;
        assert_eq!(m.get("pg_up", &[]), Some(1.0));
        for path in ["/", "/healthz", "/readyz"] {
            assert_eq!(get(px.addr, path).await.status, 200, "{path}");
        }
        scrapes += 1;
    }
    let after = statements(&cluster, None).await;
    assert_eq!(before, after, "{scrapes} scrapes ran statements");
    px.stop().await.unwrap();
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rounds_statements_do_not_depend_on_the_number_of_relations() {
    let cluster = cluster().await;
    let mut rounds = Vec::new();
    for (db, tables) in [("small", 10), ("large", 200)] {
        database(&cluster, db, tables).await;
        let px = started_and_ready(&yaml(&cluster, db)).await;
        // The relations are there: the tables and the view.
        let m = scrape(px.addr).await;
        assert_eq!(m.all("pg_stat_user_tables_seq_scan", &[]).len(), tables + 1, "{db}");
        px.stop().await.unwrap();
        rounds.push((db, statements(&cluster, Some(db)).await));
    }
    let (small, large) = (&rounds[0].1, &rounds[1].1);
    assert!(small.len() > 10, "{small:#?}");
    // One statement per view, once per round: none runs per relation.
    for (db, round) in &rounds {
        let repeated: Vec<_> = round.iter().filter(|(_, calls)| **calls != 1).collect();
        assert!(
            repeated.is_empty(),
            "{db}: statements run more than once in a round: {repeated:#?}"
        );
    }
    assert_eq!(
        small.keys().collect::<Vec<_>>(),
        large.keys().collect::<Vec<_>>(),
        "the statements of a round differ between 10 and 200 tables"
    );
    cluster.stop();
}
