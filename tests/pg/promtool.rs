//! `promtool check metrics` on a real scrape: no errors, and lint warnings
//! only for names kept for postgres_exporter compatibility. Here, not in
//! `repo`: the exposition has families that only some server versions have.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::scrape::until;
use crate::support::{WAIT, default_collectors, fixture, pg, start, test_yaml};

/// Families whose names postgres_exporter fixed before us, which promtool's
/// lint may flag (counters without `_total`, names ending in `_count`): the
/// table columns the collectors mark as upstream's, plus the two
/// hand-written families of that kind, `pg_settings_<name>` (settings such
/// as `tcp_keepalives_count`) and `pg_stat_activity_count`.
fn compat_name(name: &str) -> bool {
    pgsidecar::collectors::upstream_names().any(|n| n == name)
        || name.starts_with("pg_settings_")
        || name == "pg_stat_activity_count"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    // The application's database, so the per-table, per-index and matview
    // families have series too.
    let cluster = pg::shared();
    let _db = fixture::create_app_db(cluster, "promtool_db").await;
    let yaml = test_yaml(
        &cluster.dsn("promtool_db"),
        "collectors:\n  database:\n    interval: 1s\n",
    );
    let px = start(&yaml).await;
    let m = until(px.addr, WAIT, "all collectors ran", |m| {
        let ok = m.all("pg_scrape_collector_success", &[]);
        (ok.len() == default_collectors() && ok.iter().all(|s| s.value == 1.0)).then(|| m.clone())
    })
    .await;
    px.stop().await.unwrap();
    for family in [
        "pg_stat_user_tables_seq_scan",
        "pg_statio_user_tables_heap_blocks_read",
        "pg_stat_user_indexes_idx_scan_total",
        "pg_matview_populated",
    ] {
        assert!(m.has(family), "{family} has no series to lint:\n{}", m.text);
    }

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
