//! `statement_plans`: plans of the slowest statements in
//! `pg_stat_statements`, on with `checks.slow_queries.explain.enabled`. It
//! answers which relations a slow statement reads by sequential scan and
//! which indexes it uses, which the statement texts cannot tell.
//!
//! Each run reads the top `explain.top` statements of the current database
//! whose mean execution time is over `checks.slow_queries.threshold`
//! (without their texts, and without pgsidecar's own role's when
//! `exclude_own_role`). A statement whose plan is missing or older than
//! `explain.refresh` is planned again, at most `explain.per_hour` times in
//! any hour: its text is read then, classified by `sql::explainable`
//! (utility statements, cut-off texts and ones calling side-effecting
//! functions are skipped), and planned by `plan::explain` as a generic plan
//! (nothing is executed) in a read-only transaction with
//! `explain.timeout`. A statement that could not be planned or was skipped
//! is not tried again before `explain.retry_failed_after`. Plans are kept
//! in memory and exported each run for the statements in the top.
//!
//! Metrics, labels `datname`, `queryid`:
//! - `pgsidecar_statement_plan_seq_scans{datname,queryid,schemaname,relname}`
//!   gauge: sequential-scan nodes per table in the statement's plan.
//! - `pgsidecar_statement_plan_index_scans{datname,queryid,schemaname,indexname}`
//!   gauge: index scan nodes per index.
//! - `pgsidecar_statement_plan_info{datname,queryid,fingerprint}` gauge, 1.
//! - `pgsidecar_statement_plan_total_cost{datname,queryid}` gauge.
//! - `pgsidecar_statement_plan_timestamp_seconds{datname,queryid}` gauge:
//!   when the plan was fetched.
//! - `pgsidecar_statement_explains_total{result}` counter, `ok` or `failed`.
//! - `pgsidecar_statement_explains_last_hour` gauge and
//!   `pgsidecar_statement_explain_per_hour` gauge (the limit).
//! - `pgsidecar_statement_explain_skipped{reason}` gauge: statements of this
//!   run's top without a fresh plan, by why: `rate_limited`, `deferred` (no
//!   time left in this run), `failed`, `utility`, `truncated`, `refused`.
//!
//! Version gates: the generic plan's path (see `plan.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::plan::{self, Facts, How};
use super::{Client, CollectError, CollectFuture, Ctx, Definition, Stateful, text};
use crate::config::{CollectorConfig, Explain};
use crate::metrics::Family;

const NAME: &str = "statement_plans";
const HOUR: Duration = Duration::from_secs(3600);
/// Most statements remembered (plans and failures each).
const REMEMBERED: usize = 1000;

const REASONS: &[&str] = &["rate_limited", "deferred", "failed", "utility", "truncated", "refused"];

/// `$1`: threshold in ms, `$2`: how many, `$3`: leave out the own role.
const TOP: &str = "SELECT current_database()::text AS datname, queryid::text AS queryid, \
     (sum(total_exec_time) / NULLIF(sum(calls), 0))::float8 AS mean_ms \
     FROM pg_stat_statements(false) \
     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND queryid IS NOT NULL \
       AND NOT ($3 AND userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)) \
     GROUP BY queryid HAVING sum(total_exec_time) / NULLIF(sum(calls), 0) > $1 \
     ORDER BY 3 DESC, 2 LIMIT $2";

/// `$1`: the queryids whose texts are needed.
const TEXTS: &str = "SELECT queryid::text AS queryid, min(query) AS query FROM pg_stat_statements(true) \
     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       AND queryid::text = ANY($1::text[]) GROUP BY queryid";

/// The collector and its configuration.
pub fn definition(e: &Explain) -> (Definition, CollectorConfig) {
    let cfg = CollectorConfig {
        name: NAME,
        enabled: true,
        interval: e.interval,
        // The run plans one statement after another; it starts no other
        // when less than one statement's timeout is left.
        timeout: e.interval,
        stale_after: e.interval.saturating_mul(3),
        every_pod: false,
    };
    let collector = Box::leak(Box::new(StatementPlans {
        explain: e.clone(),
        memory: Mutex::new(Memory::default()),
    }));
    let def = Definition::stateful(NAME, collector).every(e.interval).backs_off();
    (def, cfg)
}

struct StatementPlans {
    explain: Explain,
    memory: Mutex<Memory>,
}

/// A plan and when it was fetched.
#[derive(Debug, Clone)]
pub struct Planned {
    pub facts: Facts,
    pub at: Instant,
    pub unix: f64,
}

