//! Signals and configuration reloads on the real binary. Regression:
//! SIGHUP, SIGUSR1 and SIGUSR2 killed the process (exit 129, no log, no
//! drain), so `systemctl reload` or a logrotate hook took the exporter down.
//! SIGHUP now reloads the configuration: a valid one applies without a
//! restart, keeping the series of the collectors that did not change; an
//! invalid one is logged and changes nothing. Password files are read again,
//! so rotated credentials apply, and so is the custom-queries file
//! (`--extend.query-path`). `POST /-/reload` does the same with
//! `--web.enable-lifecycle`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::pg::Cluster;
use crate::support::process::Proc;
use crate::support::scrape::{Metrics, request, scrape, until};
use crate::support::{WAIT, eventually};

fn signal(p: &Proc, sig: &str) {
    let status = Command::new("kill").args([sig, &p.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig}");
}

struct Files {
    dir: PathBuf,
}

impl Files {
    /// A directory of its own: the tests of this file run side by side, and
    /// one's clean-up must not delete another's config and log (it did: the
    /// other then waited 30 s for a start-up line in a deleted file).
    fn new() -> Files {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgsidecar-reload-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(
    cluster: &Cluster,
    password_file: &Path,
    threshold: &str,
    stat_database_interval: &str,
    settings: bool,
) -> String {
    format!(
        "datasource:\n  dsn: \"host=127.0.0.1 port={} user=rotating dbname=postgres sslmode=disable\"\n  \
         password_file: {}\ncollection:\n  interval: 1s\n  timeout: 900ms\n\
         collectors:\n  stat_database:\n    interval: {stat_database_interval}\n  settings:\n    enabled: {settings}\n\
         checks:\n  slow_queries:\n    threshold: {threshold}\n",
        cluster.port(),
        password_file.display()
    )
}

async fn start(config: &Path, files: &Files, lifecycle: bool) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsidecar"));
    cmd.arg("--config.file").arg(config).env_remove("DATA_SOURCE_NAME");
    if lifecycle {
        cmd.arg("--web.enable-lifecycle");
    }
    Proc::pgsidecar(
        &mut cmd,
        "pgsidecar",
        &files.dir.join(format!("pgsidecar-{lifecycle}.log")),
    )
    .await
}

/// Scrapes until `check` holds, asserting that the series of the
/// collectors a reload did not change are in every scrape meanwhile.
async fn until_keeping(addr: SocketAddr, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    eventually(WAIT, what, async || {
        let m = scrape(addr).await;
        for kept in [
            "pg_postmaster_start_time_seconds",
            "pg_stat_database_conflicts_confl_lock",
        ] {
            assert!(m.has(kept), "{kept} vanished during the reload:\n{}", m.text);
        }
        if check(&m) { Ok(m) } else { Err("the scrape".into()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_other_signals_are_harmless() {
    let cluster = Cluster::init();
    cluster.start();
    let admin = cluster.connect("postgres", "it-reload").await;
    admin
        .batch_execute("CREATE ROLE rotating LOGIN PASSWORD 'first-secret' IN ROLE pg_monitor")
        .await
        .unwrap();
    let files = Files::new();
    let password = files.write("password", "first-secret\n");
    let cfg = files.write("pgsidecar.yaml", &config(&cluster, &password, "100ms", "1s", true));
    let (px, addr) = start(&cfg, &files, false).await;
    until(addr, WAIT, "collecting", |m| {
        (m.get("pg_up", &[]) == Some(1.0)
            && m.has("pg_settings_max_connections")
            && m.has("pg_stat_database_conflicts_confl_lock"))
        .then_some(())
    })
    .await;

    // SIGUSR1, SIGUSR2: logged, nothing else.
    signal(&px, "-USR1");
    signal(&px, "-USR2");
    eventually(WAIT, "SIGUSR1 and SIGUSR2 logged", async || {
        let log = px.log();
        (log.contains("SIGUSR1 ignored") && log.contains("SIGUSR2 ignored"))
            .then_some(())
            .ok_or(log)
    })
    .await;
    assert_eq!(scrape(addr).await.get("pg_up", &[]), Some(1.0));

    // A new threshold, a new interval, a collector turned off.
    std::fs::write(&cfg, config(&cluster, &password, "250ms", "2s", false)).unwrap();
    signal(&px, "-HUP");
    let m = until_keeping(addr, "the new configuration", |m| {
        m.get("pgsidecar_slow_query_threshold_seconds", &[]) == Some(0.25)
            && m.get(
                "pgsidecar_collector_interval_seconds",
                &[("collector", "stat_database")],
            ) == Some(2.0)
            && !m.has("pg_settings_max_connections")
    })
    .await;
    assert_eq!(m.get("pgsidecar_config_last_reload_successful", &[]), Some(1.0));
    assert!(
        m.all("pg_scrape_collector_success", &[("collector", "settings")])
            .is_empty(),
        "{}",
        m.text
    );
    assert!(m.has("pg_stat_database_xact_commit"), "{}", m.text);

    // An invalid file: logged, and the old configuration stays.
    std::fs::write(&cfg, "collection:\n  interval: fast\n").unwrap();
    signal(&px, "-HUP");
    let m = until_keeping(addr, "the failed reload", |m| {
        m.get("pgsidecar_config_last_reload_successful", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(m.get("pgsidecar_slow_query_threshold_seconds", &[]), Some(0.25));
    assert!(
        px.log().contains("configuration not reloaded; the old one stays"),
        "{}",
        px.log()
    );
    assert!(
        px.log().contains("collection.interval: invalid duration \\\"fast\\\""),
        "{}",
        px.log()
    );

    // Rotated credentials: the role's password and the file change, the old
    // sessions end; after SIGHUP the new password is used.
    admin
        .batch_execute("ALTER ROLE rotating PASSWORD 'second-secret'")
        .await
        .unwrap();
    std::fs::write(&password, "second-secret\n").unwrap();
    std::fs::write(&cfg, config(&cluster, &password, "250ms", "2s", false)).unwrap();
    signal(&px, "-HUP");
    until(addr, WAIT, "the reload with the new password", |m| {
        (m.get("pgsidecar_config_last_reload_successful", &[]) == Some(1.0)).then_some(())
    })
    .await;
    admin
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rotating'")
        .await
        .unwrap();
    // The terminated sessions fail a run or two; then new logins succeed.
    until(addr, WAIT, "collecting with the new password", |m| {
        let ok = m.get("pg_scrape_collector_success", &[("collector", "stat_database")]) == Some(1.0);
        let new_sessions = m.get("pgsidecar_db_pool_size", &[]) >= Some(1.0);
        (ok && new_sessions && m.get("pg_up", &[]) == Some(1.0)).then_some(())
    })
    .await;
    let logged_in: i64 = admin
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE usename = 'rotating'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(logged_in >= 1, "no session logged in with the new password");
    assert!(!px.log().contains("second-secret") && !px.log().contains("first-secret"));

    let status = px.terminate();
    assert_eq!(status.code(), Some(0), "exit after the reloads: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_needs_the_lifecycle_flag() {
    let cluster = Cluster::init();
    cluster.start();
    let admin = cluster.connect("postgres", "it-reload").await;
    admin
        .batch_execute("CREATE ROLE rotating LOGIN PASSWORD 'first-secret' IN ROLE pg_monitor")
        .await
        .unwrap();
    let files = Files::new();
    let password = files.write("password-post", "first-secret\n");
    let cfg = files.write("post.yaml", &config(&cluster, &password, "100ms", "1s", true));

    let (px, addr) = start(&cfg, &files, false).await;
    let r = request(addr, "POST", "/-/reload", &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    drop(px);

    let (px, addr) = start(&cfg, &files, true).await;
    assert_eq!(request(addr, "GET", "/-/reload", &[]).await.status, 405);
    std::fs::write(&cfg, config(&cluster, &password, "300ms", "1s", true)).unwrap();
    let r = request(addr, "POST", "/-/reload", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = scrape(addr).await;
    assert_eq!(m.get("pgsidecar_slow_query_threshold_seconds", &[]), Some(0.3));
    std::fs::write(&cfg, "web:\n  nope: 1\n").unwrap();
    let r = request(addr, "POST", "/-/reload", &[]).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("web.nope: unknown key"), "{}", r.text());
    assert_eq!(
        scrape(addr).await.get("pgsidecar_config_last_reload_successful", &[]),
        Some(0.0)
    );
    drop(px);
}

/// SIGHUP reads the `--extend.query-path` file again: a changed query runs
/// as changed, and a bad file is logged with its problem while the running
/// query stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_custom_queries_again() {
    let cluster = crate::support::pg::shared();
    let files = Files::new();
    let q = |sql: &str| format!("app:\n  query: {sql}\n  interval: 1s\n  metrics:\n    - n:\n        usage: GAUGE\n");
    let queries = files.write("queries.yaml", &q("SELECT 1 AS n"));
    let cfg = files.write(
        "config.yaml",
        &format!(
            "datasource:\n  dsn: \"{}\"\ncollection:\n  interval: 1s\n  timeout: 900ms\ncollectors:\n  database:\n    enabled: false\n",
            cluster.dsn("postgres")
        ),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsidecar"));
    cmd.arg("--config.file")
        .arg(&cfg)
        .arg("--extend.query-path")
        .arg(&queries)
        .env_remove("DATA_SOURCE_NAME")
        .env_remove("PG_EXPORTER_EXTEND_QUERY_PATH");
    let (px, addr) = Proc::pgsidecar(&mut cmd, "pgsidecar", &files.dir.join("queries.log")).await;
    until(addr, WAIT, "app_n 1", |m| {
        (m.get("app_n", &[]) == Some(1.0)).then_some(())
    })
    .await;
    files.write("queries.yaml", &q("SELECT 2 AS n"));
    signal(&px, "-HUP");
    until(addr, WAIT, "app_n 2", |m| {
        (m.get("app_n", &[]) == Some(2.0)).then_some(())
    })
    .await;
    files.write("queries.yaml", &q("DELETE FROM t"));
    signal(&px, "-HUP");
    eventually(WAIT, "the bad file logged", async || {
        let log = px.log();
        if log.contains("app.query: must be a query (SELECT, WITH, VALUES or TABLE)") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    let m = scrape(addr).await;
    assert_eq!(m.get("app_n", &[]), Some(2.0));
    assert_eq!(
        m.get("pg_scrape_collector_success", &[("collector", "query:app")]),
        Some(1.0)
    );
    px.terminate();
}
