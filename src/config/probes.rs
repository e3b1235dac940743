//! `checks.probes` and `checks.slow_queries.explain`: the queries whose
//! plans pgsidecar watches. Parsed by the configuration's walker, so each
//! problem carries file, line, column and key; a probe's query must pass
//! `sql::check_query` (one statement that only reads) at load.

use std::time::Duration;

use serde_yaml::Value;

use super::checks::split_qualified;
use super::{Fields, Walker, join, kind, show};

/// A named read-only query and what must hold for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub name: String,
    /// The query as checked, without a trailing `;`.
    pub query: String,
    /// How many parameters (`$1`…) it has.
    pub placeholders: u32,
    /// Sample values for `$1`… as text (the server converts them to the
    /// parameters' types); `None` is NULL. Used in `execute` mode.
    pub params: Vec<Option<String>>,
    pub mode: ProbeMode,
    pub interval: Duration,
    /// The statement's own `statement_timeout`.
    pub timeout: Duration,
    /// The latency it must stay under (exported; the alert compares).
    pub budget: Option<Duration>,
    /// Indexes the plan must use.
    pub expect_index: Vec<Qualified>,
    /// Tables the plan must not scan sequentially.
    pub forbid_seq_scan_on: Vec<Qualified>,
}

impl Probe {
    /// The name of its collector, as the `collector` label shows it.
    pub fn collector(&self) -> String {
        format!("probe:{}", self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMode {
    /// `EXPLAIN` only: nothing is executed (a generic plan for a
    /// parameterized query).
    Plan,
    /// `EXPLAIN (ANALYZE, BUFFERS)` with the sample values: the query runs.
    Execute,
}

impl ProbeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeMode::Plan => "plan",
            ProbeMode::Execute => "execute",
        }
    }
}

/// `name` (any schema) or `schema.name`, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qualified {
    pub schema: Option<String>,
    pub name: String,
}

impl Qualified {
    /// As written in the configuration: the label value.
    pub fn label(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// Whether an object `schema.name` is this one.
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        self.name == name && self.schema.as_deref().is_none_or(|s| s == schema)
    }
}

/// `checks.slow_queries.explain`: plans of the slow statements of
/// `pg_stat_statements`, fetched at most `per_hour` times an hour.
#[derive(Clone, Debug, PartialEq)]
pub struct Explain {
    /// How many of the slowest statements (mean time over the threshold) are
    /// considered each run.
    pub top: usize,
    /// Most `EXPLAIN`s in any hour.
    pub per_hour: u32,
    /// A plan older than this is fetched again.
    pub refresh: Duration,
    /// A statement that could not be planned is not tried again before this.
    pub retry_failed_after: Duration,
    pub interval: Duration,
    /// Each `EXPLAIN`'s own `statement_timeout`.
    pub timeout: Duration,
}

impl Default for Explain {
    fn default() -> Self {
        Explain {
            top: 10,
            per_hour: 60,
            refresh: Duration::from_secs(3600),
            retry_failed_after: Duration::from_secs(24 * 3600),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }
}

const PROBE_KEYS: &[&str] = &[
    "name",
    "query",
    "params",
    "mode",
    "interval",
    "timeout",
    "budget",
    "expect_index",
    "forbid_seq_scan_on",
];
const EXPLAIN_KEYS: &[&str] = &[
    "enabled",
    "top",
    "per_hour",
    "refresh",
    "retry_failed_after",
    "interval",
    "timeout",
];

/// The shortest probe interval.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `($1)`, `($1 to $3)`.
fn placeholders(n: u32) -> String {
    if n == 1 { "($1)".into() } else { format!("($1 to ${n})") }
}

impl Walker<'_> {
    pub(super) fn probes(&mut self, v: &Value) -> Vec<Probe> {
        let mut out: Vec<Probe> = Vec::new();
        let fields = Fields::from([("probes".to_string(), v)]);
        for (n, item) in self.list(&fields, "probes", &["checks"]) {
            let idx = format!("[{n}]");
            let p = ["checks", "probes", idx.as_str()];
            if let Some(probe) = self.probe(item, &p)
                && !out.iter().any(|o| o.name == probe.name)
            {
                out.push(probe);
            } else if let Some(Value::String(name)) = item.get("name")
                && out.iter().any(|o| &o.name == name)
            {
                self.problem(&join(&p, "name"), format!("probe {name:?} is defined twice"));
            }
        }
        out
    }

