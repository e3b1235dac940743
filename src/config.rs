//! Configuration: the YAML file, the command-line flags and the environment,
//! merged and validated into one [`Config`].
//!
//! Precedence, lowest first: built-in defaults, libpq's `PG*` environment
//! variables, the YAML file, postgres_exporter's `DATA_SOURCE_*` environment
//! variables, command-line flags.
//!
//! Loading happens in two stages. The YAML text becomes a `serde_yaml::Value`
//! (a syntax error stops there, with its line and column); then a walker
//! checks every key against the schema below and collects *every* problem
//! (unknown key, wrong type, bad duration, unknown collector, bad DSN) before
//! reporting them together, each with file, line and column where known, the
//! key path and what is wrong. Only this module knows `serde_yaml`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_yaml::Value;

mod checks;
mod databases;
mod dsn;
mod env;
#[cfg(test)]
mod fuzz;
mod pgbouncer;
mod probes;
mod queries;
mod web;
pub use checks::{
    Checks, Cidr, ExpectedIndex, IndexPattern, Matview, Migrations, PoolCheck, Relations, ServerThresholds, Statements,
};
pub use databases::{DatabaseChecks, Databases, glob};
pub use dsn::redact;
pub use env::{Env, ProcessEnv};
pub use pgbouncer::{PgBouncer, PgBouncerThresholds, RunBy};
pub use probes::{Explain, Probe, ProbeMode, Qualified};
pub use queries::{CustomQuery, DEFAULT_MAX_SERIES, QueryColumn, Usage, VersionRange};
pub use web::{RateLimit, WebSecurity, load as load_web_file};

/// Default listen port: one above postgres_exporter's 9187, so both can run
/// side by side during a migration.
pub const DEFAULT_PORT: u16 = 9188;

/// Everything pgsidecar needs to run, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub datasource: Datasource,
    pub web: Web,
    pub log: Log,
    /// One entry per known collector, enabled or not, in registration order.
    pub collectors: Vec<CollectorConfig>,
    /// The checklist: thresholds and expectations (see `checks.rs`).
    pub checks: std::sync::Arc<Checks>,
    /// Which sidecar runs the server-wide collectors (see `leader.rs`).
    pub coordination: Coordination,
    /// The PgBouncer admin console, if one is watched (`pgbouncer:`).
    pub pgbouncer: Option<PgBouncer>,
    /// Custom queries (`queries:` and `--extend.query-path`), in the
    /// files' order: one collector `query:<name>` each.
    pub queries: Vec<CustomQuery>,
    /// The other databases the per-database collectors read (`databases:`);
    /// `None`: only the DSN's.
    pub databases: Option<Databases>,
}

/// The advisory-lock key used when `coordination.lock_key` is not set: the
/// ASCII bytes of "pgsc" (0x70677363). Sidecars of different applications on
/// one server must configure different keys, or they elect one leader between
/// them.
pub const DEFAULT_LOCK_KEY: i64 = 0x7067_7363;

/// `coordination:`: how sidecars of one application share the server-wide work.
#[derive(Clone, Debug, PartialEq)]
pub struct Coordination {
    pub mode: CoordinationMode,
    /// The key of the session-level advisory lock (`pg_try_advisory_lock(bigint)`).
    pub lock_key: i64,
    /// How often a non-leader tries the lock and the leader checks its session.
    pub check_interval: Duration,
}

impl Default for Coordination {
    fn default() -> Self {
        Coordination {
            mode: CoordinationMode::All,
            lock_key: DEFAULT_LOCK_KEY,
            check_interval: Duration::from_secs(5),
        }
    }
}

/// Who runs the server-scoped collectors; per-pod collectors always run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinationMode {
    /// Standalone: run every collector; always leader.
    All,
    /// The sidecar holding the advisory lock is leader.
    LeaderElection,
    /// Never leader: per-pod collectors only (a standalone instance does the rest).
    None,
}

impl CoordinationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CoordinationMode::All => "all",
            CoordinationMode::LeaderElection => "leader-election",
            CoordinationMode::None => "none",
        }
    }
}

impl FromStr for CoordinationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "all" => CoordinationMode::All,
            "leader-election" => CoordinationMode::LeaderElection,
            "none" => CoordinationMode::None,
            other => {
                return Err(format!(
                    "unknown coordination mode {}: expected all, leader-election or none",
                    shown(other)
                ));
            }
        })
    }
}

#[derive(Clone, PartialEq)]
pub struct Datasource {
    /// Host, port, user, password, database and connect timeout. The
    /// session options and TLS are applied by `db`, from the fields below.
    pub pg: tokio_postgres::Config,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub application_name: String,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub idle_in_transaction_session_timeout: Duration,
}

impl fmt::Debug for Datasource {
    // Written by hand so that the password can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datasource")
            .field("target", &self.target())
            .field("sslmode", &self.sslmode)
            .field("application_name", &self.application_name)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl Datasource {
    /// `user@host:port/dbname`, for logs and the landing page. Never the password.
    pub fn target(&self) -> String {
        let host = match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{}:{}/{}",
            self.pg.get_user().unwrap_or(""),
            host,
            port,
            self.pg.get_dbname().unwrap_or("")
        )
    }

