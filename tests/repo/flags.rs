//! postgres_exporter's flags a migrating user already passes:
//! `--collector.<name>` / `--no-collector.<name>` for every collector, the
//! `--collector.stat_statements.*` options, `--collection-timeout`,
//! `--disable-settings-metrics` and `--disable-default-metrics`; flags win
//! over the file. Exact messages for the bad ones.

use std::collections::BTreeMap;
use std::time::Duration;

use pgsidecar::config::{CollectorFlag, Config, ConfigError, Flags, take_collector_flags};

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn flags(list: &[&str]) -> Flags {
    let (rest, collectors) = take_collector_flags(args(list));
    assert!(rest.is_empty(), "left for clap: {rest:?}");
    Flags {
        collectors,
        ..Flags::default()
    }
}

fn load(yaml: &str, flags: &Flags) -> Result<Config, Vec<String>> {
    match pgsidecar::config_from_yaml(yaml, "test.yaml", flags, &BTreeMap::<String, String>::new()) {
        Ok(c) => Ok(c),
        Err(ConfigError::Invalid(p)) => Err(p.iter().map(|p| p.to_string()).collect()),
        Err(e) => panic!("{e}"),
    }
}

fn enabled(c: &Config, name: &str) -> bool {
    c.collector(name)
        .unwrap_or_else(|| panic!("no collector {name}"))
        .enabled
}

