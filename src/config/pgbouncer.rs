//! The `pgbouncer:` section (or `PGBOUNCER_DSN`): the PgBouncer admin
//! console pgsidecar watches besides Postgres, who runs its collectors, and
//! the thresholds its alerts compare against.
//!
//! The DSN names PgBouncer's pseudo-database `pgbouncer` on PgBouncer's own
//! port (6432 unless given), as a user in `admin_users` or `stats_users`.
//! `PGBOUNCER_DSN` (or the file named by `PGBOUNCER_DSN_FILE`) overrides
//! `pgbouncer.dsn`, and configures PgBouncer on its own when the file has no
//! `pgbouncer:` section. libpq's `PG*` variables are Postgres's and are not
//! applied here.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde_yaml::Value;

use super::{Datasource, SslMode, Walker, dsn, join, show, shown, shown_path};

/// PgBouncer's own default port.
pub const DEFAULT_PGBOUNCER_PORT: u16 = 6432;

/// A configured PgBouncer admin console.
#[derive(Clone, Debug, PartialEq)]
pub struct PgBouncer {
    /// Host, port, user, password, TLS and connect timeout of the admin
    /// console (database `pgbouncer`). Its Postgres session limits are not
    /// used: PgBouncer takes no session options, and every call is bounded
    /// on the client side instead (see `db::pgbouncer`).
    pub datasource: Datasource,
    pub run_by: RunBy,
    /// Default interval of the PgBouncer collectors (`None`: `collection.interval`).
    pub interval: Option<Duration>,
}

/// Who runs the PgBouncer collectors when several sidecars share one
/// configuration (`coordination.mode: leader-election`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunBy {
    /// Only the leader: one central PgBouncer that every sidecar would see.
    Leader,
    /// Every sidecar: a PgBouncer beside each pod (e.g. on localhost).
    EveryPod,
}

impl RunBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RunBy::Leader => "leader",
            RunBy::EveryPod => "every-pod",
        }
    }
}

impl FromStr for RunBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "leader" => Ok(RunBy::Leader),
            "every-pod" => Ok(RunBy::EveryPod),
            other => Err(format!("unknown run_by {}: expected leader or every-pod", shown(other))),
        }
    }
}

/// The thresholds of the PgBouncer alerts, exported as gauges by the
/// `pgbouncer_pools` collector.
#[derive(Clone, Debug, PartialEq)]
pub struct PgBouncerThresholds {
    /// More clients than this waiting in one pool, for 5 minutes, alerts.
    pub waiting_clients: u32,
    /// A client waiting longer than this for a server connection alerts.
    pub max_wait: Duration,
}

impl Default for PgBouncerThresholds {
    fn default() -> Self {
        PgBouncerThresholds {
            waiting_clients: 0,
            max_wait: Duration::from_secs(5),
        }
    }
}

const PGBOUNCER_KEYS: &[&str] = &[
    "dsn",
    "password_file",
    "sslmode",
    "sslrootcert",
    "application_name",
    "connect_timeout",
    "interval",
    "run_by",
    "thresholds",
];
const THRESHOLD_KEYS: &[&str] = &["waiting_clients", "max_wait"];

