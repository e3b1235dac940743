//! `indexes`: the expected indexes of `checks.indexes` and the invalid
//! indexes of the current database, from `pg_index`, `pg_class` and
//! `pg_namespace`.
//!
//! Metrics, every family labelled `datname` (the current database) first:
//! - `pgsidecar_expected_index_present{datname,schemaname,indexname}` gauge:
//!   1 if the configured index exists, else 0. An entry without a schema
//!   matches any schema; `schemaname` is then the schema it was found in, or
//!   "" while it is absent.
//! - `pgsidecar_expected_index_valid{datname,schemaname,indexname}` gauge: 1
//!   if the index exists and is valid and ready (a failed
//!   `CREATE INDEX CONCURRENTLY` leaves it invalid).
//! - `pgsidecar_expected_indexes_configured{datname}` gauge: how many
//!   expected indexes are configured, so an empty list is visible.
//! - `pgsidecar_index_pattern_indexes{datname,pattern}` gauge: valid indexes
//!   whose name is `LIKE` the pattern (in its schema if one is configured,
//!   else outside the system schemas).
//! - `pgsidecar_index_pattern_min_indexes{datname,pattern}` gauge: the
//!   configured minimum for the pattern.
//! - `pg_index_invalid{datname,schemaname,relname,indexname}` gauge: 1 for
//!   each index that is not valid or not ready, on a table that
//!   `checks.relations` lets through; never cut by `max_series`.
//!
//! Configured names reach the SQL only as `text[]` bind parameters.
//!
//! Version gates: none.

use super::{Client, CollectFuture, Ctx, Definition, float, query, relation_filter, relation_params, text};
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("indexes", collect).per_database();

/// `$1`: schemas ("" for any), `$2`: index names, in configuration order.
/// A valid match wins over an invalid one in another schema.
const EXPECTED_SQL: &str = "SELECT e.name AS indexname, COALESCE(f.nspname::text, e.schema) AS schemaname, \
     (f.indexrelid IS NOT NULL)::int::float8 AS present, COALESCE(f.ok, false)::int::float8 AS valid \
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS e(schema, name, ord) \
     LEFT JOIN LATERAL (SELECT n.nspname, x.indexrelid, x.indisvalid AND x.indisready AS ok \
       FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
       WHERE c.relname = e.name AND (e.schema = '' OR n.nspname = e.schema) \
       ORDER BY 3 DESC, 1 LIMIT 1) f ON true \
     ORDER BY e.ord";

/// `$1`: patterns, `$2`: schemas ("" for any non-system schema).
const PATTERNS_SQL: &str = "SELECT p.pattern, count(i.relname)::float8 AS count \
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS p(pattern, schema, ord) \
     LEFT JOIN (SELECT c.relname::text AS relname, n.nspname::text AS nspname \
       FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
       WHERE x.indisvalid AND x.indisready) i \
     ON i.relname LIKE p.pattern AND (i.nspname = p.schema OR (p.schema = '' \
       AND i.nspname NOT IN ('pg_catalog', 'information_schema') AND i.nspname NOT LIKE 'pg\\_toast%')) \
     GROUP BY p.ord, p.pattern ORDER BY p.ord";

