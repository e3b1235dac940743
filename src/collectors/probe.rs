//! `probe:<name>`: one collector per entry of `checks.probes`, a query the
//! team cares about, planned (or, in `execute` mode, run once under
//! `EXPLAIN ANALYZE`) on its own interval, with what must hold for it. See
//! `plan.rs` for how the plan is fetched safely: a read-only transaction of
//! its own with the probe's `statement_timeout`, a generic plan for a
//! parameterized query. Server-scoped (only the leader runs probes), and a
//! probe that keeps failing backs off (see `scheduler.rs`).
//!
//! Metrics, label `probe`, from the last successful run:
//! - `pgsidecar_probe_plan_uses_index{probe,index}` gauge, 0/1, per
//!   `expect_index` entry (`index` as configured: `schema.name` or `name`).
//! - `pgsidecar_probe_plan_forbidden_seq_scans{probe,table}` gauge per
//!   `forbid_seq_scan_on` entry (`table` as configured): its sequential-scan
//!   nodes, 0 when the plan does not scan it sequentially.
//! - `pgsidecar_probe_plan_seq_scans{probe,schemaname,relname}` gauge:
//!   sequential-scan nodes per table the plan scans so, forbidden or not.
//! - `pgsidecar_probe_plan_index_scans{probe,schemaname,indexname}` gauge:
//!   index, index-only and bitmap index scan nodes per index the plan uses.
//! - `pgsidecar_probe_plan_total_cost{probe}`, `pgsidecar_probe_plan_rows{probe}`
//!   gauges: the planner's cost and row estimate.
//! - `pgsidecar_probe_plan_info{probe,fingerprint}` gauge, 1: the plan's
//!   shape (see `plan.rs`); `pgsidecar_probe_plan_changes_total{probe}`
//!   counter: times it changed since pgsidecar started.
//! - `pgsidecar_probe_duration_seconds{probe}` gauge: planning time in
//!   `plan` mode, execution time in `execute` mode;
//!   `pgsidecar_probe_planning_seconds{probe}` gauge: planning time.
//! - `execute` mode only: `pgsidecar_probe_execution_seconds{probe}`
//!   histogram of execution times since pgsidecar started (the budget is one
//!   of its bounds), `pgsidecar_probe_rows{probe}` (rows returned),
//!   `pgsidecar_probe_shared_blocks_hit{probe}` and
//!   `pgsidecar_probe_shared_blocks_read{probe}` gauges.
//!
//! `pgsidecar_probe_success`, `pgsidecar_probe_last_success_timestamp_seconds`
//! and `pgsidecar_probe_budget_seconds` are health families (`health.rs`):
//! they are there when a run fails too.
//!
//! Version gates: `EXPLAIN (GENERIC_PLAN)` from PostgreSQL 16 (see `plan.rs`).

use std::sync::Mutex;
use std::time::Duration;

use super::plan::{self, Facts, How};
use super::{Client, CollectError, CollectFuture, Ctx, Definition, Stateful};
use crate::config::{CollectorConfig, Probe, ProbeMode};
use crate::metrics::{Family, Histogram};

/// How much longer than the statement's own timeout a run may take as a
/// whole (the connection, `BEGIN`, `ROLLBACK`): the server cancels the
/// statement first and the run ends with its error.
pub const GRACE: Duration = Duration::from_secs(1);

/// Execution-time bounds, in seconds, besides the probe's budget.
const BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A probe and what it remembers between runs.
pub struct ProbeCollector {
    probe: Probe,
    memory: Mutex<Memory>,
}

/// What outlives a run.
#[derive(Debug, Clone)]
pub struct Memory {
    pub fingerprint: Option<String>,
    pub changes: u64,
    pub executions: Histogram,
}

impl Memory {
    pub fn new(probe: &Probe) -> Self {
        let mut bounds = BOUNDS.to_vec();
        bounds.extend(probe.budget.map(|b| b.as_secs_f64()));
        Memory {
            fingerprint: None,
            changes: 0,
            executions: Histogram::new(bounds),
        }
    }