/// A URI whose single host has no port gets PgBouncer's: tokio-postgres
/// would fill in Postgres's 5432. Key=value DSNs without `port` are left
/// alone (the port is added after parsing).
fn with_port(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else {
        return dsn.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_bracket = host.rsplit_once(']').map_or(host, |(_, p)| p);
    let port_param = tail.split(['?', '&']).any(|kv| kv.starts_with("port="));
    if host.is_empty() || host.contains(',') || after_bracket.contains(':') || port_param {
        return dsn.to_string();
    }
    format!("{scheme}://{authority}:{DEFAULT_PGBOUNCER_PORT}{tail}")
}

impl Walker<'_> {
    /// The `pgbouncer:` section and `PGBOUNCER_DSN`: `None` when neither
    /// is given.
    pub(super) fn pgbouncer(&mut self, v: &Value, env: &dyn super::Env) -> (Option<PgBouncer>, PgBouncerThresholds) {
        let path = ["pgbouncer"];
        let f = self.mapping(v, &path, PGBOUNCER_KEYS);
        let mut thresholds = PgBouncerThresholds::default();
        let tp = ["pgbouncer", "thresholds"];
        if let Some(t) = f.get("thresholds") {
            let t = self.mapping(t, &tp, THRESHOLD_KEYS);
            if let Some(n) = self.integer(&t, "waiting_clients", &tp, 0, 100_000) {
                thresholds.waiting_clients = n as u32;
            }
            if let Some(d) = self.duration(&t, "max_wait", &tp) {
                thresholds.max_wait = d;
            }
        }
        let from_env = self.env_or_file(env, "PGBOUNCER_DSN");
        if from_env.is_none() && f.is_empty() {
            return (None, thresholds);
        }
        let (text, source) = match from_env {
            Some(d) => (Some(d), "PGBOUNCER_DSN"),
            None => (self.string(&f, "dsn", &path), ""),
        };
        let problem = |w: &mut Self, message: String| {
            if source.is_empty() {
                w.problem(&["pgbouncer", "dsn"], message);
            } else {
                w.other_problem(source, "", message);
            }
        };
        let Some(text) = text else {
            self.problem(
                &path,
                "missing key dsn: the admin console's DSN, e.g. postgresql://stats@pgbouncer:6432/pgbouncer (or set PGBOUNCER_DSN)",
            );
            return (None, thresholds);
        };
        let mut parts = match dsn::split_dsn(&text) {
            Ok(p) => Some(p),
            Err(e) => {
                problem(self, format!("invalid DSN: {e}"));
                None
            }
        };
        let mut pg = match &parts {
            Some(p) if !p.rest.trim().is_empty() => match tokio_postgres::Config::from_str(&with_port(&p.rest)) {
                Ok(c) => Some(c),
                Err(e) => {
                    problem(self, format!("invalid DSN: {}", dsn::parse_error(&e)));
                    None
                }
            },
            Some(_) => Some(tokio_postgres::Config::new()),
            None => None,
        };
        if let Some(pg) = pg.as_mut() {
            if let Some(p) = pg.get_password() {
                self.secrets.push(String::from_utf8_lossy(p).into_owned());
            }
            match pg.get_dbname() {
                None => {
                    pg.dbname("pgbouncer");
                }
                Some("pgbouncer") => {}
                Some(other) => problem(
                    self,
                    format!(
                        "the DSN must name PgBouncer's admin console, database pgbouncer, not {}",
                        shown(other)
                    ),
                ),
            }
            if pg.get_options().is_some() {
                problem(
                    self,
                    "PgBouncer's admin console refuses the options startup parameter: remove options from the DSN"
                        .into(),
                );
            }
            if pg.get_hosts().is_empty() {
                pg.host("localhost");
            }
            if pg.get_ports().is_empty() {
                pg.port(DEFAULT_PGBOUNCER_PORT);
            }
            if pg.get_user().is_none() {
                pg.user("pgbouncer");
            }
            if let Some(file) = self.string(&f, "password_file", &path) {
                match std::fs::read_to_string(&file) {
                    Ok(text) => {
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
        }
        let sslmode = match parts.as_mut().and_then(|p| p.sslmode.take()) {
            Some(text) => SslMode::from_str(&text).map_err(|e| problem(self, e)).ok(),
            None => match self.string(&f, "sslmode", &path) {
                Some(text) => SslMode::from_str(&text)
                    .map_err(|e| self.problem(&join(&path, "sslmode"), e))
                    .ok(),
                None => Some(SslMode::Prefer),
            },
        };
        let sslrootcert = parts
            .as_mut()
            .and_then(|p| p.sslrootcert.take())
            .or_else(|| self.string(&f, "sslrootcert", &path))
            .map(PathBuf::from);
        if let (Some(SslMode::VerifyCa | SslMode::VerifyFull), None) = (sslmode, &sslrootcert) {
            self.problem(
                &join(&path, "sslrootcert"),
                "sslmode verify-ca and verify-full need sslrootcert (a PEM file of trusted CA certificates)",
            );
        }
        if let Some(p) = &sslrootcert
            && !p.is_file()
        {
            self.problem(
                &join(&path, "sslrootcert"),
                format!("{} is not a readable file", shown_path(&p.display().to_string())),
            );
        }
        let application_name = self
            .string(&f, "application_name", &path)
            .or_else(|| pg.as_ref().and_then(|c| c.get_application_name().map(str::to_string)))
            .unwrap_or_else(|| "pgsidecar".to_string());
        let connect_timeout = self
            .duration(&f, "connect_timeout", &path)
            .or_else(|| pg.as_ref().and_then(|c| c.get_connect_timeout().copied()))
            .unwrap_or(Duration::from_secs(5));
        if connect_timeout.is_zero() {
            self.problem(
                &join(&path, "connect_timeout"),
                "must be greater than zero (pgsidecar never runs unbounded)",
            );
        }
        let interval = self.duration(&f, "interval", &path);
        if let Some(i) = interval
            && i < Duration::from_millis(100)
        {
            self.problem(
                &join(&path, "interval"),
                format!("must be at least 100ms, got {}", show(i)),
            );
        }
        let run_by = match self.string(&f, "run_by", &path) {
            Some(text) => RunBy::from_str(&text)
                .map_err(|e| self.problem(&join(&path, "run_by"), e))
                .ok(),
            None => Some(RunBy::Leader),
        };
        let mut pg = pg.filter(|_| sslmode.is_some());
        if let Some(pg) = pg.as_mut() {
            pg.connect_timeout(connect_timeout);
        }
        let (Some(pg), Some(sslmode), Some(run_by)) = (pg, sslmode, run_by) else {
            return (None, thresholds);
        };
        let datasource = Datasource {
            pg,
            sslmode,
            sslrootcert,
            application_name,
            pool_size: 1,
            connect_timeout,
            statement_timeout: connect_timeout,
            lock_timeout: connect_timeout,
            idle_in_transaction_session_timeout: connect_timeout,
        };
        (
            Some(PgBouncer {
                datasource,
                run_by,
                interval,
            }),
            thresholds,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{Config, ConfigError, Flags};

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_yaml(yaml, "c.yaml", &Flags::default(), &env, &crate::collectors::defaults())
    }

    fn collector<'a>(c: &'a Config, name: &str) -> &'a crate::config::CollectorConfig {
        c.collector(name).unwrap()
    }

    #[test]
    fn without_a_section_the_pgbouncer_collectors_are_off() {
        let c = load("", &[]).unwrap();
        assert!(c.pgbouncer.is_none());
        assert!(!collector(&c, "pgbouncer_pools").enabled);
        assert!(collector(&c, "postmaster").enabled);
        let err = load("collectors:\n  pgbouncer_pools:\n    enabled: true\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "c.yaml:3:5: collectors.pgbouncer_pools.enabled: this collector reads PgBouncer's admin console"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_section_fills_in_the_console_and_sets_the_collectors() {
        let c = load(
            "collection:\n  interval: 10s\npgbouncer:\n  dsn: postgresql://stats@bouncer\n  interval: 30s\n  run_by: every-pod\n  thresholds:\n    waiting_clients: 4\n    max_wait: 2s\n",
            &[],
        )
        .unwrap();
        let p = c.pgbouncer.as_ref().unwrap();
        assert_eq!(p.datasource.target(), "stats@bouncer:6432/pgbouncer");
        assert_eq!(p.run_by, RunBy::EveryPod);
        let pools = collector(&c, "pgbouncer_pools");
        assert!(pools.enabled && pools.every_pod);
        assert_eq!(pools.interval, Duration::from_secs(30));
        assert!(!collector(&c, "pools").every_pod);
        assert_eq!(collector(&c, "postmaster").interval, Duration::from_secs(10));
        assert_eq!(c.checks.pgbouncer.waiting_clients, 4);
        assert_eq!(c.checks.pgbouncer.max_wait, Duration::from_secs(2));
        let c = load("pgbouncer:\n  dsn: host=b user=stats\n", &[]).unwrap();
        assert_eq!(c.pgbouncer.unwrap().run_by, RunBy::Leader);
        assert!(!collector(&load("pgbouncer:\n  dsn: host=b\n", &[]).unwrap(), "pgbouncer_stats").every_pod);
    }

    #[test]
    fn a_uri_without_a_port_gets_pgbouncers() {
        assert_eq!(
            with_port("postgresql://u:p@b/pgbouncer"),
            "postgresql://u:p@b:6432/pgbouncer"
        );
        assert_eq!(
            with_port("postgres://b?sslmode=require"),
            "postgres://b:6432?sslmode=require"
        );
        assert_eq!(
            with_port("postgresql://[::1]/pgbouncer"),
            "postgresql://[::1]:6432/pgbouncer"
        );
        for kept in [
            "postgresql://u@b:7000/pgbouncer",
            "postgresql://[::1]:7000",
            "postgresql:///pgbouncer?host=/run",
            "postgresql://b/pgbouncer?port=7000",
            "host=b",
        ] {
            assert_eq!(with_port(kept), kept);
        }
    }

    #[test]
    fn pgbouncer_dsn_overrides_the_file_and_configures_alone() {
        let env = [("PGBOUNCER_DSN", "host=from-env port=7000 user=mon dbname=pgbouncer")];
        let c = load("", &env).unwrap();
        assert_eq!(c.pgbouncer.unwrap().datasource.target(), "mon@from-env:7000/pgbouncer");
        let c = load("pgbouncer:\n  dsn: host=from-file\n", &env).unwrap();
        assert_eq!(c.pgbouncer.unwrap().datasource.target(), "mon@from-env:7000/pgbouncer");
    }

    #[test]
    fn problems_name_the_key_and_never_the_password() {
        let err = load(
            "pgbouncer:\n  dsn: \"postgresql://stats:s3cret-pw@b/app?options=-c%20x%3D1\"\n  run_by: leaders\n  thresholds:\n    max_wait: soon\n  pool: 1\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for want in [
            "c.yaml:2:3: pgbouncer.dsn: the DSN must name PgBouncer's admin console, database pgbouncer, not \"app\"",
            "c.yaml:2:3: pgbouncer.dsn: PgBouncer's admin console refuses the options startup parameter",
            "c.yaml:3:3: pgbouncer.run_by: unknown run_by \"leaders\": expected leader or every-pod",
            "c.yaml:5:5: pgbouncer.thresholds.max_wait: invalid duration \"soon\"",
            "c.yaml:6:3: pgbouncer.pool: unknown key",
        ] {
            assert!(err.contains(want), "{want}\n{err}");
        }
        assert!(!err.contains("s3cret-pw"), "{err}");
        let err = load("pgbouncer:\n  run_by: leader\n", &[]).unwrap_err().to_string();
        assert!(err.contains("c.yaml:1:1: pgbouncer: missing key dsn"), "{err}");
    }
}
