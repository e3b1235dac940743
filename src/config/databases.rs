//! The `databases:` section: which databases of the server the
//! per-database collectors read besides the one in the DSN, how often the
//! list is discovered again, how many sessions to them may be open at once,
//! and the checks that belong to one database.
//!
//! ```yaml
//! databases: auto                 # every database the role may connect to
//! databases: [app, billing]       # these (names or patterns with * and ?)
//! databases:
//!   include: [auto]               # or names, patterns, and entries with checks:
//!   exclude: ["tmp_*"]
//!   discovery_interval: 5m
//!   max_connections: 2
//! ```
//!
//! An `include` item is a name, a pattern (`*` any run, `?` one character),
//! `auto` (the same as `*`), or `{name: billing, checks: {...}}`, whose
//! `checks` take the database's own `materialized_views`, `indexes`,
//! `migrations` and `relations`; the rest of the checklist is the server's
//! and stays at the top level. Templates and databases that refuse
//! connections are never included. The DSN's database is always read, on
//! the main pool, whatever the patterns say.
//!
//! postgres_exporter's `--auto-discover-databases`, `--include-databases`
//! and `--exclude-databases` (and `PG_EXPORTER_AUTO_DISCOVER_DATABASES`,
//! `PG_EXPORTER_INCLUDE_DATABASES`, `PG_EXPORTER_EXCLUDE_DATABASES`) set the
//! same lists: comma-separated names, the flags over the file.

use std::time::Duration;

use serde_yaml::Value;

use super::{Checks, Flags, Walker, env, join, kind, show, shown};

/// `databases.max_connections` unless given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2;
/// `databases.discovery_interval` unless given.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(300);

const KEYS: &[&str] = &["include", "exclude", "discovery_interval", "max_connections"];
const ENTRY_KEYS: &[&str] = &["name", "checks"];
/// What a database's own `checks` may hold.
const DATABASE_CHECK_KEYS: &[&str] = &["materialized_views", "indexes", "migrations", "relations"];

/// The validated `databases:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Databases {
    /// Names and patterns of the databases to read; `*` is every one.
    pub include: Vec<String>,
    /// Names and patterns left out, after `include`.
    pub exclude: Vec<String>,
    pub discovery_interval: Duration,
    /// Most sessions to the other databases open at once, in use or idle.
    pub max_connections: usize,
    /// A database's own checks, by exact name.
    pub checks: Vec<(String, DatabaseChecks)>,
}

/// The parts of the checklist that belong to one database.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DatabaseChecks {
    pub checks: Checks,
    /// `relations` was given (else the top level's applies).
    pub relations: bool,
}

impl Databases {
    /// Whether a discovered database is to be read.
    pub fn wanted(&self, datname: &str) -> bool {
        self.include.iter().any(|p| glob(p, datname)) && !self.exclude.iter().any(|p| glob(p, datname))
    }

