//! `settings`: every `bool`, `integer` and `real` server setting, from
//! `pg_settings`.
//!
//! Metrics (postgres_exporter's names and conversion):
//! - `pg_settings_<name>` gauge, no labels, for each setting. Dots and other
//!   characters outside `[a-zA-Z0-9_]` become `_`. Time settings are converted
//!   to seconds and named `..._seconds`; memory settings to bytes and named
//!   `..._bytes` (e.g. `pg_settings_shared_buffers_bytes`). `-1` ("disabled")
//!   is kept as -1, unconverted. Booleans are 1 (on) or 0 (off).
//!
//! Version gates: none.

use super::{Client, CollectFuture, Ctx, Definition, query, text};
use crate::metrics::{Family, sanitize_name};

pub const DEFINITION: Definition = Definition::custom("settings", collect);

const SQL: &str = "SELECT name, setting, COALESCE(unit, '') AS unit, vartype \
     FROM pg_settings WHERE vartype IN ('bool', 'integer', 'real')";

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub setting: String,
    pub unit: String,
    pub vartype: String,
}

fn collect<'a>(client: &'a Client, _ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let mut rows = Vec::new();
        for r in query(client, "pg_settings", SQL, &[]).await? {
            rows.push(Row {
                name: text(&r, "name")?,
                setting: text(&r, "setting")?,
                unit: text(&r, "unit")?,
                vartype: text(&r, "vartype")?,
            });
        }
        Ok(families(&rows))
    })
}

/// The metric-name suffix and the factor to base units for a `pg_settings.unit`.
fn unit(name: &str) -> Option<(&'static str, f64)> {
    const KB: f64 = 1024.0;
    Some(match name {
        "" => ("", 1.0),
        "us" => ("seconds", 1e-6),
        "ms" => ("seconds", 1e-3),
        "s" => ("seconds", 1.0),
        "min" => ("seconds", 60.0),
        "h" => ("seconds", 3600.0),
        "d" => ("seconds", 86400.0),
        "B" => ("bytes", 1.0),
        "kB" => ("bytes", KB),
        "MB" => ("bytes", KB * KB),
        "GB" => ("bytes", KB * KB * KB),
        "TB" => ("bytes", KB * KB * KB * KB),
        // Block units such as "8kB" (block_size) or "16MB" (wal_segment_size).
        other => {
            let digits: String = other.chars().take_while(char::is_ascii_digit).collect();
            let n: f64 = digits.parse().ok()?;
            let (_, factor) = unit(&other[digits.len()..]).filter(|(s, _)| *s == "bytes")?;
            ("bytes", n * factor)
        }
    })
}

pub fn families(rows: &[Row]) -> Vec<Family> {
    let mut out = Vec::new();
    for row in rows {
        let value = match row.vartype.as_str() {
            "bool" => match row.setting.as_str() {
                "on" => 1.0,
                "off" => 0.0,
                _ => continue,
            },
            _ => match row.setting.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let Some((suffix, factor)) = unit(&row.unit) else {
            tracing::debug!(setting = %row.name, unit = %row.unit, "skip setting with an unknown unit");
            continue;
        };
        let mut name = format!("pg_settings_{}", sanitize_name(&row.name));
        let help = if suffix.is_empty() {
            format!("Server Parameter: {}", row.name)
        } else {
            name.push('_');
            name.push_str(suffix);
            format!("Server Parameter: {} [Units converted to {suffix}.]", row.name)
        };
        let value = if value == -1.0 { value } else { value * factor };
        let mut f = Family::gauge(name, help, &[]);
        f.set(&[], value);
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, setting: &str, unit: &str, vartype: &str) -> Row {
        Row {
            name: name.into(),
            setting: setting.into(),
            unit: unit.into(),
            vartype: vartype.into(),
        }
    }

    fn value(fams: &[Family], name: &str) -> Option<f64> {
        crate::metrics::value(fams, name, &[])
    }

    #[test]
    fn units_convert_like_postgres_exporter() {
        let f = families(&[
            row("shared_buffers", "16384", "8kB", "integer"),
            row("statement_timeout", "1500", "ms", "integer"),
            row("autovacuum_naptime", "1", "min", "integer"),
            row("max_connections", "100", "", "integer"),
            row("fsync", "on", "", "bool"),
            row("ssl", "off", "", "bool"),
            row("log_min_duration_statement", "-1", "ms", "integer"),
            row("wal_segment_size", "1", "16MB", "integer"),
            row("pg_stat_statements.max", "5000", "", "integer"),
            row("cpu_tuple_cost", "0.01", "", "real"),
        ]);
        assert_eq!(value(&f, "pg_settings_shared_buffers_bytes"), Some(134_217_728.0));
        assert_eq!(value(&f, "pg_settings_statement_timeout_seconds"), Some(1.5));
        assert_eq!(value(&f, "pg_settings_autovacuum_naptime_seconds"), Some(60.0));
        assert_eq!(value(&f, "pg_settings_max_connections"), Some(100.0));
        assert_eq!(value(&f, "pg_settings_fsync"), Some(1.0));
        assert_eq!(value(&f, "pg_settings_ssl"), Some(0.0));
        assert_eq!(value(&f, "pg_settings_log_min_duration_statement_seconds"), Some(-1.0));
        assert_eq!(value(&f, "pg_settings_wal_segment_size_bytes"), Some(16_777_216.0));
        assert_eq!(value(&f, "pg_settings_pg_stat_statements_max"), Some(5000.0));
        assert_eq!(value(&f, "pg_settings_cpu_tuple_cost"), Some(0.01));
    }

    #[test]
    fn unknown_units_and_unparsable_values_are_skipped() {
        let f = families(&[row("a", "1", "parsecs", "integer"), row("b", "x", "", "real")]);
        assert!(f.is_empty());
    }
}
