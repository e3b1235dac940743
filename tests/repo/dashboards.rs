//! The Grafana dashboards in `dashboards/`: importable structure (variables,
//! datasource references, panel ids and layout, units), queries that parse as
//! PromQL (`promtool check rules`), metric names that the README's
//! "Metrics" section documents, and the scope rule: a query about the server
//! (anything but [`PER_POD`] metrics) is filtered by `job` only and
//! aggregates `instance` and `pod` away, so that its lines go on when
//! leadership moves to another sidecar (`dashboards_move` moves it for real).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};

const DASHBOARDS: [&str; 8] = [
    "pgsidecar-overview.json",
    "pgsidecar-queries.json",
    "pgsidecar-connections.json",
    "pgsidecar-objects.json",
    "pgsidecar-self.json",
    "pgsidecar-pgbouncer.json",
    "pgsidecar-probes.json",
    "pgsidecar-server.json",
];

/// Metrics about one pgsidecar process or its pod, which every sidecar
/// exports for itself: the pools, and pgsidecar's own health, process and
/// connection pool. A trailing `*` marks a prefix. Panels of these are
/// filtered by `job` and `instance` and may show one line per instance.
///
/// Every other metric is server-wide: only the leader exports it (the
/// collector health families too, except for the `pools` collector), or, like
/// `pgsidecar_slow_query_threshold_seconds`, it is configuration that all the
/// sidecars of a job share. Queries of these are filtered by `job` only and
/// aggregate `instance` and `pod` away.
pub const PER_POD: &[&str] = &[
    "pg_up",
    "pg_exporter_*",
    "pgsidecar_leader",
    "pgsidecar_leader_changes_total",
    "pgsidecar_coordination_mode",
    "pgsidecar_build_info",
    "pgsidecar_config_*",
    "pgsidecar_db_pool_*",
    "pgsidecar_pool_*",
    "process_*",
];

/// Whether `metric` is one of [`PER_POD`].
pub fn per_pod(metric: &str) -> bool {
    PER_POD.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => metric.starts_with(prefix),
        None => metric == *p,
    })
}

/// The exported metrics a query selects.
fn selected(expr: &str) -> Vec<String> {
    identifiers(expr)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| exported_name(name))
        .collect()
}

/// A query about the server: it selects a metric that is not [`PER_POD`].
pub fn server_wide(expr: &str) -> bool {
    selected(expr).iter().any(|m| !per_pod(m))
}

use crate::support::root;

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

/// Every target's panel title, expression and legend format.
fn queries(d: &Value) -> Vec<(String, String, String)> {
    targets(d)
        .into_iter()
        .map(|(title, t)| {
            let e = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            let legend = t["legendFormat"].as_str().unwrap_or("");
            (title, e.to_string(), legend.to_string())
        })
        .collect()
}

/// Every target's panel title and expression.
pub fn exprs(d: &Value) -> Vec<(String, String)> {
    queries(d).into_iter().map(|(title, e, _)| (title, e)).collect()
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
    for var in ["datasource", "job", "instance", "datname", "pool", "database"] {
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
    let result = crate::support::promtool::check_rules(&json!([{"name": "x", "rules": rules}]), "dashboards");
    let index: String = origin
        .iter()
        .enumerate()
        .map(|(i, o)| format!("  dash:expr_{i}: {o}\n"))
        .collect();
    if let Err(report) = result {
        panic!("promtool check rules failed:\n{report}\nrules:\n{index}");
    }
}

/// The PromQL identifiers of an expression outside string literals, each with
/// the byte offset just past it.
fn identifiers(expr: &str) -> Vec<(String, usize)> {
    lex(expr)
        .into_iter()
        .filter_map(|l| match l {
            Lexeme::Name(name, end) => Some((name, end)),
            Lexeme::Bracket(_) => None,
        })
        .collect()
}

/// A piece of a query: a name with the offset where it ends, or one of
/// `(){}[]`.
enum Lexeme {
    Name(String, usize),
    Bracket(u8),
}

/// A query's names and brackets. String literals, numbers and durations
/// (`5m`, `1e3`) and operators are left out.
fn lex(expr: &str) -> Vec<Lexeme> {
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
            out.push(Lexeme::Name(expr[start..i].to_string(), i));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else {
            if b"(){}[]".contains(&c) {
                out.push(Lexeme::Bracket(c));
            }
            i += 1;
        }
    }
    out
}