    /// The password, if any, as text: used only to scrub it from messages.
    pub fn password(&self) -> Option<String> {
        self.pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's "allow" tries plain first; we do not offer a weaker mode than prefer.
            other => {
                return Err(format!(
                    "unknown sslmode {}: expected disable, prefer, require, verify-ca or verify-full",
                    shown(other)
                ));
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct Web {
    pub listen_address: SocketAddr,
    pub telemetry_path: String,
    pub shutdown_grace: Duration,
    /// `POST /-/reload` reloads the configuration (`--web.enable-lifecycle`).
    pub enable_lifecycle: bool,
    /// `--web.config.file` (exporter-toolkit format), re-read when it changes.
    pub config_file: Option<PathBuf>,
    /// What that file holds, loaded; the default is plain HTTP without auth.
    pub security: std::sync::Arc<WebSecurity>,
    /// Most connections open at once (`--web.max-connections`).
    pub max_connections: usize,
    /// A response not written within this after its request was read ends
    /// its connection.
    pub write_timeout: Duration,
    /// Most `/metrics` responses being written at once.
    pub max_concurrent_scrapes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Log {
    pub level: tracing::Level,
    pub format: LogFormat,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CollectorConfig {
    pub name: &'static str,
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
    /// A failed collector's last good series are dropped once older than this.
    pub stale_after: Duration,
    /// Run by every sidecar, leader or not, whatever the collector's scope
    /// (PgBouncer collectors with `pgbouncer.run_by: every-pod`).
    pub every_pod: bool,
}

/// What loading needs to know of a collector: its name and its defaults.
/// The collectors provide these (`collectors::defaults`); configuration
/// knows no collector by itself.
#[derive(Clone, Debug)]
pub struct CollectorDefaults {
    pub name: &'static str,
    pub enabled: bool,
    /// `None`: `collection.interval`.
    pub interval: Option<Duration>,
    /// Another collector that exports this one's series (postgres_exporter's
    /// `statio_user_indexes` is pgsidecar's `stat_user_indexes`): enabling
    /// this one enables that one instead, so the series appear once.
    pub covered_by: Option<&'static str>,
    /// It reads PgBouncer's admin console: enabled by default only when
    /// `pgbouncer:` is configured.
    pub pgbouncer: bool,
    /// The families it exports that are known without running it (a
    /// table's columns), which no custom query may export.
    pub families: Vec<&'static str>,
}

/// Values given on the command line; `None` where the flag was absent.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub config_file: Option<PathBuf>,
    pub listen_address: Option<String>,
    pub telemetry_path: Option<String>,
    pub web_config_file: Option<String>,
    pub max_connections: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    /// postgres_exporter's `--collector.<name>` and `--no-collector.<name>`,
    /// in the order given (see [`take_collector_flags`]).
    pub collectors: Vec<CollectorFlag>,
    /// `--collector.stat_statements.limit` (`checks.slow_queries.top`).
    pub stat_statements_limit: Option<String>,
    /// `--[no-]collector.stat_statements.include_query`
    /// (`checks.slow_queries.include_query_text`).
    pub stat_statements_include_query: Option<bool>,
    /// `--collector.stat_statements.query_length`
    /// (`checks.slow_queries.query_text_length`).
    pub stat_statements_query_length: Option<String>,
    /// `--collection-timeout`: every collector's time limit.
    pub collection_timeout: Option<String>,
    /// `--disable-settings-metrics`: the `settings` collector off.
    pub disable_settings_metrics: bool,
    /// `--disable-default-metrics`: refused, with what to do instead.
    pub disable_default_metrics: bool,
    /// `--web.enable-lifecycle`: serve `POST /-/reload`.
    pub enable_lifecycle: bool,
    /// `--extend.query-path`: a postgres_exporter `queries.yaml`.
    pub extend_query_path: Option<String>,
    /// `--auto-discover-databases`: `databases: auto`.
    pub auto_discover_databases: bool,
    /// `--include-databases`: comma-separated names (`databases.include`).
    pub include_databases: Option<String>,
    /// `--exclude-databases`: comma-separated names (`databases.exclude`).
    pub exclude_databases: Option<String>,
}

/// One `--collector.<name>` (on) or `--no-collector.<name>` (off) flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorFlag {
    /// The flag as given, for messages.
    pub flag: String,
    pub name: String,
    /// `None`: a value other than `true` or `false` after `=`.
    pub enabled: Option<bool>,
}

/// postgres_exporter's collector names that pgsidecar has no collector for
/// (only the ones that are not pgsidecar's names too), with what to use
/// instead. Turning them off is accepted and does nothing: they are off.
const UPSTREAM_ONLY: &[(&str, &str)] = &[(
    "xlog_location",
    "postgres_exporter's xlog_location reads pg_current_xlog_location(), which PostgreSQL 10 removed; \
     pgsidecar exports the WAL position as pg_stat_replication_pg_current_wal_lsn_bytes (collector stat_replication) \
     and pg_replication_slots_slot_current_wal_lsn (collector replication_slots)",
)];

/// Takes postgres_exporter's `--collector.<name>` and `--no-collector.<name>`
/// flags (also `--collector.<name>=true|false`) out of the command line, for
/// every collector name, which a static flag parser cannot declare. Flags
/// whose name has a dot (`--collector.stat_statements.limit`) are options
/// of a collector and stay, as does everything after `--`.
pub fn take_collector_flags(args: Vec<String>) -> (Vec<String>, Vec<CollectorFlag>) {
    let mut rest = Vec::with_capacity(args.len());
    let mut taken = Vec::new();
    let mut options_end = false;
    for arg in args {
        options_end |= arg == "--";
        let parsed = (!options_end)
            .then(|| {
                let (on, name) = match arg.strip_prefix("--collector.") {
                    Some(n) => (true, n),
                    None => (false, arg.strip_prefix("--no-collector.")?),
                };
                let (name, value) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (name, None),
                };
                if name.contains('.') {
                    return None;
                }
                let enabled = match value {
                    None => Some(on),
                    Some("true") => Some(on),
                    Some("false") => Some(!on),
                    Some(_) => None,
                };
                Some(CollectorFlag {
                    flag: arg.clone(),
                    name: name.to_string(),
                    enabled,
                })
            })
            .flatten();
        match parsed {
            Some(f) => taken.push(f),
            None => rest.push(arg),
        }
    }
    (rest, taken)
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file, or where else the value came from (`--web.listen-address`,
    /// `DATA_SOURCE_NAME`).
    pub source: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key path, e.g. `collectors.stat_database.interval`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    let mut out = format!(
        "invalid configuration ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

impl Config {
    /// Loads and validates the configuration from all sources, for these
    /// collectors.
    pub fn load(flags: &Flags, env: &dyn Env, collectors: &[CollectorDefaults]) -> Result<Config, ConfigError> {
        let (text, source) = match &flags.config_file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (String::new(), "<defaults>".to_string()),
        };
        Self::from_yaml(&text, &source, flags, env, collectors)
    }

    /// Validates YAML text as if read from `source` (a file name).
    pub fn from_yaml(
        text: &str,
        source: &str,
        flags: &Flags,
        env: &dyn Env,
        collectors: &[CollectorDefaults],
    ) -> Result<Config, ConfigError> {
        let mut w = Walker {
            source,
            text,
            env,
            collectors,
            problems: Vec::new(),
            secrets: Vec::new(),
            prefix: Vec::new(),
        };
        // YAML merge keys (`<<: *defaults`) are applied before the schema walk.
        let parsed = serde_yaml::from_str::<Value>(text).and_then(|mut v| v.apply_merge().map(|()| v));
        let root = match parsed {
            Ok(Value::Null) => Value::Mapping(Default::default()),
            Ok(v) => v,
            Err(e) => {
                let loc = e.location();
                return Err(ConfigError::Invalid(vec![Problem {
                    source: source.to_string(),
                    line: loc.as_ref().map(|l| l.line()),
                    column: loc.as_ref().map(|l| l.column()),
                    key: String::new(),
                    message: redact(&format!("invalid YAML: {}", strip_location(&e.to_string()))),
                }]));
            }
        };
        let config = w.root(&root, flags, env);
        if w.problems.is_empty() {
            config.ok_or_else(|| ConfigError::Invalid(Vec::new()))
        } else {
            // Passwords read from files and the environment, wherever a message quotes them.
            let secrets: Vec<String> = w.secrets.iter().filter(|s| s.len() >= 3).cloned().collect();
            let mut problems = w.problems;
            for p in &mut problems {
                for secret in &secrets {
                    p.message = p.message.replace(secret.as_str(), "******");
                    p.key = p.key.replace(secret.as_str(), "******");
                }
            }
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn collector(&self, name: &str) -> Option<&CollectorConfig> {
        self.collectors.iter().find(|c| c.name == name)
    }
}

/// serde_yaml appends " at line L column C"; we print the location ourselves.
fn strip_location(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// Walks the YAML tree against the schema, collecting problems.
struct Walker<'a> {
    source: &'a str,
    text: &'a str,
    env: &'a dyn Env,
    collectors: &'a [CollectorDefaults],
    problems: Vec<Problem>,
    /// Passwords read so far, scrubbed from every problem at the end.
    secrets: Vec<String>,
    /// Put before every problem's path: the entry whose section is walked
    /// with the top level's walker (a database's `checks`).
    prefix: Vec<String>,
}

type Fields<'v> = BTreeMap<String, &'v Value>;

const TOP_KEYS: &[&str] = &[
    "datasource",
    "web",
    "log",
    "collection",
    "collectors",
    "checks",
    "coordination",
    "pgbouncer",
    "queries",
    "databases",
];
const DATASOURCE_KEYS: &[&str] = &[
    "dsn",
    "password_file",
    "sslmode",
    "sslrootcert",
    "application_name",
    "pool_size",
    "connect_timeout",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];
const WEB_KEYS: &[&str] = &[
    "listen_address",
    "telemetry_path",
    "shutdown_grace",
    "config_file",
    "max_connections",
    "write_timeout",
    "max_concurrent_scrapes",
];
const LOG_KEYS: &[&str] = &["level", "format"];
const COLLECTION_KEYS: &[&str] = &["interval", "timeout", "stale_after"];
const COLLECTOR_KEYS: &[&str] = &["enabled", "interval", "timeout", "stale_after"];
const COORDINATION_KEYS: &[&str] = &["mode", "lock_key", "check_interval"];

impl Walker<'_> {
    fn problem(&mut self, path: &[&str], message: impl Into<String>) {
        let prefixed: Vec<&str>;
        let path = if self.prefix.is_empty() {
            path
        } else {
            prefixed = self
                .prefix
                .iter()
                .map(String::as_str)
                .chain(path.iter().copied())
                .collect();
            &prefixed
        };
        let (line, column) = locate(self.text, path).map_or((None, None), |(l, c)| (Some(l), Some(c)));
        self.problems.push(Problem {
            source: self.source.to_string(),
            line,
            column,
            key: redact(&key_path(path)),
            message: redact(&message.into()),
        });
    }

    fn other_problem(&mut self, source: &str, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            source: source.to_string(),
            line: None,
            column: None,
            key: key.to_string(),
            message: redact(&message.into()),
        });
    }

    /// The keys of a mapping; reports a non-mapping and unknown keys.
    fn mapping<'v>(&mut self, v: &'v Value, path: &[&str], known: &[&str]) -> Fields<'v> {
        self.mapping_of(v, path, known, "key")
    }

    /// Like `mapping`, naming what an unknown key is (a key, a collector).
    fn mapping_of<'v>(&mut self, v: &'v Value, path: &[&str], known: &[&str], what: &str) -> Fields<'v> {
        let mut out = Fields::new();
        let map = match v {
            Value::Mapping(m) => m,
            Value::Null => return out,
            other => {
                self.problem(path, format!("expected a mapping, got {}", kind(other)));
                return out;
            }
        };
        for (k, val) in map {
            let Some(k) = k.as_str() else {
                self.problem(path, format!("keys must be strings, got {}", kind(k)));
                continue;
            };
            if known.contains(&k) {
                out.insert(k.to_string(), val);
            } else {
                let mut p = path.to_vec();
                p.push(k);
                self.problem(&p, unknown(what, k, known));
            }
        }
        out
    }

    fn string(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<String> {
        let v = f.get(key)?;
        match v {
            Value::String(s) => match env::expand(s, self.env) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.problem(&join(path, key), e);
                    None
                }
            },
            Value::Null => None,
            other => {
                self.problem(&join(path, key), format!("expected a string, got {}", kind(other)));
                None
            }
        }
    }

    fn boolean(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<bool> {
        match f.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(&join(path, key), format!("expected true or false, got {}", kind(other)));
                None
            }
        }
    }

    fn integer(&mut self, f: &Fields, key: &str, path: &[&str], min: u64, max: u64) -> Option<u64> {
        let v = f.get(key)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.problem(&join(path, key), format!("must be between {min} and {max}, got {n}"));
                None
            }
            None => {
                self.problem(
                    &join(path, key),
                    format!("expected a whole number between {min} and {max}, got {}", kind(v)),
                );
                None
            }
        }
    }

    /// The `timeout` key of a probe or a query run every `interval`: 5 s or
    /// the interval if shorter by default, greater than zero and not longer
    /// than the interval.
    fn timeout_within(&mut self, f: &Fields, path: &[&str], interval: Duration) -> Duration {
        let timeout = self
            .duration(f, "timeout", path)
            .unwrap_or_else(|| interval.min(Duration::from_secs(5)));
        if timeout.is_zero() {
            self.problem(&join(path, "timeout"), "must be greater than zero");
        } else if timeout > interval {
            self.problem(
                &join(path, "timeout"),
                format!(
                    "timeout {} is longer than the interval {}",
                    show(timeout),
                    show(interval)
                ),
            );
        }
        timeout
    }

    fn duration(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<Duration> {
        let v = f.get(key)?;
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                self.problem(
                    &join(path, key),
                    format!("expected a duration such as 15s, got {}", kind(other)),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(&join(path, key), e);
                None
            }
        }
    }

    fn root(&mut self, root: &Value, flags: &Flags, env: &dyn Env) -> Option<Config> {
        let top = self.mapping(root, &[], TOP_KEYS);
        let empty = Value::Null;
        let get = |k: &str| top.get(k).copied().unwrap_or(&empty);

        let collection = self.mapping(get("collection"), &["collection"], COLLECTION_KEYS);
        let default_interval = self
            .duration(&collection, "interval", &["collection"])
            .unwrap_or(Duration::from_secs(15));
        let default_timeout = self.duration(&collection, "timeout", &["collection"]);
        let default_stale = self.duration(&collection, "stale_after", &["collection"]);
        let (pgbouncer, pgbouncer_thresholds) = self.pgbouncer(get("pgbouncer"), env);
        let mut collectors = self.collectors(
            get("collectors"),
            default_interval,
            default_timeout,
            default_stale,
            pgbouncer.as_ref(),
        );
        self.collector_flags(flags, &mut collectors);

        let max_timeout = collectors
            .iter()
            .filter(|c| c.enabled)
            .map(|c| c.timeout)
            .max()
            .unwrap_or(Duration::from_secs(5));
        let datasource = self.datasource(get("datasource"), env, max_timeout);
        let web = self.web(get("web"), flags);
        let log = self.log(get("log"), flags);
        let mut checks = self.checks(get("checks"));
        self.stat_statements_flags(flags, &mut checks);
        checks.pgbouncer = pgbouncer_thresholds;
        let coordination = self.coordination(get("coordination"));
        let queries = self.all_queries(get("queries"), flags, env, default_interval, &collectors);
        let databases = self.databases(get("databases"), flags, env);
        if databases.is_none() {
            for q in queries.iter().filter(|q| !q.databases.is_empty()) {
                self.other_problem(
                    &q.file,
                    &format!("{}.databases", q.name),
                    "a query's databases need the top-level databases: section, which says which databases pgsidecar may read",
                );
            }
        }
        Some(Config {
            datasource: datasource?,
            web: web?,
            log: log?,
            collectors,
            checks: std::sync::Arc::new(checks),
            coordination: coordination?,
            pgbouncer,
            queries,
            databases,
        })
    }

    /// The `queries:` section, then the extend file's queries
    /// (`--extend.query-path`, else `PG_EXPORTER_EXTEND_QUERY_PATH`), each
    /// problem with its own file; then the collisions between them and with
    /// the enabled built-in collectors.
    fn all_queries(
        &mut self,
        section: &Value,
        flags: &Flags,
        env: &dyn Env,
        default_interval: Duration,
        collectors: &[CollectorConfig],
    ) -> Vec<CustomQuery> {
        let mut queries = self.queries(section, &["queries"], default_interval);
        let in_section = queries.len();
        let path = flags
            .extend_query_path
            .clone()
            .filter(|p| !p.is_empty())
            .map(|p| (p, "--extend.query-path"))
            .or_else(|| {
                env::nonempty(env, "PG_EXPORTER_EXTEND_QUERY_PATH").map(|p| (p, "PG_EXPORTER_EXTEND_QUERY_PATH"))
            });
        let mut file_text = String::new();
        if let Some((path, from)) = &path {
            match std::fs::read_to_string(path) {
                Err(e) => self.other_problem(from, "", format!("cannot read {}: {e}", shown_path(path))),
                Ok(text) => {
                    file_text = text;
                    let mut w = Walker {
                        source: path,
                        text: &file_text,
                        env: self.env,
                        collectors: self.collectors,
                        problems: Vec::new(),
                        secrets: Vec::new(),
                        prefix: Vec::new(),
                    };
                    match serde_yaml::from_str::<Value>(&file_text) {
                        Ok(v) => {
                            for q in w.queries(&v, &[], default_interval) {
                                if queries.iter().any(|o| o.name == q.name) {
                                    w.problem(
                                        &[q.name.as_str()],
                                        format!("query {} is defined in the config file's queries: too", q.name),
                                    );
                                } else {
                                    queries.push(q);
                                }
                            }
                        }
                        Err(e) => {
                            let loc = e.location();
                            w.problems.push(Problem {
                                source: path.clone(),
                                line: loc.as_ref().map(|l| l.line()),
                                column: loc.as_ref().map(|l| l.column()),
                                key: String::new(),
                                message: format!("invalid YAML: {}", strip_location(&e.to_string())),
                            });
                        }
                    }
                    self.problems.append(&mut w.problems);
                }
            }
        }
        let enabled = |name: &str| collectors.iter().any(|c| c.name == name && c.enabled);
        for (i, message) in queries::collisions(&queries, self.collectors, &enabled) {
            let name = queries[i].name.clone();
            if i < in_section {
                self.problem(&["queries", name.as_str()], message);
            } else if let Some((path, _)) = &path {
                let (line, column) =
                    locate(&file_text, &[name.as_str()]).map_or((None, None), |(l, c)| (Some(l), Some(c)));
                self.problems.push(Problem {
                    source: path.clone(),
                    line,
                    column,
                    key: name,
                    message,
                });
            }
        }
        queries
    }

    fn collectors(
        &mut self,
        v: &Value,
        default_interval: Duration,
        default_timeout: Option<Duration>,
        default_stale: Option<Duration>,
        pgbouncer: Option<&PgBouncer>,
    ) -> Vec<CollectorConfig> {
        let names: Vec<&str> = self.collectors.iter().map(|d| d.name).collect();
        let given = self.mapping_of(v, &["collectors"], &names, "collector");
        let mut out = Vec::new();
        for def in self.collectors {
            let path = ["collectors", def.name];
            let f = match given.get(def.name) {
                Some(v) => self.mapping(v, &path, COLLECTOR_KEYS),
                None => Fields::new(),
            };
            let mut enabled = self.boolean(&f, "enabled", &path).unwrap_or(def.enabled);
            let mut default_interval = default_interval;
            if def.pgbouncer {
                match pgbouncer {
                    Some(p) => default_interval = p.interval.unwrap_or(default_interval),
                    None if enabled && f.contains_key("enabled") => self.problem(
                        &join(&path, "enabled"),
                        "this collector reads PgBouncer's admin console: configure pgbouncer.dsn (or PGBOUNCER_DSN) first",
                    ),
                    None => {}
                }
                enabled = enabled && pgbouncer.is_some();
            }
            let interval = self
                .duration(&f, "interval", &path)
                .unwrap_or_else(|| def.interval.unwrap_or(default_interval));
            let timeout = self
                .duration(&f, "timeout", &path)
                .or(default_timeout)
                .unwrap_or_else(|| interval.min(Duration::from_secs(5)));
            let stale_after = self
                .duration(&f, "stale_after", &path)
                .or(default_stale)
                .unwrap_or(interval.saturating_mul(3));
            if interval < Duration::from_millis(100) {
                self.problem(
                    &join(&path, "interval"),
                    format!("must be at least 100ms, got {}", show(interval)),
                );
            }
            if timeout > interval {
                self.problem(
                    &join(&path, "timeout"),
                    format!(
                        "timeout {} is longer than the interval {}",
                        show(timeout),
                        show(interval)
                    ),
                );
            }
            if stale_after < interval {
                self.problem(
                    &join(&path, "stale_after"),
                    format!(
                        "stale_after {} is shorter than the interval {}",
                        show(stale_after),
                        show(interval)
                    ),
                );
            }
            out.push(CollectorConfig {
                name: def.name,
                enabled,
                interval,
                timeout,
                stale_after,
                every_pod: def.pgbouncer && pgbouncer.is_some_and(|p| p.run_by == RunBy::EveryPod),
            });
        }
        out
    }

    /// Applies `--collector.<name>`, `--no-collector.<name>`,
    /// `--collection-timeout`, `--disable-settings-metrics` and
    /// `--disable-default-metrics` over the file's collectors, then enables
    /// the collector that covers each enabled name that has none of its own.
    fn collector_flags(&mut self, flags: &Flags, collectors: &mut [CollectorConfig]) {
        if flags.disable_default_metrics {
            self.other_problem(
                "--disable-default-metrics",
                "",
                "pgsidecar has no separate set of default metrics: turn off what you do not want with \
                 --no-collector.<name> (e.g. --no-collector.stat_database --no-collector.stat_activity), \
                 or collectors.<name>.enabled: false in the config file",
            );
        }
        if flags.disable_settings_metrics
            && let Some(c) = collectors.iter_mut().find(|c| c.name == "settings")
        {
            c.enabled = false;
        }
        let names: Vec<&str> = self.collectors.iter().map(|d| d.name).collect();
        for f in &flags.collectors {
            let Some(enabled) = f.enabled else {
                self.other_problem(
                    &f.flag,
                    "",
                    format!(
                        "expected --collector.{0}, --no-collector.{0} or a value of true or false",
                        f.name
                    ),
                );
                continue;
            };
            if let Some(c) = collectors.iter_mut().find(|c| c.name == f.name) {
                c.enabled = enabled;
            } else if let Some((_, instead)) = UPSTREAM_ONLY.iter().find(|(n, _)| *n == f.name) {
                if enabled {
                    self.other_problem(&f.flag, "", format!("no such collector in pgsidecar: {instead}"));
                }
            } else {
                self.other_problem(&f.flag, "", unknown("collector", &f.name, &names));
            }
        }
        if let Some(text) = &flags.collection_timeout {
            match parse_duration(text) {
                Ok(d) if d.is_zero() => self.other_problem("--collection-timeout", "", "must be greater than zero"),
                // A run never outlasts its interval: the next one would overlap it.
                Ok(d) => collectors.iter_mut().for_each(|c| c.timeout = d.min(c.interval)),
                Err(e) => self.other_problem("--collection-timeout", "", e),
            }
        }
        for def in self.collectors {
            let Some(by) = def.covered_by else { continue };
            let Some(i) = collectors.iter().position(|c| c.name == def.name && c.enabled) else {
                continue;
            };
            collectors[i].enabled = false;
            if let Some(c) = collectors.iter_mut().find(|c| c.name == by) {
                c.enabled = true;
            }
        }
    }

    /// postgres_exporter's `--collector.stat_statements.*` options, over
    /// `checks.slow_queries`.
    fn stat_statements_flags(&mut self, flags: &Flags, checks: &mut Checks) {
        let st = &mut checks.statements;
        if let Some(text) = &flags.stat_statements_limit {
            match text.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => st.top = n,
                _ => self.other_problem(
                    "--collector.stat_statements.limit",
                    "",
                    format!("expected a whole number between 1 and 10000, got {}", shown(text)),
                ),
            }
        }
        if let Some(on) = flags.stat_statements_include_query {
            st.include_query_text = on;
        }
        if let Some(text) = &flags.stat_statements_query_length {
            match text.parse::<usize>() {
                Ok(n) if (16..=10_000).contains(&n) => st.query_text_length = n,
                _ => self.other_problem(
                    "--collector.stat_statements.query_length",
                    "",
                    format!("expected a whole number between 16 and 10000, got {}", shown(text)),
                ),
            }
        }
    }

    fn coordination(&mut self, v: &Value) -> Option<Coordination> {
        let path = ["coordination"];
        let f = self.mapping(v, &path, COORDINATION_KEYS);
        let default = Coordination::default();
        let mode = match self.string(&f, "mode", &path) {
            Some(text) => CoordinationMode::from_str(&text)
                .map_err(|e| self.problem(&join(&path, "mode"), e))
                .ok(),
            None => Some(default.mode),
        };
        let lock_key = match f.get("lock_key") {
            // Postgres's bigint: the sign bit is left out, keys are 0 to 2^63-1.
            Some(_) => self
                .integer(&f, "lock_key", &path, 0, i64::MAX as u64)
                .and_then(|k| i64::try_from(k).ok()),
            None => Some(default.lock_key),
        };
        let check_interval = self
            .duration(&f, "check_interval", &path)
            .unwrap_or(default.check_interval);
        if check_interval < Duration::from_millis(100) {
            self.problem(
                &join(&path, "check_interval"),
                format!("must be at least 100ms, got {}", show(check_interval)),
            );
        }
        Some(Coordination {
            mode: mode?,
            lock_key: lock_key?,
            check_interval,
        })
    }

    /// A value that a flag overrides: the flag's if given (its problems are
    /// the flag's), else the file's key (read, and its `${VARS}` expanded,
    /// only then), else `default`.
    #[allow(clippy::too_many_arguments)]
    fn overridable<T>(
        &mut self,
        flag: Option<&String>,
        flag_name: &str,
        f: &Fields,
        key: &str,
        path: &[&str],
        parse: fn(&str) -> Result<T, String>,
        default: T,
    ) -> Option<T> {
        if let Some(given) = flag {
            return parse(given).map_err(|e| self.other_problem(flag_name, "", e)).ok();
        }
        match self.string(f, key, path) {
            Some(text) => parse(&text).map_err(|e| self.problem(&join(path, key), e)).ok(),
            None => Some(default),
        }
    }

    fn web(&mut self, v: &Value, flags: &Flags) -> Option<Web> {
        let path = ["web"];
        let f = self.mapping(v, &path, WEB_KEYS);
        let listen = self.overridable(
            flags.listen_address.as_ref(),
            "--web.listen-address",
            &f,
            "listen_address",
            &path,
            parse_listen,
            SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        );
        let telemetry_path = self.overridable(
            flags.telemetry_path.as_ref(),
            "--web.telemetry-path",
            &f,
            "telemetry_path",
            &path,
            check_telemetry_path,
            "/metrics".to_string(),
        );
        let shutdown_grace = self
            .duration(&f, "shutdown_grace", &path)
            .unwrap_or(Duration::from_secs(10));
        let config_file = self.overridable(
            flags.web_config_file.as_ref(),
            "--web.config.file",
            &f,
            "config_file",
            &path,
            |p| Ok((!p.is_empty()).then(|| PathBuf::from(p))),
            None,
        );
        let security = match config_file.as_ref().and_then(|p| p.as_ref()) {
            Some(file) => web::load(file).map_err(|p| self.problems.extend(p)).ok(),
            None => Some(WebSecurity::default()),
        };
        let max_connections = match &flags.max_connections {
            Some(n) => parse_count(n, 1, 1_000_000)
                .map_err(|e| self.other_problem("--web.max-connections", "", e))
                .ok(),
            None => Some(
                self.integer(&f, "max_connections", &path, 1, 1_000_000)
                    .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize),
            ),
        };
        let write_timeout = self
            .duration(&f, "write_timeout", &path)
            .unwrap_or(Duration::from_secs(30));
        if write_timeout.is_zero() {
            self.problem(&join(&path, "write_timeout"), "must be greater than zero");
        }
        let max_concurrent_scrapes = self
            .integer(&f, "max_concurrent_scrapes", &path, 1, 1000)
            .map_or(4, |n| n as usize);
        Some(Web {
            listen_address: listen?,
            telemetry_path: telemetry_path?,
            shutdown_grace,
            enable_lifecycle: flags.enable_lifecycle,
            config_file: config_file?,
            security: std::sync::Arc::new(security?),
            max_connections: max_connections?,
            write_timeout,
            max_concurrent_scrapes,
        })
    }

    fn log(&mut self, v: &Value, flags: &Flags) -> Option<Log> {
        let path = ["log"];
        let f = self.mapping(v, &path, LOG_KEYS);
        let level = self.overridable(
            flags.log_level.as_ref(),
            "--log.level",
            &f,
            "level",
            &path,
            parse_level,
            tracing::Level::INFO,
        );
        let format = self.overridable(
            flags.log_format.as_ref(),
            "--log.format",
            &f,
            "format",
            &path,
            parse_format,
            LogFormat::Logfmt,
        );
        Some(Log {
            level: level?,
            format: format?,
        })
    }

    fn datasource(&mut self, v: &Value, env: &dyn Env, max_timeout: Duration) -> Option<Datasource> {
        let path = ["datasource"];
        let f = self.mapping(v, &path, DATASOURCE_KEYS);

        // The DSN: DATA_SOURCE_NAME, else DATA_SOURCE_URI (+ _USER/_PASS), else
        // the file's, which is not read at all (nor its ${VARS} expanded) when
        // the environment overrides it.
        let (dsn_text, dsn_source) = if let Some(d) = self.env_or_file(env, "DATA_SOURCE_NAME") {
            (Some(d), "DATA_SOURCE_NAME".to_string())
        } else if let Some(uri) = self.env_or_file(env, "DATA_SOURCE_URI") {
            let uri = uri
                .trim_start_matches("postgresql://")
                .trim_start_matches("postgres://");
            (Some(format!("postgresql://{uri}")), "DATA_SOURCE_URI".to_string())
        } else {
            (
                self.string(&f, "dsn", &path),
                format!("{} (datasource.dsn)", self.source),
            )
        };

        let mut parts = match dsn_text.as_deref().map(dsn::split_dsn) {
            None => Some(dsn::DsnParts::default()),
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                self.dsn_problem(&dsn_source, e);
                None
            }
        };
        let mut pg = match &parts {
            Some(p) if !p.rest.trim().is_empty() => match tokio_postgres::Config::from_str(&p.rest) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.dsn_problem(&dsn_source, dsn::parse_error(&e));
                    None
                }
            },
            Some(_) => Some(tokio_postgres::Config::new()),
            None => None,
        };

        if let Some(pg) = pg.as_mut() {
            // As in postgres_exporter, _USER and _PASS complete DATA_SOURCE_URI only.
            if dsn_source == "DATA_SOURCE_URI" {
                if let Some(u) = self.env_or_file(env, "DATA_SOURCE_USER") {
                    pg.user(&u);
                }
                if let Some(p) = self.env_or_file(env, "DATA_SOURCE_PASS") {
                    self.secrets.push(p.clone());
                    pg.password(p);
                }
            }
            if let Some(file) = self.string(&f, "password_file", &path) {
                match std::fs::read_to_string(&file) {
                    Ok(text) => {
                        // The first line is the password; the rest of the file is not sent.
                        let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
                        self.secrets.push(text.trim_end().to_string());
                        self.secrets.push(first.to_string());
                        if first.is_empty() {
                            self.problem(
                                &join(&path, "password_file"),
                                format!(
                                    "{}: the first line, which must hold the password, is empty",
                                    shown_path(&file)
                                ),
                            );
                        } else {
                            pg.password(first);
                        }
                    }
                    Err(e) => self.problem(
                        &join(&path, "password_file"),
                        format!("cannot read {}: {e}", shown_path(&file)),
                    ),
                }
            }
            dsn::apply_libpq_env(pg, env);
            if let Some(p) = pg.get_password() {
                self.secrets.push(String::from_utf8_lossy(p).into_owned());
            }
        }

        // sslmode: the DSN's, else the file's, else PGSSLMODE, else prefer.
        let from_dsn = parts.as_mut().and_then(|p| p.sslmode.take());
        let sslmode = match from_dsn {
            Some(text) => SslMode::from_str(&text)
                .map_err(|e| self.dsn_problem(&dsn_source, e))
                .ok(),
            None => match self.string(&f, "sslmode", &path) {
                Some(text) => SslMode::from_str(&text)
                    .map_err(|e| self.problem(&join(&path, "sslmode"), e))
                    .ok(),
                None => match env::nonempty(env, "PGSSLMODE") {
                    Some(text) => SslMode::from_str(&text)
                        .map_err(|e| self.other_problem("PGSSLMODE", "", e))
                        .ok(),
                    None => Some(SslMode::Prefer),
                },
            },
        };
        let sslrootcert = parts
            .as_mut()
            .and_then(|p| p.sslrootcert.take())
            .or_else(|| self.string(&f, "sslrootcert", &path))
            .or_else(|| env::nonempty(env, "PGSSLROOTCERT"))
            .map(PathBuf::from);
        if let (Some(SslMode::VerifyCa | SslMode::VerifyFull), None) = (sslmode, &sslrootcert) {
            self.problem(
                &join(&path, "sslrootcert"),
                "sslmode verify-ca and verify-full need sslrootcert (a PEM file of trusted CA certificates)",
            );
        }
        if let Some(p) = &sslrootcert
            && !Path::new(p).is_file()
        {
            self.problem(
                &join(&path, "sslrootcert"),
                format!("{} is not a readable file", shown_path(&p.display().to_string())),
            );
        }

        let application_name = self
            .string(&f, "application_name", &path)
            .or_else(|| pg.as_ref().and_then(|c| c.get_application_name().map(str::to_string)))
            .or_else(|| env::nonempty(env, "PGAPPNAME"))
            .unwrap_or_else(|| "pgsidecar".to_string());
        let pool_size = self.integer(&f, "pool_size", &path, 1, 32).unwrap_or(3) as usize;
        let connect_timeout = self
            .duration(&f, "connect_timeout", &path)
            .or_else(|| pg.as_ref().and_then(|c| c.get_connect_timeout().copied()))
            .unwrap_or(Duration::from_secs(5));
        let statement_timeout = self.duration(&f, "statement_timeout", &path).unwrap_or(max_timeout);
        let lock_timeout = self
            .duration(&f, "lock_timeout", &path)
            .unwrap_or(Duration::from_secs(1).min(statement_timeout));
        let idle_in_transaction_session_timeout = self
            .duration(&f, "idle_in_transaction_session_timeout", &path)
            .unwrap_or(Duration::from_secs(30));
        for (key, d) in [
            ("statement_timeout", statement_timeout),
            ("lock_timeout", lock_timeout),
            (
                "idle_in_transaction_session_timeout",
                idle_in_transaction_session_timeout,
            ),
            ("connect_timeout", connect_timeout),
        ] {
            if d.is_zero() {
                self.problem(
                    &join(&path, key),
                    "must be greater than zero (pgsidecar never runs unbounded)",
                );
            }
        }

        let mut pg = pg?;
        pg.connect_timeout(connect_timeout);
        Some(Datasource {
            pg,
            sslmode: sslmode?,
            sslrootcert,
            application_name,
            pool_size,
            connect_timeout,
            statement_timeout,
            lock_timeout,
            idle_in_transaction_session_timeout,
        })
    }

    /// `NAME`, or the contents of the file named by `NAME_FILE`.
    fn env_or_file(&mut self, env: &dyn Env, name: &str) -> Option<String> {
        if let Some(v) = env::nonempty(env, name) {
            return Some(v);
        }
        let file_var = format!("{name}_FILE");
        let file = env::nonempty(env, &file_var)?;
        match std::fs::read_to_string(&file) {
            Ok(v) => Some(v.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                self.other_problem(&file_var, "", format!("cannot read {}: {e}", shown_path(&file)));
                None
            }
        }
    }

    fn dsn_problem(&mut self, source: &str, message: String) {
        if source.ends_with("(datasource.dsn)") {
            self.problem(&["datasource", "dsn"], format!("invalid DSN: {message}"));
        } else {
            self.other_problem(source, "", format!("invalid DSN: {message}"));
        }
    }
}