/// What outlives a run.
#[derive(Debug, Default)]
pub struct Memory {
    pub plans: HashMap<String, Planned>,
    /// Statements not to try again yet: when, the reason label, and the
    /// error of an `EXPLAIN` that failed.
    pub failed: HashMap<String, (Instant, &'static str, Option<String>)>,
    /// When the `EXPLAIN`s of the last hour ran.
    pub explains: VecDeque<Instant>,
    pub ok_total: u64,
    pub failed_total: u64,
}

/// What a run does with a statement of the top.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Its plan is fresh.
    Cached,
    /// Plan it now.
    Explain,
    /// Not now; the reason label.
    Skip(&'static str),
}

impl Memory {
    /// Forgets explains older than an hour and failures older than
    /// `retry_failed_after`.
    fn expire(&mut self, now: Instant, e: &Explain) {
        while self.explains.front().is_some_and(|t| now.duration_since(*t) >= HOUR) {
            self.explains.pop_front();
        }
        self.failed
            .retain(|_, (t, _, _)| now.duration_since(*t) < e.retry_failed_after);
    }

    /// Decides, statement by statement in order, within the hour's budget.
    pub fn decide(&mut self, top: &[String], now: Instant, e: &Explain) -> Vec<Decision> {
        self.expire(now, e);
        let mut budget = (e.per_hour as usize).saturating_sub(self.explains.len());
        top.iter()
            .map(|id| {
                if let Some((_, reason, _)) = self.failed.get(id) {
                    return Decision::Skip(reason);
                }
                if self.plans.get(id).is_some_and(|p| now.duration_since(p.at) < e.refresh) {
                    return Decision::Cached;
                }
                if budget == 0 {
                    return Decision::Skip("rate_limited");
                }
                budget -= 1;
                Decision::Explain
            })
            .collect()
    }

    fn planned(&mut self, id: &str, facts: Facts, now: Instant) {
        self.explains.push_back(now);
        self.ok_total += 1;
        self.failed.remove(id);
        self.plans.insert(
            id.to_string(),
            Planned {
                facts,
                at: now,
                unix: SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            },
        );
    }

    /// A statement skipped for `reason`, or whose `EXPLAIN` failed with `error`.
    fn failed(&mut self, id: &str, reason: &'static str, now: Instant, error: Option<String>) {
        if error.is_some() {
            self.explains.push_back(now);
            self.failed_total += 1;
        }
        self.failed.insert(id.to_string(), (now, reason, error));
    }

    /// Keeps the plans of `top` and the newest others, at most [`REMEMBERED`].
    fn trim(&mut self, top: &[String]) {
        if self.plans.len() > REMEMBERED {
            let mut others: Vec<(Instant, String)> = self
                .plans
                .iter()
                .filter(|(id, _)| !top.contains(id))
                .map(|(id, p)| (p.at, id.clone()))
                .collect();
            others.sort();
            for (_, id) in others.iter().take(self.plans.len() - REMEMBERED) {
                self.plans.remove(id);
            }
        }
        if self.failed.len() > REMEMBERED {
            let mut all: Vec<(Instant, String)> = self.failed.iter().map(|(id, (t, _, _))| (*t, id.clone())).collect();
            all.sort();
            for (_, id) in all.iter().take(self.failed.len() - REMEMBERED) {
                self.failed.remove(id);
            }
        }
    }
}

impl Stateful for StatementPlans {
    fn collect<'a>(&'a self, client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
        Box::pin(self.run(client, ctx))
    }
}

