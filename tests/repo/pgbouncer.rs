//! PgBouncer, for real: Debian's `pgbouncer` in front of a test cluster
//! (`support::pgbouncer`), watched through its admin console. Clients made
//! to wait show in `client_waiting` and `maxwait`; a stopped PgBouncer takes
//! `pgbouncer_up` to 0 while the Postgres collectors go on; a wrong password
//! is reported as such and never shown; `pgbouncer.run_by` decides who runs
//! the collectors; a reload moves to another PgBouncer or drops it; a
//! PgBouncer that answers nothing fails every run at its timeout.
//!
//! The admin console speaks only the simple query protocol and refuses the
//! `options` startup parameter that pgsidecar's Postgres sessions send:
//! every test here fails if the console's session is opened like those.

use std::process::Command;

use crate::support::pg::{self, Cluster};
use crate::support::pgbouncer::{Auth, POOL_SIZE, PgBouncer};
use crate::support::process::Proc;
use crate::support::scrape::{Metrics, get, scrape, until};
use crate::support::{WAIT, start, test_yaml};

/// A config for the cluster's `postgres` database and the bouncer's admin
/// console as `stats`, collecting every second, plus `extra` under
/// `pgbouncer:`.
fn yaml(cluster: &Cluster, admin_dsn: &str, extra: &str) -> String {
    test_yaml(
        &cluster.dsn("postgres"),
        &format!("pgbouncer:\n  dsn: \"{admin_dsn}\"\n  interval: 1s\n{extra}"),
    )
}

const POOL: [(&str, &str); 2] = [("database", "postgres"), ("user", "postgres")];

fn waiting(m: &Metrics) -> Option<f64> {
    m.get("pgbouncer_pools_client_waiting_connections", &POOL)
}

fn maxwait(m: &Metrics) -> Option<f64> {
    m.get("pgbouncer_pools_client_maxwait_seconds", &POOL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_kept_waiting_move_client_waiting_and_maxwait() {
    let cluster = pg::shared();
    let bouncer = PgBouncer::start(cluster, Auth::Trust).await;
    let px = start(&yaml(cluster, &bouncer.admin_dsn("stats"), "")).await;

    // Two clients hold the pool's two server connections in open
    // transactions; three more ask for one and wait.
    let mut holders = Vec::new();
    for _ in 0..POOL_SIZE {
        let c = bouncer.connect("it-holder").await;
        c.batch_execute("BEGIN; SELECT 1").await.unwrap();
        holders.push(c);
    }
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let c = bouncer.connect("it-waiter").await;
        waiters.push(tokio::spawn(
            async move { c.simple_query("SELECT 1").await.map(|_| ()) },
        ));
    }
    until(
        px.addr,
        WAIT,
        "3 clients waiting, the oldest for a second or more",
        |m| (waiting(m) == Some(3.0) && maxwait(m).is_some_and(|w| w >= 1.0)).then_some(()),
    )
    .await;
    let m = scrape(px.addr).await;
    assert_eq!(
        m.get("pgbouncer_pools_server_active_connections", &POOL),
        Some(f64::from(POOL_SIZE)),
        "{}",
        m.text
    );
    assert_eq!(m.get("pgbouncer_pools_client_active_connections", &POOL), Some(2.0));
    assert_eq!(
        m.get(
            "pgbouncer_databases_pool_size",
            &[("name", "postgres"), ("database", "postgres")]
        ),
        Some(f64::from(POOL_SIZE))
    );
    assert_eq!(m.get("pgbouncer_config_max_client_connections", &[]), Some(50.0));
    assert_eq!(m.get("pgbouncer_up", &[]), Some(1.0));
    assert_eq!(m.get("pg_up", &[]), Some(1.0));
    let version = m.all("pgbouncer_version_info", &[]);
    assert!(
        version.len() == 1 && version[0].labels["version"].starts_with("PgBouncer 1."),
        "{version:?}"
    );
    assert_eq!(m.get("pgsidecar_pgbouncer_max_wait_threshold_seconds", &[]), Some(5.0));

    // The holders commit: the waiters get their connections and run.
    for h in &holders {
        h.batch_execute("COMMIT").await.unwrap();
    }
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    until(px.addr, WAIT, "no client waiting any more", |m| {
        (waiting(m) == Some(0.0) && maxwait(m) == Some(0.0)).then_some(())
    })
    .await;
    // Five transactions went through the pool, and the waits were counted.
    until(px.addr, WAIT, "the transactions and the wait in the totals", |m| {
        let db = [("database", "postgres")];
        let xacts = m.get("pgbouncer_stats_totals_sql_transactions_pooled_total", &db)?;
        let waited = m.get("pgbouncer_stats_totals_client_wait_seconds_total", &db)?;
        (xacts >= 5.0 && waited >= 1.0).then_some(())
    })
    .await;
    lint(&scrape(px.addr).await);
    // Five collectors, each run every second since the start, held one
    // session on the console between them.
    assert_eq!(console_sessions(&bouncer).await, 1);
    px.stop().await.unwrap();
}

/// pgsidecar's sessions on the admin console, as `SHOW CLIENTS` lists them.
async fn console_sessions(bouncer: &PgBouncer) -> usize {
    let dsn = format!("{} application_name=it-console", bouncer.admin_dsn("postgres"));
    let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows = client.simple_query("SHOW CLIENTS").await.unwrap();
    rows.iter()
        .filter(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                r.get("database") == Some("pgbouncer") && r.get("application_name") == Some("pgsidecar")
            }
            _ => false,
        })
        .count()
}