/// The longest duration the configuration accepts: 30 days. Longer ones
/// are mistakes, and would overflow the timers that add them to now.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses `500ms`, `15s`, `5m`, `1h`, `1m30s`, up to [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "invalid duration {}: expected a number with a unit (ms, s, m, h), e.g. 15s or 500ms",
            shown(text)
        )
    };
    let too_long = || format!("duration {} is too long: at most {}", shown(text), show(MAX_DURATION));
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(err()),
        };
        total_ms = n
            .checked_mul(ms_per_unit)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(too_long)?;
        rest = &rest[unit_len..];
    }
    let total = Duration::from_millis(total_ms);
    if total > MAX_DURATION {
        return Err(too_long());
    }
    Ok(total)
}

/// A duration as the config would spell it.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn parse_listen(a: &str) -> Result<SocketAddr, String> {
    // Go-style ":9188" means every interface, as in postgres_exporter.
    let full = if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else {
        a.to_string()
    };
    full.parse().map_err(|_| {
        format!(
            "invalid listen address {}: expected host:port, e.g. 0.0.0.0:{DEFAULT_PORT} or :{DEFAULT_PORT}",
            shown(a)
        )
    })
}

/// Connections open at once when `--web.max-connections` is not given: a
/// sidecar is scraped by a few Prometheus servers, and every connection
/// costs buffers and a file descriptor.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;

