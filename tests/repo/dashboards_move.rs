//! The dashboards across a leadership move, for real: PostgreSQL with the
//! application's schema, two pgsidecar processes with the example config in
//! `leader-election` mode, and Prometheus (Debian package `prometheus`)
//! scraping both every second, each target with a `pod` label of its own as
//! prometheus-operator adds.
//!
//! A PgBouncer (Debian's `pgbouncer`) stands in front of the cluster and
//! the sidecars watch it with `pgbouncer.run_by: leader`, so its series move
//! with leadership too.
//!
//! Once Prometheus has the leader's server-wide series, the leader is
//! SIGKILLed. Once the other sidecar leads and Prometheus has its series,
//! every dashboard query runs as a range query over the whole period. Each
//! server-wide query (see `dashboards::PER_POD`) must return no series with
//! an `instance` or `pod` label, and every series it returned before the
//! move must still be there at the last step: no line ended at the move to
//! come back as another. (Series born after the move may end: the new
//! leader's connections show up for a moment in `pg_stat_activity`.) (For a top-N panel that holds for the query inside
//! `topk`: which N lines show may change at any step.) Before the move, the
//! follower's own scrape checks `PER_POD` against what a sidecar exports
//! when it does not lead.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::dashboards::{PER_POD, dashboards, exprs, per_pod, server_wide, substitute};
use crate::e2e::{percent_encode, start_prometheus, wait_http};
use crate::leader::Fleet;
use crate::support::fixture::{example_config, monitored_app_db};
use crate::support::pg::Cluster;
use crate::support::pgbouncer::{Auth, PgBouncer};
use crate::support::scrape::{get, until};
use crate::support::{WAIT, eventually};

/// Metrics that have no series here: autovacuum is off, no collector
/// misses a prerequisite, and no statement is slow enough to be planned;
/// the server has no standby and no slot, archives nothing, is no standby
/// itself, runs no VACUUM, and the wraparound collector is opt-in (the e2e
/// test has all of these). Every other server-wide query must have data
/// before the move.
const EMPTY_HERE: [&str; 11] = [
    "pg_stat_user_tables_last_autovacuum",
    "pg_stat_user_tables_last_autoanalyze",
    "pgsidecar_collector_unavailable",
    "pgsidecar_statement_plan_seq_scans",
    "pg_stat_replication_",
    "pg_replication_slots_",
    "pg_replication_replay_lag_bytes",
    "pg_replication_wal_receiver_",
    "pg_stat_archiver_last_archive_age",
    "pg_stat_progress_vacuum_",
    "pg_database_wraparound_",
];

type Labels = BTreeMap<String, String>;

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A Prometheus API call; the `data` of a successful answer.
async fn api(prom: SocketAddr, path: &str) -> Result<Value, String> {
    let r = get(prom, path).await;
    let v: Value = serde_json::from_str(&r.text()).map_err(|e| format!("{e}: {}", r.text()))?;
    if v["status"] != "success" {
        return Err(r.text());
    }
    Ok(v["data"].clone())
}

fn labels(series: &Value) -> Labels {
    series["metric"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

/// The label sets an instant query returns now.
async fn instant(prom: SocketAddr, expr: &str) -> Vec<Labels> {
    let data = api(prom, &format!("/api/v1/query?query={}", percent_encode(expr)))
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
    data["result"].as_array().into_iter().flatten().map(labels).collect()
}

/// A range query with a 1 s step: each series' labels and the times it has
/// a value at.
async fn range(prom: SocketAddr, expr: &str, start: f64, end: f64) -> Result<Vec<(Labels, Vec<f64>)>, String> {
    let data = api(
        prom,
        &format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=1",
            percent_encode(expr)
        ),
    )
    .await?;
    Ok(data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let times = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p[0].as_f64())
                .collect();
            (labels(s), times)
        })
        .collect())
}

/// `topk(N, X)` as `X`. Which N series a top-N panel shows may change at any
/// step as values change, move or not; whether a line goes on is a
/// question about `X`.
fn without_topk(expr: &str) -> Option<&str> {
    let inner = expr.strip_prefix("topk(")?.strip_suffix(')')?;
    let (n, rest) = inner.split_once(',')?;
    n.trim().parse::<u32>().ok()?;
    Some(rest.trim())
}

