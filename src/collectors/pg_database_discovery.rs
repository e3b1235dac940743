//! `databases`: which databases of the server the per-database collectors
//! read besides the DSN's, discovered from `pg_database` every
//! `databases.discovery_interval` (made from `databases:`; see
//! `config/databases.rs` and `db/others.rs`).
//!
//! A run reads every database's name and whether it can be read: not a
//! template, connections allowed, not left invalid by an interrupted
//! `DROP DATABASE` (`datconnlimit = -2`, PostgreSQL 16 and later), and the
//! role's `CONNECT` privilege. It hands the chosen ones to the sessions of
//! [`Others`]; the per-database collectors read them from their next run on,
//! and a database no longer chosen loses its series at their next run.
//!
//! Metrics (new in pgsidecar):
//! - `pgsidecar_database_discovered` gauge, labels `datname`, `state`: 1 per
//!   database of the server and per listed name, with `state` one of `dsn`
//!   (the DSN's database, read on the main pool), `read`, `excluded` (not
//!   in `include` or in `exclude`), `template`, `connections_not_allowed`,
//!   `invalid`, `no_connect_privilege`, or `missing` (named in `include`
//!   without a pattern, and not on the server).
//! - `pgsidecar_databases_max_connections` gauge: the budget of sessions to
//!   the other databases (`databases.max_connections`).
//!
//! Version gates: none (`datconnlimit = -2` only occurs from 16 on).

use std::sync::Arc;

use super::{CollectError, CollectFuture, Ctx, Definition, Stateful, query};
use crate::config::CollectorConfig;
use crate::db::{Client, Others};
use crate::metrics::Family;

/// The collector's name.
pub const NAME: &str = "databases";

const SQL: &str = "SELECT datname::text AS datname, datistemplate AS template, datallowconn AS allowed, \
     datconnlimit = -2 AS invalid, has_database_privilege(oid, 'CONNECT') AS can_connect \
     FROM pg_database ORDER BY datname";

/// One row of `pg_database`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub datname: String,
    pub template: bool,
    pub allowed: bool,
    pub invalid: bool,
    pub can_connect: bool,
}

struct Discovery {
    others: Arc<Others>,
}

/// The discovery collector for these sessions, with its configuration
/// (leaked once per `databases:` section, as the scheduler knows collectors
/// as `&'static`).
pub fn definition(others: Arc<Others>) -> (&'static Definition, CollectorConfig) {
    let interval = others.config.discovery_interval;
    let cfg = CollectorConfig {
        name: NAME,
        enabled: true,
        interval,
        timeout: interval.min(std::time::Duration::from_secs(5)),
        stale_after: interval.saturating_mul(3),
        every_pod: false,
    };
    let def = Definition::stateful(NAME, Box::leak(Box::new(Discovery { others }))).every(interval);
    (Box::leak(Box::new(def)), cfg)
}

impl Stateful for Discovery {
    fn collect<'a>(&'a self, client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
        Box::pin(async move {
            let found = self.discover(client, ctx).await;
            if found.is_err() {
                // The runs waiting for a first discovery go on without it.
                self.others.discovery_failed();
            }
            found
        })
    }
}

impl Discovery {
    async fn discover(&self, client: &Client, ctx: &Ctx) -> Result<Vec<Family>, CollectError> {
        let rows = query(client, NAME, SQL, &[])
            .await?
            .iter()
            .map(|r| {
                let flag = |c: &'static str| {
                    r.try_get::<_, Option<bool>>(c)
                        .map(|v| v.unwrap_or(false))
                        .map_err(|e| CollectError::column(c, e))
                };
                Ok(Row {
                    datname: super::text(r, "datname")?,
                    template: flag("template")?,
                    allowed: flag("allowed")?,
                    invalid: flag("invalid")?,
                    can_connect: flag("can_connect")?,
                })
            })
            .collect::<Result<Vec<_>, CollectError>>()?;
        let states = states(&rows, &self.others.config, &ctx.datname);
        let read: Vec<String> = states
            .iter()
            .filter(|(_, s)| *s == "read")
            .map(|(n, _)| n.clone())
            .collect();
        self.others.set_found(read);
        Ok(families(&states, self.others.budget()))
    }
}

/// Each database's state (see the module doc), in name order, then the
/// listed names the server does not have.
pub fn states(rows: &[Row], config: &crate::config::Databases, dsn: &str) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = rows
        .iter()
        .map(|r| {
            let state = if r.datname == dsn {
                "dsn"
            } else if r.template {
                "template"
            } else if !r.allowed {
                "connections_not_allowed"
            } else if r.invalid {
                "invalid"
            } else if !config.wanted(&r.datname) {
                "excluded"
            } else if !r.can_connect {
                "no_connect_privilege"
            } else {
                "read"
            };
            (r.datname.clone(), state)
        })
        .collect();
    for name in &config.include {
        if !name.contains(['*', '?']) && !rows.iter().any(|r| &r.datname == name) {
            out.push((name.clone(), "missing"));
        }
    }
    out
}

pub fn families(states: &[(String, &'static str)], budget: usize) -> Vec<Family> {
    let mut discovered = Family::gauge(
        "pgsidecar_database_discovered",
        "1 per database of the server: whether the per-database collectors read it (state read or dsn), or why not",
        &["datname", "state"],
    );
    for (name, state) in states {
        discovered.set(&[name, state], 1.0);
    }
    let mut budget_family = Family::gauge(
        "pgsidecar_databases_max_connections",
        "Most sessions open at once to the databases other than the DSN's (databases.max_connections)",
        &[],
    );
    budget_family.set(&[], budget as f64);
    vec![discovered, budget_family]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Databases;

    fn row(name: &str) -> Row {
        Row {
            datname: name.into(),
            template: false,
            allowed: true,
            invalid: false,
            can_connect: true,
        }
    }

    #[test]
    fn states_say_why_a_database_is_not_read() {
        let config = Databases {
            include: vec!["*".into(), "gone".into()],
            exclude: vec!["tmp_*".into()],
            discovery_interval: std::time::Duration::from_secs(60),
            max_connections: 2,
            checks: Vec::new(),
        };
        let rows = vec![
            row("app"),
            row("billing"),
            Row {
                template: true,
                ..row("template1")
            },
            Row {
                allowed: false,
                ..row("frozen")
            },
            Row {
                invalid: true,
                ..row("half_dropped")
            },
            row("tmp_1"),
            Row {
                can_connect: false,
                ..row("secret")
            },
        ];
        let got = states(&rows, &config, "app");
        let want = [
            ("app", "dsn"),
            ("billing", "read"),
            ("template1", "template"),
            ("frozen", "connections_not_allowed"),
            ("half_dropped", "invalid"),
            ("tmp_1", "excluded"),
            ("secret", "no_connect_privilege"),
            ("gone", "missing"),
        ];
        assert_eq!(got, want.iter().map(|(n, s)| (n.to_string(), *s)).collect::<Vec<_>>());
        let f = families(&got, 2);
        assert_eq!(f[0].get(&["billing", "read"]), Some(1.0));
        assert_eq!(f[1].get(&[]), Some(2.0));
    }
}
