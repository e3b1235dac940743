//! Custom queries: the `queries:` section and the file named by
//! `--extend.query-path` (or `PG_EXPORTER_EXTEND_QUERY_PATH`), both in
//! postgres_exporter's `queries.yaml` format, read as is: a map of metric
//! prefix to `query`, `metrics` (a list of one-key maps, column to `usage`,
//! `description`, `mapping`), `master`, `cache_seconds` and `runonserver`.
//! pgsidecar adds `interval`, `timeout`, `max_series` (a row cap),
//! `min_server_version` / `max_server_version` (`server_version_num`) and
//! `databases` (the databases it runs in, with the top-level `databases:`).
//!
//! Everything that can be known without a server is checked here, with the
//! file, line and key: an unknown usage, a query without metrics or without
//! SQL, SQL that is not one reading statement (`sql::check_query`), names
//! Prometheus refuses, a version range that does not parse, and a family
//! name that another query or a built-in collector exports.

use std::time::Duration;

use serde_yaml::Value;

use super::{CollectorDefaults, Fields, Walker, join, kind, show, shown};

/// One custom query: a collector `query:<name>`.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomQuery {
    /// The metric prefix: each value column is `<name>_<column>`.
    pub name: String,
    /// The file it was read from (the config file or the extend file).
    pub file: String,
    /// The query as checked, without a trailing `;`.
    pub query: String,
    /// The declared columns, in the file's order.
    pub columns: Vec<QueryColumn>,
    /// postgres_exporter's `master`: accepted; a query runs in the DSN's
    /// database unless it has `databases`, so it changes nothing.
    pub master: bool,
    /// postgres_exporter's `cache_seconds`: the default interval.
    pub cache_seconds: Option<u64>,
    pub runonserver: Option<VersionRange>,
    pub interval: Duration,
    /// The statement's own `statement_timeout`.
    pub timeout: Duration,
    /// More rows than this fail the run.
    pub max_series: usize,
    /// Runs only on servers with `server_version_num` at least this.
    pub min_server_version: Option<u32>,
    /// Runs only on servers with `server_version_num` at most this.
    pub max_server_version: Option<u32>,
    /// pgsidecar's `databases`: the databases it runs in (names or
    /// patterns, among the DSN's and those `databases:` reads); empty: the
    /// DSN's only. Its series then carry `datname`.
    pub databases: Vec<String>,
}

impl CustomQuery {
    /// The name of its collector, as the `collector` label shows it.
    pub fn collector(&self) -> String {
        format!("query:{}", self.name)
    }

    /// Why it does not run on this server, if it does not.
    pub fn skip_reason(&self, server_version_num: u32) -> Option<String> {
        if let Some(min) = self.min_server_version
            && server_version_num < min
        {
            return Some(format!("min_server_version {min}: the server is {server_version_num}"));
        }
        if let Some(max) = self.max_server_version
            && server_version_num > max
        {
            return Some(format!("max_server_version {max}: the server is {server_version_num}"));
        }
        if let Some(r) = &self.runonserver {
            let v = VersionRange::server(server_version_num);
            if !r.matches(v) {
                return Some(format!(
                    "runonserver {:?} does not match the server's {}.{}.{}",
                    r.text, v[0], v[1], v[2]
                ));
            }
        }
        None
    }
}

/// A declared column.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryColumn {
    pub name: String,
    pub usage: Usage,
    pub description: String,
    /// postgres_exporter's `pg_version`: on a server outside this range the
    /// column is discarded.
    pub pg_version: Option<VersionRange>,
}

impl QueryColumn {
    /// The family a value column exports (`None` for labels and discarded
    /// columns): `<prefix>_<column>`, with `_milliseconds` for a DURATION.
    pub fn metric(&self, prefix: &str) -> Option<String> {
        match self.usage {
            Usage::Label | Usage::Discard => None,
            Usage::Duration => Some(format!("{prefix}_{}_milliseconds", self.name)),
            _ => Some(format!("{prefix}_{}", self.name)),
        }
    }
}

/// postgres_exporter's column usages.
#[derive(Clone, Debug, PartialEq)]
pub enum Usage {
    /// A label on every value of the row.
    Label,
    Gauge,
    Counter,
    /// A duration (a Go duration string such as `1m30s`, or an `interval`),
    /// exported in whole milliseconds as `<prefix>_<column>_milliseconds`.
    Duration,
    /// A text mapped to a number by `mapping`; a text not in it is skipped.
    MappedMetric(Vec<(String, f64)>),
    Discard,
}