fn exported_name(name: &str) -> bool {
    ["pg_", "pgsidecar_", "process_", "pgbouncer_"]
        .iter()
        .any(|p| name.starts_with(p))
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

/// The queries of the template variables other than `job` and `instance`
/// (those two are checked as a whole above), as (variable name, query).
fn variable_queries(d: &Value) -> Vec<(String, String)> {
    d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query" && v["name"] != "job" && v["name"] != "instance")
        .map(|v| {
            (
                format!("variable ${}", v["name"].as_str().unwrap_or("")),
                variable_query(v).to_string(),
            )
        })
        .collect()
}

/// Server-wide selectors are filtered by `job` and not by `instance` or
/// `pod` (the series are on whichever instance leads); [`PER_POD`] ones by
/// `job` and `instance`.
#[test]
fn every_metric_is_documented_and_every_selector_is_filtered() {
    let (names, families) = documented_metrics();
    assert!(
        names.contains("pg_up") && names.contains("pg_stat_database_xact_rollback"),
        "{names:?}"
    );
    let mut problems = Vec::new();
    for (name, d) in dashboards() {
        for (title, expr) in exprs(&d).into_iter().chain(variable_queries(&d)) {
            for (ident, end) in identifiers(&expr) {
                if !exported_name(&ident) {
                    continue;
                }
                let known = names.contains(&ident)
                    || ident.starts_with("process_")
                    || families.iter().any(|f| ident.starts_with(f.as_str()));
                if !known {
                    problems.push(format!(
                        "{name}: {title:?}: {ident} is not in the README's metric tables"
                    ));
                }
                let rest = expr[end..].trim_start();
                let selector = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(s, _)| s);
                let selector = selector.unwrap_or("");
                let by_job = selector.contains("job=~\"$job\"");
                // The label names the selector matches on.
                let by_pod = selector
                    .split(',')
                    .filter_map(|m| m.split(['=', '!']).next())
                    .any(|l| matches!(l.trim(), "instance" | "pod"));
                if per_pod(&ident) {
                    if !(by_job && selector.contains("instance=~\"$instance\"")) {
                        problems.push(format!(
                            "{name}: {title:?}: {ident} (per pod) is not filtered by job=~\"$job\" and instance=~\"$instance\""
                        ));
                    }
                } else if !by_job || by_pod {
                    problems.push(format!(
                        "{name}: {title:?}: {ident} (server-wide) is not filtered by job=~\"$job\" alone: {{{selector}}}"
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

/// A query's tokens as far as grouping goes: names and parentheses. String
/// literals, label matchers (`{...}`), ranges (`[5m]`), numbers and operators
/// are left out.
#[derive(Debug, PartialEq)]
enum Token {
    Name(String),
    Open,
    Close,
}

fn tokens(expr: &str) -> Vec<Token> {
    // Inside a matcher `{...}` or a range `[...]`: nothing that groups.
    let mut inside = 0usize;
    let mut out = Vec::new();
    for l in lex(expr) {
        match l {
            Lexeme::Bracket(b'{' | b'[') => inside += 1,
            Lexeme::Bracket(b'}' | b']') => inside = inside.saturating_sub(1),
            _ if inside > 0 => {}
            Lexeme::Bracket(b'(') => out.push(Token::Open),
            Lexeme::Bracket(b')') => out.push(Token::Close),
            Lexeme::Name(name, _) => out.push(Token::Name(name)),
            Lexeme::Bracket(_) => {}
        }
    }
    out
}

const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "quantile",
    "topk",
    "bottomk",
    "limitk",
    "limit_ratio",
];

/// Aggregations that pick series and keep all their labels, whatever their
/// grouping.
const PICKERS: [&str; 4] = ["topk", "bottomk", "limitk", "limit_ratio"];

/// A `by (...)` or `without (...)` clause at `at`: whether its result has
/// neither `instance` nor `pod`, and the index just past it.
fn grouping(tokens: &[Token], at: usize) -> Option<(bool, usize)> {
    let Some(Token::Name(keyword)) = tokens.get(at) else {
        return None;
    };
    if (keyword != "by" && keyword != "without") || tokens.get(at + 1) != Some(&Token::Open) {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = at + 2;
    while let Some(Token::Name(l)) = tokens.get(i) {
        labels.push(l.as_str());
        i += 1;
    }
    let has = |l: &str| labels.contains(&l);
    let drops = if keyword == "by" {
        !has("instance") && !has("pod")
    } else {
        has("instance") && has("pod")
    };
    Some((drops, i + 1))
}

fn matching_close(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            Token::Name(_) => {}
        }
    }
    tokens.len()
}

/// The metrics a query selects outside every aggregation whose result has
/// neither `instance` nor `pod` (`max(...)`, `sum by (job, datname) (...)`,
/// `sum without (instance, pod) (...)`, in either clause position; not
/// `topk`, which keeps its series' labels), plus any `label_replace` or
/// `label_join`, which could make an `instance` label anew. Empty means the
/// query's result cannot carry `instance` or `pod`.
fn not_aggregated_away(expr: &str) -> Vec<String> {
    let tokens = tokens(expr);
    // For each `(`: whether it opens the argument of such an aggregation.
    let mut drops = vec![false; tokens.len()];
    for (i, t) in tokens.iter().enumerate() {
        let Token::Name(name) = t else { continue };
        if !AGGREGATIONS.contains(&name.as_str()) {
            continue;
        }
        let (leading, open) = match grouping(&tokens, i + 1) {
            Some((d, next)) => (Some(d), next),
            None => (None, i + 1),
        };
        if tokens.get(open) == Some(&Token::Open) {
            let trailing = grouping(&tokens, matching_close(&tokens, open) + 1).map(|(d, _)| d);
            drops[open] = !PICKERS.contains(&name.as_str()) && leading.or(trailing).unwrap_or(true);
        }
    }
    let mut open = Vec::new();
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Open => open.push(drops[i]),
            Token::Close => {
                open.pop();
            }
            Token::Name(n) if n == "label_replace" || n == "label_join" => out.push(n.clone()),
            Token::Name(n) if exported_name(n) && !open.contains(&true) => out.push(n.clone()),
            Token::Name(_) => {}
        }
    }
    out
}

#[test]
fn the_aggregation_check_finds_what_keeps_instance_or_pod() {
    for ok in [
        r#"max(pg_a{job=~"$job"})"#,
        r#"sum by (job, datname) (pg_a{job=~"$job", x="by (instance)"})"#,
        "sum without (instance, pod) (rate(pg_a[5m]))",
        "sum(pg_a) by (job)",
        "topk(10, max by (datname) (pg_a))",
        "count(min without (instance, pod) (pg_a) == 0) or vector(0)",
        "time() - max by (job) (pg_a) / on (job) group_left max by (job) (pg_b)",
    ] {
        assert_eq!(not_aggregated_away(ok), Vec::<String>::new(), "{ok}");
    }
    for (bad, names) in [
        ("pg_a", vec!["pg_a"]),
        ("max by (job, instance) (pg_a)", vec!["pg_a"]),
        ("max by (pod) (pg_a)", vec!["pg_a"]),
        ("sum without (instance) (pg_a)", vec!["pg_a"]),
        ("sum(pg_a) by (instance)", vec!["pg_a"]),
        ("topk(10, rate(pg_a[5m]))", vec!["pg_a"]),
        ("max by (job) (pg_a) / on (job) pg_b", vec!["pg_b"]),
        (
            r#"max(label_replace(pg_a, "instance", "$1", "x", "(.*)"))"#,
            vec!["label_replace"],
        ),
    ] {
        assert_eq!(not_aggregated_away(bad), names, "{bad}");
    }
}

/// A server-wide query's result has no `instance` or `pod` label, so its lines
/// do not change identity when another sidecar becomes leader; nor does its
/// legend name them.
#[test]
fn server_wide_queries_aggregate_instance_and_pod_away() {
    let mut problems = Vec::new();
    let (mut server, mut pod) = (0, 0);
    for (name, d) in dashboards() {
        for (title, expr, legend) in queries(&d) {
            if !server_wide(&expr) {
                pod += 1;
                continue;
            }
            server += 1;
            let kept = not_aggregated_away(&expr);
            if !kept.is_empty() {
                problems.push(format!(
                    "{name}: panel {title:?}: {kept:?} not inside an aggregation without instance and pod: {expr}"
                ));
            }
            let legend: String = legend.split_whitespace().collect();
            if legend.contains("{{instance}}") || legend.contains("{{pod}}") {
                problems.push(format!("{name}: panel {title:?}: legend {legend:?} names a pod"));
            }
        }
    }
    assert!(server > 0 && pod > 0, "{server} server-wide and {pod} per-pod queries");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every metric a collector declares in a column table, and every
/// collector's name, is in the README: adding a collector means
/// documenting it.
#[test]
fn every_declared_metric_and_collector_is_documented() {
    let (names, families) = documented_metrics();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut missing = Vec::new();
    for def in pgsidecar::collectors::ALL {
        if !readme.contains(&format!("`{}`", def.name)) {
            missing.push(format!("collector {}", def.name));
        }
        if let pgsidecar::collectors::Source::Table(t) = &def.source {
            for c in t.columns {
                let documented = names.contains(c.metric) || families.iter().any(|f| c.metric.starts_with(f.as_str()));
                if !documented {
                    missing.push(format!("{} ({})", c.metric, def.name));
                }
            }
        }
    }
    assert!(missing.is_empty(), "not in the README's Metrics section: {missing:#?}");
    assert!(names.len() > 50, "the README parser found only {} names", names.len());
}
