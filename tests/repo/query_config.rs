//! Custom queries' configuration (`queries:`, `--extend.query-path`,
//! `PG_EXPORTER_EXTEND_QUERY_PATH`): each problem with its file, line, key
//! and reason, the extend file's in that file; names a built-in collector
//! exports are refused until that collector is off; the binary refuses a
//! bad file before it listens. A table of exact messages.

use std::collections::BTreeMap;
use std::process::Command;

use pgsidecar::config::{ConfigError, Flags};

fn load(yaml: &str, flags: &Flags, env: &[(&str, &str)]) -> Result<pgsidecar::Config, Vec<String>> {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    pgsidecar::config_from_yaml(yaml, "test.yaml", flags, &env).map_err(|e| match e {
        ConfigError::Invalid(p) => p.iter().map(|p| p.to_string()).collect(),
        e => vec![e.to_string()],
    })
}

/// A file in a directory of this test's own.
fn file(test: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("pgsidecar-queries-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queries.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn extend(path: &str) -> Flags {
    Flags {
        extend_query_path: Some(path.to_string()),
        ..Flags::default()
    }
}

#[test]
fn each_bad_query_gets_its_exact_message() {
    let cases: &[(&str, &str)] = &[
        (
            "queries:\n  app:\n    query: SELECT 1 AS n\n",
            "test.yaml:2:3: queries.app: missing key metrics (the query's columns with their usage)",
        ),
        (
            "queries:\n  app:\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:2:3: queries.app: missing key query (the SELECT whose rows become the series)",
        ),
        (
            "queries:\n  app:\n    query: SELECT 1 AS n\n    metrics:\n      - n:\n          usage: gauge\n",
            "test.yaml:6:11: queries.app.metrics[0].n.usage: unknown usage \"gauge\": expected LABEL, GAUGE, COUNTER, DURATION, MAPPEDMETRIC or DISCARD",
        ),
        (
            "queries:\n  app:\n    query: SELECT 1 AS n\n    metrics:\n      - n:\n          usage: HISTOGRAM\n",
            "test.yaml:6:11: queries.app.metrics[0].n.usage: HISTOGRAM is not supported by pgsidecar: export the buckets as a GAUGE per bound",
        ),
        (
            "queries:\n  app:\n    query: SELECT 1 AS n\n    metrics: []\n",
            "test.yaml:4:5: queries.app.metrics: no metrics: list the query's columns with their usage (LABEL, GAUGE, ...)",
        ),
        (
            "queries:\n  app:\n    query: \"  \"\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:3:5: queries.app.query: must not be empty",
        ),
        (
            "queries:\n  app:\n    query: SELECT 1 AS n; SELECT 2\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:3:5: queries.app.query: must be a single statement: remove the ';' between statements",
        ),
        (
            "queries:\n  app:\n    query: UPDATE t SET n = 1\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:3:5: queries.app.query: must be a query (SELECT, WITH, VALUES or TABLE), not \"UPDATE\"",
        ),
        (
            "queries:\n  app:\n    query: SELECT 1 AS n\n    runonserver: 'newer than 13'\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:4:5: queries.app.runonserver: not a version range such as \">=13.0.0 <16.0.0\": \"newer\" is not a version such as 13.0.0",
        ),
        (
            "queries:\n  app:\n    query: SELECT 1 AS n\n    metrics:\n      - n:\n          usage: MAPPEDMETRIC\n",
            "test.yaml:5:9: queries.app.metrics[0].n: missing key metric_mapping: usage MAPPEDMETRIC maps each text to a number",
        ),
        (
            "queries:\n  app-orders:\n    query: SELECT 1 AS n\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:2:3: queries.app-orders: a query's name is a metric prefix: letters, digits and _, not starting with a digit, got \"app-orders\"",
        ),
        (
            "queries:\n  app:\n    query: SELECT 1 AS n\n    interval: 10s\n    timeout: 20s\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:5:5: queries.app.timeout: timeout 20s is longer than the interval 10s",
        ),
        (
            "queries:\n  app:\n    query: SELECT 1 AS n\n    max_series: 0\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:4:5: queries.app.max_series: must be between 1 and 100000, got 0",
        ),
        (
            "queries:\n  pg_stat_database:\n    query: SELECT 1 AS n\n    metrics:\n      - n:\n          usage: GAUGE\n",
            "test.yaml:2:3: queries.pg_stat_database: the prefix pg_stat_database is the built-in collector stat_database's: rename the query, or turn the collector off (collectors.stat_database.enabled: false)",
        ),
        (
            "queries:\n  pg_stat_user:\n    query: SELECT 1 AS tables_seq_scan\n    metrics:\n      - tables_seq_scan:\n          usage: COUNTER\n",
            "test.yaml:2:3: queries.pg_stat_user: column tables_seq_scan: pg_stat_user_tables_seq_scan is exported by the built-in collector stat_user_tables: rename the query, or turn the collector off (collectors.stat_user_tables.enabled: false)",
        ),
        (
            "queries:\n  pgsidecar:\n    query: SELECT 1 AS up\n    metrics:\n      - up:\n          usage: GAUGE\n",
            "test.yaml:2:3: queries.pgsidecar: column up: pgsidecar_up is one of pgsidecar's own families",
        ),
    ];
    for (yaml, want) in cases {
        match load(yaml, &Flags::default(), &[]) {
            Ok(_) => panic!("should be invalid:\n{yaml}"),
            Err(p) => assert_eq!(p, vec![want.to_string()], "{yaml}"),
        }
    }
}

#[test]
fn a_built_in_name_is_free_once_its_collector_is_off() {
    let yaml = "collectors:\n  stat_database:\n    enabled: false\nqueries:\n  pg_stat_database:\n    query: SELECT datname, xact_commit FROM pg_stat_database\n    metrics:\n      - datname:\n          usage: LABEL\n      - xact_commit:\n          usage: COUNTER\n";
    let c = load(yaml, &Flags::default(), &[]).unwrap();
    assert_eq!(c.queries[0].collector(), "query:pg_stat_database");
}

#[test]
fn the_extend_file_names_its_own_problems() {
    let path = file(
        "extend",
        "app:\n  query: SELECT 1 AS n\n  metrics:\n    - n:\n        usage: GAUGES\nother:\n  query: SELECT 1 AS n\n  metrics:\n    - n:\n        usage: GAUGE\n",
    );
    let yaml = "queries:\n  other:\n    query: SELECT 2 AS n\n    metrics:\n      - n:\n          usage: GAUGE\n";
    let p = load(yaml, &extend(&path), &[]).unwrap_err();
    assert_eq!(
        p,
        vec![
            format!(
                "{path}:5:9: app.metrics[0].n.usage: unknown usage \"GAUGES\": expected LABEL, GAUGE, COUNTER, DURATION, MAPPEDMETRIC or DISCARD"
            ),
            format!("{path}:6:1: other: query other is defined in the config file's queries: too"),
        ]
    );
    // The environment names the file when the flag does not.
    let p = load("", &Flags::default(), &[("PG_EXPORTER_EXTEND_QUERY_PATH", &path)]).unwrap_err();
    assert!(p[0].starts_with(&format!("{path}:5:9: ")), "{p:?}");
    let p = load("", &extend("/nonexistent/queries.yaml"), &[]).unwrap_err();
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("--extend.query-path: cannot read /nonexistent/queries.yaml: "),
        "{p:?}"
    );
    let bad = file("extend-yaml", "app: [unclosed\n");
    let p = load("", &extend(&bad), &[]).unwrap_err();
    assert!(
        p[0].starts_with(&format!("{bad}:")) && p[0].contains("invalid YAML"),
        "{p:?}"
    );
}