/// The invalid indexes, with `relation_filter` applied to their tables.
fn invalid_sql() -> String {
    format!(
        "SELECT n.nspname::text AS schemaname, t.relname::text AS relname, c.relname::text AS indexname \
         FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE (NOT x.indisvalid OR NOT x.indisready) AND {}",
        relation_filter("n.nspname::text", "t.relname::text", 1)
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedRow {
    pub schemaname: String,
    pub indexname: String,
    pub present: bool,
    pub valid: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatternRow {
    pub pattern: String,
    pub count: f64,
    pub min_count: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRow {
    pub schemaname: String,
    pub relname: String,
    pub indexname: String,
}

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let checks = &ctx.checks;
        let datname = ctx.database(client).await?;

        let mut expected = Vec::new();
        if !checks.expected_indexes.is_empty() {
            let schemas: Vec<String> = checks
                .expected_indexes
                .iter()
                .map(|e| e.schema.clone().unwrap_or_default())
                .collect();
            let names: Vec<String> = checks.expected_indexes.iter().map(|e| e.name.clone()).collect();
            for r in query(client, "expected indexes", EXPECTED_SQL, &[&schemas, &names]).await? {
                expected.push(ExpectedRow {
                    schemaname: text(&r, "schemaname")?,
                    indexname: text(&r, "indexname")?,
                    present: float(&r, "present")? > 0.0,
                    valid: float(&r, "valid")? > 0.0,
                });
            }
        }

        let mut patterns = Vec::new();
        if !checks.index_patterns.is_empty() {
            let pats: Vec<String> = checks.index_patterns.iter().map(|p| p.pattern.clone()).collect();
            let schemas: Vec<String> = checks
                .index_patterns
                .iter()
                .map(|p| p.schema.clone().unwrap_or_default())
                .collect();
            let rows = query(client, "index patterns", PATTERNS_SQL, &[&pats, &schemas]).await?;
            for (r, p) in rows.iter().zip(&checks.index_patterns) {
                patterns.push(PatternRow {
                    pattern: text(r, "pattern")?,
                    count: float(r, "count")?,
                    min_count: f64::from(p.min_count),
                });
            }
        }

        let [a, b, c, d] = relation_params(&checks.relations);
        let mut invalid = Vec::new();
        for r in query(client, "invalid indexes", &invalid_sql(), &[a, b, c, d]).await? {
            invalid.push(InvalidRow {
                schemaname: text(&r, "schemaname")?,
                relname: text(&r, "relname")?,
                indexname: text(&r, "indexname")?,
            });
        }
        Ok(families(
            &datname,
            checks.expected_indexes.len(),
            &expected,
            &patterns,
            &invalid,
        ))
    })
}

pub fn families(
    datname: &str,
    configured: usize,
    expected: &[ExpectedRow],
    patterns: &[PatternRow],
    invalid: &[InvalidRow],
) -> Vec<Family> {
    let idx_labels = &["datname", "schemaname", "indexname"];
    let mut present = Family::gauge(
        "pgsidecar_expected_index_present",
        "1 if the index listed in checks.indexes.expected exists",
        idx_labels,
    );
    let mut valid = Family::gauge(
        "pgsidecar_expected_index_valid",
        "1 if the index listed in checks.indexes.expected exists and is valid and ready",
        idx_labels,
    );
    for e in expected {
        let labels = [datname, e.schemaname.as_str(), e.indexname.as_str()];
        present.set(&labels, if e.present { 1.0 } else { 0.0 });
        valid.set(&labels, if e.present && e.valid { 1.0 } else { 0.0 });
    }
    let mut count_configured = Family::gauge(
        "pgsidecar_expected_indexes_configured",
        "Number of indexes listed in checks.indexes.expected",
        &["datname"],
    );
    count_configured.set(&[datname], configured as f64);
    let mut count = Family::gauge(
        "pgsidecar_index_pattern_indexes",
        "Number of valid indexes whose name is LIKE the pattern of checks.indexes.patterns",
        &["datname", "pattern"],
    );
    let mut min_count = Family::gauge(
        "pgsidecar_index_pattern_min_indexes",
        "The minimum number of indexes configured for the pattern",
        &["datname", "pattern"],
    );
    for p in patterns {
        count.set(&[datname, &p.pattern], p.count);
        min_count.set(&[datname, &p.pattern], p.min_count);
    }
    let mut bad = Family::gauge(
        "pg_index_invalid",
        "1 for an index that is not valid or not ready, e.g. left by a failed CREATE INDEX CONCURRENTLY",
        &["datname", "schemaname", "relname", "indexname"],
    );
    for i in invalid {
        bad.set(&[datname, &i.schemaname, &i.relname, &i.indexname], 1.0);
    }
    vec![present, valid, count_configured, count, min_count, bad]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_expected_index_is_present_but_not_valid() {
        let expected = [
            ExpectedRow {
                schemaname: "public".into(),
                indexname: "idx_ok".into(),
                present: true,
                valid: true,
            },
            ExpectedRow {
                schemaname: "public".into(),
                indexname: "idx_dup".into(),
                present: true,
                valid: false,
            },
            ExpectedRow {
                schemaname: "".into(),
                indexname: "idx_gone".into(),
                present: false,
                valid: true,
            },
        ];
        let patterns = [PatternRow {
            pattern: "idx_%".into(),
            count: 10.0,
            min_count: 11.0,
        }];
        let invalid = [InvalidRow {
            schemaname: "public".into(),
            relname: "t".into(),
            indexname: "idx_dup".into(),
        }];
        let f = families("app", 3, &expected, &patterns, &invalid);
        let get = |n: &str, l: &[&str]| crate::metrics::value(&f, n, l);
        let p = "pgsidecar_expected_index_present";
        let v = "pgsidecar_expected_index_valid";
        assert_eq!(get(p, &["app", "public", "idx_ok"]), Some(1.0));
        assert_eq!(get(v, &["app", "public", "idx_ok"]), Some(1.0));
        assert_eq!(get(p, &["app", "public", "idx_dup"]), Some(1.0));
        assert_eq!(get(v, &["app", "public", "idx_dup"]), Some(0.0));
        assert_eq!(get(p, &["app", "", "idx_gone"]), Some(0.0));
        assert_eq!(get(v, &["app", "", "idx_gone"]), Some(0.0));
        assert_eq!(get("pgsidecar_expected_indexes_configured", &["app"]), Some(3.0));
        assert_eq!(get("pgsidecar_index_pattern_indexes", &["app", "idx_%"]), Some(10.0));
        assert_eq!(
            get("pgsidecar_index_pattern_min_indexes", &["app", "idx_%"]),
            Some(11.0)
        );
        assert_eq!(get("pg_index_invalid", &["app", "public", "t", "idx_dup"]), Some(1.0));
    }

    #[test]
    fn nothing_configured_still_says_so() {
        let f = families("app", 0, &[], &[], &[]);
        let non_empty: Vec<&str> = f.iter().filter(|f| !f.is_empty()).map(|f| f.name()).collect();
        assert_eq!(non_empty, ["pgsidecar_expected_indexes_configured"]);
    }
}
