//! The Grafana dashboards in `dashboards/`: importable structure (variables,
//! datasource references, panel ids and layout, units), queries that parse as
//! PromQL (`promtool check rules`), and metric names that the README's
//! "Metrics" section documents.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

const DASHBOARDS: [&str; 5] = [
    "pgsidecar-overview.json",
    "pgsidecar-queries.json",
    "pgsidecar-connections.json",
    "pgsidecar-objects.json",
    "pgsidecar-self.json",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.json` in `dashboards/`, parsed, with its file name.
pub fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// All panels, those nested in rows included.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

fn targets(d: &Value) -> Vec<(String, &Value)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t))
        })
        .collect()
}

pub fn exprs(d: &Value) -> Vec<(String, String)> {
    targets(d)
        .into_iter()
        .map(|(title, t)| {
            let e = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            (title, e.to_string())
        })
        .collect()
}

#[test]
fn every_dashboard_is_present() {
    let names: BTreeSet<String> = dashboards().into_iter().map(|(n, _)| n).collect();
    for want in DASHBOARDS {
        assert!(names.contains(want), "dashboards/{want} is missing; found {names:?}");
    }
}

#[test]
fn dashboards_have_the_common_settings() {
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards() {
        assert_eq!(d["schemaVersion"], 39, "{name}");
        assert_eq!(d["editable"], true, "{name}");
        let uid = d["uid"].as_str().unwrap_or("");
        assert!(!uid.is_empty() && uid.len() <= 40, "{name}: uid {uid:?}");
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid:?} used twice");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}: title");
        assert_eq!(d["tags"], json!(["pgsidecar"]), "{name}");
        assert_eq!(d["time"]["from"], "now-1h", "{name}");
        assert_eq!(d["time"]["to"], "now", "{name}");
        assert_eq!(d["refresh"], "30s", "{name}");
    }
}

fn variable<'a>(d: &'a Value, name: &str) -> Option<&'a Value> {
    d["templating"]["list"].as_array()?.iter().find(|v| v["name"] == name)
}

fn variable_query(v: &Value) -> &str {
    v["query"]
        .get("query")
        .and_then(Value::as_str)
        .or_else(|| v["query"].as_str())
        .unwrap_or("")
}

#[test]
fn dashboards_have_the_datasource_job_and_instance_variables() {
    for (name, d) in dashboards() {
        let ds = variable(&d, "datasource").unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        for (var, query) in [
            ("job", "label_values(pg_up, job)"),
            ("instance", "label_values(pg_up{job=~\"$job\"}, instance)"),
        ] {
            let v = variable(&d, var).unwrap_or_else(|| panic!("{name}: no {var} variable"));
            assert_eq!(v["type"], "query", "{name}: {var}");
            assert_eq!(variable_query(v), query, "{name}: {var}");
            assert_eq!(v["multi"], true, "{name}: {var}");
            assert_eq!(v["includeAll"], true, "{name}: {var}");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}: {var}");
        }
    }
}

/// Every `datasource` reference anywhere in the JSON points at the variable.
#[test]
fn no_datasource_is_hard_coded() {
    fn walk(v: &Value, path: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{path}.{k}");
                    if k == "datasource" {
                        let uid = match child {
                            Value::Object(ds) => ds.get("uid").and_then(Value::as_str).unwrap_or(""),
                            Value::String(s) => s.as_str(),
                            _ => "",
                        };
                        if uid != "${datasource}" && uid != "$datasource" {
                            bad.push(format!("{here} = {child}"));
                        }
                    }
                    walk(child, &here, bad);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), bad);
                }
            }
            _ => {}
        }
    }
    for (name, d) in dashboards() {
        let mut bad = Vec::new();
        walk(&d, "", &mut bad);
        assert!(
            bad.is_empty(),
            "{name}: datasources other than ${{datasource}}:\n{}",
            bad.join("\n")
        );
        for p in panels(&d) {
            if p["targets"].as_array().is_some_and(|t| !t.is_empty()) {
                assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: panel {}", p["title"]);
            }
        }
    }
}

#[test]
fn panel_ids_are_unique_and_the_grid_has_no_overlaps() {
    for (name, d) in dashboards() {
        let all = panels(&d);
        assert!(!all.is_empty(), "{name}: no panels");
        let mut ids = BTreeSet::new();
        let mut rects = Vec::new();
        for p in &all {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: panel {} has no id", p["title"]));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            let g = &p["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
                g[k].as_u64()
                    .unwrap_or_else(|| panic!("{name}: panel {id} gridPos.{k} missing"))
            });
            assert!(
                w >= 1 && h >= 1 && x + w <= 24,
                "{name}: panel {id} gridPos {g} does not fit 24 columns"
            );
            rects.push((id, x, y, w, h));
        }
        for (i, a) in rects.iter().enumerate() {
            for b in &rects[i + 1..] {
                let overlap = a.1 < b.1 + b.3 && b.1 < a.1 + a.3 && a.2 < b.2 + b.4 && b.2 < a.2 + a.4;
                assert!(!overlap, "{name}: panels {} and {} overlap", a.0, b.0);
            }
        }
    }
}

#[test]
fn every_panel_with_queries_has_a_unit() {
    for (name, d) in dashboards() {
        for p in panels(&d) {
            if p["targets"].as_array().is_some_and(|t| !t.is_empty()) {
                let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
                assert!(!unit.is_empty(), "{name}: panel {} has no unit", p["title"]);
            }
        }
    }
}

/// Template variables replaced by values of the same kind, so the result is PromQL.
/// The expression with Grafana's variables filled in; `$job`, `$instance`
/// and the like match everything.
pub fn substitute(expr: &str) -> String {
    let mut e = expr
        .replace("$__rate_interval", "5m")
        .replace("${__rate_interval}", "5m")
        .replace("$__interval", "1m")
        .replace("${__interval}", "1m")
        .replace("$__range", "1h")
        .replace("${__range}", "1h");
    for var in ["datasource", "job", "instance", "datname", "pool"] {
        e = e
            .replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${var}"), ".*");
    }
    e
}

#[test]
fn every_query_parses_as_promql() {
    let mut rules = Vec::new();
    let mut origin = Vec::new();
    for (name, d) in dashboards() {
        for (title, expr) in exprs(&d) {
            let e = substitute(&expr);
            assert!(
                !e.contains('$'),
                "{name}: panel {title:?}: unknown variable left in {e}"
            );
            rules.push(json!({"record": format!("dash:expr_{}", rules.len()), "expr": e}));
            origin.push(format!("{name}: {title}"));
        }
    }
    assert!(!rules.is_empty());
    let file = json!({"groups": [{"name": "x", "rules": rules}]});
    let path = std::env::temp_dir().join(format!("pgsidecar-dashboards-{}.rules.yml", std::process::id()));
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run promtool (Debian package prometheus; scripts/test installs it): {e}"));
    let _ = std::fs::remove_file(&path);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let index: String = origin
        .iter()
        .enumerate()
        .map(|(i, o)| format!("  dash:expr_{i}: {o}\n"))
        .collect();
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{report}\nrules:\n{index}"
    );
}

/// The PromQL identifiers of an expression outside string literals, each with
/// the byte offset just past it.
fn identifiers(expr: &str) -> Vec<(String, usize)> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' && c != b'`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            out.push((expr[start..i].to_string(), i));
        } else if c.is_ascii_digit() {
            // Numbers and durations (5m, 1e3) are not names.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn exported_name(name: &str) -> bool {
    name.starts_with("pg_") || name.starts_with("pgsidecar_") || name.starts_with("process_")
}

