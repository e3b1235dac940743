//! A password never appears in a log line, an error message, the landing page
//! or a metric; and the binary shuts down cleanly on SIGTERM.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::WAIT;
use crate::support::pg;
use crate::support::process::Proc;
use crate::support::scrape::{get, until, until_pg_up};

const GOOD: &str = "Pw-9f3Kx7-secret";
const WRONG: &str = "Wrong-7hQ2-pass";

/// Starts the pgsidecar binary with `dsn` and debug logs, its log in the
/// temp directory as `name`.
async fn spawn(dsn: &str, extra: &[&str], name: &str) -> (Proc, SocketAddr) {
    let log = std::env::temp_dir().join(format!("pgsidecar-secrets-{}-{name}.log", std::process::id()));
    Proc::pgsidecar(
        Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
            .args(["--log.level", "debug"])
            .args(extra)
            .env("DATA_SOURCE_NAME", dsn),
        "pgsidecar",
        &log,
    )
    .await
}

/// SIGTERM, then the exit status and everything the process printed.
fn terminate(p: Proc) -> (Option<i32>, String) {
    let started = Instant::now();
    let log = p.log_path().to_path_buf();
    let status = p.terminate();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        started.elapsed()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    (status.code(), text)
}

async fn everything_served(addr: SocketAddr) -> String {
    let mut all = String::new();
    for path in ["/", "/metrics", "/readyz", "/healthz"] {
        all.push_str(&get(addr, path).await.text());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_secret_and_sigterm_exits_zero() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-secrets").await;
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS secret_user; CREATE ROLE secret_user LOGIN PASSWORD '{GOOD}'; GRANT pg_monitor TO secret_user"
        ))
        .await
        .unwrap();
    let port = cluster.port();

    // Right password, URI form: works, and the password is nowhere.
    let (p, addr) = spawn(
        &format!("postgresql://secret_user:{GOOD}@127.0.0.1:{port}/postgres?sslmode=disable"),
        &[],
        "good",
    )
    .await;
    until_pg_up(addr, WAIT, 1.0).await;
    let served = everything_served(addr).await;
    assert!(
        served.contains("secret_user@127.0.0.1"),
        "landing page names the target"
    );
    let (code, logs) = terminate(p);
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("msg=\"pgsidecar started\""), "{logs}");
    assert!(logs.contains("msg=stopped"), "{logs}");
    for text in [&served, &logs] {
        assert!(!text.contains(GOOD), "password leaked:\n{text}");
    }

    // Wrong password, key=value form, JSON logs: fails visibly, still secret.
    let (p, addr) = spawn(
        &format!("host=127.0.0.1 port={port} user=secret_user password={WRONG} dbname=postgres sslmode=disable"),
        &["--log.format", "json"],
        "wrong",
    )
    .await;
    until(addr, WAIT, "auth failure", |m| {
        (m.get("pg_up", &[]) == Some(0.0)
            && m.get("pg_scrape_collector_success", &[("collector", "postmaster")]) == Some(0.0))
        .then_some(())
    })
    .await;
    let served = everything_served(addr).await;
    assert!(served.contains("password authentication failed"), "{served}");
    let (code, logs) = terminate(p);
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.lines().all(|l| l.starts_with('{')), "json logs:\n{logs}");
    assert!(logs.contains("password authentication failed"), "{logs}");
    for text in [&served, &logs] {
        assert!(!text.contains(WRONG), "password leaked:\n{text}");
    }
}

#[test]
fn config_errors_do_not_show_the_password() {
    for dsn in [
        format!("postgresql://u:{GOOD}@db:notaport/x"),
        format!("host=db port=x password={GOOD}"),
        format!("host=db password='{GOOD}' sslmode=bogus"),
        format!("postgresql://u:{GOOD}@db/x?sslmode=verify-full"),
    ] {
        let (code, text) = crate::support::run_pgsidecar(&["--config.check"], &dsn);
        assert_eq!(code, 2, "{dsn} should be rejected: {text}");
        assert!(
            text.contains("DATA_SOURCE_NAME") || text.contains("sslrootcert"),
            "{text}"
        );
        assert!(!text.contains(GOOD), "password leaked for {dsn}:\n{text}");
    }
}
