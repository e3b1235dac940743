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
    /// Keyed by the label pairs as the exposition writes them
    /// (`a="x",b="y"`, escaped; empty without labels): one allocation per
    /// series instead of one per label value, shared by the families of one
    /// row ([`Key`]), and nothing to format again when the family is written.
    samples: BTreeMap<Key, f64>,
    histograms: BTreeMap<Key, Histogram>,
}

/// The label pairs of a series as the exposition writes them
/// (`a="x",b="y"`), shared by the families that have the same label names.
pub type Key = std::sync::Arc<str>;

/// The [`Key`] of these label values under these label names.
pub fn key(names: &[&'static str], values: &[&str]) -> Key {
    let len = names.iter().zip(values).map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(len);
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        escape(&mut out, value, true);
        out.push(b'"');
    }
    // Label names are ASCII and `escape` only inserts ASCII into UTF-8.
    Key::from(String::from_utf8(out).unwrap_or_default())
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

    #[cfg(test)]
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
        let key = self.key(values);
        self.samples.insert(key, value);
    }

    /// Sets the histogram for these label values (a histogram family's).
    pub fn set_histogram(&mut self, values: &[&str], h: Histogram) {
        debug_assert_eq!(values.len(), self.labels.len(), "labels of {}", self.name);
        debug_assert_eq!(self.kind, MetricType::HISTOGRAM, "{} is not a histogram", self.name);
        let key = self.key(values);
        self.histograms.insert(key, h);
    }

    /// The label pairs of these values, as the exposition writes them.
    fn key(&self, values: &[&str]) -> Key {
        key(&self.labels, values)
    }

    /// Sets the sample whose label pairs are `key`, made by [`key`] from
    /// this family's label names.
    pub fn set_key(&mut self, key: &Key, value: f64) {
        self.samples.insert(key.clone(), value);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes `other`'s samples (a family of the same name, from another
    /// database): a label set both have keeps `other`'s value.
    pub fn absorb(&mut self, other: Family) {
        debug_assert_eq!(self.name, other.name);
        self.samples.extend(other.samples);
        self.histograms.extend(other.histograms);
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.histograms.is_empty()
    }

    /// The value for these label values, if set (for unit tests).
    #[cfg(test)]
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        self.samples.get(&self.key(values)).copied()
    }

    pub fn len(&self) -> usize {
        self.samples.len() + self.histograms.len()
    }

    /// Writes the family in the text exposition format 0.0.4, straight from
    /// its samples: byte for byte what the `prometheus` crate's encoder
    /// writes for counters, gauges and histograms, without the protobuf
    /// values it needs first (at 100k series those were tens of MB, built and
    /// thrown away every collection), and the same layout for untyped
    /// families, which that encoder does not implement. Infinite values are
    /// written as `+Inf` and `-Inf`.
    fn write(&self, out: &mut Vec<u8>) {
        let kind = match self.kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        if !self.help.is_empty() {
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(self.name.as_bytes());
            out.push(b' ');
            escape(out, &self.help, false);
            out.push(b'\n');
        }
        for part in ["# TYPE ", &self.name, " ", kind, "\n"] {
            out.extend_from_slice(part.as_bytes());
        }
        for (values, h) in &self.histograms {
            let mut total = 0;
            for (bound, n) in h.bounds.iter().zip(&h.counts) {
                total += n;
                let le = bound.to_string();
                self.sample(out, "_bucket", values, Some(&le), total as f64);
            }
            self.sample(out, "_bucket", values, Some("+Inf"), h.count() as f64);
            self.sample(out, "_sum", values, None, h.sum);
            self.sample(out, "_count", values, None, h.count() as f64);
        }
        for (values, v) in &self.samples {
            self.sample(out, "", values, None, *v);
        }
    }

    /// One sample line: the name with `suffix`, the labels (and `le`), the value.
    fn sample(&self, out: &mut Vec<u8>, suffix: &str, key: &str, le: Option<&str>, v: f64) {
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        if !key.is_empty() || le.is_some() {
            out.push(b'{');
            out.extend_from_slice(key.as_bytes());
            if let Some(le) = le {
                if !key.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(b"le=\"");
                escape(out, le, true);
                out.push(b'"');
            }
            out.push(b'}');
        }
        out.push(b' ');
        match v {
            v if v == f64::INFINITY => out.extend_from_slice(b"+Inf"),
            v if v == f64::NEG_INFINITY => out.extend_from_slice(b"-Inf"),
            v => out.extend_from_slice(v.to_string().as_bytes()),
        }
        out.push(b'\n');
    }

    /// The family as the `prometheus` crate's values (to compare encoders).
    #[cfg(test)]
    fn into_proto(self) -> proto::MetricFamily {
        let mut mf = proto::MetricFamily::default();
        mf.set_name(self.name);
        mf.set_help(self.help);
        mf.set_field_type(self.kind);
        let labels = |key: &str| -> Vec<proto::LabelPair> {
            let values = unkey(key, &self.labels);
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
            m.set_label(labels(values));
            m.set_histogram(h.to_proto());
            mf.mut_metric().push(m);
        }
        for (values, v) in &self.samples {
            let v = *v;
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

/// The label values of a key (`labels` its names), unescaped (to compare
/// encoders).
#[cfg(test)]
fn unkey(key: &str, labels: &[&str]) -> Vec<String> {
    let mut rest = key;
    let mut values = Vec::new();
    for name in labels {
        rest = rest.strip_prefix(',').unwrap_or(rest);
        rest = rest
            .strip_prefix(*name)
            .and_then(|r| r.strip_prefix("=\""))
            .expect("a key of these labels");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    rest = &rest[i + 1..];
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => {}
                },
                c => value.push(c),
            }
        }
        values.push(value);
    }
    values
}

