//! Query plans, for the probes and the statement plans: how pgsidecar gets
//! one without hurting the database ([`explain`]), and what a plan shows
//! ([`facts`]): the relations it scans sequentially, the indexes it uses,
//! its cost and row estimate, its timings, and a fingerprint of its shape.
//!
//! Every `EXPLAIN` runs in a transaction of its own, `BEGIN READ ONLY` with
//! `SET LOCAL statement_timeout`, ended by `ROLLBACK` whatever happens:
//! - a query without parameters: `EXPLAIN (VERBOSE, SUMMARY, FORMAT JSON)`;
//!   nothing is executed;
//! - with parameters, a generic plan (what a prepared statement gets after
//!   its first executions), nothing executed: on PostgreSQL 16+
//!   `EXPLAIN (GENERIC_PLAN, …)` (sent as a simple query: the extended
//!   protocol would take its `$n` for parameters to bind); before 16
//!   `SET LOCAL plan_cache_mode = force_generic_plan`,
//!   `PREPARE pgsidecar_plan AS …`, `EXPLAIN (…) EXECUTE pgsidecar_plan(NULL, …)`
//!   and `DEALLOCATE` (a prepared statement outlives the transaction);
//! - [`How::Analyze`] (a probe in `execute` mode, opted into):
//!   `EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON)` with the sample
//!   values bound as text, so the server converts them to the parameters'
//!   types. The query runs once; the read-only transaction refuses any write.
//!
//! The fingerprint hashes (FNV-1a, 64 bits, the same in every build) the
//! plan tree's shape: per node, in order and nested, the node type, its
//! relation and schema, index, join type, strategy, parent relationship,
//! scan direction, CTE, function and subplan names and parallelism; never
//! costs, row estimates, timings, conditions or literal values. It moves
//! when the shape does.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use super::{Client, CollectError};

/// PostgreSQL 16: `EXPLAIN (GENERIC_PLAN)`.
pub const PG16: u32 = 160000;

/// The name of the statement prepared for a generic plan before 16.
const PREPARED: &str = "pgsidecar_plan";

/// What to ask for.
#[derive(Debug, Clone, Copy)]
pub enum How<'a> {
    /// The plan only; nothing runs.
    Plan,
    /// Run the query with these sample values (`None`: NULL), timed.
    Analyze(&'a [Option<String>]),
}

/// The SQL of one `EXPLAIN`, apart from the transaction around it.
#[derive(Debug, Clone, PartialEq)]
pub enum Steps {
    /// One statement without parameters, over the extended protocol.
    Plain(String),
    /// One statement with `n` parameters to bind as text.
    Bound(String, usize),
    /// One statement as a simple query (GENERIC_PLAN: its `$n` stay unbound).
    Simple(String),
    /// `SET LOCAL`, `PREPARE`, the `EXPLAIN EXECUTE`, then `DEALLOCATE`.
    Prepared {
        setup: String,
        prepare: String,
        explain: String,
    },
}

/// The statements for `query` (with `placeholders` parameters) on a server
/// of `version`.
pub fn steps(query: &str, placeholders: u32, how: How, version: u32) -> Steps {
    match how {
        How::Analyze(_) => Steps::Bound(
            format!("EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) {query}"),
            placeholders as usize,
        ),
        How::Plan if placeholders == 0 => Steps::Plain(format!("EXPLAIN (VERBOSE, SUMMARY, FORMAT JSON) {query}")),
        How::Plan if version >= PG16 => {
            Steps::Simple(format!("EXPLAIN (GENERIC_PLAN, VERBOSE, SUMMARY, FORMAT JSON) {query}"))
        }
        How::Plan => Steps::Prepared {
            setup: "SET LOCAL plan_cache_mode = force_generic_plan".into(),
            prepare: format!("PREPARE {PREPARED} AS {query}"),
            explain: format!(
                "EXPLAIN (VERBOSE, SUMMARY, FORMAT JSON) EXECUTE {PREPARED}({})",
                vec!["NULL"; placeholders as usize].join(", ")
            ),
        },
    }
}

/// A sample value sent in text format, whatever the parameter's type: the
/// server parses it as it would a literal.
#[derive(Debug)]
struct Text<'a>(Option<&'a str>);

