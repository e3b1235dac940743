//! A small builder for metric families, and the text encoding.
//!
//! Collectors build fresh [`Family`] values on every collection (so
//! Postgres's cumulative counters are exported as Postgres reports them, never
//! accumulated here), and the scheduler encodes them once per collection with
//! the `prometheus` crate's text encoder. A family keeps at most one sample per
//! label set: a second `set` with the same labels replaces the first, so a
//! duplicate row can never produce an invalid exposition.
//!
//! A histogram family holds [`Histogram`] values: pgsidecar's own
//! observations (a probe's execution times), which its owner accumulates
//! across collections and hands over whole.

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
    histograms: BTreeMap<Vec<String>, Histogram>,
}

/// Observations counted into buckets by upper bound (`le`), with their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending; `+Inf` is implied.
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); one more than `bounds`, for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// Empty, with these upper bounds (sorted and deduplicated here).
    pub fn new(mut bounds: Vec<f64>) -> Self {
        bounds.retain(|b| b.is_finite());
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = vec![0; bounds.len() + 1];
        Histogram {
            bounds,
            counts,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Observations at most `bound` (which must be one of the bounds).
    #[cfg(test)]
    pub fn cumulative(&self, bound: f64) -> Option<u64> {
        let i = self.bounds.iter().position(|b| *b == bound)?;
        Some(self.counts[..=i].iter().sum())
    }

    fn to_proto(&self) -> proto::Histogram {
        let mut h = proto::Histogram::default();
        let mut total = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(bound, n)| {
                total += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(total);
                b
            })
            .collect();
        h.set_bucket(buckets);
        h.set_sample_count(self.count());
        h.set_sample_sum(self.sum);
        h
    }
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

    /// A family of [`Histogram`]s, filled with [`Family::set_histogram`].
    pub fn histogram(name: impl Into<String>, help: impl Into<String>, labels: &[&'static str]) -> Self {
        Self::new(name.into(), help.into(), MetricType::HISTOGRAM, labels)
    }

    fn new(name: String, help: String, kind: MetricType, labels: &[&'static str]) -> Self {
        Family {
            name,
            help,
            kind,
            labels: labels.to_vec(),
            samples: BTreeMap::new(),
            histograms: BTreeMap::new(),
        }
    }

    /// Sets the sample for these label values (in the order of the label names).
    pub fn set(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "labels of {}", self.name);
        self.samples
            .insert(values.iter().map(|v| v.to_string()).collect(), value);
    }

    /// Sets the histogram for these label values (a histogram family's).
    pub fn set_histogram(&mut self, values: &[&str], h: Histogram) {
        debug_assert_eq!(values.len(), self.labels.len(), "labels of {}", self.name);
        debug_assert_eq!(self.kind, MetricType::HISTOGRAM, "{} is not a histogram", self.name);
        self.histograms
            .insert(values.iter().map(|v| v.to_string()).collect(), h);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.histograms.is_empty()
    }

    /// The value for these label values, if set (for unit tests).
    #[cfg(test)]
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.samples.get(&key).copied()
    }

    pub fn len(&self) -> usize {
        self.samples.len() + self.histograms.len()
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
        let labels = |values: Vec<String>| -> Vec<proto::LabelPair> {
            self.labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut lp = proto::LabelPair::default();
                    lp.set_name(name.to_string());
                    lp.set_value(value);
                    lp
                })
                .collect()
        };
        for (values, h) in &self.histograms {
            let mut m = proto::Metric::default();
            m.set_label(labels(values.clone()));
            m.set_histogram(h.to_proto());
            mf.mut_metric().push(m);
        }
        for (values, v) in self.samples.clone() {
            let mut m = proto::Metric::default();
            m.set_label(labels(values));
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
    fn histograms_are_encoded_cumulatively_with_inf_sum_and_count() {
        let mut h = Histogram::new(vec![0.1, 0.005, 0.1, f64::INFINITY]);
        for v in [0.001, 0.005, 0.05, 2.0] {
            h.observe(v);
        }
        assert_eq!(
            (h.cumulative(0.005), h.cumulative(0.1), h.count()),
            (Some(2), Some(3), 4)
        );
        let mut f = Family::histogram("pgsidecar_x_seconds", "help", &["probe"]);
        f.set_histogram(&["a"], h);
        let text = String::from_utf8(encode(vec![f]).to_vec()).unwrap();
        assert!(text.contains("# TYPE pgsidecar_x_seconds histogram"), "{text}");
        for line in [
            "pgsidecar_x_seconds_bucket{probe=\"a\",le=\"0.005\"} 2\n",
            "pgsidecar_x_seconds_bucket{probe=\"a\",le=\"0.1\"} 3\n",
            "pgsidecar_x_seconds_bucket{probe=\"a\",le=\"+Inf\"} 4\n",
            "pgsidecar_x_seconds_sum{probe=\"a\"} 2.056\n",
            "pgsidecar_x_seconds_count{probe=\"a\"} 4\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
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
