//! `postmaster`: the server's identity and start time, from
//! `version()`, `server_version` and `pg_postmaster_start_time()`.
//!
//! This collector is also pgsidecar's liveness probe: `pg_up` (in the health
//! families, see `health`) is 1 exactly when its last run succeeded.
//!
//! Metrics:
//! - `pg_static{version,short_version}` untyped, always 1: the full version
//!   string and `major.minor.0` (postgres_exporter's shape).
//! - `pg_postmaster_start_time_seconds` gauge, unix time the server started.
//!
//! Version gates: none (all of PostgreSQL 13–18).

use super::{Client, CollectError, CollectFuture, Ctx, Definition, Scope, float, query, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition {
    name: "postmaster",
    enabled_by_default: true,
    default_interval: None,
    scope: Scope::Server,
    collect,
};

const SQL: &str = "SELECT version() AS version, current_setting('server_version') AS server_version, \
     extract(epoch FROM pg_postmaster_start_time())::float8 AS start_time";

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub version: String,
    pub server_version: String,
    pub start_time: f64,
}

fn collect<'a>(client: &'a Client, _ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let rows = query(client, "postmaster", SQL).await?;
        let row = rows.first().ok_or(CollectError::Query {
            what: "postmaster",
            message: "no row returned".into(),
        })?;
        let row = Row {
            version: text(row, "postmaster", "version")?,
            server_version: text(row, "postmaster", "server_version")?,
            start_time: float(row, "postmaster", "start_time")?,
        };
        Ok(families(&row))
    })
}

/// `15.4 (Debian 15.4-1.pgdg120+1)` → `15.4.0`; `16beta2` → `16.0.0`.
pub fn short_version(server_version: &str) -> String {
    let numeric: String = server_version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts: Vec<&str> = numeric.split('.').filter(|p| !p.is_empty()).collect();
    while parts.len() < 3 {
        parts.push("0");
    }
    parts[..3].join(".")
}

pub fn families(row: &Row) -> Vec<Family> {
    let mut stat = Family::untyped(
        "pg_static",
        "Version string as reported by postgres",
        &["version", "short_version"],
    );
    stat.set(&[&row.version, &short_version(&row.server_version)], 1.0);
    let mut start = Family::gauge(
        "pg_postmaster_start_time_seconds",
        "Time at which postmaster started",
        &[],
    );
    start.set(&[], row.start_time);
    vec![stat, start]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_version_is_semver_shaped() {
        assert_eq!(short_version("15.4 (Debian 15.4-1.pgdg120+1)"), "15.4.0");
        assert_eq!(short_version("13.23"), "13.23.0");
        assert_eq!(short_version("16beta2"), "16.0.0");
    }

    #[test]
    fn rows_map_to_families() {
        let f = families(&Row {
            version: "PostgreSQL 17.2 on x86_64".into(),
            server_version: "17.2".into(),
            start_time: 1_700_000_000.5,
        });
        assert_eq!(f[0].get(&["PostgreSQL 17.2 on x86_64", "17.2.0"]), Some(1.0));
        assert_eq!(f[1].get(&[]), Some(1_700_000_000.5));
    }
}