fn names() -> String {
    pgsidecar::collectors::ALL
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn collector_switches_are_taken_out_of_the_command_line() {
    let (rest, taken) = take_collector_flags(args(&[
        "pgsidecar",
        "--collector.locks",
        "--no-collector.wal",
        "--collector.stat_statements.limit=5",
        "--collector.roles=false",
        "--web.listen-address",
        ":9188",
        "--",
        "--collector.replication",
    ]));
    assert_eq!(
        rest,
        args(&[
            "pgsidecar",
            "--collector.stat_statements.limit=5",
            "--web.listen-address",
            ":9188",
            "--",
            "--collector.replication",
        ])
    );
    let flag = |flag: &str, name: &str, enabled| CollectorFlag {
        flag: flag.into(),
        name: name.into(),
        enabled: Some(enabled),
    };
    assert_eq!(
        taken,
        vec![
            flag("--collector.locks", "locks", true),
            flag("--no-collector.wal", "wal", false),
            flag("--collector.roles=false", "roles", false),
        ]
    );
}

#[test]
fn flags_override_the_file_in_order() {
    let yaml = "collectors:\n  locks:\n    enabled: true\n  stat_wal_receiver:\n    enabled: false\n";
    let c = load(
        yaml,
        &flags(&[
            "--no-collector.locks",
            "--collector.stat_wal_receiver",
            "--collector.roles",
            "--no-collector.roles",
        ]),
    )
    .unwrap();
    assert!(!enabled(&c, "locks"));
    assert!(enabled(&c, "stat_wal_receiver"));
    assert!(!enabled(&c, "roles"), "the last flag wins");
    // pgsidecar's own collectors have switches too.
    let c = load("", &flags(&["--no-collector.pools", "--collector.stat_wal"])).unwrap();
    assert!(!enabled(&c, "pools") && enabled(&c, "stat_wal"));
    // A name upstream has and pgsidecar does not: turning it off is fine (it is off).
    assert!(load("", &flags(&["--no-collector.xlog_location"])).is_ok());
}

#[test]
fn statio_user_indexes_enables_the_collector_that_exports_its_series() {
    let c = load("", &flags(&["--collector.statio_user_indexes"])).unwrap();
    assert!(enabled(&c, "stat_user_indexes"));
    assert!(
        !enabled(&c, "statio_user_indexes"),
        "it never runs itself: the series appear once"
    );
    let c = load(
        "collectors:\n  stat_user_indexes:\n    enabled: false\n  statio_user_indexes:\n    enabled: true\n",
        &Flags::default(),
    )
    .unwrap();
    assert!(enabled(&c, "stat_user_indexes") && !enabled(&c, "statio_user_indexes"));
    let c = load(
        "collectors:\n  stat_user_indexes:\n    enabled: false\n",
        &Flags::default(),
    )
    .unwrap();
    assert!(!enabled(&c, "stat_user_indexes"));
}

#[test]
fn stat_statements_options_timeout_and_settings() {
    let f = Flags {
        stat_statements_limit: Some("25".into()),
        stat_statements_include_query: Some(true),
        stat_statements_query_length: Some("300".into()),
        collection_timeout: Some("1m".into()),
        disable_settings_metrics: true,
        ..Flags::default()
    };
    let yaml = "checks:\n  slow_queries:\n    top: 10\ncollectors:\n  settings:\n    enabled: true\n  database:\n    interval: 5m\n";
    let c = load(yaml, &f).unwrap();
    assert_eq!(c.checks.statements.top, 25);
    assert!(c.checks.statements.include_query_text);
    assert_eq!(c.checks.statements.query_text_length, 300);
    assert!(!enabled(&c, "settings"));
    // upstream's default 1m: cut to each collector's interval.
    assert_eq!(c.collector("locks").unwrap().timeout, Duration::from_secs(15));
    assert_eq!(c.collector("database").unwrap().timeout, Duration::from_secs(60));
    // statement_timeout follows the longest collector timeout.
    assert_eq!(c.datasource.statement_timeout, Duration::from_secs(60));
    let c = load(
        "",
        &Flags {
            collection_timeout: Some("2s".into()),
            ..Flags::default()
        },
    )
    .unwrap();
    assert_eq!(c.collector("locks").unwrap().timeout, Duration::from_secs(2));
}

#[test]
fn each_bad_flag_gets_its_exact_message() {
    let cases: Vec<(Flags, String)> = vec![
        (
            flags(&["--collector.lock"]),
            format!("--collector.lock: unknown collector (did you mean \"locks\"?); expected one of: {}", names()),
        ),
        (
            flags(&["--no-collector.nope"]),
            format!("--no-collector.nope: unknown collector; expected one of: {}", names()),
        ),
        (
            flags(&["--collector.xlog_location"]),
            "--collector.xlog_location: no such collector in pgsidecar: postgres_exporter's xlog_location reads \
             pg_current_xlog_location(), which PostgreSQL 10 removed; pgsidecar exports the WAL position as \
             pg_stat_replication_pg_current_wal_lsn_bytes (collector stat_replication) and \
             pg_replication_slots_slot_current_wal_lsn (collector replication_slots)"
                .into(),
        ),
        (
            flags(&["--collector.locks=maybe"]),
            "--collector.locks=maybe: expected --collector.locks, --no-collector.locks or a value of true or false"
                .into(),
        ),
        (
            Flags {
                stat_statements_limit: Some("all".into()),
                ..Flags::default()
            },
            "--collector.stat_statements.limit: expected a whole number between 1 and 10000, got \"all\"".into(),
        ),
        (
            Flags {
                stat_statements_query_length: Some("5".into()),
                ..Flags::default()
            },
            "--collector.stat_statements.query_length: expected a whole number between 16 and 10000, got \"5\"".into(),
        ),
        (
            Flags {
                collection_timeout: Some("soon".into()),
                ..Flags::default()
            },
            "--collection-timeout: invalid duration \"soon\": expected a number with a unit (ms, s, m, h), e.g. 15s or 500ms"
                .into(),
        ),
        (
            Flags {
                collection_timeout: Some("0s".into()),
                ..Flags::default()
            },
            "--collection-timeout: must be greater than zero".into(),
        ),
        (
            Flags {
                disable_default_metrics: true,
                ..Flags::default()
            },
            "--disable-default-metrics: pgsidecar has no separate set of default metrics: turn off what you do not \
             want with --no-collector.<name> (e.g. --no-collector.stat_database --no-collector.stat_activity), or \
             collectors.<name>.enabled: false in the config file"
                .into(),
        ),
    ];
    let mut wrong = Vec::new();
    for (f, expected) in &cases {
        let got = load("", f).err().unwrap_or_default();
        if got != [expected.clone()] {
            wrong.push(format!("expected: {expected}\n     got: {got:?}\n"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The binary takes the switches anywhere on its command line, and refuses
/// a bad one before doing anything else.
#[test]
fn the_binary_takes_the_switches() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
            .arg("--config.check")
            .args(extra)
            .env("DATA_SOURCE_NAME", "host=127.0.0.1 port=1 user=u dbname=d")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&[
        "--no-collector.locks",
        "--collector.stat_wal_receiver",
        "--collector.stat_statements.limit=7",
        "--collection-timeout",
        "3s",
        "--disable-settings-metrics",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let list = stdout.split("collectors: ").nth(1).unwrap().trim();
    let list: Vec<&str> = list.split(", ").collect();
    assert!(!list.contains(&"locks") && !list.contains(&"settings"), "{stdout}");
    assert!(
        list.contains(&"stat_wal_receiver") && list.contains(&"replication"),
        "{stdout}"
    );
    let (code, _, stderr) = run(&["--collector.lock"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with(
            "pgsidecar: invalid configuration (1 problem):\n  --collector.lock: unknown collector (did you mean \"locks\"?)"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = run(&[
        "--no-collector.stat_statements.include_query",
        "--collector.stat_statements.query_length",
        "500",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}