    /// Takes in a run's plan: a new fingerprint after a first one is a change.
    pub fn update(&mut self, probe: &Probe, facts: &Facts) {
        if self.fingerprint.as_ref().is_some_and(|f| *f != facts.fingerprint) {
            self.changes += 1;
        }
        self.fingerprint = Some(facts.fingerprint.clone());
        if probe.mode == ProbeMode::Execute
            && let Some(ms) = facts.execution_ms
        {
            self.executions.observe((ms * 1000.0).round() / 1e6);
        }
    }
}

/// The collector of a probe and its configuration.
pub fn definition(probe: &Probe) -> (Definition, CollectorConfig) {
    let cfg = CollectorConfig {
        // Leaked once per start, as the scheduler knows collectors by
        // `&'static str` (see `collectors::from_checks`).
        name: Box::leak(probe.collector().into_boxed_str()),
        enabled: true,
        interval: probe.interval,
        timeout: probe.timeout + GRACE,
        stale_after: probe.interval.saturating_mul(3),
        every_pod: false,
    };
    let collector = Box::leak(Box::new(ProbeCollector {
        probe: probe.clone(),
        memory: Mutex::new(Memory::new(probe)),
    }));
    let def = Definition::stateful(cfg.name, collector)
        .every(probe.interval)
        .backs_off();
    (def, cfg)
}

impl Stateful for ProbeCollector {
    fn collect<'a>(&'a self, client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
        Box::pin(async move {
            let p = &self.probe;
            let how = match p.mode {
                ProbeMode::Plan => How::Plan,
                ProbeMode::Execute => How::Analyze(&p.params),
            };
            let what = format!("probe {}", p.name);
            let explained = plan::explain(
                client,
                &what,
                &p.query,
                p.placeholders,
                how,
                ctx.server_version_num,
                p.timeout,
            )
            .await?;
            let facts = plan::facts(&explained).map_err(|e| CollectError::Plan(format!("{what}: {e}")))?;
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            memory.update(p, &facts);
            Ok(families(p, &facts, &memory))
        })
    }
}