    /// The checks for runs in `datname`: the server's, with the database's
    /// own lists (none unless configured: the top level's matviews, indexes
    /// and migrations are the DSN database's).
    pub fn checks_for(&self, datname: &str, top: &Checks) -> Checks {
        let own = self.checks.iter().find(|(n, _)| n == datname).map(|(_, c)| c);
        let mut c = top.clone();
        c.matviews = own.map(|o| o.checks.matviews.clone()).unwrap_or_default();
        c.expected_indexes = own.map(|o| o.checks.expected_indexes.clone()).unwrap_or_default();
        c.index_patterns = own.map(|o| o.checks.index_patterns.clone()).unwrap_or_default();
        c.migrations = own.and_then(|o| o.checks.migrations.clone());
        c.probes = Vec::new();
        if let Some(o) = own.filter(|o| o.relations) {
            c.relations = o.checks.relations.clone();
        }
        c
    }
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match with one backtrack point.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// A comma-separated list of names, as postgres_exporter's flags take them.
fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Walker<'_> {
    /// The `databases:` section and the flags and environment variables
    /// that set the same lists; `None` when none of them is given (only the
    /// DSN's database is read).
    pub(super) fn databases(&mut self, v: &Value, flags: &Flags, e: &dyn env::Env) -> Option<Databases> {
        let path = ["databases"];
        let mut out = Databases {
            include: Vec::new(),
            exclude: Vec::new(),
            discovery_interval: DEFAULT_DISCOVERY_INTERVAL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            checks: Vec::new(),
        };
        let mut given = true;
        match v {
            Value::Null => given = false,
            Value::String(s) if s == "auto" => out.include.push("*".into()),
            Value::String(s) => {
                self.problem(
                    &path,
                    format!("expected auto, a list of databases or a mapping, got {}", shown(s)),
                );
            }
            Value::Sequence(_) => {
                let wrapped: super::Fields = [("include".to_string(), v)].into_iter().collect();
                self.include_items(&wrapped, &path, &mut out);
            }
            Value::Mapping(_) => {
                let f = self.mapping(v, &path, KEYS);
                match f.get("include") {
                    Some(Value::String(s)) if s == "auto" => out.include.push("*".into()),
                    _ => self.include_items(&f, &path, &mut out),
                }
                out.exclude = self.strings(&f, "exclude", &path);
                if let Some(d) = self.duration(&f, "discovery_interval", &path) {
                    if d < Duration::from_secs(1) {
                        self.problem(
                            &join(&path, "discovery_interval"),
                            format!("must be at least 1s, got {}", show(d)),
                        );
                    }
                    out.discovery_interval = d;
                }
                if let Some(n) = self.integer(&f, "max_connections", &path, 1, 100) {
                    out.max_connections = n as usize;
                }
                if !f.contains_key("include") {
                    self.problem(&path, "missing key include: auto, or the databases to read");
                }
            }
            other => self.problem(
                &path,
                format!("expected auto, a list of databases or a mapping, got {}", kind(other)),
            ),
        }
        // postgres_exporter's flags and variables, over the file.
        let flag_or_env = |flag: &Option<String>, var: &str| flag.clone().or_else(|| env::nonempty(e, var));
        let auto = flags.auto_discover_databases
            || env::nonempty(e, "PG_EXPORTER_AUTO_DISCOVER_DATABASES").is_some_and(|v| v == "true");
        if let Some(list) = flag_or_env(&flags.include_databases, "PG_EXPORTER_INCLUDE_DATABASES") {
            out.include = names(&list);
            given = true;
        } else if auto && !given {
            out.include = vec!["*".into()];
            given = true;
        }
        if let Some(list) = flag_or_env(&flags.exclude_databases, "PG_EXPORTER_EXCLUDE_DATABASES") {
            out.exclude = names(&list);
            if !given {
                // postgres_exporter's exclude list implies discovery.
                out.include = vec!["*".into()];
                given = true;
            }
        }
        given.then_some(out)
    }

    fn include_items(&mut self, f: &super::Fields, path: &[&str], out: &mut Databases) {
        for (n, item) in self.list(f, "include", path) {
            let idx = format!("[{n}]");
            let mut p = join(path, "include");
            p.push(&idx);
            match item {
                Value::String(s) if s == "auto" => out.include.push("*".into()),
                Value::String(s) if !s.trim().is_empty() => out.include.push(s.trim().to_string()),
                Value::Mapping(_) => {
                    let ef = self.mapping(item, &p, ENTRY_KEYS);
                    let Some(name) = self.required_string(&ef, "name", &p) else {
                        continue;
                    };
                    if name.contains(['*', '?']) {
                        self.problem(
                            &join(&p, "name"),
                            "a database with its own checks is named exactly, without * or ?",
                        );
                    }
                    let own = match ef.get("checks") {
                        Some(c) => self.database_checks(c, &p),
                        None => DatabaseChecks::default(),
                    };
                    if out.checks.iter().any(|(n, _)| *n == name) {
                        self.problem(&join(&p, "name"), format!("database {name} has checks twice"));
                    }
                    out.include.push(name.clone());
                    out.checks.push((name, own));
                }
                other => self.problem(
                    &p,
                    format!("expected a database name or {{name, checks}}, got {}", kind(other)),
                ),
            }
        }
    }

