//! The harness both integration-test binaries share (`tests/pg`, whose
//! outcome depends on the PostgreSQL server version, and `tests/repo`, whose
//! does not): throwaway clusters (`pg`), certificates made by openssl
//! (`certs`), the HTTP client and exposition matcher (`scrape`), the
//! application's schema (`fixture`), a cuttable TCP link (`link`), `promtool check rules` (`promtool`), processes that report
//! the address they listen on (`process`), pgsidecar in-process, and the one
//! wait helper. Each binary includes it with
//! `#[path = "../support/mod.rs"] mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod certs;
pub mod fixture;
pub mod link;
pub mod pg;
pub mod pgbouncer;
pub mod process;
pub mod promtool;
pub mod scrape;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgsidecar::Running;
use pgsidecar::config::{Config, Flags};

/// How long the tests wait for a condition before they fail: generous for a
/// slow two-core CI machine running tests side by side, and free when the
/// condition comes sooner. A test that needs longer passes a multiple of it.
pub const WAIT: Duration = Duration::from_secs(30);

/// Checks `check` every 100 ms until it returns `Ok`, and returns that value;
/// panics after `within`, naming `what` and the last `Err` (what was seen
/// instead). The harness's one wait loop: whatever waits for something to
/// happen goes through it (`scrape::until` for a scrape).
pub async fn eventually<T>(within: Duration, what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not within {within:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `f`, which blocks (a server tool, a child process). Inside a
/// multi-threaded tokio runtime (the async tests) it tells tokio first, so
/// the runtime's other tasks, such as an in-process pgsidecar, move to
/// another worker instead of waiting behind it.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A config for `dsn`: every collector on a 1 s interval, plus `extra` YAML
/// appended at the top level.
pub fn test_yaml(dsn: &str, extra: &str) -> String {
    format!("datasource:\n  dsn: \"{dsn}\"\ncollection:\n  interval: 1s\n  timeout: 900ms\n{extra}")
}

pub fn config(yaml: &str) -> Config {
    pgsidecar::config_from_yaml(yaml, "test.yaml", &Flags::default(), &BTreeMap::<String, String>::new())
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"))
}

/// Starts pgsidecar in this process with the given YAML.
pub async fn start(yaml: &str) -> Running {
    Running::start(config(yaml)).await.expect("start pgsidecar")
}

/// The repository's root, where `alerts/`, `dashboards/`, `examples/` and
/// `k8s/` are.
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the pgsidecar binary with `DATA_SOURCE_NAME`; its exit code (-1 if
/// killed) and everything it printed.
pub fn run_pgsidecar(args: &[&str], dsn: &str) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .args(args)
        .env("DATA_SOURCE_NAME", dsn)
        .output()
        .expect("run the pgsidecar binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// How many collectors run with the default configuration (no
/// `pgbouncer:` section, so none of the PgBouncer collectors).
pub fn default_collectors() -> usize {
    pgsidecar::collectors::ALL
        .iter()
        .filter(|d| d.enabled_by_default && d.target == pgsidecar::collectors::Target::Postgres)
        .count()
}

/// How many more run with a `pgbouncer:` section.
pub fn pgbouncer_collectors() -> usize {
    pgsidecar::collectors::ALL
        .iter()
        .filter(|d| d.enabled_by_default && d.target == pgsidecar::collectors::Target::PgBouncer)
        .count()
}

/// The shared cluster's DSN for `postgres`, with the database collector fast.
pub fn shared_yaml() -> String {
    test_yaml(
        &pg::shared().dsn("postgres"),
        "collectors:\n  database:\n    interval: 1s\n",
    )
}