fn parse_count(n: &str, min: usize, max: usize) -> Result<usize, String> {
    match n.trim().parse::<usize>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid number {}: expected a whole number from {min} to {max}",
            shown(n)
        )),
    }
}

fn check_telemetry_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') || p.len() < 2 {
        return Err(format!(
            "invalid telemetry path {}: must start with / and name a path, e.g. /metrics",
            shown(p)
        ));
    }
    // A query or fragment is never part of the path a request is routed by.
    if let Some(c) = p
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "invalid telemetry path {}: {c:?} cannot appear in a path that a scrape can reach; use a plain path such as /metrics",
            shown(p)
        ));
    }
    if ["/healthz", "/readyz"].contains(&p) {
        return Err(format!(
            "telemetry path {} is taken by pgsidecar's own endpoint",
            shown(p)
        ));
    }
    Ok(p.to_string())
}

fn parse_level(l: &str) -> Result<tracing::Level, String> {
    match l {
        "debug" => Ok(tracing::Level::DEBUG),
        "info" => Ok(tracing::Level::INFO),
        "warn" => Ok(tracing::Level::WARN),
        "error" => Ok(tracing::Level::ERROR),
        other => Err(format!(
            "unknown log level {}: expected debug, info, warn or error",
            shown(other)
        )),
    }
}

