//! `query:<name>`: one collector per custom query (`queries:` and
//! `--extend.query-path`, see `config/queries.rs`), turning its rows into
//! series as postgres_exporter does with a `queries.yaml`: every value
//! column is a family `<name>_<column>` labelled by the LABEL columns, a
//! DURATION column `<name>_<column>_milliseconds`, a MAPPEDMETRIC column the
//! number its text maps to; a returned column that `metrics` does not list
//! is an untyped family `<name>_<column>`, as upstream.
//!
//! The query runs as written, as a subquery with `LIMIT max_series + 1`, in
//! a transaction of its own, `BEGIN READ ONLY` with
//! `SET LOCAL statement_timeout` (its `timeout`), ended by `ROLLBACK`,
//! in a session of the pool (read-only, named, bounded). Server-scoped: only
//! the leader runs it. A run fails, and only this collector with it, when
//! the query fails, returns more rows than `max_series`, a value that is not
//! a number, a value of a type that has none, or two rows with the same
//! labels. A NULL value is no sample; a NULL label is "". A server outside
//! `runonserver` or the version gates makes it unavailable, with the reason.

use std::time::Duration;

use tokio_postgres::types::{FromSql, Type};

use super::{Client, CollectError, CollectFuture, Ctx, Definition, Stateful};
use crate::config::{CollectorConfig, CustomQuery, Usage};
use crate::metrics::Family;

/// How much longer than the statement's own timeout a run may take.
const GRACE: Duration = Duration::from_secs(1);

/// A custom query and its label names (leaked once with the definition).
pub struct QueryCollector {
    query: CustomQuery,
    labels: Vec<&'static str>,
    /// Its `databases` ask for a `datname` label its columns lack: the
    /// session's database is added as the last column of each row.
    adds_datname: bool,
}

/// The collector of a custom query and its configuration.
pub fn definition(q: &CustomQuery) -> (Definition, CollectorConfig) {
    let cfg = CollectorConfig {
        name: Box::leak(q.collector().into_boxed_str()),
        enabled: true,
        interval: q.interval,
        timeout: q.timeout + GRACE,
        stale_after: q.interval.saturating_mul(3),
        every_pod: false,
    };
    let mut labels: Vec<&'static str> = q
        .columns
        .iter()
        .filter(|c| c.usage == Usage::Label)
        .map(|c| &*Box::leak(c.name.clone().into_boxed_str()))
        .collect();
    // Run in several databases, its series need the database's name.
    let adds_datname = !q.databases.is_empty() && !labels.contains(&"datname");
    if adds_datname {
        labels.push("datname");
    }
    let collector = Box::leak(Box::new(QueryCollector {
        query: q.clone(),
        labels,
        adds_datname,
    }));
    let def = Definition {
        per_database: (!q.databases.is_empty())
            .then(|| super::PerDatabase::Matching(Box::leak(q.databases.clone().into_boxed_slice()))),
        ..Definition::stateful(cfg.name, collector).every(q.interval)
    };
    (def, cfg)
}

impl Stateful for QueryCollector {
    fn collect<'a>(&'a self, client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
        Box::pin(async move {
            let q = &self.query;
            if let Some(reason) = q.skip_reason(ctx.server_version_num) {
                return Err(CollectError::Unavailable(reason));
            }
            let what = format!("{} (query {})", q.collector(), q.file);
            let err = |e| CollectError::query(what.clone(), e);
            let begin = format!(
                "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
                q.timeout.as_millis().max(1)
            );
            client.batch_execute(&begin).await.map_err(err)?;
            // As a subquery with a LIMIT: a runaway query returns one row
            // more than the cap, not all of them. The newlines keep a
            // trailing `--` comment from swallowing the rest.
            let sql = format!(
                "SELECT * FROM (\n{}\n) AS pgsidecar_query LIMIT {}",
                q.query,
                q.max_series + 1
            );
            let rows = super::query(client, &what, &sql, &[]).await;
            let ended = client.batch_execute("ROLLBACK").await.map_err(err);
            let rows = rows?;
            ended?;
            let mut columns: Vec<String> = match rows.first() {
                Some(r) => r.columns().iter().map(|c| c.name().to_string()).collect(),
                None => Vec::new(),
            };
            let returned = columns.len();
            if self.adds_datname && !rows.is_empty() {
                columns.push("datname".to_string());
            }
            if rows.len() > q.max_series {
                return Err(CollectError::Rows(format!(
                    "{}: the query returned more than its max_series {} rows",
                    q.collector(),
                    q.max_series
                )));
            }
            let mut cells = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut out = Vec::with_capacity(columns.len());
                for (i, col) in columns.iter().enumerate().take(returned) {
                    out.push(
                        row.try_get::<_, Cell>(i)
                            .map_err(|e| CollectError::Rows(format!("{}: column {col}: {e}", q.collector())))?,
                    );
                }
                if self.adds_datname {
                    out.push(Cell::Text(ctx.datname.clone()));
                }
                cells.push(out);
            }
            let (families, notes) = families(q, ctx.server_version_num, &self.labels, &columns, cells)?;
            for n in notes {
                ctx.note(n);
            }
            Ok(families)
        })
    }
}

