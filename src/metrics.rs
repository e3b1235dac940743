//! A small builder for metric families, and the text encoding.
//!
//! Collectors build fresh [`Family`] values on every collection (so
//! Postgres's cumulative counters are exported as Postgres reports them, never
//! accumulated here), and the scheduler encodes them once per collection with
//! the `prometheus` crate's text encoder. A family keeps at most one sample per
//! label set: a second `set` with the same labels replaces the first, so a
//! duplicate row can never produce an invalid exposition.

use std::collections::BTreeMap;

use bytes::Bytes;
use prometheus::Encoder;
use prometheus::proto::{self, MetricType};

/// One metric family under construction.
#[derive(Debug, Clone)]
pub struct Family {
    name: String,
    help: String,
    kind: MetricType,
    labels: Vec<&'static str>,
    samples: BTreeMap<Vec<String>, f64>,
}

impl Family {
    pub fn gauge(name: impl Into<String>, help: impl Into<String>, labels: &[&'static str]) -> Self {
        Self::new(name.into(), help.into(), MetricType::GAUGE, labels)
    }

    pub fn counter(name: impl Into<String>, help: impl Into<String>, labels: &[&'static str]) -> Self {
        Self::new(name.into(), help.into(), MetricType::COUNTER, labels)
    }

    pub fn untyped(name: impl Into<String>, help: impl Into<String>, labels: &[&'static str]) -> Self {
        Self::new(name.into(), help.into(), MetricType::UNTYPED, labels)
    }

    fn new(name: String, help: String, kind: MetricType, labels: &[&'static str]) -> Self {
        Family {
            name,
            help,
            kind,
            labels: labels.to_vec(),
            samples: BTreeMap::new(),
        }
    }

    /// Sets the sample for these label values (in the order of the label names).
    pub fn set(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "labels of {}", self.name);
        self.samples
            .insert(values.iter().map(|v| v.to_string()).collect(), value);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The value for these label values, if set (for unit tests).
    #[cfg(test)]
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.samples.get(&key).copied()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    fn write_untyped(&self, out: &mut Vec<u8>) {
        let help = self.help.replace('\\', "\\\\").replace('\n', "\\n");
        let mut s = format!("# HELP {name} {help}\n# TYPE {name} untyped\n", name = self.name);
        for (values, v) in &self.samples {
            s.push_str(&self.name);
            if !self.labels.is_empty() {
                let pairs: Vec<String> = self
                    .labels
                    .iter()
                    .zip(values)
                    .map(|(n, v)| {
                        let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                        format!("{n}=\"{v}\"")
                    })
                    .collect();
                s.push('{');
                s.push_str(&pairs.join(","));
                s.push('}');
            }
            s.push(' ');
            s.push_str(&match *v {
                v if v.is_nan() => "NaN".to_string(),
                v if v == f64::INFINITY => "+Inf".to_string(),
                v if v == f64::NEG_INFINITY => "-Inf".to_string(),
                v => v.to_string(),
            });
            s.push('\n');
        }
        out.extend_from_slice(s.as_bytes());
    }

    fn into_proto(self) -> proto::MetricFamily {
        let mut mf = proto::MetricFamily::default();
        mf.set_name(self.name);
        mf.set_help(self.help);
        mf.set_field_type(self.kind);
        for (values, v) in self.samples {
            let mut m = proto::Metric::default();
            let pairs = self
                .labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut lp = proto::LabelPair::default();
                    lp.set_name(name.to_string());
                    lp.set_value(value);
                    lp
                })
                .collect();
            m.set_label(pairs);
            match self.kind {
                MetricType::COUNTER => {
                    let mut c = proto::Counter::default();
                    c.set_value(v);
                    m.set_counter(c);
                }
                _ => {
                    let mut g = proto::Gauge::default();
                    g.set_value(v);
                    m.set_gauge(g);
                }
            }
            mf.mut_metric().push(m);
        }
        mf
    }
}

/// Encodes families in the text exposition format 0.0.4. Empty families are
/// left out. Counters and gauges go through the `prometheus` crate's text
/// encoder; untyped families, which that encoder does not implement, are
/// written by [`Family::write_untyped`].
pub fn encode(families: Vec<Family>) -> Bytes {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for f in families.into_iter().filter(|f| !f.is_empty()) {
        if f.kind == MetricType::UNTYPED {
            out.extend_from_slice(&encode_protos(std::mem::take(&mut pending)));
            f.write_untyped(&mut out);
        } else {
            pending.push(f.into_proto());
        }
    }
    out.extend_from_slice(&encode_protos(pending));
    Bytes::from(out)
}

/// Encodes families gathered from the `prometheus` crate's own collectors.
pub fn encode_protos(families: Vec<proto::MetricFamily>) -> Bytes {
    let mut out = Vec::new();
    // The text encoder only fails on families without metrics, filtered above,
    // or on write errors, which a Vec cannot produce.
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "encode metrics");
    }
    Bytes::from(out)
}

/// The value of `name` for these label values among `families` (for unit tests).
#[cfg(test)]
pub fn value(families: &[Family], name: &str, labels: &[&str]) -> Option<f64> {
    families.iter().find(|f| f.name() == name).and_then(|f| f.get(labels))
}

/// Turns an arbitrary string into a valid metric name fragment.
pub fn sanitize_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_label_sets_keep_one_sample() {
        let mut f = Family::counter("pg_x", "help", &["datname"]);
        f.set(&["a"], 1.0);
        f.set(&["a"], 2.0);
        f.set(&["b\"q"], 3.0);
        let text = String::from_utf8(encode(vec![f]).to_vec()).unwrap();
        assert!(text.contains("# TYPE pg_x counter"), "{text}");
        assert_eq!(text.matches("pg_x{datname=\"a\"} 2").count(), 1, "{text}");
        assert!(text.contains(r#"pg_x{datname="b\"q"} 3"#), "{text}");
    }

    #[test]
    fn untyped_families_are_written_by_hand_in_order() {
        let mut g = Family::gauge("pg_a", "first", &[]);
        g.set(&[], 1.5);
        let mut u = Family::untyped("pg_static", "Version \\ string", &["version", "short_version"]);
        u.set(&["PostgreSQL \"17\"\nx", "17.0.0"], 1.0);
        let mut c = Family::counter("pg_c", "last", &[]);
        c.set(&[], 3.0);
        let text = String::from_utf8(encode(vec![g, u, c]).to_vec()).unwrap();
        let untyped = "# HELP pg_static Version \\\\ string\n# TYPE pg_static untyped\n\
                       pg_static{version=\"PostgreSQL \\\"17\\\"\\nx\",short_version=\"17.0.0\"} 1\n";
        assert!(text.contains(untyped), "{text}");
        let (a, s, c) = (
            text.find("pg_a 1.5").unwrap(),
            text.find(untyped).unwrap(),
            text.find("pg_c 3").unwrap(),
        );
        assert!(a < s && s < c, "{text}");
    }

    #[test]
    fn empty_families_are_not_encoded() {
        let f = Family::gauge("pg_empty", "help", &[]);
        assert!(encode(vec![f]).is_empty());
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("pg_stat_statements.max"), "pg_stat_statements_max");
        assert_eq!(sanitize_name("a-b c"), "a_b_c");
    }
}
