//! `matviews`: materialized views, from `pg_matviews` and `pg_class`, with
//! the last refresh from pgsidecar's refresh log (`pgsidecar install`) or from
//! a configured freshness query. PostgreSQL itself records no refresh time.
//!
//! Metrics, labels `datname`, `schemaname`, `matviewname`:
//! - `pg_matview_populated` gauge: 1 if the view holds data (`WITH DATA`).
//! - `pg_matview_rows_estimate` gauge (`reltuples`). `pg_matview_size_bytes`
//!   is `relation_sizes`'s (`pg_class_sizes.rs`): a size function would wait
//!   behind the `ACCESS EXCLUSIVE` lock of a `REFRESH`, and this collector's
//!   queries take no lock on any view.
//! - `pg_matview_last_refresh_timestamp_seconds` gauge: unix time the last
//!   refresh ended (from the refresh log or the freshness query; absent when
//!   unknown).
//! - `pg_matview_last_refresh_duration_seconds` gauge and
//!   `pg_matview_refreshes_total` counter (refresh log only).
//! - `pgsidecar_matview_max_age_seconds` gauge for configured views.
//! - `pgsidecar_matview_refresh_tracking{datname,schemaname,matviewname,source}`
//!   gauge, 1: how the refresh time is known: `event_trigger`,
//!   `freshness_query`, `freshness_query_failed` (the query failed; its error
//!   is a note on the status page, and the other views are still reported),
//!   `none` (neither: install the log or configure a query), or `missing` (a
//!   configured view that does not exist).
//! - `pgsidecar_refresh_log_installed{datname}` gauge 0/1.
//!
//! Views are filtered by `checks.relations` like tables. Version gates: none.

use std::collections::BTreeMap;

use super::{
    Client, CollectError, CollectFuture, Ctx, Definition, float, query, relation_filter, relation_params, text,
};
use crate::config::Matview;
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("matviews", collect).per_database();

const LOG_PRESENT: &str = "SELECT current_database()::text AS datname, \
     (to_regclass('pgsidecar.matview_refresh') IS NOT NULL) AS installed";

fn sql(with_log: bool) -> String {
    let (cols, join) = if with_log {
        (
            "extract(epoch FROM r.last_refresh)::float8 AS last_refresh, r.last_duration_seconds::float8 AS duration, \
             r.refreshes::float8 AS refreshes",
            "LEFT JOIN pgsidecar.matview_refresh r ON r.schemaname = m.schemaname AND r.matviewname = m.matviewname",
        )
    } else {
        (
            "NULL::float8 AS last_refresh, NULL::float8 AS duration, NULL::float8 AS refreshes",
            "",
        )
    };
    format!(
        "SELECT m.schemaname::text AS schemaname, m.matviewname::text AS matviewname, \
         (CASE WHEN m.ispopulated THEN 1 ELSE 0 END)::float8 AS populated, \
         GREATEST(c.reltuples, 0)::float8 AS rows, {cols} \
         FROM pg_matviews m \
         JOIN pg_namespace n ON n.nspname = m.schemaname \
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = m.matviewname {join} \
         WHERE {} ORDER BY 1, 2",
        relation_filter("m.schemaname", "m.matviewname", 1)
    )
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub schemaname: String,
    pub matviewname: String,
    pub populated: f64,
    pub rows: f64,
    pub last_refresh: Option<f64>,
    pub duration: Option<f64>,
    pub refreshes: Option<f64>,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let head = query(client, "the refresh log", LOG_PRESENT, &[]).await?;
        let head = head.first().ok_or(CollectError::NoRow {
            what: "the refresh log",
        })?;
        let datname = text(head, "datname")?;
        let installed: bool = head.try_get("installed").unwrap_or(false);
        let p = relation_params(&ctx.checks.relations);
        let mut rows = Vec::new();
        for r in query(client, "pg_matviews", &sql(installed), &[p[0], p[1], p[2], p[3]]).await? {
            let opt = |name: &str| r.try_get::<_, Option<f64>>(name).ok().flatten();
            rows.push(Row {
                schemaname: text(&r, "schemaname")?,
                matviewname: text(&r, "matviewname")?,
                populated: float(&r, "populated")?,
                rows: float(&r, "rows")?,
                last_refresh: opt("last_refresh"),
                duration: opt("duration"),
                refreshes: opt("refreshes"),
            });
        }
        let mut freshness = BTreeMap::new();
        for mv in ctx.checks.matviews.iter() {
            if let Some(q) = &mv.freshness_query {
                // The newline ends a trailing `-- comment` of the user's query.
                let sql = format!("SELECT extract(epoch FROM q.t)::float8 AS t FROM ({q}\n) AS q(t) LIMIT 1");
                let what = format!("the freshness query of {}.{}", mv.schema, mv.name);
                // A failing query fails only its view: the others are still reported.
                let fresh = match query(client, &what, &sql, &[]).await {
                    Ok(r) => Fresh::At(r.first().and_then(|r| r.try_get::<_, Option<f64>>("t").ok().flatten())),
                    Err(e) => {
                        ctx.note(e.to_string());
                        Fresh::Failed
                    }
                };
                freshness.insert((mv.schema.clone(), mv.name.clone()), fresh);
            }
        }
        Ok(families(&datname, installed, &rows, &ctx.checks.matviews, &freshness))
    })
}