impl ToSql for Text<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// Gets the `EXPLAIN (FORMAT JSON)` output of `query` in a read-only
/// transaction whose statements time out after `timeout`; `what` names the
/// query in an error.
pub async fn explain(
    client: &Client,
    what: &str,
    query: &str,
    placeholders: u32,
    how: How<'_>,
    version: u32,
    timeout: Duration,
) -> Result<Value, CollectError> {
    let q = |e| CollectError::query(what, e);
    let begin = format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    );
    client.batch_execute(&begin).await.map_err(q)?;
    let steps = steps(query, placeholders, how, version);
    let result = run(client, what, &begin, &steps, how).await;
    // Ends the transaction, aborted or not; then the prepared statement, if any.
    let ended = client.batch_execute("ROLLBACK").await.map_err(q);
    if let Steps::Prepared { .. } = steps {
        let _ = client.batch_execute(&format!("DEALLOCATE {PREPARED}")).await;
    }
    let plan = result?;
    ended?;
    Ok(plan)
}

/// The steps inside the transaction that `begin` opened.
async fn run(client: &Client, what: &str, begin: &str, steps: &Steps, how: How<'_>) -> Result<Value, CollectError> {
    let q = |e| CollectError::query(what, e);
    let rows = match steps {
        Steps::Plain(sql) => client.query(sql.as_str(), &[]).await.map_err(q)?,
        Steps::Bound(sql, n) => {
            let stmt = client.prepare_typed(sql, &vec![Type::UNKNOWN; *n]).await.map_err(q)?;
            let values: Vec<Text> = match how {
                How::Analyze(v) => v.iter().map(|v| Text(v.as_deref())).collect(),
                How::Plan => Vec::new(),
            };
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            client.query(&stmt, &params).await.map_err(q)?
        }
        Steps::Simple(sql) => {
            let messages = client.simple_query(sql).await.map_err(q)?;
            let text = messages.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
                _ => None,
            });
            let text = text.ok_or_else(|| CollectError::Plan(format!("{what}: EXPLAIN returned no row")))?;
            return serde_json::from_str(text)
                .map_err(|e| CollectError::Plan(format!("{what}: EXPLAIN output is not JSON: {e}")));
        }
        Steps::Prepared {
            setup,
            prepare,
            explain,
        } => {
            client.batch_execute(setup).await.map_err(q)?;
            if let Err(e) = client.execute(prepare.as_str(), &[]).await {
                // Left by a run that was cut off before its DEALLOCATE.
                if e.code() != Some(&SqlState::DUPLICATE_PSTATEMENT) {
                    return Err(q(e));
                }
                client
                    .batch_execute(&format!("ROLLBACK; DEALLOCATE {PREPARED}; {begin}; {setup}"))
                    .await
                    .map_err(q)?;
                client.execute(prepare.as_str(), &[]).await.map_err(q)?;
            }
            client.query(explain.as_str(), &[]).await.map_err(q)?
        }
    };
    let row = rows.first().ok_or(CollectError::NoRow { what: "EXPLAIN" })?;
    row.try_get::<_, Value>(0)
        .map_err(|e| CollectError::column("QUERY PLAN", e))
}

/// What a plan shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    /// (schema, relation) → sequential-scan nodes on it.
    pub seq_scans: BTreeMap<(String, String), u32>,
    /// (schema, index) → index, index-only and bitmap index scan nodes.
    pub index_scans: BTreeMap<(String, String), u32>,
    pub total_cost: f64,
    /// The planner's row estimate for the result.
    pub rows: f64,
    pub fingerprint: String,
    /// Milliseconds, as EXPLAIN reports them.
    pub planning_ms: Option<f64>,
    pub execution_ms: Option<f64>,
    /// With ANALYZE: rows returned, shared blocks found in and read into the buffers.
    pub actual_rows: Option<f64>,
    pub shared_hit: Option<f64>,
    pub shared_read: Option<f64>,
}

/// The keys of a node that make its shape, in the order they are hashed.
const SHAPE: &[&str] = &[
    "Node Type",
    "Parent Relationship",
    "Subplan Name",
    "Join Type",
    "Strategy",
    "Partial Mode",
    "Operation",
    "Command",
    "Scan Direction",
    "Schema",
    "Relation Name",
    "Index Name",
    "CTE Name",
    "Function Name",
    "Parallel Aware",
];