impl StatementPlans {
    async fn run(&self, client: &Client, ctx: &Ctx) -> Result<Vec<Family>, CollectError> {
        let started = Instant::now();
        let e = &self.explain;
        let st = &ctx.checks.statements;
        let threshold_ms = ctx.checks.slow_query_threshold.as_secs_f64() * 1000.0;
        let top_n = i64::try_from(e.top).unwrap_or(i64::MAX);
        let rows = match async {
            client
                .query(
                    &client.prepare_cached(TOP).await?,
                    &[&threshold_ms, &top_n, &st.exclude_own_role],
                )
                .await
        }
        .await
        {
            Ok(rows) => rows,
            Err(err) => {
                return Err(match super::pg_stat_statements::unavailable(client, &err).await {
                    Some(u) => u,
                    None => CollectError::query("pg_stat_statements", err),
                });
            }
        };
        let mut datname = String::new();
        let mut top = Vec::new();
        for r in &rows {
            datname = text(r, "datname")?;
            top.push(text(r, "queryid")?);
        }
        let decisions = self.lock().decide(&top, Instant::now(), e);
        let wanted: Vec<&String> = top
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| **d == Decision::Explain)
            .map(|(id, _)| id)
            .collect();
        let mut texts = HashMap::new();
        if !wanted.is_empty() {
            for r in super::query(client, "pg_stat_statements texts", TEXTS, &[&wanted]).await? {
                texts.insert(text(&r, "queryid")?, text(&r, "query")?);
            }
        }
        // After the first, no EXPLAIN starts with less than its timeout left.
        let last_start = started + e.interval.saturating_sub(e.timeout);
        let mut first = true;
        let mut skipped: BTreeMap<&'static str, usize> = REASONS.iter().map(|r| (*r, 0)).collect();
        for (id, decision) in top.iter().zip(&decisions) {
            match decision {
                Decision::Cached => continue,
                Decision::Skip(reason) => {
                    *skipped.entry(reason).or_default() += 1;
                    // Why a statement has no plan stays on the status page.
                    if let Some((_, _, Some(error))) = self.lock().failed.get(id) {
                        ctx.note(error.clone());
                    }
                    continue;
                }
                Decision::Explain => {}
            }
            if !first && Instant::now() > last_start {
                *skipped.entry("deferred").or_default() += 1;
                continue;
            }
            let statement = texts.get(id).map(String::as_str).unwrap_or("");
            let query = match crate::sql::explainable(statement) {
                Ok(q) => q,
                Err(skip) => {
                    self.lock().failed(id, skip.reason(), Instant::now(), None);
                    *skipped.entry(skip.reason()).or_default() += 1;
                    continue;
                }
            };
            first = false;
            let what = format!("the plan of statement {id}");
            let result = plan::explain(
                client,
                &what,
                &query.text,
                query.params,
                How::Plan,
                ctx.server_version_num,
                e.timeout,
            )
            .await
            .and_then(|v| plan::facts(&v).map_err(|m| CollectError::Plan(format!("{what}: {m}"))));
            match result {
                Ok(facts) => self.lock().planned(id, facts, Instant::now()),
                Err(err) => {
                    let error = format!(
                        "{err} (not tried again for {})",
                        crate::config::show(e.retry_failed_after)
                    );
                    ctx.note(error.clone());
                    self.lock().failed(id, "failed", Instant::now(), Some(error));
                    *skipped.entry("failed").or_default() += 1;
                }
            }
        }
        let mut memory = self.lock();
        memory.trim(&top);
        Ok(families(&datname, &top, &memory, &skipped, e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The families of a run: the plans of `top` that are known, the counts.
pub fn families(
    datname: &str,
    top: &[String],
    memory: &Memory,
    skipped: &BTreeMap<&'static str, usize>,
    e: &Explain,
) -> Vec<Family> {
    let l = &["datname", "queryid"];
    let mut seq = Family::gauge(
        "pgsidecar_statement_plan_seq_scans",
        "Sequential-scan nodes per table in the plan of a slow statement",
        &["datname", "queryid", "schemaname", "relname"],
    );
    let mut idx = Family::gauge(
        "pgsidecar_statement_plan_index_scans",
        "Index scan nodes per index in the plan of a slow statement",
        &["datname", "queryid", "schemaname", "indexname"],
    );
    let mut info = Family::gauge(
        "pgsidecar_statement_plan_info",
        "The shape of a slow statement's plan; always 1",
        &["datname", "queryid", "fingerprint"],
    );
    let mut cost = Family::gauge(
        "pgsidecar_statement_plan_total_cost",
        "The planner's total cost of a slow statement's generic plan",
        l,
    );
    let mut at = Family::gauge(
        "pgsidecar_statement_plan_timestamp_seconds",
        "Unix time the plan of a slow statement was fetched",
        l,
    );
    for id in top {
        let Some(p) = memory.plans.get(id) else { continue };
        let f = &p.facts;
        for ((schema, rel), n) in &f.seq_scans {
            seq.set(&[datname, id, schema, rel], f64::from(*n));
        }
        for ((schema, index), n) in &f.index_scans {
            idx.set(&[datname, id, schema, index], f64::from(*n));
        }
        info.set(&[datname, id, &f.fingerprint], 1.0);
        cost.set(&[datname, id], f.total_cost);
        at.set(&[datname, id], p.unix);
    }
    let mut explains = Family::counter(
        "pgsidecar_statement_explains_total",
        "EXPLAINs of slow statements since pgsidecar started, by result (ok, failed)",
        &["result"],
    );
    explains.set(&["ok"], memory.ok_total as f64);
    explains.set(&["failed"], memory.failed_total as f64);
    let mut hour = Family::gauge(
        "pgsidecar_statement_explains_last_hour",
        "EXPLAINs of slow statements in the last hour",
        &[],
    );
    hour.set(&[], memory.explains.len() as f64);
    let mut limit = Family::gauge(
        "pgsidecar_statement_explain_per_hour",
        "Most EXPLAINs of slow statements in any hour (checks.slow_queries.explain.per_hour)",
        &[],
    );
    limit.set(&[], f64::from(e.per_hour));
    let mut skip = Family::gauge(
        "pgsidecar_statement_explain_skipped",
        "Slow statements of this run without a fresh plan, by reason",
        &["reason"],
    );
    for (reason, n) in skipped {
        skip.set(&[reason], *n as f64);
    }
    vec![seq, idx, info, cost, at, explains, hour, limit, skip]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::value as get;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("-{i}")).collect()
    }

    fn facts(fingerprint: &str) -> Facts {
        Facts {
            seq_scans: BTreeMap::from([(("public".into(), "messages".into()), 1)]),
            fingerprint: fingerprint.into(),
            total_cost: 99.0,
            ..Facts::default()
        }
    }

    #[test]
    fn explains_stay_within_the_hours_budget() {
        let e = Explain {
            per_hour: 3,
            ..Explain::default()
        };
        let t0 = Instant::now();
        let mut m = Memory::default();
        let top = ids(5);
        let d = m.decide(&top, t0, &e);
        assert_eq!(
            d,
            [
                Decision::Explain,
                Decision::Explain,
                Decision::Explain,
                Decision::Skip("rate_limited"),
                Decision::Skip("rate_limited"),
            ]
        );
        for id in &top[..3] {
            m.planned(id, facts("a"), t0);
        }
        // A minute on: three are fresh, and the budget is spent.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(
            m.decide(&top, t1, &e),
            [
                Decision::Cached,
                Decision::Cached,
                Decision::Cached,
                Decision::Skip("rate_limited"),
                Decision::Skip("rate_limited"),
            ]
        );
        // An hour on: the budget is back, and the three plans are due again.
        let t2 = t0 + HOUR;
        assert_eq!(
            m.decide(&top, t2, &e),
            [
                Decision::Explain,
                Decision::Explain,
                Decision::Explain,
                Decision::Skip("rate_limited"),
                Decision::Skip("rate_limited"),
            ]
        );
    }