#[test]
fn the_example_file_loads_with_the_flag_and_the_environment() {
    let path = crate::support::root()
        .join("examples/queries.yaml")
        .display()
        .to_string();
    let c = load("", &extend(&path), &[]).unwrap();
    let names: Vec<String> = c.queries.iter().map(|q| q.collector()).collect();
    assert_eq!(
        names,
        [
            "query:pg_table_bloat",
            "query:pg_prepared_transactions",
            "query:pg_sequence_usage",
            "query:mluvme_users",
            "query:mluvme_words"
        ]
    );
    let c = load("", &Flags::default(), &[("PG_EXPORTER_EXTEND_QUERY_PATH", &path)]).unwrap();
    assert_eq!(c.queries.len(), 5);
    assert_eq!(c.queries[0].interval, std::time::Duration::from_secs(300));
    assert_eq!(
        c.queries[3].interval,
        std::time::Duration::from_secs(60),
        "cache_seconds"
    );
}

#[test]
fn the_binary_checks_the_example_file_and_lists_its_collectors() {
    let path = crate::support::root().join("examples/queries.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .arg("--config.check")
        .env("PG_EXPORTER_EXTEND_QUERY_PATH", &path)
        .env("DATA_SOURCE_NAME", "host=127.0.0.1 user=nobody dbname=x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.trim_end().ends_with(
            ", query:pg_table_bloat, query:pg_prepared_transactions, query:pg_sequence_usage, query:mluvme_users, query:mluvme_words"
        ),
        "{stdout}"
    );
}

#[test]
fn the_binary_refuses_a_bad_extend_file() {
    let path = file(
        "binary",
        "app:\n  query: DELETE FROM users\n  metrics:\n    - n:\n        usage: GAUGE\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .args(["--config.check", "--extend.query-path", &path])
        .env("DATA_SOURCE_NAME", "host=127.0.0.1 user=nobody dbname=x")
        .env_remove("PG_EXPORTER_EXTEND_QUERY_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "pgsidecar: invalid configuration (1 problem):\n  {path}:2:3: app.query: must be a query (SELECT, WITH, VALUES or TABLE), not \"DELETE\"\n"
        )
    );
}