    /// A database's `checks`, walked as the top level's are, its problems
    /// named under the entry.
    fn database_checks(&mut self, v: &Value, entry: &[&str]) -> DatabaseChecks {
        let cp = join(entry, "checks");
        let mut relations = false;
        if let Value::Mapping(m) = v {
            for k in m.keys().filter_map(Value::as_str) {
                if !DATABASE_CHECK_KEYS.contains(&k) {
                    let mut p = cp.clone();
                    p.push(k);
                    self.problem(
                        &p,
                        format!(
                            "not a check of one database: a database's checks take {}; {k} belongs in the top-level checks",
                            DATABASE_CHECK_KEYS.join(", ")
                        ),
                    );
                }
                relations |= k == "relations";
            }
        }
        let prefix: Vec<String> = entry.iter().map(|s| s.to_string()).collect();
        let saved = std::mem::replace(&mut self.prefix, prefix);
        let checks = self.checks(v);
        self.prefix = saved;
        DatabaseChecks { checks, relations }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{Config, ConfigError, test_load};

    fn problems(yaml: &str) -> String {
        match test_load(yaml, &[]) {
            Err(e @ ConfigError::Invalid(_)) => e.to_string(),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted: {yaml}"),
        }
    }

    fn databases(yaml: &str) -> Databases {
        test_load(yaml, &[]).unwrap().databases.unwrap()
    }

    #[test]
    fn the_three_forms_say_the_same() {
        assert_eq!(databases("databases: auto\n").include, ["*"]);
        assert_eq!(databases("databases: [app, \"shop_*\"]\n").include, ["app", "shop_*"]);
        let d = databases(
            "databases:\n  include: [auto, {name: billing, checks: {migrations: {table: schema_migrations}}}]\n  exclude: [tmp_*]\n  discovery_interval: 1m\n  max_connections: 3\n",
        );
        assert_eq!(d.include, ["*", "billing"]);
        assert_eq!(d.exclude, ["tmp_*"]);
        assert_eq!(d.discovery_interval, Duration::from_secs(60));
        assert_eq!(d.max_connections, 3);
        assert!(d.wanted("app") && d.wanted("billing") && !d.wanted("tmp_1"));
        assert!(test_load("log: {level: info}\n", &[]).unwrap().databases.is_none());
    }

    #[test]
    fn a_database_gets_its_own_lists_and_the_servers_thresholds() {
        let c = test_load(
            "checks:\n  slow_queries: {threshold: 250ms}\n  migrations: {table: alembic_version}\n  materialized_views: [{name: public.daily, max_age: 1h}]\ndatabases:\n  include:\n    - auto\n    - name: billing\n      checks:\n        migrations: {table: schema_migrations}\n        relations: {max_series: 10}\n",
            &[],
        )
        .unwrap();
        let d = c.databases.as_ref().unwrap();
        let billing = d.checks_for("billing", &c.checks);
        assert_eq!(billing.slow_query_threshold, Duration::from_millis(250));
        assert_eq!(billing.migrations.as_ref().unwrap().table, "schema_migrations");
        assert_eq!(billing.relations.max_series, 10);
        assert!(billing.matviews.is_empty());
        // Another database: none of the DSN database's lists.
        let other = d.checks_for("shop", &c.checks);
        assert!(other.migrations.is_none() && other.matviews.is_empty());
        assert_eq!(other.relations.max_series, c.checks.relations.max_series);
    }

    #[test]
    fn bad_sections_name_the_key() {
        let e = problems("databases: everything\n");
        assert!(e.contains("databases") && e.contains("expected auto"), "{e}");
        let e = problems("databases:\n  include:\n    - name: billing\n      checks:\n        pools: []\n");
        assert!(
            e.contains("databases.include[0].checks.pools") && e.contains("top-level checks"),
            "{e}"
        );
        let e = problems(
            "databases:\n  include:\n    - name: billing\n      checks:\n        migrations:\n          tabel: x\n",
        );
        assert!(
            e.contains("c.yaml:6:") && e.contains("databases.include[0].checks.migrations.tabel"),
            "{e}"
        );
        let e = problems("databases:\n  include: [auto]\n  max_connections: 0\n");
        assert!(
            e.contains("databases.max_connections") && e.contains("between 1 and 100"),
            "{e}"
        );
        let e = problems("databases:\n  exclude: [x]\n");
        assert!(e.contains("missing key include"), "{e}");
    }

    #[test]
    fn a_querys_databases_need_the_section() {
        let q = "queries:\n  q:\n    query: SELECT 1 AS n\n    databases: [billing]\n    metrics:\n      - n: {usage: GAUGE, description: n}\n";
        let e = problems(q);
        assert!(e.contains("q.databases") && e.contains("top-level databases"), "{e}");
        let c = test_load(&format!("{q}databases: auto\n"), &[]).unwrap();
        assert_eq!(c.queries[0].databases, ["billing"]);
    }

    #[test]
    fn postgres_exporters_flags_and_variables_set_the_lists() {
        let load = |flags: Flags, env: &[(&str, &str)]| {
            let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Config::from_yaml("", "c.yaml", &flags, &env, &[]).unwrap().databases
        };
        let auto = Flags {
            auto_discover_databases: true,
            ..Flags::default()
        };
        assert_eq!(load(auto, &[]).unwrap().include, ["*"]);
        let d = load(
            Flags {
                exclude_databases: Some("a, b".into()),
                ..Flags::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(
            (d.include, d.exclude),
            (vec!["*".to_string()], vec!["a".to_string(), "b".to_string()])
        );
        let d = load(Flags::default(), &[("PG_EXPORTER_INCLUDE_DATABASES", "app,billing")]).unwrap();
        assert_eq!(d.include, ["app", "billing"]);
        assert!(load(Flags::default(), &[]).is_none());
    }

    #[test]
    fn glob_matches_runs_and_single_characters() {
        for (p, n, want) in [
            ("*", "app", true),
            ("app", "app", true),
            ("app", "apps", false),
            ("tmp_*", "tmp_1", true),
            ("tmp_*", "xtmp_1", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*_test", "shop_test", true),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("", "", true),
        ] {
            assert_eq!(glob(p, n), want, "{p} ~ {n}");
        }
    }
}