fn parse_format(l: &str) -> Result<LogFormat, String> {
    match l {
        "logfmt" => Ok(LogFormat::Logfmt),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format {}: expected logfmt or json", shown(other))),
    }
}

/// `checks.pools[1].size`: list indices attach without a dot.
/// A key that is not a plain name (a mangled line can make a DSN a key) is
/// not shown.
fn key_path(path: &[&str]) -> String {
    let mut out = String::new();
    for p in path {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        let plain = p.len() <= 64
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '[' | ']' | '<'));
        if plain {
            out.push_str(p);
        } else {
            out.push_str(&format!("(a key of {} characters, not shown)", p.chars().count()));
        }
    }
    out
}

fn join<'a>(path: &[&'a str], key: &'a str) -> Vec<&'a str> {
    let mut p = path.to_vec();
    p.push(key);
    p
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({})", shown(s)),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// Whether an error may quote a value: short, and without what marks a DSN
/// with a password (`@`, `=`). A DSN pasted into the wrong key, or mangled
/// by a stray quote, must not be echoed.
fn quotable(s: &str) -> bool {
    s.chars().count() <= 64 && !s.chars().any(|c| matches!(c, '=' | '@') || c.is_control())
}

/// A value as an error quotes it, or a note that it is not shown.
pub(crate) fn shown(s: &str) -> String {
    if quotable(s) { format!("{s:?}") } else { withheld(s) }
}

/// A file name as an error shows it (unquoted), or a note that it is not shown.
fn shown_path(s: &str) -> String {
    if quotable(s) { s.to_string() } else { withheld(s) }
}

fn withheld(s: &str) -> String {
    format!(
        "(a value of {} characters, not shown: it may hold a secret)",
        s.chars().count()
    )
}

fn unknown(what: &str, given: &str, known: &[&str]) -> String {
    let mut msg = format!("unknown {what}");
    if let Some(best) = known
        .iter()
        .map(|k| (edit_distance(given, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
    {
        msg.push_str(&format!(" (did you mean {:?}?)", best.1));
    }
    msg.push_str(&format!("; expected one of: {}", known.join(", ")));
    msg
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Finds the line and column of a key path in block-style YAML, for error
/// messages; list items are path components `[0]`, `[1]`, .... Returns `None`
/// for flow style or anything it cannot follow.
fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    struct Entry {
        indent: usize,
        key: String,
        item: bool,
        items: usize,
    }
    if path.is_empty() {
        return None;
    }
    let matches = |stack: &[Entry]| stack.len() == path.len() && stack.iter().zip(path).all(|(e, p)| e.key == *p);
    let mut stack: Vec<Entry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let mut trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        if trimmed == "-" || trimmed.starts_with("- ") {
            while stack
                .last()
                .is_some_and(|e| e.indent > indent || (e.indent == indent && e.item))
            {
                stack.pop();
            }
            let index = stack.last_mut().map_or(0, |parent| {
                parent.items += 1;
                parent.items - 1
            });
            stack.push(Entry {
                indent,
                key: format!("[{index}]"),
                item: true,
                items: 0,
            });
            if matches(&stack) {
                return Some((n + 1, indent + 1));
            }
            let after = trimmed[1..].trim_start();
            indent += trimmed.len() - after.len();
            trimmed = after;
            if trimmed.is_empty() {
                continue;
            }
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        while stack.last().is_some_and(|e| e.indent >= indent) {
            stack.pop();
        }
        stack.push(Entry {
            indent,
            key: key.to_string(),
            item: false,
            items: 0,
        });
        if matches(&stack) {
            return Some((n + 1, indent + 1));
        }
    }
    None
}

/// A test's configuration: `yaml` as the file `c.yaml`, no flags, no
/// environment, and these collectors' defaults.
#[cfg(test)]
pub(crate) fn test_load(yaml: &str, collectors: &[CollectorDefaults]) -> Result<Config, ConfigError> {
    Config::from_yaml(
        yaml,
        "c.yaml",
        &Flags::default(),
        &BTreeMap::<String, String>::new(),
        collectors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("10 sec").is_err());
    }

    #[test]
    fn show_round_trips() {
        for s in ["15s", "500ms", "5m", "2h"] {
            assert_eq!(show(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn locate_follows_block_indentation() {
        let text = "web:\n  listen_address: x\ncollectors:\n  stat_database:\n    interval: 5\n";
        assert_eq!(locate(text, &["collectors", "stat_database", "interval"]), Some((5, 5)));
        assert_eq!(locate(text, &["web", "listen_address"]), Some((2, 3)));
        assert_eq!(locate(text, &["web", "nope"]), None);
    }

    #[test]
    fn locate_follows_list_items() {
        let text = "checks:\n  pools:\n    - name: a\n      size: 1\n    - name: b\n      size: x\n  indexes:\n    expected:\n    - idx_a\n    - idx_b\n";
        assert_eq!(locate(text, &["checks", "pools", "[1]", "size"]), Some((6, 7)));
        assert_eq!(locate(text, &["checks", "pools", "[0]", "name"]), Some((3, 7)));
        assert_eq!(locate(text, &["checks", "indexes", "expected", "[1]"]), Some((10, 5)));
        assert_eq!(key_path(&["checks", "pools", "[1]", "size"]), "checks.pools[1].size");
    }

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        test_load(yaml, &[])
    }

    #[test]
    fn coordination_defaults_and_values() {
        let c = load("").unwrap().coordination;
        assert_eq!(c.mode, CoordinationMode::All);
        assert_eq!(c.lock_key, 0x7067_7363);
        assert_eq!(c.check_interval, Duration::from_secs(5));
        let c = load("coordination:\n  mode: leader-election\n  lock_key: 42\n  check_interval: 500ms\n")
            .unwrap()
            .coordination;
        assert_eq!(c.mode, CoordinationMode::LeaderElection);
        assert_eq!(c.lock_key, 42);
        assert_eq!(c.check_interval, Duration::from_millis(500));
        assert_eq!(
            load("coordination:\n  mode: none\n").unwrap().coordination.mode,
            CoordinationMode::None
        );
    }

    #[test]
    fn coordination_problems_carry_their_location() {
        let err = load("coordination:\n  mode: leader\n  lock_key: -1\n  check_interval: 10ms\n  lease: 5s\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml:2:3: coordination.mode: unknown coordination mode \"leader\""),
            "{err}"
        );
        assert!(
            err.contains("c.yaml:3:3: coordination.lock_key: expected a whole number"),
            "{err}"
        );
        assert!(
            err.contains("c.yaml:4:3: coordination.check_interval: must be at least 100ms"),
            "{err}"
        );
        assert!(err.contains("c.yaml:5:3: coordination.lease: unknown key"), "{err}");
    }

    #[test]
    fn suggestions_name_the_closest_key() {
        let m = unknown("key", "intervall", COLLECTOR_KEYS);
        assert!(m.contains("did you mean \"interval\"?"), "{m}");
    }

    #[test]
    fn durations_are_bounded_and_never_overflow() {
        // Regression: 18446744073709551615s panicked computing stale_after.
        for text in [
            "18446744073709551615s",
            "18446744073709551615h",
            "99999999999999999999ms",
            "721h",
            "31d",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert_eq!(parse_duration("720h"), Ok(MAX_DURATION));
        let err = load("collection:\n  interval: 18446744073709551615s\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("collection.interval: duration \"18446744073709551615s\" is too long: at most 720h"),
            "{err}"
        );
    }

    #[test]
    fn web_limits_and_the_web_config_file() {
        let c = load("").unwrap();
        assert_eq!(c.web.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.web.write_timeout, Duration::from_secs(30));
        assert_eq!(c.web.max_concurrent_scrapes, 4);
        assert!(c.web.config_file.is_none() && c.web.security.tls.is_none() && c.web.security.users.is_empty());
        let c = load("web:\n  max_connections: 16\n  write_timeout: 2s\n  max_concurrent_scrapes: 1\n").unwrap();
        assert_eq!(
            (c.web.max_connections, c.web.write_timeout, c.web.max_concurrent_scrapes),
            (16, Duration::from_secs(2), 1)
        );
        let err = load("web:\n  max_connections: 0\n  write_timeout: 0s\n  config_file: /nonexistent/web.yml\n")
            .unwrap_err()
            .to_string();
        for want in [
            "c.yaml:2:3: web.max_connections: must be between 1 and 1000000, got 0",
            "c.yaml:3:3: web.write_timeout: must be greater than zero",
            "/nonexistent/web.yml: cannot read the web configuration file",
        ] {
            assert!(err.contains(want), "missing {want:?} in {err}");
        }
        let flags = Flags {
            max_connections: Some("many".into()),
            web_config_file: Some("/nonexistent/flag.yml".into()),
            ..Flags::default()
        };
        let err = Config::from_yaml("", "c.yaml", &flags, &BTreeMap::<String, String>::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--web.max-connections: invalid number \"many\""), "{err}");
        assert!(err.contains("/nonexistent/flag.yml: cannot read"), "{err}");
    }

    #[test]
    fn yaml_merge_keys_apply() {
        let c = load("x-defaults: &d\n  interval: 7s\n").unwrap_err().to_string();
        assert!(c.contains("x-defaults: unknown key"), "{c}");
        let c =
            load("web: &w\n  shutdown_grace: 3s\ncoordination:\n  <<: {check_interval: 2s}\n  mode: none\n").unwrap();
        assert_eq!(c.coordination.check_interval, Duration::from_secs(2));
        assert_eq!(c.coordination.mode, CoordinationMode::None);
    }

    #[test]
    fn a_telemetry_path_with_a_query_is_refused() {
        let err = load("web:\n  telemetry_path: /m?x=1\n").unwrap_err().to_string();
        assert!(err.contains("'?' cannot appear in a path"), "{err}");
    }

    fn load_env(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_yaml(yaml, "c.yaml", &Flags::default(), &env, &[])
    }

    /// Regression: the example refused to start without DB_HOST although
    /// DATA_SOURCE_NAME overrode the DSN that named it.
    #[test]
    fn an_overridden_value_is_not_expanded() {
        let yaml = "datasource:\n  dsn: \"postgresql://u@${DB_HOST}/db\"\nweb:\n  listen_address: \"${LISTEN}\"\n";
        let err = load_env(yaml, &[]).unwrap_err().to_string();
        assert!(
            err.contains("DB_HOST is not set") && err.contains("LISTEN is not set"),
            "{err}"
        );
        let flags = Flags {
            listen_address: Some("127.0.0.1:9".into()),
            ..Flags::default()
        };
        let env: BTreeMap<String, String> =
            [("DATA_SOURCE_NAME".to_string(), "host=h user=u dbname=d".to_string())].into();
        let c = Config::from_yaml(yaml, "c.yaml", &flags, &env, &[]).unwrap();
        assert_eq!(c.datasource.target(), "u@h:5432/d");
    }

    /// Regression: these were quoted back whole, password included.
    #[test]
    fn no_problem_shows_a_password() {
        let secret = "Sup3r-s3cret";
        let mut checked = 0;
        for yaml in [
            format!("datasource: \"postgresql://u:{secret}@h/db\"\n"),
            format!("datasource:\n  dsn: \"postgresql://u:{secret}@h/${{DB\"\n"),
            format!("datasource:\n  dsn: \"postgresql://u:{secret}#x@h/db\"\n"),
            format!("datasource:\n  dsn: \"postgresql://u:{secret},x@h/db\"\n"),
            format!("datasource:\n  dsn: \"postgresql://u:{secret} x@h/db\"\n"),
            format!("datasource:\n  dsn: \"host=h password={secret} x\"\n"),
            format!("datasource:\n  dsn: \"host=h password='{secret}\"\n"),
            format!("datasource:\n  dsn: [\"postgresql://u:{secret}@h/db\"]\n"),
            format!("datasource:\n  dsn: \"host=h password={secret} port=x\"\n"),
            format!("web:\n  listen_address: \"postgresql://u:{secret}@h/db\"\n"),
        ] {
            let Err(err) = load(&yaml) else {
                // Valid after all: tokio-postgres takes a comma or a space in a URI's password.
                continue;
            };
            let err = err.to_string();
            assert!(!err.contains(secret) && !err.contains("s3cret"), "{yaml}\n{err}");
            checked += 1;
        }
        assert_eq!(checked, 8, "invalid cases");
    }
}