/// The families of a probe's run.
pub fn families(p: &Probe, f: &Facts, memory: &Memory) -> Vec<Family> {
    let probe = p.name.as_str();
    let mut uses = Family::gauge(
        "pgsidecar_probe_plan_uses_index",
        "1 if the probe's plan uses the expected index (checks.probes[].expect_index), else 0",
        &["probe", "index"],
    );
    for want in &p.expect_index {
        let used = f.index_scans.keys().any(|(schema, name)| want.matches(schema, name));
        uses.set(&[probe, &want.label()], if used { 1.0 } else { 0.0 });
    }
    let mut forbidden = Family::gauge(
        "pgsidecar_probe_plan_forbidden_seq_scans",
        "Sequential-scan nodes of the probe's plan on a table it must not scan so (checks.probes[].forbid_seq_scan_on)",
        &["probe", "table"],
    );
    for table in &p.forbid_seq_scan_on {
        let n: u32 = f
            .seq_scans
            .iter()
            .filter(|((schema, rel), _)| table.matches(schema, rel))
            .map(|(_, n)| n)
            .sum();
        forbidden.set(&[probe, &table.label()], f64::from(n));
    }
    let mut seq = Family::gauge(
        "pgsidecar_probe_plan_seq_scans",
        "Sequential-scan nodes of the probe's plan per table",
        &["probe", "schemaname", "relname"],
    );
    for ((schema, rel), n) in &f.seq_scans {
        seq.set(&[probe, schema, rel], f64::from(*n));
    }
    let mut idx = Family::gauge(
        "pgsidecar_probe_plan_index_scans",
        "Index scan nodes of the probe's plan per index",
        &["probe", "schemaname", "indexname"],
    );
    for ((schema, name), n) in &f.index_scans {
        idx.set(&[probe, schema, name], f64::from(*n));
    }
    let one = |name: &str, help: &str, v: f64| {
        let mut fam = Family::gauge(name, help, &["probe"]);
        fam.set(&[probe], v);
        fam
    };
    let mut info = Family::gauge(
        "pgsidecar_probe_plan_info",
        "The shape of the probe's plan (node types, relations, indexes, join order); always 1",
        &["probe", "fingerprint"],
    );
    info.set(&[probe, &f.fingerprint], 1.0);
    let mut changes = Family::counter(
        "pgsidecar_probe_plan_changes_total",
        "Times the probe's plan fingerprint changed since pgsidecar started",
        &["probe"],
    );
    changes.set(&[probe], memory.changes as f64);
    // EXPLAIN reports milliseconds to the microsecond: seconds without float noise.
    let secs = |ms: Option<f64>| (ms.unwrap_or(0.0) * 1000.0).round() / 1e6;
    let duration = match p.mode {
        ProbeMode::Plan => f.planning_ms,
        ProbeMode::Execute => f.execution_ms,
    };
    let mut out = vec![
        uses,
        forbidden,
        seq,
        idx,
        one(
            "pgsidecar_probe_plan_total_cost",
            "The planner's total cost of the probe's plan",
            f.total_cost,
        ),
        one(
            "pgsidecar_probe_plan_rows",
            "The planner's estimate of the rows the probe returns",
            f.rows,
        ),
        info,
        changes,
        one(
            "pgsidecar_probe_duration_seconds",
            "The probe's last run: planning time in plan mode, execution time in execute mode",
            secs(duration),
        ),
        one(
            "pgsidecar_probe_planning_seconds",
            "Planning time of the probe's last run",
            secs(f.planning_ms),
        ),
    ];
    if p.mode == ProbeMode::Execute {
        let mut h = Family::histogram(
            "pgsidecar_probe_execution_seconds",
            "Execution times of the probe (execute mode) since pgsidecar started",
            &["probe"],
        );
        h.set_histogram(&[probe], memory.executions.clone());
        out.push(h);
        for (name, help, v) in [
            (
                "pgsidecar_probe_rows",
                "Rows the probe's last run returned",
                f.actual_rows,
            ),
            (
                "pgsidecar_probe_shared_blocks_hit",
                "Shared blocks the probe's last run found in the buffer cache",
                f.shared_hit,
            ),
            (
                "pgsidecar_probe_shared_blocks_read",
                "Shared blocks the probe's last run read into the buffer cache",
                f.shared_read,
            ),
        ] {
            out.push(one(name, help, v.unwrap_or(0.0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Qualified;
    use crate::metrics::value as get;

    fn probe(mode: ProbeMode) -> Probe {
        Probe {
            name: "history".into(),
            query: "SELECT 1".into(),
            placeholders: 0,
            params: Vec::new(),
            mode,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            budget: Some(Duration::from_millis(8)),
            expect_index: vec![
                Qualified {
                    schema: None,
                    name: "idx_messages_user_created".into(),
                },
                Qualified {
                    schema: Some("other".into()),
                    name: "idx_messages_user_created".into(),
                },
            ],
            forbid_seq_scan_on: vec![
                Qualified {
                    schema: Some("public".into()),
                    name: "messages".into(),
                },
                Qualified {
                    schema: None,
                    name: "users".into(),
                },
            ],
        }
    }

    fn facts(index: &str, seq: &[(&str, u32)], fingerprint: &str) -> Facts {
        Facts {
            seq_scans: seq
                .iter()
                .map(|(rel, n)| (("public".to_string(), rel.to_string()), *n))
                .collect(),
            index_scans: BTreeMap::from([(("public".to_string(), index.to_string()), 1)]),
            total_cost: 81.5,
            rows: 10.0,
            fingerprint: fingerprint.into(),
            planning_ms: Some(0.25),
            execution_ms: Some(6.0),
            actual_rows: Some(10.0),
            shared_hit: Some(4.0),
            shared_read: Some(1.0),
        }
    }

    #[test]
    fn a_plan_with_its_index_and_one_without() {
        let p = probe(ProbeMode::Plan);
        let mut m = Memory::new(&p);
        let good = facts("idx_messages_user_created", &[], "aaaa");
        m.update(&p, &good);
        let f = families(&p, &good, &m);
        assert_eq!(
            get(
                &f,
                "pgsidecar_probe_plan_uses_index",
                &["history", "idx_messages_user_created"]
            ),
            Some(1.0)
        );
        // The same name in another schema is another index.
        assert_eq!(
            get(
                &f,
                "pgsidecar_probe_plan_uses_index",
                &["history", "other.idx_messages_user_created"]
            ),
            Some(0.0)
        );
        assert_eq!(
            get(
                &f,
                "pgsidecar_probe_plan_forbidden_seq_scans",
                &["history", "public.messages"]
            ),
            Some(0.0)
        );
        assert_eq!(
            get(
                &f,
                "pgsidecar_probe_plan_index_scans",
                &["history", "public", "idx_messages_user_created"]
            ),
            Some(1.0)
        );
        assert_eq!(get(&f, "pgsidecar_probe_plan_info", &["history", "aaaa"]), Some(1.0));
        assert_eq!(get(&f, "pgsidecar_probe_plan_changes_total", &["history"]), Some(0.0));
        assert_eq!(get(&f, "pgsidecar_probe_duration_seconds", &["history"]), Some(0.00025));
        assert_eq!(get(&f, "pgsidecar_probe_plan_total_cost", &["history"]), Some(81.5));
        assert_eq!(get(&f, "pgsidecar_probe_plan_rows", &["history"]), Some(10.0));
        assert!(!f.iter().any(|f| f.name() == "pgsidecar_probe_execution_seconds"));

        let bad = facts("idx_messages_created", &[("messages", 1), ("users", 2)], "bbbb");
        m.update(&p, &bad);
        let f = families(&p, &bad, &m);
        assert_eq!(
            get(
                &f,
                "pgsidecar_probe_plan_uses_index",
                &["history", "idx_messages_user_created"]
            ),
            Some(0.0)
        );
        assert_eq!(
            get(
                &f,
                "pgsidecar_probe_plan_forbidden_seq_scans",
                &["history", "public.messages"]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(&f, "pgsidecar_probe_plan_forbidden_seq_scans", &["history", "users"]),
            Some(2.0)
        );
        assert_eq!(
            get(&f, "pgsidecar_probe_plan_seq_scans", &["history", "public", "users"]),
            Some(2.0)
        );
        assert_eq!(get(&f, "pgsidecar_probe_plan_info", &["history", "aaaa"]), None);
        assert_eq!(get(&f, "pgsidecar_probe_plan_changes_total", &["history"]), Some(1.0));
        // Back to the first shape: a change too.
        m.update(&p, &good);
        assert_eq!(m.changes, 2);
    }

    #[test]
    fn execute_mode_times_runs_against_the_budget() {
        let p = probe(ProbeMode::Execute);
        let mut m = Memory::new(&p);
        for ms in [6.0, 7.5, 30.0] {
            let mut f = facts("idx_messages_user_created", &[], "aaaa");
            f.execution_ms = Some(ms);
            m.update(&p, &f);
        }
        let f = families(&p, &facts("idx_messages_user_created", &[], "aaaa"), &m);
        assert_eq!(get(&f, "pgsidecar_probe_duration_seconds", &["history"]), Some(0.006));
        assert_eq!(get(&f, "pgsidecar_probe_planning_seconds", &["history"]), Some(0.00025));
        assert_eq!(get(&f, "pgsidecar_probe_rows", &["history"]), Some(10.0));
        assert_eq!(get(&f, "pgsidecar_probe_shared_blocks_read", &["history"]), Some(1.0));
        // Two of three runs within the 8 ms budget, which is a bucket bound.
        assert_eq!(m.executions.count(), 3);
        assert_eq!(m.executions.cumulative(0.008), Some(2));
        let text = String::from_utf8(crate::metrics::encode(f).to_vec()).unwrap();
        assert!(
            text.contains("pgsidecar_probe_execution_seconds_bucket{probe=\"history\",le=\"0.008\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("pgsidecar_probe_execution_seconds_count{probe=\"history\"} 3\n"),
            "{text}"
        );
    }
}
