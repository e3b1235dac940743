//! The `checks:` section: the application team's checklist as thresholds and
//! expectations (slow-query threshold, the server-health alerts' thresholds,
//! connection pools, materialized views, expected indexes, the migration
//! revision, and which relations per-table collectors may report). Parsed by the same walker as the rest of the
//! configuration, so its problems carry file, line, column and key. The
//! probes and `slow_queries.explain` have a file of their own, `probes.rs`.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde_yaml::Value;

use super::probes::{Explain, Probe};
use super::{Fields, Walker, join, kind};

#[derive(Clone, Debug, PartialEq)]
pub struct Checks {
    /// A statement or query slower than this is slow (default 100 ms).
    pub slow_query_threshold: Duration,
    pub statements: Statements,
    pub pools: Vec<PoolCheck>,
    pub matviews: Vec<Matview>,
    pub expected_indexes: Vec<ExpectedIndex>,
    pub index_patterns: Vec<IndexPattern>,
    pub migrations: Option<Migrations>,
    pub relations: Relations,
    /// The postgres-server-health alerts' thresholds (`checks.server`).
    pub server: ServerThresholds,
    /// The PgBouncer alerts' thresholds (`pgbouncer.thresholds`).
    pub pgbouncer: super::PgBouncerThresholds,
    /// `checks.probes`: the team's hot queries, planned (and timed) on their
    /// own interval.
    pub probes: Vec<Probe>,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            slow_query_threshold: Duration::from_millis(100),
            statements: Statements::default(),
            pools: Vec::new(),
            matviews: Vec::new(),
            expected_indexes: Vec::new(),
            index_patterns: Vec::new(),
            migrations: None,
            relations: Relations::default(),
            server: ServerThresholds::default(),
            pgbouncer: super::PgBouncerThresholds::default(),
            probes: Vec::new(),
        }
    }
}

/// The thresholds of the postgres-server-health alerts that a team tunes,
/// exported as gauges by `health.rs` for the rules to compare against. The
/// defaults are the constants the rules had before.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerThresholds {
    /// A standby replaying further behind than this alerts
    /// (PostgresReplicationLag, PostgresStandbyReplayLag).
    pub replication_lag: Duration,
    /// No segment archived for longer than this, while WAL is written,
    /// alerts (PostgresArchivingStalled).
    pub archive_age: Duration,
    /// XID or multixact age over its freeze_max_age setting above this
    /// alerts (PostgresWraparoundApproaching, warning).
    pub wraparound_ratio: f64,
    /// Locks over the shared lock table's size above this alerts
    /// (PostgresTooManyLocks).
    pub locks_ratio: f64,
}

impl Default for ServerThresholds {
    fn default() -> Self {
        ServerThresholds {
            replication_lag: Duration::from_secs(300),
            archive_age: Duration::from_secs(900),
            wraparound_ratio: 1.5,
            locks_ratio: 0.8,
        }
    }
}

/// How `pg_stat_statements` is read.
#[derive(Clone, Debug, PartialEq)]
pub struct Statements {
    /// The top N statements by total execution time.
    pub top: usize,
    /// Export `pg_stat_statements_query_id{queryid,query}`; reads the query texts.
    pub include_query_text: bool,
    pub query_text_length: usize,
    /// Leave out statements run by pgsidecar's own role (use a dedicated role).
    pub exclude_own_role: bool,
    /// `slow_queries.explain`: plan the slow statements (`None`: off).
    pub explain: Option<Explain>,
}

impl Default for Statements {
    fn default() -> Self {
        Statements {
            top: 100,
            include_query_text: false,
            query_text_length: 120,
            exclude_own_role: true,
            explain: None,
        }
    }
}

/// An application connection pool, recognised in `pg_stat_activity`.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolCheck {
    pub name: String,
    pub application_name: Option<String>,
    pub usename: Option<String>,
    pub client_addr: Option<Cidr>,
    pub datname: Option<String>,
    pub size: u32,
    pub overflow: u32,
    /// How many processes each hold such a pool (e.g. workers per pod).
    pub processes: u32,
}

impl PoolCheck {
    /// (size + overflow) × processes.
    pub fn capacity(&self) -> u32 {
        (self.size + self.overflow) * self.processes
    }