/// Adds `more` to `into`, family by family: one of a name `into` has
/// takes its samples, a new one goes at the end. The exposition then has
/// each family once, whichever database its series came from.
pub fn merge(into: &mut Vec<Family>, more: Vec<Family>) {
    for f in more {
        match into.iter_mut().find(|g| g.name == f.name) {
            Some(g) => g.absorb(f),
            None => into.push(f),
        }
    }
}

/// Encodes families in the text exposition format 0.0.4, in order. Empty
/// families are left out.
pub fn encode(families: Vec<Family>) -> Bytes {
    // Sized once from the families (a sample line is its name, its key and
    // at most 26 bytes of value and punctuation), and cut to the length:
    // growing by doubling copied the text several times and left up to half
    // of the buffer unused for as long as the snapshot holds the part.
    let estimate: usize = families
        .iter()
        .map(|f| {
            let line = |key: &str| f.name.len() + key.len() + 32;
            f.help.len() * 2
                + f.name.len() * 2
                + 32
                + f.samples.keys().map(|k| line(k)).sum::<usize>()
                + f.histograms
                    .iter()
                    .map(|(k, h)| (h.bounds.len() + 4) * (line(k) + 24))
                    .sum::<usize>()
        })
        .sum();
    let mut out = Vec::with_capacity(estimate);
    for f in families.iter().filter(|f| !f.is_empty()) {
        f.write(&mut out);
    }
    out.shrink_to_fit();
    Bytes::from(out)
}

/// Escapes a label value (`quote`: also `"`) or a help text for the text
/// format: backslash, newline and, in label values, the double quote.
fn escape(out: &mut Vec<u8>, s: &str, quote: bool) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            b => out.push(b),
        }
    }
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
    fn merge_keeps_one_family_per_name() {
        let mut a = Family::gauge("x", "h", &["datname"]);
        a.set(&["one"], 1.0);
        let mut b = Family::gauge("x", "h", &["datname"]);
        b.set(&["two"], 2.0);
        let mut y = Family::gauge("y", "h", &[]);
        y.set(&[], 3.0);
        let mut into = vec![a];
        merge(&mut into, vec![b, y]);
        assert_eq!(into.len(), 2);
        assert_eq!((into[0].get(&["one"]), into[0].get(&["two"])), (Some(1.0), Some(2.0)));
        let text = String::from_utf8(encode(into).to_vec()).unwrap();
        assert_eq!(text.matches("# TYPE x gauge").count(), 1, "{text}");
    }

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

    /// The direct writer writes what the `prometheus` crate's encoder would,
    /// byte for byte, for every kind it implements.
    #[test]
    fn the_writer_matches_the_prometheus_encoder() {
        let mut c = Family::counter("pg_c_total", "Counts \\ things\nover lines", &["datname", "q"]);
        c.set(&["a", "x\"y\\z\nw"], 1e21);
        c.set(&["b", "žluťoučký"], 0.1);
        c.set(&["c", ""], f64::NAN);
        let mut g = Family::gauge("pg_g", "", &[]);
        g.set(&[], -3.25e-7);
        let mut h = Histogram::new(vec![0.005, 1.0, 30.0]);
        for v in [0.001, 0.5, 40.0] {
            h.observe(v);
        }
        let mut hist = Family::histogram("pg_h_seconds", "help", &["probe"]);
        hist.set_histogram(&["p\"1"], h);
        let families = vec![c, g, hist];
        let ours = String::from_utf8(encode(families.clone()).to_vec()).unwrap();
        let protos: Vec<_> = families.into_iter().map(Family::into_proto).collect();
        let theirs = String::from_utf8(encode_protos(protos).to_vec()).unwrap();
        assert_eq!(ours, theirs);
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
