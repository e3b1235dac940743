//! The alert rules in `alerts/`: `promtool check rules` and `promtool test
//! rules` pass, and every alert has a severity, a summary, a description, a
//! runbook section in `docs/runbook.md` and at least one unit test that
//! fires it. No PostgreSQL needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

const RUNBOOK_URL: &str = "https://github.com/pgsidecar/pgsidecar/blob/main/docs/runbook.md#";

use crate::support::root;

/// The `*.yml` files directly in `dir`, sorted.
fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .yml files in {}", dir.display());
    files
}

/// Runs `promtool <args> <files>` in the repository root and fails with its
/// output unless it succeeds.
fn promtool(args: &[&str], files: &[PathBuf]) {
    let out = Command::new("promtool")
        .args(args)
        .args(files)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("run promtool (Debian package prometheus; scripts/test installs it): {e}"));
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn seq<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

fn string<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to `-`, other
/// punctuation except `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading in the runbook, outside code blocks.
fn runbook_anchors() -> BTreeSet<String> {
    let path = root().join("docs/runbook.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            anchors.insert(anchor(line.trim_start_matches('#')));
        }
    }
    anchors
}

#[test]
fn promtool_checks_the_rules() {
    promtool(&["check", "rules"], &yml_files(&root().join("alerts")));
}

#[test]
fn promtool_unit_tests_pass() {
    promtool(&["test", "rules"], &yml_files(&root().join("alerts/tests")));
}

#[test]
fn every_alert_is_labelled_documented_and_tested() {
    let anchors = runbook_anchors();

    // Alert names that at least one unit test expects to fire, and every
    // alert name a unit test mentions.
    let mut fired = BTreeSet::new();
    let mut mentioned = BTreeSet::new();
    for file in yml_files(&root().join("alerts/tests")) {
        let doc = load(&file);
        for test in seq(&doc, "tests") {
            for case in seq(test, "alert_rule_test") {
                let name = string(case, &["alertname"]).unwrap_or_default().to_string();
                if !seq(case, "exp_alerts").is_empty() {
                    fired.insert(name.clone());
                }
                mentioned.insert(name);
            }
        }
    }

    let mut problems = Vec::new();
    let mut alerts = BTreeSet::new();
    for file in yml_files(&root().join("alerts")) {
        let doc = load(&file);
        for group in seq(&doc, "groups") {
            for rule in seq(group, "rules") {
                let Some(name) = string(rule, &["alert"]) else {
                    continue;
                };
                alerts.insert(name.to_string());
                let mut problem = |p: String| problems.push(format!("{}: {name}: {p}", file.display()));
                match string(rule, &["labels", "severity"]) {
                    Some("critical" | "warning" | "info") => {}
                    other => problem(format!("severity {other:?} is not critical, warning or info")),
                }
                if string(rule, &["for"]).is_none_or(str::is_empty) {
                    problem("no for: duration".into());
                }
                for key in ["summary", "description"] {
                    if string(rule, &["annotations", key]).is_none_or(|s| s.trim().is_empty()) {
                        problem(format!("no {key} annotation"));
                    }
                }
                match string(rule, &["annotations", "runbook_url"]).map(|u| u.strip_prefix(RUNBOOK_URL)) {
                    None => problem("no runbook_url annotation".into()),
                    Some(None) => problem(format!("runbook_url does not start with {RUNBOOK_URL}")),
                    Some(Some(a)) if a != name.to_lowercase() => {
                        problem(format!("runbook anchor #{a} is not the lower-case alert name"))
                    }
                    Some(Some(a)) if !anchors.contains(a) => {
                        problem(format!("docs/runbook.md has no heading with anchor #{a}"))
                    }
                    Some(Some(_)) => {}
                }
                if !mentioned.contains(name) {
                    problem("no unit test in alerts/tests mentions it".into());
                } else if !fired.contains(name) {
                    problem("no unit test in alerts/tests expects it to fire".into());
                }
            }
        }
    }
    assert!(alerts.len() >= 20, "only {} alerts found: {alerts:?}", alerts.len());
    for name in mentioned.difference(&alerts) {
        problems.push(format!("alerts/tests: unit test for unknown alert {name}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
