//! End to end, on 127.0.0.1: PostgreSQL with the application's schema,
//! pgsidecar with `examples/mluvme.yaml`, Prometheus (Debian package
//! `prometheus`) loaded with the shipped rules, and Alertmanager (Debian
//! package `prometheus-alertmanager`) posting to a webhook served here.
//! Each checklist condition is created for real and its alert must reach
//! the webhook; then every dashboard query must return data. A PgBouncer
//! (Debian package `pgbouncer`) stands in front of the cluster, and clients
//! kept waiting in it page too. The cluster is a primary that archives its
//! WAL, with a streaming standby through a slot; a third pgsidecar watches
//! the standby in a job of its own (with the opt-in `database_wraparound`),
//! so the server dashboard's replication, slot, archiving and wraparound
//! panels have real data, and a VACUUM slowed down by its cost settings is
//! seen in progress and pages.
//!
//! The only test-only changes to the shipped files: every `for:` of the rules
//! becomes 1s, by a transform of `alerts/pgsidecar.rules.yml` (not a copy),
//! and the example config gets 1s collection intervals appended.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::fixture::{example_config, monitored_app_db};
use crate::support::pg::Cluster;
use crate::support::pgbouncer::{Auth, POOL_SIZE, PgBouncer};
use crate::support::process::Proc;
use crate::support::scrape::get;
use crate::support::{WAIT, eventually};

pub(crate) async fn wait_http(addr: SocketAddr, path: &str, what: &str) {
    eventually(WAIT, &format!("{what} ready on {addr}{path}"), async || {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return Err("nothing listens".into());
        }
        match get(addr, path).await {
            r if r.status == 200 => Ok(()),
            r => Err(format!("status {}: {}", r.status, r.text())),
        }
    })
    .await
}

/// Starts Prometheus on 127.0.0.1:0 with `dir/prometheus.yml`, its data in
/// `dir/prom` and its log in `dir/prometheus.log`; returns it and its
/// address.
pub(crate) async fn start_prometheus(dir: &Path) -> (Proc, SocketAddr) {
    let mut p = Proc::spawn(
        Command::new("prometheus").args([
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("prom").display()),
            "--web.listen-address=127.0.0.1:0",
        ]),
        "prometheus",
        &dir.join("prometheus.log"),
    );
    let addr = p.address("msg=\"Listening on\"", "address").await;
    (p, addr)
}

/// Serves POSTs on an ephemeral port and keeps their bodies.
async fn webhook() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let store = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            store.lock().unwrap().push(text[end + 4..end + 4 + len].to_string());
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, bodies)
}