    fn probe(&mut self, item: &Value, p: &[&str]) -> Option<Probe> {
        let f = self.mapping(item, p, PROBE_KEYS);
        let name = self.required_string(&f, "name", p).and_then(|name| {
            let plain = name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !plain {
                self.problem(
                    &join(p, "name"),
                    format!(
                        "a probe's name may hold letters, digits, _, - and . (at most 64), got {}",
                        super::shown(&name)
                    ),
                );
            }
            plain.then_some(name)
        });
        if !f.contains_key("query") {
            self.problem(p, "missing key query (a SELECT whose plan is watched)");
        }
        let query = self.query(&f, "query", p);
        let mode = match self.string(&f, "mode", p).as_deref() {
            None | Some("plan") => Some(ProbeMode::Plan),
            Some("execute") => Some(ProbeMode::Execute),
            Some(other) => {
                self.problem(
                    &join(p, "mode"),
                    format!("unknown mode {}: expected plan or execute", super::shown(other)),
                );
                None
            }
        };
        let interval = self.duration(&f, "interval", p).unwrap_or(Duration::from_secs(60));
        if interval < MIN_INTERVAL {
            self.problem(
                &join(p, "interval"),
                format!("must be at least {}, got {}", show(MIN_INTERVAL), show(interval)),
            );
        }
        let timeout = self.timeout_within(&f, p, interval);
        let budget = self.duration(&f, "budget", p);
        if budget.is_some_and(|b| b.is_zero()) {
            self.problem(&join(p, "budget"), "must be greater than zero");
        }
        let params = self.params(&f, p);
        let expect_index = self.names(&f, "expect_index", p, "an index name");
        let forbid_seq_scan_on = self.names(&f, "forbid_seq_scan_on", p, "a table name");

        let (query, mode) = (query?, mode?);
        if let Some(params) = &params {
            let (given, wanted) = (params.len(), query.params as usize);
            if given != wanted {
                self.problem(
                    &join(p, "params"),
                    format!(
                        "params has {}, but the query has {}{}",
                        plural(given, "value", "values"),
                        plural(wanted, "parameter", "parameters"),
                        if wanted > 0 {
                            format!(" {}", placeholders(query.params))
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        } else if mode == ProbeMode::Execute && query.params > 0 {
            self.problem(
                p,
                format!(
                    "mode execute runs the query: params must give a sample value for each of its {} {}",
                    plural(query.params as usize, "parameter", "parameters"),
                    placeholders(query.params)
                ),
            );
        }
        Some(Probe {
            name: name?,
            query: query.text,
            placeholders: query.params,
            params: params.unwrap_or_default(),
            mode,
            interval,
            timeout,
            budget,
            expect_index,
            forbid_seq_scan_on,
        })
    }

    /// `params`: a list of scalars, as text (null: SQL NULL).
    fn params(&mut self, f: &Fields, p: &[&str]) -> Option<Vec<Option<String>>> {
        f.get("params")?;
        let mut out = Vec::new();
        for (n, item) in self.list(f, "params", p) {
            out.push(match item {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                other => {
                    let idx = format!("[{n}]");
                    let mut path = join(p, "params");
                    path.push(&idx);
                    self.problem(
                        &path,
                        format!("expected a string, number, boolean or null, got {}", kind(other)),
                    );
                    None
                }
            });
        }
        Some(out)
    }

    /// A name or a list of names (`schema.name` or `name`).
    fn names(&mut self, f: &Fields, key: &str, p: &[&str], what: &str) -> Vec<Qualified> {
        let items: Vec<String> = match f.get(key) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(_)) => self.strings(f, key, p),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                self.problem(
                    &join(p, key),
                    format!("expected {what} or a list of them, got {}", kind(other)),
                );
                Vec::new()
            }
        };
        let mut out = Vec::new();
        for s in items {
            if s.trim().is_empty() {
                self.problem(&join(p, key), format!("expected {what}, got an empty string"));
                continue;
            }
            let (schema, name) = split_qualified(&s);
            out.push(Qualified { schema, name });
        }
        out
    }

    /// `checks.slow_queries.explain`, if enabled.
    pub(super) fn explain(&mut self, slow: &Fields, sp: &[&str]) -> Option<Explain> {
        let v = slow.get("explain")?;
        let p = join(sp, "explain");
        let f = self.mapping(v, &p, EXPLAIN_KEYS);
        let d = Explain::default();
        let enabled = self.boolean(&f, "enabled", &p).unwrap_or(false);
        let e = Explain {
            top: self.integer(&f, "top", &p, 1, 1000).map_or(d.top, |n| n as usize),
            per_hour: self
                .integer(&f, "per_hour", &p, 1, 3600)
                .map_or(d.per_hour, |n| n as u32),
            refresh: self.duration(&f, "refresh", &p).unwrap_or(d.refresh),
            retry_failed_after: self
                .duration(&f, "retry_failed_after", &p)
                .unwrap_or(d.retry_failed_after),
            interval: self.duration(&f, "interval", &p).unwrap_or(d.interval),
            timeout: self.duration(&f, "timeout", &p).unwrap_or(d.timeout),
        };
        if e.interval < MIN_INTERVAL {
            self.problem(
                &join(&p, "interval"),
                format!("must be at least {}, got {}", show(MIN_INTERVAL), show(e.interval)),
            );
        }
        if e.timeout.is_zero() {
            self.problem(&join(&p, "timeout"), "must be greater than zero");
        } else if e.timeout > e.interval {
            self.problem(
                &join(&p, "timeout"),
                format!(
                    "timeout {} is longer than the interval {}",
                    show(e.timeout),
                    show(e.interval)
                ),
            );
        }
        enabled.then_some(e)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::config::{Config, ConfigError};

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        crate::config::test_load(yaml, &[])
    }

    #[test]
    fn a_probe_with_defaults_and_one_with_everything() {
        let c = load(
            "checks:\n  probes:\n    - name: history\n      query: SELECT * FROM messages WHERE user_id = $1;\n\
             \x20   - name: stats.v2\n      query: SELECT 1\n      mode: execute\n      interval: 10s\n      timeout: 2s\n\
             \x20     budget: 20ms\n      params: []\n      expect_index: [public.idx_a, idx_b]\n      forbid_seq_scan_on: users\n",
        )
        .unwrap();
        let [a, b] = c.checks.probes.as_slice() else {
            panic!("{:?}", c.checks.probes)
        };
        assert_eq!(a.query, "SELECT * FROM messages WHERE user_id = $1");
        assert_eq!(a.placeholders, 1);
        assert_eq!(a.mode, ProbeMode::Plan);
        assert_eq!(
            (a.interval, a.timeout, a.budget),
            (Duration::from_secs(60), Duration::from_secs(5), None)
        );
        assert_eq!(a.collector(), "probe:history");
        assert_eq!(b.mode, ProbeMode::Execute);
        assert_eq!(b.budget, Some(Duration::from_millis(20)));
        assert_eq!(
            b.expect_index.iter().map(Qualified::label).collect::<Vec<_>>(),
            ["public.idx_a", "idx_b"]
        );
        assert!(b.expect_index[0].matches("public", "idx_a") && !b.expect_index[0].matches("x", "idx_a"));
        assert!(b.expect_index[1].matches("any", "idx_b"));
        assert_eq!(b.forbid_seq_scan_on[0].label(), "users");
        assert_eq!(c.checks.statements.explain, None);
    }

    #[test]
    fn params_are_text_and_null() {
        let c = load(
            "checks:\n  probes:\n    - name: p\n      mode: execute\n      query: SELECT $1::int, $2::text, $3::bool, $4::int\n      params: [42, \"x\", true, null]\n",
        )
        .unwrap();
        assert_eq!(
            c.checks.probes[0].params,
            [Some("42".into()), Some("x".into()), Some("true".into()), None]
        );
    }

    #[test]
    fn explain_defaults_and_off() {
        let c = load("checks:\n  slow_queries:\n    explain:\n      enabled: true\n").unwrap();
        assert_eq!(c.checks.statements.explain, Some(Explain::default()));
        let c = load("checks:\n  slow_queries:\n    explain:\n      enabled: false\n      per_hour: 5\n").unwrap();
        assert_eq!(c.checks.statements.explain, None);
    }
}
