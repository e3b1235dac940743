//! Bad configurations: every problem listed at once, each with file, line,
//! column, key path and reason; nothing listens. A table of exact messages.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use pgsidecar::config::{ConfigError, Flags};

fn problems(yaml: &str, flags: &Flags, env: &[(&str, &str)]) -> Vec<String> {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    match pgsidecar::config_from_yaml(yaml, "test.yaml", flags, &env) {
        Ok(_) => panic!("config should be invalid:\n{yaml}"),
        Err(ConfigError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn collectors() -> String {
    pgsidecar::collectors::ALL
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn each_bad_input_gets_its_exact_message() {
    let cases: Vec<(&str, String)> = vec![
        (
            "colectors:\n  database:\n    interval: 5m\n",
            "test.yaml:1:1: colectors: unknown key (did you mean \"collectors\"?); expected one of: datasource, web, log, collection, collectors, checks, coordination, pgbouncer, queries, databases".into(),
        ),
        (
            "datasource:\n  pool_size: many\n",
            "test.yaml:2:3: datasource.pool_size: expected a whole number between 1 and 32, got a string (\"many\")".into(),
        ),
        (
            "datasource:\n  pool_size: 0\n",
            "test.yaml:2:3: datasource.pool_size: must be between 1 and 32, got 0".into(),
        ),
        (
            "collection:\n  interval: 15\n",
            "test.yaml:2:3: collection.interval: invalid duration \"15\": expected a number with a unit (ms, s, m, h), e.g. 15s or 500ms".into(),
        ),
        (
            "collectors:\n  stat_databse:\n    enabled: true\n",
            format!("test.yaml:2:3: collectors.stat_databse: unknown collector (did you mean \"stat_database\"?); expected one of: {}", collectors()),
        ),
        (
            "collectors:\n  settings:\n    enabled: yes please\n",
            "test.yaml:3:5: collectors.settings.enabled: expected true or false, got a string (\"yes please\")".into(),
        ),
        (
            "collectors:\n  settings:\n    interval: 5s\n    timeout: 10s\n",
            "test.yaml:4:5: collectors.settings.timeout: timeout 10s is longer than the interval 5s".into(),
        ),
        (
            "datasource:\n  dsn: \"host=db port=notaport\"\n",
            "test.yaml:2:3: datasource.dsn: invalid DSN: invalid value for option `port`".into(),
        ),
        (
            "datasource:\n  dsn: \"host=db user\"\n",
            "test.yaml:2:3: datasource.dsn: invalid DSN: expected key=value pairs, and a word without a value was found: quote a value that holds spaces, e.g. application_name='my app'".into(),
        ),
        (
            "datasource:\n  sslmode: verify-full\n",
            "test.yaml: datasource.sslrootcert: sslmode verify-ca and verify-full need sslrootcert (a PEM file of trusted CA certificates)".into(),
        ),
        (
            "datasource:\n  sslmode: allow\n",
            "test.yaml:2:3: datasource.sslmode: unknown sslmode \"allow\": expected disable, prefer, require, verify-ca or verify-full".into(),
        ),
        (
            "log:\n  format: text\n",
            "test.yaml:2:3: log.format: unknown log format \"text\": expected logfmt or json".into(),
        ),
        (
            "web:\n  listen_address: 9188\n",
            "test.yaml:2:3: web.listen_address: expected a string, got a number (9188)".into(),
        ),
        (
            "web:\n  telemetry_path: /healthz\n",
            "test.yaml:2:3: web.telemetry_path: telemetry path \"/healthz\" is taken by pgsidecar's own endpoint".into(),
        ),
        (
            "web: [1, 2\n",
            "test.yaml:2:1: invalid YAML: did not find expected ',' or ']'".into(),
        ),
        (
            "coordination:\n  mode: leader\n",
            "test.yaml:2:3: coordination.mode: unknown coordination mode \"leader\": expected all, leader-election or none".into(),
        ),
        (
            "coordination:\n  lock_key: key\n",
            format!("test.yaml:2:3: coordination.lock_key: expected a whole number between 0 and {}, got a string (\"key\")", i64::MAX),
        ),
        ("- a\n- b\n", "test.yaml: expected a mapping, got a list".into()),
    ];
    let mut wrong = Vec::new();
    for (yaml, expected) in &cases {
        let got = problems(yaml, &Flags::default(), &[]);
        if got != [expected.clone()] {
            wrong.push(format!("yaml:\n{yaml}expected: {expected}\n     got: {got:?}\n"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_problem_is_listed_at_once() {
    let yaml = "datasource:\n  pool_size: -1\n  colour: blue\ncollection:\n  timeout: soon\ncollectors:\n  nope: {}\nlog:\n  level: loud\n";
    let got = problems(yaml, &Flags::default(), &[]);
    assert_eq!(
        got,
        vec![
            "test.yaml:5:3: collection.timeout: invalid duration \"soon\": expected a number with a unit (ms, s, m, h), e.g. 15s or 500ms".to_string(),
            format!("test.yaml:7:3: collectors.nope: unknown collector; expected one of: {}", collectors()),
            "test.yaml:3:3: datasource.colour: unknown key; expected one of: dsn, password_file, sslmode, sslrootcert, application_name, pool_size, connect_timeout, statement_timeout, lock_timeout, idle_in_transaction_session_timeout".to_string(),
            "test.yaml:2:3: datasource.pool_size: expected a whole number between 1 and 32, got a number (-1)".to_string(),
            "test.yaml:9:3: log.level: unknown log level \"loud\": expected debug, info, warn or error".to_string(),
        ]
    );
}

#[test]
fn flags_and_environment_are_named_as_the_source() {
    let flags = Flags {
        listen_address: Some("nope".into()),
        log_format: Some("xml".into()),
        ..Flags::default()
    };
    let got = problems("", &flags, &[("DATA_SOURCE_NAME", "host=db port=x")]);
    assert_eq!(
        got,
        vec![
            "DATA_SOURCE_NAME: invalid DSN: invalid value for option `port`".to_string(),
            "--web.listen-address: invalid listen address \"nope\": expected host:port, e.g. 0.0.0.0:9188 or :9188"
                .to_string(),
            "--log.format: unknown log format \"xml\": expected logfmt or json".to_string(),
        ]
    );
}

#[test]
fn precedence_flags_over_file_over_env_defaults() {
    let env: BTreeMap<String, String> = [
        ("PGHOST", "envhost"),
        ("PGUSER", "envuser"),
        ("PGPORT", "6543"),
        ("PGDATABASE", "envdb"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let yaml = "datasource:\n  dsn: \"host=filehost dbname=filedb\"\nweb:\n  listen_address: 127.0.0.1:9999\nlog:\n  level: debug\n";
    let flags = Flags {
        listen_address: Some(":7777".into()),
        ..Flags::default()
    };
    let c = pgsidecar::config_from_yaml(yaml, "test.yaml", &flags, &env).unwrap();
    assert_eq!(c.datasource.target(), "envuser@filehost:6543/filedb");
    assert_eq!(c.web.listen_address.to_string(), "0.0.0.0:7777");
    assert_eq!(c.log.level, tracing::Level::DEBUG);
    assert_eq!(c.datasource.application_name, "pgsidecar");
    assert_eq!(c.collector("database").unwrap().interval, Duration::from_secs(300));
    assert_eq!(c.collector("settings").unwrap().interval, Duration::from_secs(15));
    assert_eq!(c.collector("settings").unwrap().stale_after, Duration::from_secs(45));

    // DATA_SOURCE_NAME overrides the file's DSN; DATA_SOURCE_URI + _USER + _PASS compose one.
    let mut env2 = env.clone();
    env2.insert("DATA_SOURCE_URI".into(), "urihost:5433/uridb?sslmode=disable".into());
    env2.insert("DATA_SOURCE_USER".into(), "uriuser".into());
    env2.insert("DATA_SOURCE_PASS".into(), "pw".into());
    let c = pgsidecar::config_from_yaml(yaml, "test.yaml", &Flags::default(), &env2).unwrap();
    assert_eq!(c.datasource.target(), "uriuser@urihost:5433/uridb");
    assert_eq!(c.datasource.password().as_deref(), Some("pw"));
    env2.insert(
        "DATA_SOURCE_NAME".into(),
        "postgresql://dsnuser@dsnhost:6000/dsndb".into(),
    );
    let c = pgsidecar::config_from_yaml(yaml, "test.yaml", &Flags::default(), &env2).unwrap();
    assert_eq!(
        c.datasource.target(),
        "dsnuser@dsnhost:6000/dsndb",
        "_USER completes DATA_SOURCE_URI only"
    );
    assert_eq!(c.datasource.password(), None);
}

#[test]
fn password_files_are_read() {
    let dir = std::env::temp_dir().join(format!("pgsidecar-pwfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pass");
    std::fs::write(&file, "from-file\n").unwrap();
    let env: BTreeMap<String, String> = [
        ("DATA_SOURCE_URI".to_string(), "127.0.0.1:5432/app".to_string()),
        ("DATA_SOURCE_PASS_FILE".to_string(), file.display().to_string()),
    ]
    .into();
    let c = pgsidecar::config_from_yaml("", "test.yaml", &Flags::default(), &env).unwrap();
    assert_eq!(c.datasource.password().as_deref(), Some("from-file"));
    let got = problems(
        "",
        &Flags::default(),
        &[
            ("DATA_SOURCE_URI", "127.0.0.1:5432/app"),
            ("DATA_SOURCE_PASS_FILE", "/nonexistent/pass"),
        ],
    );
    assert_eq!(
        got,
        vec![
            "DATA_SOURCE_PASS_FILE: cannot read /nonexistent/pass: No such file or directory (os error 2)".to_string()
        ]
    );
    // Regression: datasource.password_file sent the whole file as the
    // password, and an empty file was accepted.
    std::fs::write(&file, "first-line\r\nsecond line, a comment\n").unwrap();
    let yaml = format!("datasource:\n  password_file: {}\n", file.display());
    let c = pgsidecar::config_from_yaml(&yaml, "test.yaml", &Flags::default(), &BTreeMap::new()).unwrap();
    assert_eq!(c.datasource.password().as_deref(), Some("first-line"));
    std::fs::write(&file, "\nhidden\n").unwrap();
    let got = problems(&yaml, &Flags::default(), &[]);
    assert_eq!(
        got,
        vec![format!(
            "test.yaml:2:3: datasource.password_file: {}: the first line, which must hold the password, is empty",
            file.display()
        )]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The binary exits non-zero before listening, printing every problem.
#[test]
fn binary_rejects_bad_config_before_listening() {
    let dir = std::env::temp_dir().join(format!("pgsidecar-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The config's listen address is a port this test holds: had pgsidecar
    // tried to listen before rejecting the config, it would have failed to
    // bind it ("listen on ...") instead of listing the problems.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        format!("web:\n  listen_address: 127.0.0.1:{port}\ncollection:\n  interval: fast\nlog:\n  levle: info\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .arg("--config.file")
        .arg(&file)
        .env_remove("DATA_SOURCE_NAME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("listen on"),
        "pgsidecar tried to listen before rejecting the config:\n{stderr}"
    );
    drop(held);
    assert_eq!(out.status.code(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(5));
    let f = file.display();
    assert_eq!(
        stderr,
        format!(
            "pgsidecar: invalid configuration (2 problems):\n  \
             {f}:4:3: collection.interval: invalid duration \"fast\": expected a number with a unit (ms, s, m, h), e.g. 15s or 500ms\n  \
             {f}:6:3: log.levle: unknown key (did you mean \"level\"?); expected one of: level, format\n"
        )
    );

    // --config.check on a good file: exit 0 without connecting (nothing listens on port 1).
    std::fs::write(&file, "datasource:\n  dsn: \"host=127.0.0.1 port=1 user=u dbname=d\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .args(["--config.check", "--config.file"])
        .arg(&file)
        .env_remove("DATA_SOURCE_NAME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("configuration is valid: target u@127.0.0.1:1/d"));

    let out = Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .args(["--config.check", "--config.file", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pgsidecar: /nonexistent.yaml: cannot read config file: No such file or directory (os error 2)\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mluvme_example_carries_the_teams_settings() {
    let env: BTreeMap<String, String> = [("DB_HOST", "db.internal"), ("POD_IP", "10.1.2.3")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let flags = Flags {
        config_file: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mluvme.yaml").into()),
        ..Flags::default()
    };
    let c = pgsidecar::load_config(&flags, &env).unwrap();
    let checks = &c.checks;
    assert_eq!(checks.slow_query_threshold, Duration::from_millis(100));
    assert_eq!(checks.pools.len(), 1);
    assert_eq!(checks.pools[0].capacity(), 30);
    assert!(checks.pools[0].matches("mluvme-api", "x", Some("10.1.2.3".parse().unwrap()), "mluvme"));
    assert!(!checks.pools[0].matches("mluvme-api", "x", Some("10.1.2.4".parse().unwrap()), "mluvme"));
    assert_eq!(checks.matviews[0].name, "user_stats_summary");
    assert_eq!(checks.matviews[0].max_age, Duration::from_secs(3600));
    assert_eq!(checks.expected_indexes.len(), 6);
    assert_eq!(checks.index_patterns[0].min_count, 11);
    assert_eq!(checks.migrations.as_ref().unwrap().expected.as_deref(), Some("003"));
    assert_eq!(c.datasource.target(), "pgsidecar@db.internal:5432/mluvme");

    let got = problems(
        "checks:\n  pools:\n    - name: api\n      client_addr: ${POD_IP}\n      size: 20\n",
        &Flags::default(),
        &[],
    );
    assert_eq!(
        got,
        vec![
            "test.yaml:4:7: checks.pools[0].client_addr: environment variable POD_IP is not set (used as ${POD_IP})"
                .to_string()
        ]
    );
}

#[test]
fn checks_errors_get_the_same_clear_messages() {
    let yaml = "checks:
  slow_queries:
    threshold: fast
  pools:
    - name: api
      size: 20
    - name: api
      application_name: x
      size: lots
      client_addr: 10.0.0.0/40
  materialized_views:
    - name: public.user_stats_summary
  indexes:
    expected: idx_a
    patterns:
      - min_count: 11
  migrations:
    expected: 3
  server:
    replication_lag: 0s
    locks_ratio: high
    lock_ratio: 2
";
    let got = problems(yaml, &Flags::default(), &[]);
    assert_eq!(
        got,
        vec![
            "test.yaml:3:5: checks.slow_queries.threshold: invalid duration \"fast\": expected a number with a unit (ms, s, m, h), e.g. 15s or 500ms",
            "test.yaml:22:5: checks.server.lock_ratio: unknown key (did you mean \"locks_ratio\"?); expected one of: replication_lag, archive_age, wraparound_ratio, locks_ratio",
            "test.yaml:20:5: checks.server.replication_lag: must be greater than zero",
            "test.yaml:21:5: checks.server.locks_ratio: expected a number greater than zero such as 0.8, got a string (\"high\")",
            "test.yaml:5:5: checks.pools[0]: a pool needs at least one of application_name, usename, client_addr, datname to recognise its connections",
            "test.yaml:10:7: checks.pools[1].client_addr: invalid address \"10.0.0.0/40\": expected an IP address or a network such as 10.0.0.0/8",
            "test.yaml:9:7: checks.pools[1].size: expected a whole number between 1 and 100000, got a string (\"lots\")",
            "test.yaml:7:7: checks.pools[1].name: pool \"api\" is defined twice",
            "test.yaml:12:5: checks.materialized_views[0]: missing key max_age (how old the view may get, e.g. 1h)",
            "test.yaml:14:5: checks.indexes.expected: expected a list, got a string (\"idx_a\")",
            "test.yaml:16:7: checks.indexes.patterns[0]: missing key pattern",
            "test.yaml:18:5: checks.migrations.expected: expected a string, got a number (3): quote the revision, e.g. \"003\", or YAML drops its leading zeros",
        ]
    );
}

#[test]
fn shipped_examples_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        // queries.yaml is a custom-queries file (--extend.query-path),
        // checked in query_config.rs.
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") || path.ends_with("queries.yaml") {
            continue;
        }
        let flags = Flags {
            config_file: Some(path.clone()),
            ..Flags::default()
        };
        let env: BTreeMap<String, String> = [("DB_HOST", "db.internal"), ("POD_IP", "10.1.2.3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Err(e) = pgsidecar::load_config(&flags, &env) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// Every source file says what it owns in a `//!` header (STYLE.md).
#[test]
fn every_source_file_has_a_module_doc() {
    fn walk(dir: &std::path::Path, missing: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, missing);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if !text.starts_with("//!") {
                    missing.push(path.display().to_string());
                }
            }
        }
    }
    let mut missing = Vec::new();
    for dir in ["src", "tests"] {
        walk(&crate::support::root().join(dir), &mut missing);
    }
    assert!(missing.is_empty(), "files without a //! header: {missing:?}");
}

/// Regression: `--config.check` panicked (exit 101, a backtrace) on these.
#[test]
fn config_check_reports_what_used_to_panic() {
    let dir = std::env::temp_dir().join(format!("pgsidecar-panics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let huge = dir.join("huge.yaml");
    std::fs::write(&huge, "collection:\n  interval: 18446744073709551615s\n").unwrap();
    let huge = huge.display().to_string();
    let cases: [(Vec<&str>, &str, &str); 3] = [
        (
            vec!["--config.check"],
            "host=127.0.0.1 user=u sslrootcert=%aé",
            "datasource.sslrootcert: %aé is not a readable file",
        ),
        (
            vec!["--config.check"],
            "postgresql://u@127.0.0.1/db?sslrootcert=%aé",
            "datasource.sslrootcert: %aé is not a readable file",
        ),
        (
            vec!["--config.check", "--config.file", huge.as_str()],
            "host=127.0.0.1",
            "collection.interval: duration \"18446744073709551615s\" is too long: at most 720h",
        ),
    ];
    for (args, dsn, expected) in cases {
        let (code, out) = crate::support::run_pgsidecar(&args, dsn);
        assert_eq!(code, 2, "{args:?} {dsn}: {out}");
        assert!(!out.contains("panicked"), "{out}");
        assert!(out.contains(expected), "{args:?} {dsn}: {out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: a `?` in an unencoded password hid the URI's sslmode, and
/// pgsidecar connected in plain text.
#[test]
fn a_uri_that_would_lose_its_sslmode_is_refused() {
    let (code, out) =
        crate::support::run_pgsidecar(&["--config.check"], "postgresql://u:x?y@127.0.0.1/db?sslmode=require");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("percent-encode it (? as %3F)"), "{out}");
    assert!(!out.contains("x?y"), "{out}");
    let (code, out) =
        crate::support::run_pgsidecar(&["--config.check"], "postgresql://u:x%3Fy@127.0.0.1/db?sslmode=require");
    assert_eq!(code, 0, "{out}");
}