/// `runonserver`: blang/semver's range syntax, as postgres_exporter reads
/// it: comparisons (`>=10.0.0`, `<13`, `!=12.1.0`, a bare version for
/// equality) joined by spaces (all must hold) and `||` (either side).
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRange {
    pub text: String,
    any_of: Vec<Vec<(Op, [u64; 3])>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl VersionRange {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut any_of = Vec::new();
        for alt in text.split("||") {
            let mut all = Vec::new();
            for part in alt.split_whitespace() {
                let (op, rest) = [
                    (">=", Op::Ge),
                    ("<=", Op::Le),
                    ("!=", Op::Ne),
                    ("==", Op::Eq),
                    (">", Op::Gt),
                    ("<", Op::Lt),
                    ("=", Op::Eq),
                    ("!", Op::Ne),
                ]
                .iter()
                .find_map(|(s, op)| part.strip_prefix(s).map(|r| (*op, r)))
                .unwrap_or((Op::Eq, part));
                let version = parse_version(rest).ok_or_else(|| format!("{part:?} is not a version such as 13.0.0"))?;
                all.push((op, version));
            }
            if all.is_empty() {
                return Err(format!("{text:?} has an empty alternative"));
            }
            any_of.push(all);
        }
        Ok(VersionRange {
            text: text.to_string(),
            any_of,
        })
    }

    /// The server's version as postgres_exporter compares it: 150004 is
    /// 15.4.0.
    pub fn server(server_version_num: u32) -> [u64; 3] {
        let n = u64::from(server_version_num);
        if n >= 100_000 {
            [n / 10000, n % 10000, 0]
        } else {
            [n / 10000, n / 100 % 100, n % 100]
        }
    }

    pub fn matches(&self, v: [u64; 3]) -> bool {
        self.any_of.iter().any(|all| {
            all.iter().all(|(op, w)| match op {
                Op::Eq => v == *w,
                Op::Ne => v != *w,
                Op::Lt => v < *w,
                Op::Le => v <= *w,
                Op::Gt => v > *w,
                Op::Ge => v >= *w,
            })
        })
    }
}

/// `13`, `13.2`, `13.2.1` (missing parts are 0).
fn parse_version(s: &str) -> Option<[u64; 3]> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut v = [0; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v[i] = p.parse().ok()?;
    }
    Some(v)
}

const QUERY_KEYS: &[&str] = &[
    "query",
    "metrics",
    "master",
    "cache_seconds",
    "runonserver",
    "interval",
    "timeout",
    "max_series",
    "min_server_version",
    "max_server_version",
    "databases",
];
const COLUMN_KEYS: &[&str] = &["usage", "description", "metric_mapping", "mapping", "pg_version"];
const USAGES: &str = "LABEL, GAUGE, COUNTER, DURATION, MAPPEDMETRIC or DISCARD";

/// The default row cap.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// Prometheus's metric and label name characters (no `:` in a prefix or
/// a column: those are for recording rules).
fn plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// Family names no custom query may export: pgsidecar's own, the health
/// families and pgbouncer_exporter's namespace.
const RESERVED_PREFIXES: &[&str] = &["pgsidecar_", "pg_scrape_collector_", "pg_exporter_", "pgbouncer_"];
const RESERVED: &[&str] = &["pg_up", "pgbouncer_up"];