/// What a view's freshness query gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fresh {
    /// The last refresh time, if the query returned one.
    At(Option<f64>),
    Failed,
}

type Freshness = BTreeMap<(String, String), Fresh>;

pub fn families(
    datname: &str,
    installed: bool,
    rows: &[Row],
    configured: &[Matview],
    freshness: &Freshness,
) -> Vec<Family> {
    let l = &["datname", "schemaname", "matviewname"];
    let mut populated = Family::gauge("pg_matview_populated", "1 if the materialized view holds data", l);
    let mut rows_est = Family::gauge(
        "pg_matview_rows_estimate",
        "Rows in the materialized view, as the planner estimates",
        l,
    );
    let mut last = Family::gauge(
        "pg_matview_last_refresh_timestamp_seconds",
        "Unix time the last refresh of the materialized view ended",
        l,
    );
    let mut duration = Family::gauge(
        "pg_matview_last_refresh_duration_seconds",
        "Duration of the last refresh of the materialized view",
        l,
    );
    let mut refreshes = Family::counter(
        "pg_matview_refreshes_total",
        "Refreshes recorded since pgsidecar install",
        l,
    );
    let mut max_age = Family::gauge(
        "pgsidecar_matview_max_age_seconds",
        "Configured maximum age of the materialized view (checks.materialized_views)",
        l,
    );
    let mut tracking = Family::gauge(
        "pgsidecar_matview_refresh_tracking",
        "How the view's refresh time is known: event_trigger, freshness_query, none or missing",
        &["datname", "schemaname", "matviewname", "source"],
    );
    let mut log = Family::gauge(
        "pgsidecar_refresh_log_installed",
        "1 if pgsidecar's refresh log (pgsidecar install) is in this database",
        &["datname"],
    );
    log.set(&[datname], if installed { 1.0 } else { 0.0 });

    let find = |s: &str, n: &str| configured.iter().find(|m| m.schema == s && m.name == n);
    for r in rows {
        let labels = [datname, r.schemaname.as_str(), r.matviewname.as_str()];
        populated.set(&labels, r.populated);
        rows_est.set(&labels, r.rows);
        let fresh = freshness.get(&(r.schemaname.clone(), r.matviewname.clone()));
        let source = match (fresh, installed) {
            (Some(Fresh::At(t)), _) => {
                if let Some(t) = t {
                    last.set(&labels, *t);
                }
                "freshness_query"
            }
            (Some(Fresh::Failed), _) => "freshness_query_failed",
            (None, true) => {
                if let Some(t) = r.last_refresh {
                    last.set(&labels, t);
                }
                if let Some(d) = r.duration {
                    duration.set(&labels, d);
                }
                refreshes.set(&labels, r.refreshes.unwrap_or(0.0));
                "event_trigger"
            }
            (None, false) => "none",
        };
        tracking.set(&[datname, r.schemaname.as_str(), r.matviewname.as_str(), source], 1.0);
        if let Some(m) = find(&r.schemaname, &r.matviewname) {
            max_age.set(&labels, m.max_age.as_secs_f64());
        }
    }
    for m in configured {
        if !rows.iter().any(|r| r.schemaname == m.schema && r.matviewname == m.name) {
            let labels = [datname, m.schema.as_str(), m.name.as_str()];
            max_age.set(&labels, m.max_age.as_secs_f64());
            tracking.set(&[datname, m.schema.as_str(), m.name.as_str(), "missing"], 1.0);
        }
    }
    vec![populated, rows_est, last, duration, refreshes, max_age, tracking, log]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mv(name: &str, q: Option<&str>) -> Matview {
        Matview {
            schema: "public".into(),
            name: name.into(),
            max_age: Duration::from_secs(3600),
            freshness_query: q.map(String::from),
        }
    }

    #[test]
    fn tracking_states() {
        let row = |name: &str| Row {
            schemaname: "public".into(),
            matviewname: name.into(),
            populated: 1.0,
            last_refresh: Some(100.0),
            duration: Some(2.0),
            refreshes: Some(3.0),
            ..Row::default()
        };
        let configured = [
            mv("logged", None),
            mv("queried", Some("SELECT now()")),
            mv("gone", None),
            mv("broken", Some("SELECT t FROM dropped")),
        ];
        let fresh: Freshness = [
            (("public".to_string(), "queried".to_string()), Fresh::At(Some(50.0))),
            (("public".to_string(), "broken".to_string()), Fresh::Failed),
        ]
        .into();
        let f = families(
            "app",
            true,
            &[row("logged"), row("queried"), row("broken")],
            &configured,
            &fresh,
        );
        let get = |n: &str, l: &[&str]| crate::metrics::value(&f, n, l);
        assert_eq!(
            get(
                "pg_matview_last_refresh_timestamp_seconds",
                &["app", "public", "logged"]
            ),
            Some(100.0)
        );
        assert_eq!(
            get(
                "pg_matview_last_refresh_timestamp_seconds",
                &["app", "public", "queried"]
            ),
            Some(50.0)
        );
        assert_eq!(
            get("pg_matview_refreshes_total", &["app", "public", "logged"]),
            Some(3.0)
        );
        assert_eq!(
            get(
                "pgsidecar_matview_refresh_tracking",
                &["app", "public", "queried", "freshness_query"]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "pgsidecar_matview_refresh_tracking",
                &["app", "public", "gone", "missing"]
            ),
            Some(1.0)
        );
        assert_eq!(
            get("pgsidecar_matview_max_age_seconds", &["app", "public", "gone"]),
            Some(3600.0)
        );
        // A failed freshness query: its view says so and has no refresh time;
        // the others are unaffected.
        assert_eq!(
            get(
                "pgsidecar_matview_refresh_tracking",
                &["app", "public", "broken", "freshness_query_failed"]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "pg_matview_last_refresh_timestamp_seconds",
                &["app", "public", "broken"]
            ),
            None
        );
        assert_eq!(get("pg_matview_populated", &["app", "public", "broken"]), Some(1.0));

        let f = families("app", false, &[row("logged")], &[], &Freshness::new());
        let get = |n: &str, l: &[&str]| crate::metrics::value(&f, n, l);
        assert_eq!(
            get(
                "pgsidecar_matview_refresh_tracking",
                &["app", "public", "logged", "none"]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "pg_matview_last_refresh_timestamp_seconds",
                &["app", "public", "logged"]
            ),
            None
        );
        assert_eq!(get("pgsidecar_refresh_log_installed", &["app"]), Some(0.0));
    }
}