/// `promtool check metrics` finds nothing to say about the PgBouncer families.
fn lint(m: &Metrics) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run promtool (Debian package prometheus; scripts/test installs it): {e}"));
    child.stdin.take().unwrap().write_all(m.text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!report.contains("error while linting"), "{report}");
    let ours: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("pgbouncer_") || l.starts_with("pgsidecar_pgbouncer_"))
        .collect();
    assert!(
        ours.is_empty(),
        "promtool on the PgBouncer families:\n{}",
        ours.join("\n")
    );
    let families = m.samples.iter().filter(|s| s.name.starts_with("pgbouncer_")).count();
    assert!(families > 40, "only {families} PgBouncer samples linted:\n{}", m.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_pgbouncer_is_pgbouncer_up_0_while_postgres_is_still_collected() {
    let cluster = pg::shared();
    let bouncer = PgBouncer::start(cluster, Auth::Trust).await;
    let px = start(&yaml(cluster, &bouncer.admin_dsn("stats"), "")).await;
    until(px.addr, WAIT, "pgbouncer_up 1 and pg_up 1", |m| {
        (m.get("pgbouncer_up", &[]) == Some(1.0) && m.get("pg_up", &[]) == Some(1.0)).then_some(())
    })
    .await;

    bouncer.stop();
    let m = until(px.addr, WAIT, "pgbouncer_up 0", |m| {
        (m.get("pgbouncer_up", &[]) == Some(0.0)).then(|| m.clone())
    })
    .await;
    for c in ["pgbouncer_pools", "pgbouncer_stats", "pgbouncer_databases"] {
        let success = m.get("pg_scrape_collector_success", &[("collector", c)]);
        assert!(success.is_some(), "{c}: {}", m.text);
    }
    // The Postgres collectors go on: new successful runs after the stop.
    let postmaster = [("collector", "postmaster")];
    let last = |m: &Metrics| m.get("pgsidecar_collector_last_success_timestamp_seconds", &postmaster);
    let before = last(&m).unwrap();
    let m = until(px.addr, WAIT, "postmaster succeeds again with PgBouncer down", |m| {
        (last(m).is_some_and(|t| t > before) && m.get("pgbouncer_up", &[]) == Some(0.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_up", &[]), Some(1.0), "{}", m.text);
    assert_eq!(m.get("pg_scrape_collector_success", &postmaster), Some(1.0));
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "pgbouncer_pools")]),
        Some(0.0)
    );
    let page = get(px.addr, "/").await.text();
    let target = format!("stats@127.0.0.1:{}/pgbouncer", bouncer.port());
    assert!(page.contains(&format!("connect to {target}")), "{page}");

    // It comes back: so does pgbouncer_up, within the login backoff.
    bouncer.restart().await;
    until(px.addr, WAIT, "pgbouncer_up 1 again", |m| {
        (m.get("pgbouncer_up", &[]) == Some(1.0)).then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

/// PgBouncer has no statement_timeout: pgsidecar bounds every call itself.
/// A PgBouncer that answers nothing (SIGSTOP: its sockets stay open) fails
/// each run at the collector's timeout, and the sessions left hanging are
/// closed, not piled up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbouncer_that_answers_nothing_fails_runs_at_their_timeout() {
    let cluster = pg::shared();
    let bouncer = PgBouncer::start(cluster, Auth::Trust).await;
    let px = start(&yaml(cluster, &bouncer.admin_dsn("stats"), "")).await;
    until(px.addr, WAIT, "pgbouncer_up 1", |m| {
        (m.get("pgbouncer_up", &[]) == Some(1.0)).then_some(())
    })
    .await;
    bouncer.signal("-STOP");
    let pools = [("collector", "pgbouncer_pools")];
    // Every PgBouncer collector fails, the one whose command went
    // unanswered too: none waits for ever.
    let collectors = [
        "pgbouncer_pools",
        "pgbouncer_stats",
        "pgbouncer_databases",
        "pgbouncer_lists",
        "pgbouncer_config",
    ];
    let m = until(
        px.addr,
        WAIT,
        "every PgBouncer collector failing while PgBouncer is stopped",
        |m| {
            let failing = collectors
                .iter()
                .all(|c| m.get("pg_scrape_collector_success", &[("collector", c)]) == Some(0.0));
            (failing && m.get("pgbouncer_up", &[]) == Some(0.0)).then(|| m.clone())
        },
    )
    .await;
    // A run lasts its timeout (900 ms in test_yaml), not longer.
    let took = m.get("pg_scrape_collector_duration_seconds", &pools).unwrap();
    assert!((0.85..1.5).contains(&took), "the failed run took {took} s:\n{}", m.text);
    let page = get(px.addr, "/").await.text();
    assert!(page.contains("timed out after 900ms"), "{page}");
    assert_eq!(m.get("pg_up", &[]), Some(1.0), "{}", m.text);

    bouncer.signal("-CONT");
    until(px.addr, WAIT, "pgbouncer_up 1 after SIGCONT", |m| {
        (m.get("pgbouncer_up", &[]) == Some(1.0)).then_some(())
    })
    .await;
    crate::support::eventually(WAIT, "one console session again", async || {
        match console_sessions(&bouncer).await {
            1 => Ok(()),
            n => Err(format!("{n} sessions")),
        }
    })
    .await;
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_as_such_and_never_shown() {
    let cluster = pg::shared();
    let bouncer = PgBouncer::start(cluster, Auth::Md5("right-Secret-42")).await;
    let wrong = format!("{} password=wrong-Secret-17", bouncer.admin_dsn("stats"));
    let px = start(&yaml(cluster, &wrong, "")).await;
    let m = until(px.addr, WAIT, "pgbouncer_up 0 after a refused login", |m| {
        (m.get("pgbouncer_up", &[]) == Some(0.0) && m.get("pg_up", &[]) == Some(1.0)).then(|| m.clone())
    })
    .await;
    let page = get(px.addr, "/").await.text();
    assert!(
        page.contains("password authentication failed"),
        "the status page does not say why:\n{page}"
    );
    for text in [&page, &m.text] {
        assert!(
            !text.contains("wrong-Secret-17") && !text.contains("right-Secret-42"),
            "{text}"
        );
    }
    px.stop().await.unwrap();

    // The same PgBouncer with the right password: the password was the problem.
    let dir = bouncer.dir().join("secret");
    std::fs::write(&dir, "right-Secret-42\n").unwrap();
    let right = yaml(
        cluster,
        &bouncer.admin_dsn("stats"),
        &format!("  password_file: {}\n", dir.display()),
    );
    let px = start(&right).await;
    until(px.addr, WAIT, "pgbouncer_up 1 with the right password", |m| {
        (m.get("pgbouncer_up", &[]) == Some(1.0)).then_some(())
    })
    .await;
    px.stop().await.unwrap();
}

/// With leader election, `pgbouncer.run_by: leader` runs the PgBouncer
/// collectors on the leader only (one central PgBouncer: no duplicate series,
/// one admin session), `every-pod` on every sidecar (a PgBouncer beside each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_by_decides_which_sidecars_watch_pgbouncer() {
    let cluster = pg::shared();
    let bouncer = PgBouncer::start(cluster, Auth::Trust).await;
    for (run_by, lock_key, followers_watch) in [("leader", 4_242_001, false), ("every-pod", 4_242_002, true)] {
        let config = format!(
            "{}coordination:\n  mode: leader-election\n  lock_key: {lock_key}\n  check_interval: 200ms\n",
            yaml(cluster, &bouncer.admin_dsn("stats"), &format!("  run_by: {run_by}\n"))
        );
        let leader = start(&config).await;
        until(
            leader.addr,
            WAIT,
            "the first sidecar leads and watches PgBouncer",
            |m| (m.get("pgsidecar_leader", &[]) == Some(1.0) && m.get("pgbouncer_up", &[]) == Some(1.0)).then_some(()),
        )
        .await;
        let follower = start(&config).await;
        let m = until(
            follower.addr,
            WAIT,
            "the second sidecar's per-pod collectors ran",
            |m| {
                (m.get("pgsidecar_leader", &[]) == Some(0.0)
                    && m.get("pg_scrape_collector_success", &[("collector", "pools")])
                        .is_some()
                    && (!followers_watch || m.get("pgbouncer_up", &[]) == Some(1.0)))
                .then(|| m.clone())
            },
        )
        .await;
        assert_eq!(m.has("pgbouncer_up"), followers_watch, "run_by {run_by}:\n{}", m.text);
        assert_eq!(
            m.has("pgbouncer_pools_client_active_connections"),
            followers_watch,
            "run_by {run_by}:\n{}",
            m.text
        );
        follower.stop().await.unwrap();
        leader.stop().await.unwrap();
    }
}

/// A reload that names another PgBouncer gets a pool for it; one without
/// `pgbouncer:` stops the collectors and drops their series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_to_another_pgbouncer_or_drops_it() {
    let cluster = pg::shared();
    let (first, second) = (
        PgBouncer::start(cluster, Auth::Trust).await,
        PgBouncer::start(cluster, Auth::Trust).await,
    );
    let cfg = first.dir().join("pgsidecar.yaml");
    std::fs::write(&cfg, yaml(cluster, &first.admin_dsn("stats"), "")).unwrap();
    let (px, addr) = Proc::pgsidecar(
        Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
            .arg("--config.file")
            .arg(&cfg)
            .env_remove("DATA_SOURCE_NAME")
            .env_remove("PGBOUNCER_DSN"),
        "pgsidecar",
        &first.dir().join("pgsidecar.log"),
    )
    .await;
    // SHOW DATABASES lists the console itself, under PgBouncer's own port.
    let (one, two) = (first.port().to_string(), second.port().to_string());
    until(addr, WAIT, "the first PgBouncer's databases", |m| {
        console(m, &one).then_some(())
    })
    .await;

    std::fs::write(&cfg, yaml(cluster, &second.admin_dsn("stats"), "")).unwrap();
    let hup = |p: &Proc| {
        let ok = Command::new("kill")
            .args(["-HUP", &p.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -HUP");
    };
    hup(&px);
    until(
        addr,
        WAIT,
        "the second PgBouncer's databases, and not the first's",
        |m| (console(m, &two) && !console(m, &one) && m.get("pgbouncer_up", &[]) == Some(1.0)).then_some(()),
    )
    .await;

    std::fs::write(&cfg, test_yaml(&cluster.dsn("postgres"), "")).unwrap();
    hup(&px);
    let m = until(addr, WAIT, "no PgBouncer series after the section went", |m| {
        (!m.has("pgbouncer_up") && !m.has("pgbouncer_databases_pool_size")).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_up", &[]), Some(1.0), "{}", m.text);
    assert_eq!(m.get("pgsidecar_config_last_reload_successful", &[]), Some(1.0));
    drop(px);
}

/// Whether a scrape has the admin console's own row of `SHOW DATABASES`
/// for the PgBouncer on `port`.
fn console(m: &Metrics, port: &str) -> bool {
    m.get(
        "pgbouncer_databases_pool_size",
        &[("name", "pgbouncer"), ("port", port)],
    )
    .is_some()
}