/// Waits until Prometheus has every collector of the sidecar at `addr`
/// succeeding (a collection's series and its health are published together,
/// so its series are there too), and `up` of `down` (if any) is 0.
async fn until_scraped(prom: SocketAddr, addr: SocketAddr, down: Option<SocketAddr>, collectors: usize) {
    let ok = format!("pg_scrape_collector_success{{instance=\"{addr}\"}} == 1");
    let what = format!("Prometheus scraped all {collectors} collectors of {addr} succeeding");
    eventually(WAIT, &what, async || {
        let up = instant(prom, &format!("up{{instance=\"{addr}\"}} == 1")).await.len() == 1;
        let gone = match down {
            Some(d) => instant(prom, &format!("up{{instance=\"{d}\"}} == 0")).await.len() == 1,
            None => true,
        };
        let succeeded = instant(prom, &ok).await;
        if up && gone && succeeded.len() == collectors {
            Ok(())
        } else {
            Err(format!("up {up}, old target down {gone}: {succeeded:?}"))
        }
    })
    .await
}

/// Waits until Prometheus has scraped `addr` `n` times since `since` (Unix
/// time): rates need two samples, and the period a few steps on either side
/// of the move.
async fn until_scraped_times(prom: SocketAddr, addr: SocketAddr, since: f64, n: usize) {
    eventually(WAIT, &format!("{n} scrapes of {addr}"), async || {
        let window = (((now() - since) * 1000.0).ceil() as u64).max(1);
        let q = format!("count_over_time(up{{instance=\"{addr}\"}}[{window}ms]) >= {n}");
        match instant(prom, &q).await.len() {
            1 => Ok(()),
            _ => Err(format!("fewer in the last {window} ms")),
        }
    })
    .await
}

