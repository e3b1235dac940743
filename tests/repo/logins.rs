//! Regression: with a wrong password every collector retried on its own,
//! about 57 failed logins a minute at the default intervals, which locks
//! LDAP and PAM accounts. Logins share one backoff for the whole process:
//! one attempt per step, the step doubling.

use std::time::{Duration, Instant};

use crate::support::pg::Cluster;
use crate::support::scrape::until;
use crate::support::{WAIT, start, test_yaml};

/// The server's log lines that record a failed password for `role`.
fn failed_logins(cluster: &Cluster, role: &str) -> Vec<String> {
    let log = std::fs::read_to_string(cluster.dir().join("server.log")).unwrap_or_default();
    let needle = format!("password authentication failed for user \"{role}\"");
    log.lines().filter(|l| l.contains(&needle)).map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_costs_one_login_per_backoff_step() {
    let cluster = Cluster::init();
    cluster.start();
    let admin = cluster.connect("postgres", "it-logins").await;
    admin
        .batch_execute("CREATE ROLE storm LOGIN PASSWORD 'right-one' IN ROLE pg_monitor")
        .await
        .unwrap();
    // Every collector each second, and a leader election trying its lock
    // session twice a second: before, dozens of logins a second.
    let dsn = format!(
        "host=127.0.0.1 port={} user=storm password=wrong-one dbname=postgres sslmode=disable",
        cluster.port()
    );
    let extra = "coordination:\n  mode: leader-election\n  check_interval: 500ms\n";
    let px = start(&test_yaml(&dsn, extra)).await;
    let started = Instant::now();
    until(px.addr, WAIT, "the collectors failing", |m| {
        (m.get("pg_up", &[]) == Some(0.0)).then_some(())
    })
    .await;
    // Time passes on purpose: the attempts made in it are what is measured.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    let logins = failed_logins(&cluster, "storm");
    px.stop().await.unwrap();
    // Steps of 0.25, 0.5, 1, 2, 4 and 8 s: attempts at about 0, 0.25, 0.75,
    // 1.75, 3.75 and 7.75 s.
    assert!(
        (3..=7).contains(&logins.len()),
        "{} failed logins in 10 s:\n{}",
        logins.len(),
        logins.join("\n")
    );
}