/// The facts of an `EXPLAIN (FORMAT JSON)` output.
pub fn facts(explained: &Value) -> Result<Facts, String> {
    let top = explained
        .get(0)
        .ok_or_else(|| "EXPLAIN output is not a list of plans".to_string())?;
    let plan = top
        .get("Plan")
        .ok_or_else(|| "EXPLAIN output has no Plan".to_string())?;
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let mut f = Facts {
        total_cost: num(plan, "Total Cost").unwrap_or(0.0),
        rows: num(plan, "Plan Rows").unwrap_or(0.0),
        planning_ms: num(top, "Planning Time"),
        execution_ms: num(top, "Execution Time"),
        actual_rows: num(plan, "Actual Rows"),
        shared_hit: num(plan, "Shared Hit Blocks"),
        shared_read: num(plan, "Shared Read Blocks"),
        ..Facts::default()
    };
    let mut shape = String::new();
    walk(plan, "", &mut f, &mut shape);
    f.fingerprint = format!("{:016x}", fnv1a(shape.as_bytes()));
    Ok(f)
}

/// One node and its children; `schema` is the nearest ancestor's (a
/// bitmap index scan names its index but not the table's schema).
fn walk(node: &Value, schema: &str, f: &mut Facts, shape: &mut String) {
    let s = |k: &str| node.get(k).and_then(Value::as_str);
    let schema = s("Schema").unwrap_or(schema);
    let kind = s("Node Type").unwrap_or("");
    if kind == "Seq Scan"
        && let Some(rel) = s("Relation Name")
    {
        *f.seq_scans.entry((schema.to_string(), rel.to_string())).or_default() += 1;
    }
    if matches!(kind, "Index Scan" | "Index Only Scan" | "Bitmap Index Scan")
        && let Some(index) = s("Index Name")
    {
        *f.index_scans
            .entry((schema.to_string(), index.to_string()))
            .or_default() += 1;
    }
    shape.push('(');
    for key in SHAPE {
        match node.get(*key) {
            Some(Value::String(v)) => shape.push_str(&format!("{key}={v};")),
            Some(Value::Bool(v)) => shape.push_str(&format!("{key}={v};")),
            _ => {}
        }
    }
    for child in node.get("Plans").and_then(Value::as_array).into_iter().flatten() {
        walk(child, schema, f, shape);
    }
    shape.push(')');
}

