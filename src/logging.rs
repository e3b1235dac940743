//! Log output: `logfmt` (the default, as postgres_exporter) or `json`, to
//! standard error, at the configured level; and [`ErrorLog`], which keeps a
//! failure that repeats every interval to one line when it starts or
//! changes and one when it ends.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber. Call once, from `main`.
pub fn init(log: &Log) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(log.level)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).init(),
    }
}

/// The last error logged by a loop that retries, so that it logs a failure
/// when it starts or its message changes, not on every attempt.
#[derive(Debug, Default)]
pub struct ErrorLog {
    last: Option<String>,
}

impl ErrorLog {
    /// True if `error` differs from the last one logged; it is remembered.
    pub fn is_new(&mut self, error: &str) -> bool {
        if self.last.as_deref() == Some(error) {
            return false;
        }
        self.last = Some(error.to_string());
        true
    }

    /// True if an error had been logged: the failure has ended. Forgets it.
    pub fn ended(&mut self) -> bool {
        self.last.take().is_some()
    }
}

/// `ts=2026-11-25T03:04:05.123Z level=info msg="pgsidecar started" key=value`
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        w.write_str("ts=")?;
        SystemTime.format_time(&mut w)?;
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        write!(w, " level={level}")?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(msg) = fields.message {
            write!(w, " msg={}", quote(&msg))?;
        }
        w.write_str(&fields.rest)?;
        writeln!(w)
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), quote(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Quotes a logfmt value when it needs it.
pub fn quote(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control())
    {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::{ErrorLog, quote};

    #[test]
    fn an_error_is_new_once_until_it_changes_or_ends() {
        let mut log = ErrorLog::default();
        assert!(!log.ended());
        assert!(log.is_new("down"));
        assert!(!log.is_new("down"));
        assert!(log.is_new("refused"));
        assert!(log.ended());
        assert!(!log.ended());
        assert!(log.is_new("refused"));
    }

    #[test]
    fn logfmt_values_are_quoted_when_needed() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("a=\"b\""), "\"a=\\\"b\\\"\"");
        assert_eq!(quote(""), "\"\"");
    }
}
