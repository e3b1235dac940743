//! `promtool check metrics` on a real scrape: no errors, and lint warnings
//! only for names kept for postgres_exporter compatibility. Here, not in
//! `repo`: the exposition has families that only some server versions have.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::scrape::until;
use crate::support::{WAIT, default_collectors, shared_yaml, start};

/// Families whose names postgres_exporter fixed before us; promtool's lint
/// flags them: `pg_stat_database_*` counters without `_total`,
/// `pg_stat_user_tables_*` and `pg_statio_user_tables_*` counters without
/// `_total` (some, such as `pg_stat_user_tables_vacuum_count`, end in
/// `_count`), `pg_stat_activity_count` and settings such as
/// `pg_settings_tcp_keepalives_count` ending in `_count`; and every column a
/// collector marks as postgres_exporter's (`pg_locks_count`,
/// `pg_stat_archiver_archived_count`, ...).
fn compat_name(name: &str) -> bool {
    (name.starts_with("pg_stat_database_") && !name.ends_with("_total"))
        || name.starts_with("pg_settings_")
        || (name.starts_with("pg_stat_user_tables_") && !name.ends_with("_total"))
        || (name.starts_with("pg_statio_user_tables_") && !name.ends_with("_total"))
        || name == "pg_stat_activity_count"
        || pgsidecar::collectors::upstream_names().any(|u| u == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    let px = start(&shared_yaml()).await;
    let m = until(px.addr, WAIT, "all collectors ran", |m| {
        let ok = m.all("pg_scrape_collector_success", &[]);
        (ok.len() == default_collectors() && ok.iter().all(|s| s.value == 1.0)).then(|| m.clone())
    })
    .await;
    px.stop().await.unwrap();

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !compat_name(l.split_whitespace().next().unwrap_or("")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool lint problems outside the compatibility names:\n{}",
        unexpected.join("\n")
    );
}