    /// True if a connection with these attributes belongs to the pool: every
    /// configured matcher must match.
    pub fn matches(&self, application_name: &str, usename: &str, client_addr: Option<IpAddr>, datname: &str) -> bool {
        self.application_name.as_deref().is_none_or(|a| a == application_name)
            && self.usename.as_deref().is_none_or(|u| u == usename)
            && self.datname.as_deref().is_none_or(|d| d == datname)
            && self
                .client_addr
                .as_ref()
                .is_none_or(|c| client_addr.is_some_and(|a| c.contains(a)))
    }
}

/// An address or a network: `10.1.2.3`, `10.0.0.0/8`, `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid address {}: expected an IP address or a network such as 10.0.0.0/8",
                super::shown(s)
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        Ok(Cidr { addr, prefix })
    }
}

/// A materialized view whose age is watched.
#[derive(Clone, Debug, PartialEq)]
pub struct Matview {
    pub schema: String,
    pub name: String,
    pub max_age: Duration,
    /// A query returning the last refresh time (`timestamptz`), instead of the
    /// refresh log that `pgsidecar install` keeps.
    pub freshness_query: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedIndex {
    /// `None`: any schema.
    pub schema: Option<String>,
    pub name: String,
}

/// At least `min_count` indexes whose name is `LIKE pattern`.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexPattern {
    pub pattern: String,
    pub min_count: u32,
    pub schema: Option<String>,
}

/// Where the applied migration revision is read.
#[derive(Clone, Debug, PartialEq)]
pub struct Migrations {
    /// Table, optionally schema-qualified (default `alembic_version`).
    pub table: String,
    pub column: String,
    pub expected: Option<String>,
    /// A query returning the revision(s) as text, instead of table/column.
    pub query: Option<String>,
}

/// Which relations the per-table and per-index collectors report, and their cap.
#[derive(Clone, Debug, PartialEq)]
pub struct Relations {
    /// Schemas to report (empty: all but the system ones).
    pub include_schemas: Vec<String>,
    pub exclude_schemas: Vec<String>,
    /// `LIKE` patterns on relation names (empty: all).
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Most relations a collector reports; the biggest are kept.
    pub max_series: usize,
}

impl Default for Relations {
    fn default() -> Self {
        Relations {
            include_schemas: Vec::new(),
            exclude_schemas: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            max_series: 1000,
        }
    }
}

const CHECK_KEYS: &[&str] = &[
    "slow_queries",
    "server",
    "pools",
    "materialized_views",
    "indexes",
    "migrations",
    "relations",
    "probes",
];
const SLOW_KEYS: &[&str] = &[
    "threshold",
    "top",
    "include_query_text",
    "query_text_length",
    "exclude_own_role",
    "explain",
];
const SERVER_KEYS: &[&str] = &["replication_lag", "archive_age", "wraparound_ratio", "locks_ratio"];
const POOL_KEYS: &[&str] = &[
    "name",
    "application_name",
    "usename",
    "client_addr",
    "datname",
    "size",
    "overflow",
    "processes",
];
const MATVIEW_KEYS: &[&str] = &["name", "max_age", "freshness_query"];
const INDEX_KEYS: &[&str] = &["expected", "patterns"];
const PATTERN_KEYS: &[&str] = &["pattern", "min_count", "schema"];
const MIGRATION_KEYS: &[&str] = &["table", "column", "expected", "query"];
const RELATION_KEYS: &[&str] = &["include_schemas", "exclude_schemas", "include", "exclude", "max_series"];