/// The shipped rules with every `for:` shortened to 1s.
fn rules_with_short_for(dir: &Path) -> PathBuf {
    let src = crate::support::root().join("alerts/pgsidecar.rules.yml");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    let mut shortened = 0;
    for group in doc["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            if let Some(map) = rule.as_mapping_mut().filter(|m| m.contains_key("for")) {
                map.insert("for".into(), "1s".into());
                shortened += 1;
            }
        }
    }
    assert!(shortened > 10, "the transform found the rules' for: durations");
    let path = dir.join("rules.yml");
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Instant query against Prometheus; the number of series it returns.
async fn query(prom: SocketAddr, expr: &str) -> Result<usize, String> {
    let r = get(prom, &format!("/api/v1/query?query={}", percent_encode(expr))).await;
    let v: serde_json::Value = serde_json::from_str(&r.text()).map_err(|e| format!("{e}: {}", r.text()))?;
    if v["status"] != "success" {
        return Err(r.text());
    }
    Ok(v["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Alerts received by the webhook: (alertname, labels).
fn received(bodies: &Mutex<Vec<String>>) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for body in bodies.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        for a in v["alerts"].as_array().into_iter().flatten() {
            if a["status"] == "firing" {
                let labels = a["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                out.push(labels);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checklist_conditions_page_through_alertmanager_and_dashboards_have_data() {
    let dir = std::env::temp_dir().join(format!("pgsidecar-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster::primary();
    let (db, dsn) = monitored_app_db(&cluster, "e2e-pw").await;
    // Autovacuum on a short nap, so the maintenance panels have data to show.
    db.batch_execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        .await
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").await.unwrap();

    // pgsidecar: the example config, collecting every second, and the PgBouncer.
    let bouncer = PgBouncer::start(&cluster, Auth::Trust).await;
    let config = dir.join("pgsidecar.yaml");
    std::fs::write(
        &config,
        example_config(&format!(
            "pgbouncer:\n  dsn: \"{}\"\n  thresholds:\n    max_wait: 1s\n",
            bouncer.admin_dsn("stats")
        )),
    )
    .unwrap();
    let (px, px_addr) = Proc::pgsidecar(
        Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
            .args(["--config.file", config.to_str().unwrap()])
            .env("DATA_SOURCE_NAME", &dsn)
            .env("POD_IP", "127.0.0.1")
            .env("DB_HOST", "127.0.0.1"),
        "pgsidecar",
        &dir.join("pgsidecar.log"),
    )
    .await;
    // A second pgsidecar with the default configuration, on a database without
    // pg_stat_statements: its unavailable collector is what the self
    // dashboard's "Unavailable collectors" panel lists.
    let (px2, px2_addr) = Proc::pgsidecar(
        Command::new(env!("CARGO_BIN_EXE_pgsidecar")).env("DATA_SOURCE_NAME", cluster.dsn("postgres")),
        "pgsidecar (second)",
        &dir.join("pgsidecar2.log"),
    )
    .await;
    // A streaming standby (slot standby1), watched by a pgsidecar of its own
    // job: one job per server, as the rules expect.
    let standby = cluster.standby("standby1");
    let (px3, px3_addr) = Proc::pgsidecar(
        Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
            .arg("--collector.database_wraparound")
            .env("DATA_SOURCE_NAME", standby.dsn("postgres")),
        "pgsidecar (standby)",
        &dir.join("pgsidecar3.log"),
    )
    .await;
    let (hook_addr, bodies) = webhook().await;
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook_addr}/\n        send_resolved: false\n"
        ),
    )
    .unwrap();
    let mut am = Proc::spawn(
        Command::new("prometheus-alertmanager").args([
            &format!("--config.file={}", dir.join("alertmanager.yml").display()),
            &format!("--storage.path={}", dir.join("am").display()),
            "--web.listen-address=127.0.0.1:0",
            "--cluster.listen-address=",
        ]),
        "prometheus-alertmanager",
        &dir.join("alertmanager.log"),
    );
    let am_addr = am.address("msg=\"Listening on\"", "address").await;

    let rules = rules_with_short_for(&dir);
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am_addr}']\n\
             scrape_configs:\n  - job_name: pgsidecar\n    static_configs:\n      - targets: ['{px_addr}', '{px2_addr}']\n\
             \x20 - job_name: pgsidecar-standby\n    static_configs:\n      - targets: ['{px3_addr}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let (prometheus, prom_addr) = start_prometheus(&dir).await;
    wait_http(px_addr, "/readyz", "pgsidecar").await;
    wait_http(am_addr, "/-/ready", "alertmanager").await;
    wait_http(prom_addr, "/-/ready", "prometheus").await;
    // Prometheus hands targets to its scrapers a few seconds after start:
    // start the workload only once pgsidecar has been scraped, so counters
    // are seen rising.
    eventually(WAIT, "prometheus scraped both pgsidecars", async || {
        match query(prom_addr, "up{job=\"pgsidecar\"} == 1").await {
            Ok(2) => Ok(()),
            other => Err(format!("{other:?} targets up")),
        }
    })
    .await;

    // The conditions, for real.
    // 1. Slow statements: 120 calls of 150 ms from four sessions.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let c = cluster.connect("mluvme", "mluvme-worker").await;
        slow.push(tokio::spawn(async move {
            for _ in 0..30 {
                c.batch_execute("SELECT pg_sleep(0.15), count(*) FROM users")
                    .await
                    .unwrap();
            }
        }));
    }
    // 2. A saturated pool: 30 connections of the API against a capacity of 30.
    let mut pool = Vec::new();
    for _ in 0..30 {
        pool.push(cluster.connect("mluvme", "mluvme-api").await);
    }
    // 3. A stale view: its last recorded refresh two hours ago.
    db.batch_execute("UPDATE pgsidecar.matview_refresh SET last_refresh = now() - interval '2 hours'")
        .await
        .unwrap();
    // 4. A dropped index. 5. A wrong migration revision. 6. The index of the
    // message-history probe dropped: its plan loses it.
    db.batch_execute(
        "DROP INDEX idx_saved_words_review; UPDATE alembic_version SET version_num = '002'; \
         DROP INDEX idx_messages_user_created",
    )
    .await
    .unwrap();
    // What the object and maintenance panels show: an invalid index left by a
    // failed concurrent unique build, a manual vacuum, dead rows for
    // autovacuum, a database connection limit.
    db.batch_execute("CREATE TABLE dup (v int); INSERT INTO dup VALUES (1), (1)")
        .await
        .unwrap();
    assert!(
        db.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY idx_dup ON dup (v)")
            .await
            .is_err()
    );
    db.batch_execute("VACUUM users").await.unwrap();
    db.batch_execute("DELETE FROM messages WHERE id % 2 = 0").await.unwrap();
    db.batch_execute("ALTER DATABASE mluvme CONNECTION LIMIT 100")
        .await
        .unwrap();
    // 6. PgBouncer's pool full: its server connections held in open
    // transactions, and one more client waiting.
    let mut holders = Vec::new();
    for _ in 0..POOL_SIZE {
        let c = bouncer.connect("e2e-holder").await;
        c.batch_execute("BEGIN; SELECT 1").await.unwrap();
        holders.push(c);
    }
    let waiter = bouncer.connect("e2e-waiter").await;
    let waiting = tokio::spawn(async move { waiter.simple_query("SELECT 1").await.map(|_| ()) });
    // 7. A long VACUUM: about ten pages a second (every page costs at least
    // 1, the limit is 1, and each time it is reached it sleeps 100 ms), on a
    // table of some 5 000 pages, so it runs for the rest of the test. The
    // table's WAL fills segments, which the primary archives; the switch
    // archives the last one too.
    db.batch_execute(
        "CREATE TABLE slow_vacuum WITH (autovacuum_enabled = off) AS \
         SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 300000) g; \
         SELECT pg_switch_wal()",
    )
    .await
    .unwrap();
    let vacuum = cluster.connect("mluvme", "e2e-vacuum").await;
    vacuum
        .batch_execute("SET vacuum_cost_delay = '100ms'; SET vacuum_cost_limit = 1")
        .await
        .unwrap();
    let vacuuming = tokio::spawn(async move { vacuum.batch_execute("VACUUM slow_vacuum").await });
    for s in slow {
        s.await.unwrap();
    }

    let expected: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "PostgresSlowStatement",
            vec![("severity", "warning"), ("datname", "mluvme"), ("user", "postgres")],
        ),
        ("PostgresPoolSaturated", vec![("severity", "critical"), ("pool", "api")]),
        (
            "PostgresMatviewStale",
            vec![("severity", "warning"), ("matviewname", "user_stats_summary")],
        ),
        (
            "PostgresExpectedIndexMissing",
            vec![("severity", "critical"), ("indexname", "idx_saved_words_review")],
        ),
        ("PostgresIndexPatternBelowMinimum", vec![("pattern", "idx_%")]),
        (
            "PostgresMigrationRevisionMismatch",
            vec![("severity", "critical"), ("datname", "mluvme")],
        ),
        (
            "PgBouncerClientsWaiting",
            vec![("severity", "warning"), ("database", "postgres"), ("user", "postgres")],
        ),
        (
            "PgBouncerMaxWaitHigh",
            vec![("severity", "critical"), ("database", "postgres")],
        ),
        (
            "PgBouncerServerConnectionsNearPoolSize",
            vec![("severity", "critical"), ("database", "postgres")],
        ),
        (
            "PostgresVacuumRunningLong",
            vec![
                ("severity", "warning"),
                ("datname", "mluvme"),
                ("relname", "slow_vacuum"),
            ],
        ),
        (
            "PostgresProbePlanLostIndex",
            vec![
                ("severity", "critical"),
                ("probe", "message_history"),
                ("index", "idx_messages_user_created"),
            ],
        ),
    ];
    // Longer than WAIT: each alert needs a rate over several scrapes, a `for:`
    // and Alertmanager's grouping.
    eventually(WAIT * 4, "alerts delivered to the webhook", async || {
        let got = received(&bodies);
        let missing: Vec<&str> = expected
            .iter()
            .filter(|(name, labels)| {
                !got.iter().any(|a| {
                    a.get("alertname").map(String::as_str) == Some(*name)
                        && a.get("job").map(String::as_str) == Some("pgsidecar")
                        && labels.iter().all(|(k, v)| a.get(*k).map(String::as_str) == Some(*v))
                })
            })
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<_> = got.iter().filter_map(|a| a.get("alertname")).collect();
        let mut state = String::new();
        for e in [
            "pg_stat_statements_calls_total",
            "rate(pg_stat_statements_calls_total[5m]) > 0.1",
            "rate(pg_stat_statements_seconds_total[5m]) / rate(pg_stat_statements_calls_total[5m])",
            "pgsidecar_slow_query_threshold_seconds",
            "pgsidecar_migration_at_expected",
            "pgbouncer_pools_client_waiting_connections",
            "ALERTS",
        ] {
            state.push_str(&format!("{e}: {:?}\n", query(prom_addr, e).await));
        }
        Err(format!(
            "missing {missing:?}\nreceived: {names:?}\n{state}pgsidecar log:\n{}",
            std::fs::read_to_string(dir.join("pgsidecar.log")).unwrap_or_default()
        ))
    })
    .await;
    // Healthy parts stay quiet; a missing extension is information, not a failure.
    let got = received(&bodies);
    for quiet in [
        "PostgresDown",
        "PgBouncerDown",
        "PgsidecarCollectorFailing",
        "PostgresMatviewNotPopulated",
        "PgsidecarProbeFailing",
        "PostgresStandbyNotStreaming",
        "PostgresArchivingFailing",
    ] {
        assert!(
            !got.iter()
                .any(|a| a.get("alertname").map(String::as_str) == Some(quiet)),
            "{quiet} fired"
        );
    }

    // Every dashboard query returns data from Prometheus (autovacuum may take
    // a few seconds more).
    eventually(WAIT * 2, "data for every dashboard query", async || {
        let mut empty = Vec::new();
        for (file, dashboard) in crate::dashboards::dashboards() {
            for (panel, expr) in crate::dashboards::exprs(&dashboard) {
                let expr = crate::dashboards::substitute(&expr);
                match query(prom_addr, &expr).await {
                    Ok(0) => empty.push(format!("{file} / {panel}: {expr}")),
                    Ok(_) => {}
                    Err(e) => panic!("{file} / {panel}: {expr}: {e}"),
                }
            }
        }
        if empty.is_empty() {
            Ok(())
        } else {
            Err(format!("queries without data:\n{}", empty.join("\n")))
        }
    })
    .await;
    drop(pool);
    for h in &holders {
        h.batch_execute("COMMIT").await.unwrap();
    }
    waiting.await.unwrap().unwrap();
    vacuuming.abort();
    drop((px, px2, px3, am, prometheus));
    drop(standby);
    let _ = std::fs::remove_dir_all(&dir);
}
