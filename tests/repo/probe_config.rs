//! Bad probes are refused at load, each with file, line, column, key and
//! its exact message: every case of the safety list (multiple statements,
//! DML, writable CTEs, DDL, `COPY`, side-effecting functions), and the
//! probe's other keys. Nothing listens: the binary's `--config.check` exits 2.

use std::collections::BTreeMap;

use pgsidecar::config::{ConfigError, Flags};

fn problems(yaml: &str) -> Vec<String> {
    match pgsidecar::config_from_yaml(yaml, "test.yaml", &Flags::default(), &BTreeMap::<String, String>::new()) {
        Ok(_) => panic!("config should be invalid:\n{yaml}"),
        Err(ConfigError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A config with one probe whose query is `query` (YAML-quoted).
fn with_query(query: &str) -> String {
    format!("checks:\n  probes:\n    - name: p\n      query: {query:?}\n")
}

#[test]
fn every_unsafe_query_is_refused_with_its_message() {
    let at = "test.yaml:4:7: checks.probes[0].query: ";
    let cases = [
        (
            "SELECT 1; DELETE FROM messages",
            "must be a single statement: remove the ';' between statements",
        ),
        (
            "INSERT INTO messages (user_id, text) VALUES (1, 'x')",
            "must be a query (SELECT, WITH, VALUES or TABLE), not \"INSERT\"",
        ),
        (
            "UPDATE users SET level = 'x'",
            "must be a query (SELECT, WITH, VALUES or TABLE), not \"UPDATE\"",
        ),
        (
            "DELETE FROM messages",
            "must be a query (SELECT, WITH, VALUES or TABLE), not \"DELETE\"",
        ),
        (
            "WITH gone AS (DELETE FROM messages RETURNING id) SELECT count(*) FROM gone",
            "must not change data: the WITH query \"gone\" is DELETE (a data-modifying WITH)",
        ),
        (
            "WITH s AS (SELECT 1) UPDATE users SET level = 'x'",
            "must not change data: the statement after WITH is UPDATE",
        ),
        (
            "CREATE INDEX idx ON messages (text)",
            "must be a query (SELECT, WITH, VALUES or TABLE), not \"CREATE\"",
        ),
        (
            "DROP INDEX idx_messages_user_created",
            "must be a query (SELECT, WITH, VALUES or TABLE), not \"DROP\"",
        ),
        (
            "COPY messages TO STDOUT",
            "must be a query (SELECT, WITH, VALUES or TABLE), not \"COPY\"",
        ),
        (
            "SELECT * FROM dblink('host=other', 'SELECT 1') AS t(x int)",
            "must not call dblink(): it has side effects beyond reading",
        ),
        (
            "SELECT dblink_exec('host=other', 'DELETE FROM t')",
            "must not call dblink_exec(): it has side effects beyond reading",
        ),
        (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
            "must not call pg_terminate_backend(): it has side effects beyond reading",
        ),
        (
            "SELECT set_config('statement_timeout', '0', false)",
            "must not call set_config(): it has side effects beyond reading",
        ),
        (
            "SELECT nextval('messages_id_seq')",
            "must not call nextval(): it has side effects beyond reading",
        ),
        (
            "SELECT pg_advisory_lock(42)",
            "must not call pg_advisory_lock(): it has side effects beyond reading",
        ),
        (
            "SELECT * FROM users FOR UPDATE",
            "must not lock rows: FOR UPDATE takes row locks",
        ),
        (
            "SELECT * INTO copy_of_users FROM users",
            "must not create a table: SELECT … INTO creates one",
        ),
        (
            "SELECT 'unterminated",
            "has an unterminated string literal (from character 8)",
        ),
    ];
    for (query, message) in cases {
        let got = problems(&with_query(query));
        assert_eq!(got, [format!("{at}{message}")], "{query}");
    }
}

#[test]
fn a_probes_other_keys_are_checked_too() {
    let cases = [
        (
            "checks:\n  probes:\n    - query: SELECT 1\n",
            vec!["test.yaml:3:5: checks.probes[0]: missing key name"],
        ),
        (
            "checks:\n  probes:\n    - name: p\n",
            vec!["test.yaml:3:5: checks.probes[0]: missing key query (a SELECT whose plan is watched)"],
        ),
        (
            "checks:\n  probes:\n    - name: \"a b\"\n      query: SELECT 1\n",
            vec![
                "test.yaml:3:7: checks.probes[0].name: a probe's name may hold letters, digits, _, - and . (at most 64), got \"a b\"",
            ],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT 1\n    - name: p\n      query: SELECT 2\n",
            vec!["test.yaml:5:7: checks.probes[1].name: probe \"p\" is defined twice"],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT 1\n      mode: analyze\n",
            vec!["test.yaml:5:7: checks.probes[0].mode: unknown mode \"analyze\": expected plan or execute"],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT $1, $2\n      params: [1]\n",
            vec![
                "test.yaml:5:7: checks.probes[0].params: params has 1 value, but the query has 2 parameters ($1 to $2)",
            ],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT 1\n      params: [1]\n",
            vec!["test.yaml:5:7: checks.probes[0].params: params has 1 value, but the query has 0 parameters"],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT $1::int\n      mode: execute\n",
            vec![
                "test.yaml:3:5: checks.probes[0]: mode execute runs the query: params must give a sample value for each of its 1 parameter ($1)",
            ],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT $1\n      params:\n        - [1]\n",
            vec!["test.yaml:6:9: checks.probes[0].params[0]: expected a string, number, boolean or null, got a list"],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT 1\n      interval: 500ms\n      timeout: 1s\n",
            vec![
                "test.yaml:5:7: checks.probes[0].interval: must be at least 1s, got 500ms",
                "test.yaml:6:7: checks.probes[0].timeout: timeout 1s is longer than the interval 500ms",
            ],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT 1\n      budget: 0ms\n      expect_index: 7\n",
            vec![
                "test.yaml:5:7: checks.probes[0].budget: must be greater than zero",
                "test.yaml:6:7: checks.probes[0].expect_index: expected an index name or a list of them, got a number (7)",
            ],
        ),
        (
            "checks:\n  probes:\n    - name: p\n      query: SELECT 1\n      forbid_seq_scan: [users]\n",
            vec![
                "test.yaml:5:7: checks.probes[0].forbid_seq_scan: unknown key (did you mean \"forbid_seq_scan_on\"?); expected one of: name, query, params, mode, interval, timeout, budget, expect_index, forbid_seq_scan_on",
            ],
        ),
        (
            "checks:\n  slow_queries:\n    explain:\n      enabled: true\n      per_hour: 0\n      timeout: 2m\n",
            vec![
                "test.yaml:5:7: checks.slow_queries.explain.per_hour: must be between 1 and 3600, got 0",
                "test.yaml:6:7: checks.slow_queries.explain.timeout: timeout 2m is longer than the interval 1m",
            ],
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(problems(yaml), expected, "{yaml}");
    }
}

/// The binary refuses such a file before it listens, with exit code 2.
#[test]
fn config_check_refuses_a_probe_that_writes() {
    let dir = std::env::temp_dir().join(format!("pgsidecar-probe-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probe.yaml");
    std::fs::write(
        &file,
        with_query("WITH gone AS (DELETE FROM messages RETURNING id) SELECT count(*) FROM gone"),
    )
    .unwrap();
    let (code, out) = crate::support::run_pgsidecar(
        &["--config.check", "--config.file", file.to_str().unwrap()],
        "host=127.0.0.1 user=u",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("probe.yaml:4:7: checks.probes[0].query: must not change data: the WITH query \"gone\" is DELETE"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