impl Walker<'_> {
    pub(super) fn checks(&mut self, v: &Value) -> Checks {
        let path = ["checks"];
        let f = self.mapping(v, &path, CHECK_KEYS);
        let mut checks = Checks::default();
        let null = Value::Null;
        let get = |k: &str| f.get(k).copied().unwrap_or(&null);

        let sp = ["checks", "slow_queries"];
        let s = self.mapping(get("slow_queries"), &sp, SLOW_KEYS);
        if let Some(t) = self.duration(&s, "threshold", &sp) {
            if t.is_zero() {
                self.problem(&join(&sp, "threshold"), "must be greater than zero");
            }
            checks.slow_query_threshold = t;
        }
        let st = &mut checks.statements;
        st.top = self.integer(&s, "top", &sp, 1, 10_000).map_or(st.top, |n| n as usize);
        st.include_query_text = self.boolean(&s, "include_query_text", &sp).unwrap_or(false);
        st.query_text_length = self
            .integer(&s, "query_text_length", &sp, 16, 10_000)
            .map_or(st.query_text_length, |n| n as usize);
        st.exclude_own_role = self.boolean(&s, "exclude_own_role", &sp).unwrap_or(true);
        st.explain = self.explain(&s, &sp);

        checks.server = self.server(get("server"));
        checks.pools = self.pools(get("pools"));
        checks.matviews = self.matviews(get("materialized_views"));

        let ip = ["checks", "indexes"];
        let i = self.mapping(get("indexes"), &ip, INDEX_KEYS);
        for (n, item) in self.list(&i, "expected", &ip) {
            let idx = format!("[{n}]");
            let p = [ip[0], ip[1], "expected", idx.as_str()];
            match item {
                Value::String(s) if !s.trim().is_empty() => {
                    let (schema, name) = split_qualified(s);
                    checks.expected_indexes.push(ExpectedIndex { schema, name });
                }
                other => self.problem(&p, format!("expected an index name, got {}", kind(other))),
            }
        }
        for (n, item) in self.list(&i, "patterns", &ip) {
            let idx = format!("[{n}]");
            let p = [ip[0], ip[1], "patterns", idx.as_str()];
            let pf = self.mapping(item, &p, PATTERN_KEYS);
            let pattern = self.required_string(&pf, "pattern", &p);
            let min_count = self.integer(&pf, "min_count", &p, 0, 100_000).unwrap_or(1) as u32;
            let schema = self.string(&pf, "schema", &p);
            if let Some(pattern) = pattern {
                checks.index_patterns.push(IndexPattern {
                    pattern,
                    min_count,
                    schema,
                });
            }
        }

        if let Some(m) = f.get("migrations") {
            let mp = ["checks", "migrations"];
            let mf = self.mapping(m, &mp, MIGRATION_KEYS);
            if let Some(Value::Number(n)) = mf.get("expected") {
                self.problem(
                    &join(&mp, "expected"),
                    format!("expected a string, got a number ({n}): quote the revision, e.g. \"003\", or YAML drops its leading zeros"),
                );
            }
            checks.migrations = Some(Migrations {
                table: self
                    .string(&mf, "table", &mp)
                    .unwrap_or_else(|| "alembic_version".into()),
                column: self.string(&mf, "column", &mp).unwrap_or_else(|| "version_num".into()),
                expected: match mf.get("expected") {
                    Some(Value::Number(_)) => None,
                    _ => self.string(&mf, "expected", &mp),
                },
                query: self.query(&mf, "query", &mp).map(|q| q.text),
            });
        }

        let rp = ["checks", "relations"];
        let r = self.mapping(get("relations"), &rp, RELATION_KEYS);
        let rel = &mut checks.relations;
        rel.include_schemas = self.strings(&r, "include_schemas", &rp);
        rel.exclude_schemas = self.strings(&r, "exclude_schemas", &rp);
        rel.include = self.strings(&r, "include", &rp);
        rel.exclude = self.strings(&r, "exclude", &rp);
        rel.max_series = self
            .integer(&r, "max_series", &rp, 1, 1_000_000)
            .map_or(rel.max_series, |n| n as usize);
        checks.probes = self.probes(get("probes"));
        checks
    }

    /// `checks.server`: durations and ratios, each greater than zero.
    fn server(&mut self, v: &Value) -> ServerThresholds {
        let p = ["checks", "server"];
        let f = self.mapping(v, &p, SERVER_KEYS);
        let mut t = ServerThresholds::default();
        for (key, slot) in [
            ("replication_lag", &mut t.replication_lag),
            ("archive_age", &mut t.archive_age),
        ] {
            if let Some(d) = self.duration(&f, key, &p) {
                if d.is_zero() {
                    self.problem(&join(&p, key), "must be greater than zero");
                } else {
                    *slot = d;
                }
            }
        }
        for (key, slot) in [
            ("wraparound_ratio", &mut t.wraparound_ratio),
            ("locks_ratio", &mut t.locks_ratio),
        ] {
            if let Some(r) = self.ratio(&f, key, &p) {
                *slot = r;
            }
        }
        t
    }

    /// A number greater than zero, such as 0.8 or 1.5.
    fn ratio(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<f64> {
        let v = f.get(key)?;
        match v.as_f64() {
            Some(r) if r.is_finite() && r > 0.0 => Some(r),
            Some(r) => {
                self.problem(&join(path, key), format!("must be a number greater than zero, got {r}"));
                None
            }
            None => {
                self.problem(
                    &join(path, key),
                    format!("expected a number greater than zero such as 0.8, got {}", kind(v)),
                );
                None
            }
        }
    }

    fn pools(&mut self, v: &Value) -> Vec<PoolCheck> {
        let mut out: Vec<PoolCheck> = Vec::new();
        let fields = Fields::from([("pools".to_string(), v)]);
        for (n, item) in self.list(&fields, "pools", &["checks"]) {
            let idx = format!("[{n}]");
            let p = ["checks", "pools", idx.as_str()];
            let f = self.mapping(item, &p, POOL_KEYS);
            let name = self.required_string(&f, "name", &p);
            let client_addr = self.string(&f, "client_addr", &p).and_then(|a| {
                Cidr::from_str(&a)
                    .map_err(|e| self.problem(&join(&p, "client_addr"), e))
                    .ok()
            });
            let pool = PoolCheck {
                name: name.clone().unwrap_or_default(),
                application_name: self.string(&f, "application_name", &p),
                usename: self.string(&f, "usename", &p),
                client_addr,
                datname: self.string(&f, "datname", &p),
                size: self.integer(&f, "size", &p, 1, 100_000).unwrap_or(1) as u32,
                overflow: self.integer(&f, "overflow", &p, 0, 100_000).unwrap_or(0) as u32,
                processes: self.integer(&f, "processes", &p, 1, 10_000).unwrap_or(1) as u32,
            };
            if !f.contains_key("size") {
                self.problem(&p, "missing key size (the pool's size)");
            }
            if !["application_name", "usename", "client_addr", "datname"]
                .iter()
                .any(|k| f.contains_key(*k))
            {
                self.problem(
                    &p,
                    "a pool needs at least one of application_name, usename, client_addr, datname to recognise its connections",
                );
            }
            if let Some(name) = name {
                if out.iter().any(|o| o.name == name) {
                    self.problem(&join(&p, "name"), format!("pool {name:?} is defined twice"));
                }
                out.push(pool);
            }
        }
        out
    }

    fn matviews(&mut self, v: &Value) -> Vec<Matview> {
        let mut out = Vec::new();
        let fields = Fields::from([("materialized_views".to_string(), v)]);
        for (n, item) in self.list(&fields, "materialized_views", &["checks"]) {
            let idx = format!("[{n}]");
            let p = ["checks", "materialized_views", idx.as_str()];
            let f = self.mapping(item, &p, MATVIEW_KEYS);
            let name = self.required_string(&f, "name", &p);
            let max_age = self.duration(&f, "max_age", &p);
            if !f.contains_key("max_age") {
                self.problem(&p, "missing key max_age (how old the view may get, e.g. 1h)");
            }
            let freshness_query = self.query(&f, "freshness_query", &p).map(|q| q.text);
            if let (Some(name), Some(max_age)) = (name, max_age) {
                let (schema, name) = split_qualified(&name);
                out.push(Matview {
                    schema: schema.unwrap_or_else(|| "public".into()),
                    name,
                    max_age,
                    freshness_query,
                });
            }
        }
        out
    }

    /// The items of a list under `key`; reports a non-list.
    pub(super) fn list<'v>(&mut self, f: &Fields<'v>, key: &str, path: &[&str]) -> Vec<(usize, &'v Value)> {
        match f.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items.iter().enumerate().collect(),
            Some(other) => {
                self.problem(&join(path, key), format!("expected a list, got {}", kind(other)));
                Vec::new()
            }
        }
    }

    pub(super) fn strings(&mut self, f: &Fields, key: &str, path: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for (n, item) in self.list(f, key, path) {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => {
                    let idx = format!("[{n}]");
                    let mut p = join(path, key);
                    p.push(&idx);
                    self.problem(&p, format!("expected a string, got {}", kind(other)));
                }
            }
        }
        out
    }

    /// A query the user writes (a freshness, migrations or probe query):
    /// one statement that only reads (see `sql::check_query`), run as
    /// written; a trailing `;` is dropped.
    pub(super) fn query(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<crate::sql::Query> {
        let q = self.string(f, key, path)?;
        match crate::sql::check_query(&q) {
            Ok(q) => Some(q),
            Err(e) => {
                self.problem(&join(path, key), e.to_string());
                None
            }
        }
    }

    pub(super) fn required_string(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<String> {
        if !f.contains_key(key) {
            self.problem(path, format!("missing key {key}"));
            return None;
        }
        let s = self.string(f, key, path)?;
        if s.trim().is_empty() {
            self.problem(&join(path, key), "must not be empty");
            return None;
        }
        Some(s)
    }
}

/// `schema.name` → (Some(schema), name); `name` → (None, name).
pub(super) fn split_qualified(s: &str) -> (Option<String>, String) {
    match s.trim().split_once('.') {
        Some((schema, name)) => (Some(schema.to_string()), name.to_string()),
        None => (None, s.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a `;` inside a literal made a freshness query "two
    /// statements".
    #[test]
    fn user_queries_are_read_by_the_lexer() {
        let w = |yaml: &str| crate::config::test_load(yaml, &[]);
        let c = w("checks:\n  materialized_views:\n    - name: v\n      max_age: 1h\n      freshness_query: \"SELECT max(t) FROM log WHERE note <> ';' -- newest\"\n").unwrap();
        assert_eq!(
            c.checks.matviews[0].freshness_query.as_deref(),
            Some("SELECT max(t) FROM log WHERE note <> ';' -- newest")
        );
        let err = w("checks:\n  migrations:\n    query: \"SELECT 1; DROP TABLE x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml:3:5: checks.migrations.query: must be a single statement"),
            "{err}"
        );
    }

    #[test]
    fn server_thresholds_default_to_the_rules_constants_and_are_validated() {
        let load = |yaml: &str| crate::config::test_load(yaml, &[]);
        let t = load("").unwrap().checks.server.clone();
        assert_eq!(t, ServerThresholds::default());
        assert_eq!(t.replication_lag, Duration::from_secs(300));
        assert_eq!(t.archive_age, Duration::from_secs(900));
        assert_eq!((t.wraparound_ratio, t.locks_ratio), (1.5, 0.8));

        let c = load("checks:\n  server:\n    replication_lag: 1m\n    archive_age: 1h\n    wraparound_ratio: 2\n    locks_ratio: 0.5\n").unwrap();
        let t = &c.checks.server;
        assert_eq!(t.replication_lag, Duration::from_secs(60));
        assert_eq!(t.archive_age, Duration::from_secs(3600));
        assert_eq!((t.wraparound_ratio, t.locks_ratio), (2.0, 0.5));

        let err = load("checks:\n  server:\n    replication_lag: 0s\n    archive_age: soon\n    wraparound_ratio: -1\n    locks_ratio: \"80%\"\n    lag: 5m\n")
            .unwrap_err()
            .to_string();
        for want in [
            "c.yaml:3:5: checks.server.replication_lag: must be greater than zero",
            "c.yaml:4:5: checks.server.archive_age: invalid duration \"soon\"",
            "c.yaml:5:5: checks.server.wraparound_ratio: must be a number greater than zero, got -1",
            "c.yaml:6:5: checks.server.locks_ratio: expected a number greater than zero such as 0.8, got a string (\"80%\")",
            "c.yaml:7:5: checks.server.lag: unknown key",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        let err = load("checks:\n  server:\n    locks_ratio: 0\n    wraparound_ratio: .inf\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml:3:5: checks.server.locks_ratio: must be a number greater than zero, got 0"),
            "{err}"
        );
        assert!(
            err.contains("c.yaml:4:5: checks.server.wraparound_ratio: must be a number greater than zero, got inf"),
            "{err}"
        );
    }

    #[test]
    fn cidr_matching() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        let one: Cidr = "10.1.2.3".parse().unwrap();
        assert!(one.contains("10.1.2.3".parse().unwrap()));
        assert!(!one.contains("10.1.2.4".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("pod-ip".parse::<Cidr>().is_err());
    }

    #[test]
    fn pools_match_on_every_configured_attribute() {
        let pool = PoolCheck {
            name: "api".into(),
            application_name: Some("api".into()),
            usename: None,
            client_addr: Some("10.0.0.0/24".parse().unwrap()),
            datname: None,
            size: 20,
            overflow: 10,
            processes: 2,
        };
        assert_eq!(pool.capacity(), 60);
        let ip = Some("10.0.0.7".parse().unwrap());
        assert!(pool.matches("api", "any", ip, "db"));
        assert!(!pool.matches("worker", "any", ip, "db"));
        assert!(!pool.matches("api", "any", None, "db"));
    }
}