/// FNV-1a, 64 bits: small, and the same in every build and on every machine.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan as PostgreSQL 16 prints it for the message-history query.
    fn history(index: &str, cost: f64, rows: f64) -> Value {
        serde_json::json!([{
            "Plan": {
                "Node Type": "Limit", "Parallel Aware": false, "Startup Cost": 0.28, "Total Cost": cost,
                "Plan Rows": rows, "Plan Width": 60, "Output": ["id", "text"],
                "Plans": [{
                    "Node Type": "Index Scan", "Parent Relationship": "Outer", "Parallel Aware": false,
                    "Scan Direction": "Forward", "Index Name": index, "Relation Name": "messages",
                    "Schema": "public", "Alias": "messages", "Total Cost": 80.1, "Plan Rows": 25,
                    "Index Cond": "(messages.user_id = $1)"
                }]
            },
            "Planning Time": 0.12
        }])
    }

    fn bitmap_join() -> Value {
        serde_json::json!([{
            "Plan": {
                "Node Type": "Hash Join", "Join Type": "Inner", "Parallel Aware": false, "Total Cost": 200.0,
                "Plan Rows": 40, "Actual Rows": 38, "Shared Hit Blocks": 12, "Shared Read Blocks": 3,
                "Plans": [
                    {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "users",
                     "Schema": "app", "Parallel Aware": false},
                    {"Node Type": "Hash", "Parent Relationship": "Inner", "Parallel Aware": false, "Plans": [
                        {"Node Type": "Bitmap Heap Scan", "Parent Relationship": "Outer",
                         "Relation Name": "messages", "Schema": "app", "Parallel Aware": false, "Plans": [
                            {"Node Type": "Bitmap Index Scan", "Parent Relationship": "Outer",
                             "Index Name": "idx_messages_text_search", "Parallel Aware": false}
                        ]}
                    ]},
                    {"Node Type": "Seq Scan", "Parent Relationship": "SubPlan", "Subplan Name": "SubPlan 1",
                     "Relation Name": "users", "Schema": "app", "Parallel Aware": false}
                ]
            },
            "Planning Time": 0.5, "Execution Time": 7.25
        }])
    }

    #[test]
    fn a_plan_shows_its_scans_cost_rows_and_times() {
        let f = facts(&bitmap_join()).unwrap();
        assert_eq!(f.seq_scans, BTreeMap::from([(("app".into(), "users".into()), 2)]));
        assert_eq!(
            f.index_scans,
            BTreeMap::from([(("app".into(), "idx_messages_text_search".into()), 1)])
        );
        assert_eq!((f.total_cost, f.rows), (200.0, 40.0));
        assert_eq!((f.planning_ms, f.execution_ms), (Some(0.5), Some(7.25)));
        assert_eq!(
            (f.actual_rows, f.shared_hit, f.shared_read),
            (Some(38.0), Some(12.0), Some(3.0))
        );
        let h = facts(&history("idx_messages_user_created", 81.0, 10.0)).unwrap();
        assert!(h.seq_scans.is_empty());
        assert_eq!((h.planning_ms, h.execution_ms, h.actual_rows), (Some(0.12), None, None));
    }

    #[test]
    fn the_fingerprint_moves_with_the_shape_only() {
        let a = facts(&history("idx_messages_user_created", 81.0, 10.0))
            .unwrap()
            .fingerprint;
        // Other costs, estimates, conditions and times: the same shape.
        let mut other = history("idx_messages_user_created", 95.5, 12.0);
        other[0]["Plan"]["Plans"][0]["Index Cond"] = "(messages.user_id = 42)".into();
        other[0]["Planning Time"] = 3.0.into();
        assert_eq!(facts(&other).unwrap().fingerprint, a);
        // Another index, another node type, another join order: another shape.
        let b = facts(&history("idx_messages_created", 81.0, 10.0)).unwrap().fingerprint;
        let mut seq = history("x", 81.0, 10.0);
        seq[0]["Plan"]["Plans"][0]["Node Type"] = "Seq Scan".into();
        let c = facts(&seq).unwrap().fingerprint;
        let join = bitmap_join();
        let mut swapped = join.clone();
        let plans = swapped[0]["Plan"]["Plans"].as_array_mut().unwrap();
        plans.swap(0, 1);
        let (d, e) = (facts(&join).unwrap().fingerprint, facts(&swapped).unwrap().fingerprint);
        let all = [&a, &b, &c, &d, &e];
        for (i, x) in all.iter().enumerate() {
            assert_eq!(x.len(), 16, "{x}");
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        // The same in every build: FNV-1a's published test vector.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn output_that_is_not_a_plan_is_an_error() {
        assert!(facts(&serde_json::json!({"Plan": {}})).is_err());
        assert!(facts(&serde_json::json!([{"x": 1}])).is_err());
    }

    #[test]
    fn steps_follow_the_mode_the_parameters_and_the_version() {
        let q = "SELECT * FROM t WHERE a = $1 AND b = $2";
        assert_eq!(
            steps("SELECT 1", 0, How::Plan, 150000),
            Steps::Plain("EXPLAIN (VERBOSE, SUMMARY, FORMAT JSON) SELECT 1".into())
        );
        assert_eq!(
            steps(q, 2, How::Plan, 160000),
            Steps::Simple(format!("EXPLAIN (GENERIC_PLAN, VERBOSE, SUMMARY, FORMAT JSON) {q}"))
        );
        assert_eq!(
            steps(q, 2, How::Plan, 150013),
            Steps::Prepared {
                setup: "SET LOCAL plan_cache_mode = force_generic_plan".into(),
                prepare: format!("PREPARE pgsidecar_plan AS {q}"),
                explain: "EXPLAIN (VERBOSE, SUMMARY, FORMAT JSON) EXECUTE pgsidecar_plan(NULL, NULL)".into(),
            }
        );
        let values = [Some("1".to_string()), None];
        assert_eq!(
            steps(q, 2, How::Analyze(&values), 180000),
            Steps::Bound(format!("EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) {q}"), 2)
        );
    }
}