    #[test]
    fn a_failed_statement_waits_a_day() {
        let e = Explain::default();
        let t0 = Instant::now();
        let mut m = Memory::default();
        let top = ids(2);
        m.failed("-1", "failed", t0, Some("boom".into()));
        m.failed("-2", "utility", t0, None);
        assert_eq!(
            m.explains.len(),
            1,
            "only an EXPLAIN that ran counts against the budget"
        );
        let later = t0 + Duration::from_secs(23 * 3600);
        assert_eq!(
            m.decide(&top, later, &e),
            [Decision::Skip("failed"), Decision::Skip("utility")]
        );
        let day = t0 + Duration::from_secs(24 * 3600);
        assert_eq!(m.decide(&top, day, &e), [Decision::Explain, Decision::Explain]);
    }

    #[test]
    fn families_show_the_plans_of_the_top_and_the_counts() {
        let e = Explain::default();
        let t0 = Instant::now();
        let mut m = Memory::default();
        m.planned("-1", facts("f1"), t0);
        m.planned("-9", facts("f9"), t0);
        m.failed("-2", "failed", t0, Some("boom".into()));
        let skipped = BTreeMap::from([("failed", 1), ("rate_limited", 0)]);
        let f = families("mluvme", &ids(2), &m, &skipped, &e);
        assert_eq!(
            get(
                &f,
                "pgsidecar_statement_plan_seq_scans",
                &["mluvme", "-1", "public", "messages"]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(&f, "pgsidecar_statement_plan_info", &["mluvme", "-1", "f1"]),
            Some(1.0)
        );
        // Not in this run's top: not exported.
        assert_eq!(get(&f, "pgsidecar_statement_plan_info", &["mluvme", "-9", "f9"]), None);
        assert_eq!(
            get(&f, "pgsidecar_statement_plan_total_cost", &["mluvme", "-1"]),
            Some(99.0)
        );
        assert_eq!(get(&f, "pgsidecar_statement_explains_total", &["ok"]), Some(2.0));
        assert_eq!(get(&f, "pgsidecar_statement_explains_total", &["failed"]), Some(1.0));
        assert_eq!(get(&f, "pgsidecar_statement_explains_last_hour", &[]), Some(3.0));
        assert_eq!(get(&f, "pgsidecar_statement_explain_per_hour", &[]), Some(60.0));
        assert_eq!(get(&f, "pgsidecar_statement_explain_skipped", &["failed"]), Some(1.0));
    }
}
