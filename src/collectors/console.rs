//! What the PgBouncer collectors share: running a `SHOW` command on the
//! admin console, and turning its rows into families by column name.
//!
//! The console speaks the simple query protocol only, and every value comes
//! back as text, so a command runs through `simple_query` and its rows are
//! read into [`Row`]s: column name to text, a SQL NULL left out. Columns
//! are read by name, never by position: PgBouncer adds columns between
//! releases (`SHOW POOLS` got `cl_active_cancel_req` in 1.18, `SHOW
//! STATS_TOTALS` `server_assignment_count` in 1.23), and an unknown one is
//! ignored while a missing one gives no sample. A value that is not a
//! number loses only its own sample; the run says so in a note.

use std::collections::BTreeMap;

use tokio_postgres::SimpleQueryMessage;

use super::{Client, CollectError};
use crate::metrics::Family;

/// One row of a `SHOW` result: column name to text (NULL: absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub BTreeMap<String, String>);

impl Row {
    /// A row from (column, value) pairs, for the unit tests.
    #[cfg(test)]
    pub fn of(pairs: &[(&str, &str)]) -> Row {
        Row(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// The column's text, "" if absent or NULL.
    pub fn text(&self, column: &str) -> &str {
        self.0.get(column).map_or("", String::as_str)
    }

    /// The column as a number: `None` if absent, `Err` if not a number.
    pub fn number(&self, column: &str) -> Option<Result<f64, String>> {
        let text = self.0.get(column)?;
        Some(
            text.trim()
                .parse::<f64>()
                .map_err(|_| format!("column {column}: {text:?} is not a number")),
        )
    }
}

/// Runs `command` (a `SHOW`) with the simple query protocol.
pub async fn show(client: &Client, command: &'static str) -> Result<Vec<Row>, CollectError> {
    let messages = client
        .simple_query(command)
        .await
        .map_err(|e| CollectError::query(command, e))?;
    let mut rows = Vec::new();
    for m in messages {
        if let SimpleQueryMessage::Row(r) = m {
            let mut row = BTreeMap::new();
            for (i, c) in r.columns().iter().enumerate() {
                if let Some(v) = r.get(i) {
                    row.insert(c.name().to_string(), v.to_string());
                }
            }
            rows.push(Row(row));
        }
    }
    Ok(rows)
}

/// A value column and the family it becomes.
#[derive(Debug, Clone, Copy)]
pub struct Value {
    pub column: &'static str,
    pub metric: &'static str,
    pub help: &'static str,
    pub counter: bool,
    /// Multiplies the value: 1e-6 turns PgBouncer's microseconds into seconds.
    pub scale: f64,
}

pub const fn gauge(column: &'static str, metric: &'static str, help: &'static str) -> Value {
    Value {
        column,
        metric,
        help,
        counter: false,
        scale: 1.0,
    }
}

pub const fn counter(column: &'static str, metric: &'static str, help: &'static str) -> Value {
    Value {
        column,
        metric,
        help,
        counter: true,
        scale: 1.0,
    }
}

impl Value {
    pub const fn micros(self) -> Self {
        Value { scale: 1e-6, ..self }
    }

    pub fn family(&self, labels: &[&'static str]) -> Family {
        if self.counter {
            Family::counter(self.metric, self.help, labels)
        } else {
            Family::gauge(self.metric, self.help, labels)
        }
    }
}

/// One family per value column, one sample per row, labelled with the
/// `labels` columns (the label is named after its column). Returns the
/// families and a note per value that was not a number.
pub fn families(rows: &[Row], labels: &[&'static str], values: &[Value]) -> (Vec<Family>, Vec<String>) {
    let mut fams: Vec<Family> = values.iter().map(|v| v.family(labels)).collect();
    let mut notes = Vec::new();
    for row in rows {
        let label_values: Vec<&str> = labels.iter().map(|l| row.text(l)).collect();
        for (v, fam) in values.iter().zip(fams.iter_mut()) {
            match row.number(v.column) {
                Some(Ok(n)) => fam.set(&label_values, n * v.scale),
                Some(Err(e)) => notes.push(format!("{} ({}): {e}", v.metric, label_values.join(", "))),
                None => {}
            }
        }
    }
    (fams, notes)
}

/// For `SHOW LISTS` and `SHOW CONFIG`, whose rows are (name, value) pairs:
/// one unlabelled gauge per known name; unknown names are ignored.
pub fn pairs(rows: &[Row], name_col: &str, value_col: &str, values: &[Value]) -> (Vec<Family>, Vec<String>) {
    let mut fams = Vec::new();
    let mut notes = Vec::new();
    for v in values {
        let Some(row) = rows.iter().find(|r| r.text(name_col) == v.column) else {
            continue;
        };
        let mut fam = v.family(&[]);
        match row.number(value_col) {
            Some(Ok(n)) => fam.set(&[], n * v.scale),
            Some(Err(e)) => notes.push(format!("{} ({}): {e}", v.metric, v.column)),
            None => {}
        }
        fams.push(fam);
    }
    (fams, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_read_by_name_and_a_bad_value_loses_only_its_sample() {
        const VALUES: [Value; 2] = [
            gauge("cl_waiting", "x_waiting", "h"),
            counter("total_wait_time", "x_wait_seconds_total", "h").micros(),
        ];
        let rows = [
            // Columns in another order, one unknown, one a newer release added.
            Row::of(&[
                ("total_wait_time", "2500000"),
                ("database", "app"),
                ("brand_new", "7"),
                ("cl_waiting", "3"),
            ]),
            Row::of(&[("database", "other"), ("cl_waiting", "n/a"), ("total_wait_time", "1")]),
            // An older release without total_wait_time.
            Row::of(&[("database", "old"), ("cl_waiting", "1")]),
        ];
        let (f, notes) = families(&rows, &["database"], &VALUES);
        assert_eq!(f[0].get(&["app"]), Some(3.0));
        assert_eq!(f[1].get(&["app"]), Some(2.5));
        assert_eq!(f[0].get(&["other"]), None);
        assert_eq!(f[1].get(&["other"]), Some(1e-6));
        assert_eq!(f[0].get(&["old"]), Some(1.0));
        assert_eq!(f[1].get(&["old"]), None);
        assert_eq!(notes, ["x_waiting (other): column cl_waiting: \"n/a\" is not a number"]);
    }

    #[test]
    fn pairs_take_known_names_only() {
        const VALUES: [Value; 2] = [gauge("free_clients", "x_free", "h"), gauge("gone", "x_gone", "h")];
        let rows = [
            Row::of(&[("list", "used_clients"), ("items", "4")]),
            Row::of(&[("list", "free_clients"), ("items", "46")]),
        ];
        let (f, notes) = pairs(&rows, "list", "items", &VALUES);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name(), "x_free");
        assert_eq!(f[0].get(&[]), Some(46.0));
        assert!(notes.is_empty());
    }
}