impl Walker<'_> {
    /// The queries of one map (`queries:` in the config, or the whole
    /// extend file); `path` is where the map is (`["queries"]` or `[]`).
    pub(super) fn queries(&mut self, v: &Value, path: &[&str], default_interval: Duration) -> Vec<CustomQuery> {
        let map = match v {
            Value::Null => return Vec::new(),
            Value::Mapping(m) => m,
            other => {
                self.problem(
                    path,
                    format!("expected a mapping of metric prefix to query, got {}", kind(other)),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (k, item) in map {
            let Some(name) = k.as_str() else {
                self.problem(path, format!("a query's name must be a string, got {}", kind(k)));
                continue;
            };
            let p = join(path, name);
            if !plain_name(name) {
                self.problem(
                    &p,
                    format!(
                        "a query's name is a metric prefix: letters, digits and _, not starting with a digit, got {}",
                        shown(name)
                    ),
                );
                continue;
            }
            if let Some(q) = self.custom_query(name, item, &p, default_interval) {
                out.push(q);
            }
        }
        out
    }

    fn custom_query(
        &mut self,
        name: &str,
        item: &Value,
        p: &[&str],
        default_interval: Duration,
    ) -> Option<CustomQuery> {
        let f = self.mapping(item, p, QUERY_KEYS);
        if !f.contains_key("query") {
            self.problem(p, "missing key query (the SELECT whose rows become the series)");
        }
        let query = match f.get("query") {
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.problem(&join(p, "query"), "must not be empty");
                None
            }
            _ => self.query(&f, "query", p),
        };
        if let Some(q) = &query
            && q.params > 0
        {
            self.problem(
                &join(p, "query"),
                "a custom query takes no parameters ($1…): it runs as written",
            );
        }
        let columns = self.query_columns(&f, p);
        if columns.as_ref().is_some_and(|c| c.is_empty()) {
            self.problem(
                &join(p, "metrics"),
                "no metrics: list the query's columns with their usage (LABEL, GAUGE, ...)",
            );
        }
        let master = self.boolean(&f, "master", p).unwrap_or(false);
        let cache_seconds = self.integer(&f, "cache_seconds", p, 0, 30 * 24 * 3600);
        let runonserver = self
            .string(&f, "runonserver", p)
            .and_then(|text| match VersionRange::parse(&text) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.problem(
                        &join(p, "runonserver"),
                        format!("not a version range such as \">=13.0.0 <16.0.0\": {e}"),
                    );
                    None
                }
            });
        let interval = self
            .duration(&f, "interval", p)
            .or(cache_seconds.filter(|s| *s > 0).map(Duration::from_secs))
            .unwrap_or(default_interval);
        if interval < Duration::from_secs(1) {
            self.problem(
                &join(p, "interval"),
                format!("must be at least 1s, got {}", show(interval)),
            );
        }
        let timeout = self.timeout_within(&f, p, interval);
        let max_series = self
            .integer(&f, "max_series", p, 1, 100_000)
            .map_or(DEFAULT_MAX_SERIES, |n| n as usize);
        let version = |w: &mut Self, key: &str| w.integer(&f, key, p, 90_000, 999_999).map(|n| n as u32);
        let min_server_version = version(self, "min_server_version");
        let max_server_version = version(self, "max_server_version");
        if let (Some(a), Some(b)) = (min_server_version, max_server_version)
            && a > b
        {
            self.problem(
                &join(p, "max_server_version"),
                format!("max_server_version {b} is below min_server_version {a}"),
            );
        }
        let databases = self.strings(&f, "databases", p);
        if !databases.is_empty() && master {
            self.problem(
                &join(p, "databases"),
                "master: true runs the query in the DSN's database only; give databases or master, not both",
            );
        }
        Some(CustomQuery {
            databases,
            name: name.to_string(),
            file: self.source.to_string(),
            query: query?.text,
            columns: columns?,
            master,
            cache_seconds,
            runonserver,
            interval,
            timeout,
            max_series,
            min_server_version,
            max_server_version,
        })
    }

    /// `metrics`: a list of one-key maps, column to its usage.
    fn query_columns(&mut self, f: &Fields, p: &[&str]) -> Option<Vec<QueryColumn>> {
        if !f.contains_key("metrics") {
            self.problem(p, "missing key metrics (the query's columns with their usage)");
            return None;
        }
        let mut out: Vec<QueryColumn> = Vec::new();
        let mut ok = true;
        for (n, item) in self.list(f, "metrics", p) {
            let idx = format!("[{n}]");
            let mut ip = join(p, "metrics");
            ip.push(&idx);
            let Some((k, v)) = item.as_mapping().filter(|m| m.len() == 1).and_then(|m| m.iter().next()) else {
                self.problem(
                    &ip,
                    format!(
                        "expected one column name with its usage (e.g. - calls: {{usage: COUNTER}}), got {}",
                        kind(item)
                    ),
                );
                ok = false;
                continue;
            };
            let Some(col) = k.as_str() else {
                self.problem(&ip, format!("a column name must be a string, got {}", kind(k)));
                ok = false;
                continue;
            };
            let cp = join(&ip, col);
            if !plain_name(col) {
                self.problem(
                    &cp,
                    format!(
                        "a column name becomes a metric or label name: letters, digits and _, got {}",
                        shown(col)
                    ),
                );
                ok = false;
                continue;
            }
            if out.iter().any(|c| c.name == col) {
                self.problem(&cp, format!("column {col} is listed twice"));
                ok = false;
                continue;
            }
            let cf = self.mapping(v, &cp, COLUMN_KEYS);
            let description = self.string(&cf, "description", &cp).unwrap_or_default();
            let usage = match self.string(&cf, "usage", &cp).as_deref() {
                None => {
                    self.problem(&cp, format!("missing key usage ({USAGES})"));
                    None
                }
                Some("LABEL") => Some(Usage::Label),
                Some("GAUGE") => Some(Usage::Gauge),
                Some("COUNTER") => Some(Usage::Counter),
                Some("DURATION") => Some(Usage::Duration),
                Some("DISCARD") => Some(Usage::Discard),
                Some("MAPPEDMETRIC") => self.mapping_values(&cf, &cp).map(Usage::MappedMetric),
                Some("HISTOGRAM") => {
                    self.problem(
                        &join(&cp, "usage"),
                        "HISTOGRAM is not supported by pgsidecar: export the buckets as a GAUGE per bound",
                    );
                    None
                }
                Some(other) => {
                    self.problem(
                        &join(&cp, "usage"),
                        format!("unknown usage {}: expected {USAGES}", shown(other)),
                    );
                    None
                }
            };
            for key in ["metric_mapping", "mapping"] {
                if cf.contains_key(key) && !matches!(usage, Some(Usage::MappedMetric(_)) | None) {
                    self.problem(&join(&cp, key), format!("{key} is for usage MAPPEDMETRIC only"));
                }
            }
            let pg_version = self
                .string(&cf, "pg_version", &cp)
                .and_then(|text| match VersionRange::parse(&text) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.problem(
                            &join(&cp, "pg_version"),
                            format!("not a version range such as \">=13.0.0\": {e}"),
                        );
                        None
                    }
                });
            match usage {
                Some(usage) => out.push(QueryColumn {
                    name: col.to_string(),
                    usage,
                    description,
                    pg_version,
                }),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A MAPPEDMETRIC's `metric_mapping` (postgres_exporter's key; also
    /// `mapping`): text to number.
    fn mapping_values(&mut self, cf: &Fields, cp: &[&str]) -> Option<Vec<(String, f64)>> {
        if cf.contains_key("metric_mapping") && cf.contains_key("mapping") {
            self.problem(cp, "give metric_mapping or mapping, not both");
            return None;
        }
        let key = if cf.contains_key("mapping") {
            "mapping"
        } else {
            "metric_mapping"
        };
        let mp = join(cp, key);
        let m = match cf.get(key) {
            Some(Value::Mapping(m)) => m,
            None => {
                self.problem(
                    cp,
                    "missing key metric_mapping: usage MAPPEDMETRIC maps each text to a number",
                );
                return None;
            }
            Some(other) => {
                self.problem(
                    &mp,
                    format!("expected a mapping of each text to its number, got {}", kind(other)),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (k, v) in m {
            let key = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.problem(&mp, format!("a mapping key must be a string, got {}", kind(other)));
                    return None;
                }
            };
            let Some(n) = v.as_f64() else {
                let kp = join(&mp, &key);
                self.problem(&kp, format!("expected a number, got {}", kind(v)));
                return None;
            };
            out.push((key, n));
        }
        Some(out)
    }
}

/// Problems across all custom queries, as (query, message): a family two
/// queries export, or one that an enabled built-in collector exports: one
/// of a table's metric names, or for a hand-written collector (whose
/// families are not listed) any name in its namespace `pg_<collector>`.
pub(super) fn collisions(
    queries: &[CustomQuery],
    collectors: &[CollectorDefaults],
    enabled: &dyn Fn(&str) -> bool,
) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        if let Some(d) = collectors
            .iter()
            .find(|d| enabled(d.name) && format!("pg_{}", d.name) == q.name)
        {
            out.push((
                i,
                format!(
                    "the prefix {} is the built-in collector {}'s: rename the query, or turn the collector off (collectors.{}.enabled: false)",
                    q.name, d.name, d.name
                ),
            ));
            continue;
        }
        for c in &q.columns {
            let Some(metric) = c.metric(&q.name) else {
                continue;
            };
            if RESERVED.contains(&metric.as_str()) || RESERVED_PREFIXES.iter().any(|p| metric.starts_with(p)) {
                out.push((
                    i,
                    format!("column {}: {metric} is one of pgsidecar's own families", c.name),
                ));
            } else if let Some(d) = collectors.iter().find(|d| {
                enabled(d.name)
                    && if d.families.is_empty() {
                        // A hand-written collector: its families are not
                        // listed, so its namespace is kept whole.
                        let ns = format!("pg_{}", d.name);
                        metric == ns || metric.starts_with(&format!("{ns}_"))
                    } else {
                        d.families.contains(&metric.as_str())
                    }
            }) {
                out.push((
                    i,
                    format!(
                        "column {}: {metric} is exported by the built-in collector {}: rename the query, or turn the collector off (collectors.{}.enabled: false)",
                        c.name, d.name, d.name
                    ),
                ));
            } else if let Some((_, j)) = seen.iter().find(|(m, _)| *m == metric) {
                out.push((
                    i,
                    format!(
                        "column {}: {metric} is exported by the query {} too",
                        c.name, queries[*j].name
                    ),
                ));
            } else {
                seen.push((metric, i));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{Config, ConfigError, Flags};

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        let defaults = [CollectorDefaults {
            name: "stat_user_tables",
            enabled: true,
            interval: None,
            covered_by: None,
            pgbouncer: false,
            families: vec!["pg_stat_user_tables_seq_scan"],
        }];
        crate::config::test_load(yaml, &defaults)
    }

    fn problems(yaml: &str) -> Vec<String> {
        match load(yaml) {
            Err(ConfigError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_usage_reads() {
        let c = load(
            "queries:\n  app_orders:\n    query: SELECT status, count(*) AS n, 'x' AS d FROM orders GROUP BY 1;\n    \
             master: true\n    cache_seconds: 30\n    runonserver: \">=13.0.0 <19.0.0\"\n    metrics:\n      \
             - status: {usage: LABEL, description: Order status}\n      - n: {usage: GAUGE, description: Orders}\n      \
             - t: {usage: COUNTER}\n      - age: {usage: DURATION}\n      - d: {usage: DISCARD}\n      \
             - state:\n          usage: MAPPEDMETRIC\n          metric_mapping: {open: 1, closed: 0}\n          pg_version: '>=14.0.0'\n",
        )
        .unwrap();
        let [q] = c.queries.as_slice() else { panic!() };
        assert_eq!(q.collector(), "query:app_orders");
        assert_eq!(q.query, "SELECT status, count(*) AS n, 'x' AS d FROM orders GROUP BY 1");
        assert_eq!(q.interval, Duration::from_secs(30));
        assert_eq!(q.timeout, Duration::from_secs(5));
        assert_eq!(q.max_series, DEFAULT_MAX_SERIES);
        assert!(q.master);
        let usages: Vec<_> = q.columns.iter().map(|c| &c.usage).collect();
        assert_eq!(
            usages,
            [
                &Usage::Label,
                &Usage::Gauge,
                &Usage::Counter,
                &Usage::Duration,
                &Usage::Discard,
                &Usage::MappedMetric(vec![("open".into(), 1.0), ("closed".into(), 0.0)])
            ]
        );
        assert_eq!(
            q.columns[3].metric("app_orders").as_deref(),
            Some("app_orders_age_milliseconds")
        );
        assert_eq!(q.columns[1].metric("app_orders").as_deref(), Some("app_orders_n"));
        assert_eq!(q.columns[0].metric("app_orders"), None);
        assert_eq!(q.skip_reason(150004), None);
        assert!(q.columns[5].pg_version.as_ref().unwrap().matches([14, 0, 0]));
        assert!(
            q.skip_reason(190000)
                .unwrap()
                .contains("does not match the server's 19.0.0")
        );
    }

    #[test]
    fn version_gates_say_why() {
        let c = load(
            "queries:\n  a:\n    query: SELECT 1 AS n\n    min_server_version: 140000\n    max_server_version: 169999\n    \
             metrics: [{n: {usage: GAUGE}}]\n",
        )
        .unwrap();
        let q = &c.queries[0];
        assert_eq!(q.skip_reason(150004), None);
        assert_eq!(
            q.skip_reason(130010).as_deref(),
            Some("min_server_version 140000: the server is 130010")
        );
        assert_eq!(
            q.skip_reason(170000).as_deref(),
            Some("max_server_version 169999: the server is 170000")
        );
        let p = problems(
            "queries:\n  a:\n    query: SELECT 1 AS n\n    min_server_version: 170000\n    max_server_version: 160000\n    \
             metrics: [{n: {usage: GAUGE}}]\n",
        );
        assert_eq!(
            p,
            ["c.yaml:5:5: queries.a.max_server_version: max_server_version 160000 is below min_server_version 170000"]
        );
    }

    #[test]
    fn version_ranges() {
        let r = VersionRange::parse(">=10.0.0 <13.0.0 || 15").unwrap();
        assert!(r.matches(VersionRange::server(120005)));
        assert!(!r.matches(VersionRange::server(130000)));
        assert!(r.matches(VersionRange::server(150000)));
        assert!(!r.matches(VersionRange::server(150001)));
        assert_eq!(VersionRange::server(90624), [9, 6, 24]);
        assert!(VersionRange::parse(">=ten").is_err());
        assert!(VersionRange::parse(">=13 ||").is_err());
    }

    #[test]
    fn problems_name_the_file_and_key() {
        let p = problems(
            "queries:\n  a:\n    query: SELECT 1 AS x\n    metrics:\n      - x: {usage: GAUGES}\n  \
             b:\n    query: ''\n    metrics: []\n  \
             c:\n    query: DELETE FROM t\n    metrics:\n      - x: {usage: GAUGE}\n  \
             pg_stat_user_tables:\n    query: SELECT 1 AS n\n    metrics:\n      - n: {usage: GAUGE}\n  \
             pg_stat_user:\n    query: SELECT 1 AS n\n    metrics:\n      - tables_seq_scan: {usage: GAUGE}\n  \
             d:\n    query: SELECT 1 AS x\n    runonserver: '>= 13'\n    metrics:\n      - x: {usage: MAPPEDMETRIC}\n  \
             e:\n    query: SELECT $1::int AS x\n    metrics: [{x: {usage: GAUGE}}, {x: {usage: LABEL}}]\n",
        );
        let all = p.join("\n");
        for want in [
            "c.yaml: queries.a.metrics[0].x.usage: unknown usage \"GAUGES\": expected LABEL, GAUGE",
            "queries.b.query: must not be empty",
            "queries.b.metrics: no metrics",
            "queries.c.query: ",
            "queries.pg_stat_user_tables: the prefix pg_stat_user_tables is the built-in collector stat_user_tables's",
            "queries.pg_stat_user: column tables_seq_scan: pg_stat_user_tables_seq_scan is exported by the built-in collector stat_user_tables",
            "queries.d.runonserver: not a version range",
            "queries.d.metrics[0].x: missing key metric_mapping: usage MAPPEDMETRIC maps each text to a number",
            "queries.e.query: a custom query takes no parameters",
            "queries.e.metrics[1].x: column x is listed twice",
        ] {
            assert!(all.contains(want), "{want:?} not in\n{all}");
        }
    }

    #[test]
    fn a_hand_written_collectors_namespace_is_kept_whole() {
        let defaults = [CollectorDefaults {
            name: "stat_activity",
            enabled: true,
            interval: None,
            covered_by: None,
            pgbouncer: false,
            families: Vec::new(),
        }];
        let yaml = "queries:\n  pg_stat:\n    query: SELECT 1 AS activity_count\n    metrics: [{activity_count: {usage: GAUGE}}]\n  \
                    pg_stat_activityx:\n    query: SELECT 1 AS n\n    metrics: [{n: {usage: GAUGE}}]\n";
        let e = Config::from_yaml(
            yaml,
            "c.yaml",
            &Flags::default(),
            &BTreeMap::<String, String>::new(),
            &defaults,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("queries.pg_stat: column activity_count: pg_stat_activity_count is exported by the built-in collector stat_activity"),
            "{e}"
        );
        assert!(
            e.contains("(1 problem)"),
            "pg_stat_activityx_n is not in the namespace: {e}"
        );
    }

    #[test]
    fn two_queries_exporting_one_family_collide() {
        let p = problems(
            "queries:\n  a:\n    query: SELECT 1 AS b_c\n    metrics: [{b_c: {usage: GAUGE}}]\n  \
             a_b:\n    query: SELECT 1 AS c\n    metrics: [{c: {usage: GAUGE}}]\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("queries.a_b: column c: a_b_c is exported by the query a too"),
            "{p:?}"
        );
    }
}