/// Metric names the README's "Metrics" section documents: full names, names
/// abbreviated to a `_suffix` after a full name in the same table row, and
/// families such as `pg_settings_<name>` (returned as prefixes).
fn documented_metrics() -> (BTreeSet<String>, Vec<String>) {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("\n## Metrics").expect("README has a Metrics section");
    let section = &readme[start..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    let mut names = BTreeSet::new();
    let mut families = Vec::new();
    for line in section.lines() {
        let ticked: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
        let mut first: Option<&str> = None;
        for t in ticked {
            // `name{label}` in prose names the metric `name`.
            let t = t.split('{').next().unwrap_or(t);
            if let Some(prefix) = t.strip_suffix("<name>") {
                families.push(prefix.to_string());
            } else if exported_name(t) && t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                names.insert(t.to_string());
                first.get_or_insert(t);
            } else if let (Some(full), true) = (first, t.starts_with('_')) {
                for (i, _) in full.match_indices('_').filter(|(i, _)| *i > 0) {
                    names.insert(format!("{}{t}", &full[..i]));
                }
            }
        }
    }
    (names, families)
}

#[test]
fn every_metric_is_documented_and_every_selector_is_filtered() {
    let (names, families) = documented_metrics();
    assert!(
        names.contains("pg_up") && names.contains("pg_stat_database_xact_rollback"),
        "{names:?}"
    );
    let mut problems = Vec::new();
    for (name, d) in dashboards() {
        for (title, expr) in exprs(&d) {
            for (ident, end) in identifiers(&expr) {
                if !exported_name(&ident) {
                    continue;
                }
                let known = names.contains(&ident)
                    || ident.starts_with("process_")
                    || families.iter().any(|f| ident.starts_with(f.as_str()));
                if !known {
                    problems.push(format!(
                        "{name}: panel {title:?}: {ident} is not in the README's metric tables"
                    ));
                }
                let rest = expr[end..].trim_start();
                let selector = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(s, _)| s);
                let filtered =
                    selector.is_some_and(|s| s.contains("job=~\"$job\"") && s.contains("instance=~\"$instance\""));
                if !filtered {
                    problems.push(format!(
                        "{name}: panel {title:?}: {ident} is not filtered by job=~\"$job\" and instance=~\"$instance\""
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn identifiers_skip_strings_and_durations() {
    let ids: Vec<String> = identifiers(r#"rate(pg_x{a="pg_y\"z", b=~"$job"}[5m]) / on (job) pg_z"#)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(ids, ["rate", "pg_x", "a", "b", "on", "job", "pg_z"]);
}