/// What a sidecar exports while it does not lead is [`PER_POD`], plus the
/// health of its `pools` collector and the job-wide slow-query threshold;
/// and each entry of [`PER_POD`] is among it.
fn check_per_pod_list(follower: &crate::support::scrape::Metrics) {
    let mut problems = Vec::new();
    for s in &follower.samples {
        let pools_health = (s.name.starts_with("pg_scrape_collector_") || s.name.starts_with("pgsidecar_collector_"))
            && s.labels.get("collector").map(String::as_str) == Some("pools");
        if !per_pod(&s.name) && !pools_health && s.name != "pgsidecar_slow_query_threshold_seconds" {
            problems.push(format!("a follower exports {} {:?}, not in PER_POD", s.name, s.labels));
        }
    }
    for entry in PER_POD {
        let prefix = entry.trim_end_matches('*');
        if !follower
            .samples
            .iter()
            .any(|s| s.name.starts_with(prefix) && per_pod(&s.name))
        {
            problems.push(format!("PER_POD has {entry}, which a follower does not export"));
        }
    }
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), follower.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_follow_a_leadership_move() {
    let cluster = Cluster::init();
    cluster.start();
    let (db, dsn) = monitored_app_db(&cluster, "move-pw").await;
    // A quiet server: no autovacuum worker comes and goes, no statistics
    // change during the test (a series that legitimately appears or goes is
    // not what this test is about).
    for sql in [
        "VACUUM ANALYZE",
        "ALTER SYSTEM SET autovacuum = off",
        "SELECT pg_reload_conf()",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    // Data for the panels of a connection limit and of invalid indexes: a
    // unique index whose concurrent build failed.
    db.batch_execute(
        "ALTER DATABASE mluvme CONNECTION LIMIT 100; CREATE TABLE dup (v int); INSERT INTO dup VALUES (1), (1)",
    )
    .await
    .unwrap();
    assert!(
        db.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY idx_dup ON dup (v)")
            .await
            .is_err()
    );
    db.batch_execute("VACUUM ANALYZE dup").await.unwrap();
    // Its session ends, and with it any statistics it has not flushed yet.
    drop(db);

    // Two sidecars of one application: the example config, electing a
    // leader, watching one PgBouncer.
    let bouncer = PgBouncer::start(&cluster, Auth::Trust).await;
    let yaml = example_config(&format!(
        "coordination:\n  mode: leader-election\n  check_interval: 500ms\npgbouncer:\n  dsn: \"{}\"\n",
        bouncer.admin_dsn("stats")
    ));
    let env = [
        ("DATA_SOURCE_NAME", dsn.as_str()),
        ("POD_IP", "127.0.0.1"),
        ("DB_HOST", "127.0.0.1"),
    ];
    let mut fleet = Fleet::new();
    let pods = [
        fleet.spawn_config(&yaml, &env).await,
        fleet.spawn_config(&yaml, &env).await,
    ];
    let addrs = pods.map(|n| fleet.addr(n));

    let dir = fleet.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: pgsidecar\n    static_configs:\n\
             \x20     - targets: ['{}']\n        labels: {{pod: app-0}}\n\
             \x20     - targets: ['{}']\n        labels: {{pod: app-1}}\n",
            addrs[0], addrs[1]
        ),
    )
    .unwrap();
    // Declared after the fleet: dropped (killed) before the fleet removes its directory.
    let (_prometheus, prom_addr) = start_prometheus(&dir).await;
    wait_http(prom_addr, "/-/ready", "prometheus").await;

    let leader = fleet.one_leader(WAIT, "one leader", |_| true).await;
    let follower = pods[1 - leader];
    let collectors = crate::support::fixture::example_collectors() + crate::support::pgbouncer_collectors();
    until_scraped(prom_addr, fleet.addr(leader), None, collectors).await;
    let start = now();
    let follower_metrics = until(fleet.addr(follower), WAIT, "the follower's pools", |m| {
        m.has("pgsidecar_pool_capacity").then(|| m.clone())
    })
    .await;
    check_per_pod_list(&follower_metrics);
    // Rates need two samples of the leader's counters; a few steps before the move.
    until_scraped_times(prom_addr, fleet.addr(leader), start, 5).await;

    // The move.
    let old = fleet.addr(leader);
    fleet.kill(leader);
    let moved = now();
    fleet.one_leader(WAIT, "the follower leads", |n| n == follower).await;
    until_scraped(prom_addr, fleet.addr(follower), Some(old), collectors).await;
    // A few steps after the move, too.
    until_scraped_times(prom_addr, fleet.addr(follower), now(), 5).await;
    let end = now();

    // Both sidecars led during the period.
    let leaders: BTreeSet<String> = range(prom_addr, "pgsidecar_leader == 1", start, end)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(l, _)| l.get("instance").cloned())
        .collect();
    assert_eq!(leaders.len(), 2, "leaders during the period: {leaders:?}");

    let mut problems = Vec::new();
    let mut checked = 0;
    for (file, dashboard) in dashboards() {
        for (panel, expr) in exprs(&dashboard) {
            let q = substitute(&expr);
            let result = range(prom_addr, &q, start, end)
                .await
                .unwrap_or_else(|e| panic!("{file} / {panel}: {q}: {e}"));
            if !server_wide(&expr) {
                continue;
            }
            checked += 1;
            for (l, _) in &result {
                if l.contains_key("instance") || l.contains_key("pod") {
                    problems.push(format!("{file} / {panel}: a series with a pod's labels: {l:?}\n  {q}"));
                }
            }
            let (q, result) = match without_topk(&q) {
                Some(inner) => (
                    inner.to_string(),
                    range(prom_addr, inner, start, end)
                        .await
                        .unwrap_or_else(|e| panic!("{file} / {panel}: {inner}: {e}")),
                ),
                None => (q, result),
            };
            let last = result
                .iter()
                .filter_map(|(_, t)| t.last())
                .fold(f64::MIN, |a, b| a.max(*b));
            let mut before = false;
            for (l, times) in &result {
                // A series born after the move (a backend seen once in state
                // "starting" while the new leader connects) may end: only the
                // lines drawn before the move must go on.
                let drawn_before = times.iter().any(|t| *t < moved);
                before |= drawn_before;
                if drawn_before && (times.last() != Some(&last) || last < end - 2.0) {
                    problems.push(format!(
                        "{file} / {panel}: {l:?} ends before the end of the period (at {:.0} s of {:.0} s; moved at {:.0} s)\n  {q}",
                        times.last().map_or(0.0, |t| t - start),
                        end - start,
                        moved - start
                    ));
                }
            }
            if !before && !EMPTY_HERE.iter().any(|m| q.contains(m)) {
                problems.push(format!("{file} / {panel}: no data before the move\n  {q}"));
            }
        }
    }
    assert!(checked > 0, "no server-wide query in the dashboards");
    assert!(
        problems.is_empty(),
        "{} problems in {checked} server-wide queries:\n{}",
        problems.len(),
        problems.join("\n")
    );
    fleet.assert_no_panics();
}