/// One value as read, whatever its type.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    /// Integers, floats, `oid`; timestamps and dates as Unix seconds.
    Number(f64),
    /// `numeric`, as its exact decimal text.
    Numeric(String),
    Text(String),
    /// An `interval` in milliseconds (a month is 30 days, as Postgres's
    /// `extract(epoch …)` counts it).
    Interval(f64),
    /// A type that is neither a number nor a text: its name.
    Other(String),
}

/// Seconds from 1970-01-01 to 2000-01-01, Postgres's epoch.
const PG_EPOCH: f64 = 946_684_800.0;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], BoxError> {
    raw.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("expected {N} bytes, got {}", raw.len()).into())
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::BOOL => Cell::Bool(be::<1>(raw)?[0] != 0),
            Type::INT2 => Cell::Number(f64::from(i16::from_be_bytes(be(raw)?))),
            Type::INT4 => Cell::Number(f64::from(i32::from_be_bytes(be(raw)?))),
            Type::INT8 => Cell::Number(i64::from_be_bytes(be(raw)?) as f64),
            Type::OID | Type::XID => Cell::Number(f64::from(u32::from_be_bytes(be(raw)?))),
            Type::FLOAT4 => Cell::Number(f64::from(f32::from_be_bytes(be(raw)?))),
            Type::FLOAT8 => Cell::Number(f64::from_be_bytes(be(raw)?)),
            Type::NUMERIC => Cell::Numeric(numeric(raw)?),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                Cell::Number((i64::from_be_bytes(be(raw)?) / 1_000_000) as f64 + PG_EPOCH)
            }
            Type::DATE => Cell::Number(f64::from(i32::from_be_bytes(be(raw)?)) * 86_400.0 + PG_EPOCH),
            Type::INTERVAL => {
                let micros = i64::from_be_bytes(be(raw)?);
                let days = i32::from_be_bytes(be(raw.get(8..).unwrap_or_default())?);
                let months = i32::from_be_bytes(be(raw.get(12..).unwrap_or_default())?);
                Cell::Interval(micros as f64 / 1000.0 + (f64::from(days) + f64::from(months) * 30.0) * 86_400_000.0)
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Cell::Text(String::from_utf8_lossy(raw).into_owned())
            }
            _ if ty.name() == "citext" => Cell::Text(String::from_utf8_lossy(raw).into_owned()),
            _ => Cell::Other(ty.name().to_string()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A binary `numeric` as its decimal text (`NaN`, `Infinity` as such).
fn numeric(raw: &[u8]) -> Result<String, BoxError> {
    let word =
        |i: usize| -> Result<u16, BoxError> { Ok(u16::from_be_bytes(be(raw.get(i * 2..).unwrap_or_default())?)) };
    let (n, weight, sign, dscale) = (word(0)? as usize, word(1)? as i16, word(2)?, word(3)? as usize);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<u16> = (0..n).map(|i| word(4 + i)).collect::<Result<_, _>>()?;
    let digit = |i: i32| {
        if i < 0 {
            0
        } else {
            digits.get(i as usize).copied().unwrap_or(0)
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=i32::from(weight) {
            if i == 0 {
                s.push_str(&digit(i).to_string());
            } else {
                s.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = i32::from(weight) + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

impl Cell {
    /// As a label value.
    fn label(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Bool(b) => b.to_string(),
            Cell::Number(n) => n.to_string(),
            Cell::Numeric(s) | Cell::Text(s) => s.clone(),
            Cell::Interval(ms) => format!("{ms}ms"),
            Cell::Other(t) => format!("<{t}>"),
        }
    }

    /// As a GAUGE or COUNTER value (`None`: NULL); the error says why not.
    fn number(&self) -> Result<Option<f64>, String> {
        match self {
            Cell::Null => Ok(None),
            Cell::Bool(b) => Ok(Some(if *b { 1.0 } else { 0.0 })),
            Cell::Number(n) => Ok(Some(*n)),
            Cell::Numeric(s) => s
                .parse()
                .map(Some)
                .map_err(|_| format!("numeric {s:?} is not a number")),
            Cell::Text(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("the text {:?} is not a number", short(s))),
            Cell::Interval(_) => {
                Err("an interval is not a number: use usage DURATION, or extract(epoch FROM …)".into())
            }
            Cell::Other(t) => Err(format!("a value of type {t} is not a number: cast it (e.g. ::float8)")),
        }
    }

    /// As a DURATION: whole milliseconds (`None`: NULL or upstream's `-1`).
    fn milliseconds(&self) -> Result<Option<f64>, String> {
        match self {
            Cell::Null => Ok(None),
            Cell::Interval(ms) => Ok(Some(ms.trunc())),
            Cell::Text(s) if s == "-1" => Ok(None),
            Cell::Text(s) => go_duration_ms(s)
                .map(Some)
                .ok_or_else(|| format!("the text {:?} is not a duration such as 1m30s or 250ms", short(s))),
            other => Err(format!(
                "a DURATION is a text such as 1m30s or an interval, got {}",
                other.label()
            )),
        }
    }
}

/// At most 40 characters of a value, for messages.
fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A Go duration (`1h2m3.5s`, `-250ms`, `0`) in whole milliseconds,
/// truncated toward zero as Go's `d / time.Millisecond`.
pub fn go_duration_ms(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut ns = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        ns += value * scale;
        rest = tail;
    }
    let ms = (ns / 1e6).trunc();
    Some(if neg { -ms } else { ms })
}

/// The families of one run's rows (`columns` are the result's names, each
/// row a cell per column), and notes on values left out.
pub fn families(
    q: &CustomQuery,
    server_version_num: u32,
    labels: &[&'static str],
    columns: &[String],
    rows: Vec<Vec<Cell>>,
) -> Result<(Vec<Family>, Vec<String>), CollectError> {
    let name = q.collector();
    let fail = |m: String| CollectError::Rows(format!("{name}: {m}"));
    let index = |col: &str| columns.iter().position(|c| c == col);
    let mut label_idx = Vec::with_capacity(labels.len());
    for l in labels {
        match index(l) {
            Some(i) => label_idx.push(i),
            None if rows.is_empty() => {}
            None => return Err(fail(format!("the query returned no column {l} (a LABEL in metrics)"))),
        }
    }
    let mut notes = Vec::new();
    // (column index, family, usage) for every value column returned.
    let mut values: Vec<(usize, Family, Option<&Usage>)> = Vec::new();
    let server = crate::config::VersionRange::server(server_version_num);
    for c in &q.columns {
        let Some(metric) = c.metric(&q.name) else {
            continue;
        };
        if c.pg_version.as_ref().is_some_and(|r| !r.matches(server)) {
            continue;
        }
        let Some(i) = index(&c.name) else {
            if !rows.is_empty() {
                notes.push(format!("{name}: the query returned no column {}", c.name));
            }
            continue;
        };
        let fam = match c.usage {
            Usage::Counter => Family::counter(metric, &c.description, labels),
            _ => Family::gauge(metric, &c.description, labels),
        };
        values.push((i, fam, Some(&c.usage)));
    }
    for (i, col) in columns.iter().enumerate() {
        if !q.columns.iter().any(|c| &c.name == col) && !labels.iter().any(|l| l == col) {
            let fam = Family::untyped(
                format!("{}_{col}", q.name),
                format!("Unknown metric from {}", q.name),
                labels,
            );
            values.push((i, fam, None));
        }
    }
    let mut seen: std::collections::HashMap<Vec<String>, usize> = std::collections::HashMap::new();
    for (r, row) in rows.iter().enumerate() {
        let lv: Vec<String> = label_idx.iter().map(|&i| row[i].label()).collect();
        if let Some(first) = seen.insert(lv.clone(), r) {
            let shown: Vec<String> = labels.iter().zip(&lv).map(|(l, v)| format!("{l}={v:?}")).collect();
            return Err(fail(format!(
                "rows {} and {} have the same labels {{{}}}: each row needs label values of its own",
                first + 1,
                r + 1,
                shown.join(", ")
            )));
        }
        let lv: Vec<&str> = lv.iter().map(String::as_str).collect();
        for (i, fam, usage) in &mut values {
            let cell = &row[*i];
            let col = &columns[*i];
            let v = match usage {
                Some(Usage::Duration) => cell
                    .milliseconds()
                    .map_err(|e| fail(format!("column {col} (DURATION), row {}: {e}", r + 1)))?,
                Some(Usage::MappedMetric(map)) => match cell {
                    Cell::Null => None,
                    other => {
                        let text = other.label();
                        match map.iter().find(|(k, _)| *k == text) {
                            Some((_, v)) => Some(*v),
                            None => {
                                notes.push(format!(
                                    "{name}: column {col} (MAPPEDMETRIC), row {}: {:?} is not in its mapping",
                                    r + 1,
                                    short(&text)
                                ));
                                None
                            }
                        }
                    }
                },
                Some(_) => cell
                    .number()
                    .map_err(|e| fail(format!("column {col}, row {}: {e}", r + 1)))?,
                None => match cell.number() {
                    Ok(v) => v,
                    Err(e) => {
                        notes.push(format!(
                            "{name}: column {col} is not in metrics and not a number ({e}): left out"
                        ));
                        None
                    }
                },
            };
            if let Some(v) = v {
                fam.set(&lv, v);
            }
        }
    }
    notes.dedup();
    Ok((values.into_iter().map(|(_, f, _)| f).collect(), notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QueryColumn, VersionRange};

    fn query(columns: &[(&str, Usage)]) -> CustomQuery {
        CustomQuery {
            name: "app".into(),
            file: "q.yaml".into(),
            query: "SELECT 1".into(),
            columns: columns
                .iter()
                .map(|(n, u)| QueryColumn {
                    name: n.to_string(),
                    usage: u.clone(),
                    description: format!("{n} help"),
                    pg_version: None,
                })
                .collect(),
            master: false,
            databases: Vec::new(),
            cache_seconds: None,
            runonserver: Some(VersionRange::parse(">=13.0.0").unwrap()),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
            max_series: 10,
            min_server_version: None,
            max_server_version: None,
        }
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    #[test]
    fn every_usage_becomes_its_family() {
        let q = query(&[
            ("status", Usage::Label),
            ("n", Usage::Gauge),
            ("total", Usage::Counter),
            ("age", Usage::Duration),
            ("junk", Usage::Discard),
            (
                "state",
                Usage::MappedMetric(vec![("open".into(), 1.0), ("closed".into(), 0.0)]),
            ),
        ]);
        let columns = cols(&["status", "n", "total", "age", "junk", "state", "extra"]);
        let rows = vec![
            vec![
                text("a"),
                Cell::Number(3.0),
                Cell::Numeric("12.50".into()),
                text("1m30.5s"),
                text("x"),
                text("open"),
                Cell::Bool(true),
            ],
            vec![
                Cell::Null,
                Cell::Null,
                text("7"),
                Cell::Interval(2500.7),
                Cell::Null,
                text("other"),
                Cell::Number(2.0),
            ],
        ];
        let (fams, notes) = families(&q, 150000, &["status"], &columns, rows).unwrap();
        let names: Vec<&str> = fams.iter().map(Family::name).collect();
        assert_eq!(
            names,
            ["app_n", "app_total", "app_age_milliseconds", "app_state", "app_extra"]
        );
        assert_eq!(fams[0].get(&["a"]), Some(3.0));
        assert_eq!(fams[0].get(&[""]), None, "a NULL value is no sample");
        assert_eq!(fams[1].get(&["a"]), Some(12.5));
        assert_eq!(fams[1].get(&[""]), Some(7.0));
        assert_eq!(fams[2].get(&["a"]), Some(90500.0));
        assert_eq!(fams[2].get(&[""]), Some(2500.0));
        assert_eq!(fams[3].get(&["a"]), Some(1.0));
        assert_eq!(fams[3].get(&[""]), None);
        assert_eq!(fams[4].get(&["a"]), Some(1.0));
        assert_eq!(
            notes,
            ["query:app: column state (MAPPEDMETRIC), row 2: \"other\" is not in its mapping"]
        );
    }

    #[test]
    fn failures_say_what_and_where() {
        let q = query(&[("status", Usage::Label), ("n", Usage::Gauge)]);
        let columns = cols(&["status", "n"]);
        let err = |rows: Vec<Vec<Cell>>| {
            families(&q, 150000, &["status"], &columns, rows)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(vec![vec![text("a"), text("lots")]]),
            "query:app: column n, row 1: the text \"lots\" is not a number"
        );
        assert_eq!(
            err(vec![
                vec![text("a"), Cell::Number(1.0)],
                vec![text("a"), Cell::Number(2.0)]
            ]),
            "query:app: rows 1 and 2 have the same labels {status=\"a\"}: each row needs label values of its own"
        );
        assert_eq!(
            err(vec![vec![text("a"), Cell::Other("jsonb".into())]]),
            "query:app: column n, row 1: a value of type jsonb is not a number: cast it (e.g. ::float8)"
        );
        let missing = families(&q, 150000, &["status"], &cols(&["n"]), vec![vec![Cell::Number(1.0)]]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "query:app: the query returned no column status (a LABEL in metrics)"
        );
    }

    #[test]
    fn a_column_outside_its_pg_version_is_discarded() {
        let mut q = query(&[("n", Usage::Gauge), ("m", Usage::Gauge)]);
        q.columns[1].pg_version = Some(VersionRange::parse(">=16.0.0").unwrap());
        let rows = || vec![vec![Cell::Number(1.0), Cell::Number(2.0)]];
        let (fams, _) = families(&q, 150000, &[], &cols(&["n", "m"]), rows()).unwrap();
        assert_eq!(fams.iter().map(Family::name).collect::<Vec<_>>(), ["app_n"]);
        let (fams, _) = families(&q, 160000, &[], &cols(&["n", "m"]), rows()).unwrap();
        assert_eq!(fams.iter().map(Family::name).collect::<Vec<_>>(), ["app_n", "app_m"]);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_ms("1h2m3s"), Some(3_723_000.0));
        assert_eq!(go_duration_ms("1.9ms"), Some(1.0));
        assert_eq!(go_duration_ms("-1.5s"), Some(-1500.0));
        assert_eq!(go_duration_ms("0"), Some(0.0));
        assert_eq!(go_duration_ms("300us"), Some(0.0));
        assert_eq!(go_duration_ms("00:01:00"), None);
        assert_eq!(go_duration_ms("5"), None);
        assert_eq!(go_duration_ms(""), None);
    }

    #[test]
    fn numerics_read_exactly() {
        // 12345.678: ndigits 3, weight 1, sign +, dscale 3: 1 2345 6780.
        let raw = [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c];
        assert_eq!(numeric(&raw).unwrap(), "12345.678");
        // -0.05: ndigits 1, weight -1, dscale 2: 500.
        let raw = [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4];
        assert_eq!(numeric(&raw).unwrap(), "-0.05");
        assert_eq!(numeric(&[0, 0, 0, 0, 0xc0, 0, 0, 0]).unwrap(), "NaN");
    }

    #[test]
    fn runonserver_outside_is_unavailable_reason() {
        let q = query(&[("n", Usage::Gauge)]);
        assert_eq!(q.skip_reason(130000), None);
        assert_eq!(
            q.skip_reason(120010).as_deref(),
            Some("runonserver \">=13.0.0\" does not match the server's 12.10.0")
        );
    }
}
