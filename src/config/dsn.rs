//! DSN handling: splitting the TLS options that pgsidecar implements itself
//! (`sslmode`, `sslrootcert`) out of a libpq URI or key=value string,
//! refusing a URI that cannot be read one way only, libpq's `PG*`
//! environment as defaults, and [`redact`], which removes passwords from any
//! text that may quote a DSN.
//!
//! A URI whose user or password holds an unencoded `?`, `#`, `/` or `@`
//! reads two ways: `postgresql://u:x?y@host/db?sslmode=require` is either a
//! password `x?y`, or host `u`, port `x` and the query `y@host…`, which drops
//! the `sslmode`. Such a URI is an error that says how to percent-encode.

use super::env::{Env, nonempty};

/// A DSN with the options tokio-postgres does not understand taken out.
#[derive(Default, Debug, PartialEq)]
pub(super) struct DsnParts {
    pub rest: String,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URI or key=value DSN: pgsidecar
/// implements libpq's verify-ca and verify-full itself.
pub(super) fn split_dsn(dsn: &str) -> Result<DsnParts, String> {
    let dsn = dsn.trim();
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        return split_uri(dsn);
    }
    if dsn.contains(',') {
        return Err("a list of several DSNs is not supported: run one pgsidecar per server".into());
    }
    // key=value form, values optionally single-quoted with backslash escapes.
    let mut parts = DsnParts::default();
    let mut kept = String::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            // The word may be the rest of an unquoted password: never quote it.
            return Err("expected key=value pairs, and a word without a value was found: \
                        quote a value that holds spaces, e.g. application_name='my app'"
                .into());
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value for {}", safe_key(&key))),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        match key.as_str() {
            "sslmode" => parts.sslmode = Some(value),
            "sslrootcert" => parts.sslrootcert = Some(value),
            _ => {
                let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push_str(&format!("{key}='{escaped}' "));
            }
        }
    }
    parts.rest = kept.trim_end().to_string();
    Ok(parts)
}

/// A key as an error may show it: only a plain option name.
fn safe_key(key: &str) -> &str {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        key
    } else {
        "an option"
    }
}

fn split_uri(dsn: &str) -> Result<DsnParts, String> {
    let body = dsn.split_once("://").map_or("", |(_, b)| b);
    // The authority ends at the first '/', '?' or '#'; an '@' after that
    // point means the user or password holds one of them unencoded.
    let end = body.find(['/', '?', '#']).unwrap_or(body.len());
    if let Some(at) = body.rfind('@')
        && at > end
    {
        let c = body[end..at].chars().next().unwrap_or('?');
        return Err(format!(
            "the URI's user or password holds an unencoded {c:?}, so it reads two ways: \
             percent-encode it ({}), or use the key=value form",
            encoding(c)
        ));
    }
    if body[..end].matches('@').count() > 1 {
        return Err(format!(
            "the URI's user or password holds an unencoded '@': percent-encode it ({})",
            encoding('@')
        ));
    }
    let mut parts = DsnParts::default();
    let (base, query) = dsn.split_once('?').unwrap_or((dsn, ""));
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key).as_str() {
            "sslmode" => parts.sslmode = Some(percent_decode(value)),
            "sslrootcert" => parts.sslrootcert = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    parts.rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(parts)
}

fn encoding(c: char) -> &'static str {
    match c {
        '?' => "? as %3F",
        '#' => "# as %23",
        '/' => "/ as %2F",
        '@' => "@ as %40",
        _ => "as %XX",
    }
}

/// Decodes `%XX` escapes; anything else, invalid escapes included, stays.
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// tokio-postgres's parse error, for a config problem: its message and
/// causes, with anything after `password` withheld in case a future version
/// quotes the input.
pub(super) fn parse_error(e: &tokio_postgres::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    let msg = plain_quotes(msg.trim_start_matches("invalid connection string: "));
    if msg.contains("password") && msg.contains('=') {
        "the DSN could not be parsed (details withheld: they would show the password)".to_string()
    } else {
        msg
    }
}

/// Keeps what tokio-postgres quotes in backticks only if it is a plain
/// option name: `unknown option `postgres:/u:pw@h`` quotes part of the input.
fn plain_quotes(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut parts = msg.split('`');
    out.push_str(parts.next().unwrap_or(""));
    for (n, part) in parts.enumerate() {
        out.push('`');
        let quoted = n % 2 == 0;
        if quoted && !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str("(withheld: it may hold the password)");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Replaces the password of anything in `text` that looks like a DSN: the
/// user-info after `user:` in a URI (up to the last `@` before the next
/// URI), and the value of a `password=` option. Over-redacting is fine in a
/// message; showing a password is not.
pub fn redact(text: &str) -> String {
    redact_key_values(&redact_uris(text))
}

fn redact_uris(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let next = tail.find("://").unwrap_or(tail.len());
        let scope = &tail[..next];
        match (scope.rfind('@'), scope.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&scope[..colon + 1]);
                out.push_str("******");
                out.push_str(&scope[at..]);
            }
            _ => out.push_str(scope),
        }
        rest = &tail[next..];
    }
    out.push_str(rest);
    out
}

fn redact_key_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find("password") {
        from += found + "password".len();
        let after = &text[from..];
        let Some(value) = after.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let value_start = text.len() - value.len();
        let (start, end) = if value.starts_with('\'') {
            let inner = value_start + 1;
            let mut end = text.len();
            let mut escaped = false;
            for (n, c) in text[inner..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '\'' => {
                        end = inner + n;
                        break;
                    }
                    _ => {}
                }
            }
            (inner, end)
        } else {
            let len = value
                .find(|c: char| c.is_whitespace() || c == '"' || c == '&')
                .unwrap_or(value.len());
            (value_start, value_start + len)
        };
        if end > start {
            out.push_str(&text[copied..start]);
            out.push_str("******");
            copied = end;
        }
        from = from.max(end);
    }
    out.push_str(&text[copied..]);
    out
}

/// libpq's environment variables, as defaults for what the DSN left out.
pub(super) fn apply_libpq_env(pg: &mut tokio_postgres::Config, env: &dyn Env) {
    if pg.get_hosts().is_empty() {
        pg.host(nonempty(env, "PGHOST").as_deref().unwrap_or("localhost"));
    }
    if pg.get_ports().is_empty() {
        let port = nonempty(env, "PGPORT").and_then(|p| p.parse().ok()).unwrap_or(5432);
        pg.port(port);
    }
    if pg.get_user().is_none() {
        let user = nonempty(env, "PGUSER")
            .or_else(|| nonempty(env, "USER"))
            .unwrap_or_else(|| "postgres".to_string());
        pg.user(&user);
    }
    if pg.get_dbname().is_none() {
        if let Some(db) = nonempty(env, "PGDATABASE") {
            pg.dbname(&db);
        } else if let Some(user) = pg.get_user().map(str::to_string) {
            pg.dbname(&user);
        }
    }
    if pg.get_password().is_none()
        && let Some(p) = nonempty(env, "PGPASSWORD")
    {
        pg.password(p);
    }
    if pg.get_connect_timeout().is_none()
        && let Some(secs) = nonempty(env, "PGCONNECT_TIMEOUT").and_then(|s| s.parse::<u64>().ok())
    {
        pg.connect_timeout(std::time::Duration::from_secs(secs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_dsn_takes_tls_options_out_of_uris_and_key_values() {
        let p =
            split_dsn("postgresql://u:pw@h:5/db?sslmode=verify-full&sslrootcert=/ca%20dir/ca.pem&application_name=x")
                .unwrap();
        assert_eq!(p.rest, "postgresql://u:pw@h:5/db?application_name=x");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/ca dir/ca.pem"));

        let p = split_dsn("host=h user=u password='a b\\'c' sslmode=require dbname = d").unwrap();
        assert_eq!(p.rest, "host='h' user='u' password='a b\\'c' dbname='d'");
        assert_eq!(p.sslmode.as_deref(), Some("require"));
        assert!(split_dsn("host=h user").is_err());
    }

    /// Regression: the `?` of an unencoded password hid the sslmode, and
    /// pgsidecar connected in plain text.
    #[test]
    fn a_uri_that_reads_two_ways_is_refused_with_how_to_encode() {
        for (dsn, hint) in [
            ("postgresql://u:x?y@host/db?sslmode=require", "? as %3F"),
            ("postgresql://u:x#y@host/db?sslmode=require", "# as %23"),
            ("postgresql://u:x/y@host/db?sslmode=require", "/ as %2F"),
            ("postgres://u:x@y@host/db", "@ as %40"),
        ] {
            let e = split_dsn(dsn).unwrap_err();
            assert!(e.contains(hint), "{dsn}: {e}");
            assert!(!e.contains("x?y") && !e.contains("x#y") && !e.contains("x/y"), "{e}");
        }
        let p = split_dsn("postgresql://u:x%3Fy@host/db?sslmode=require").unwrap();
        assert_eq!(p.sslmode.as_deref(), Some("require"));
        assert_eq!(p.rest, "postgresql://u:x%3Fy@host/db");
        // A percent-encoded option name is still that option.
        let p = split_dsn("postgresql://h/db?ssl%6Dode=require").unwrap();
        assert_eq!(p.sslmode.as_deref(), Some("require"));
    }

    /// Regression: slicing inside a character panicked on `%aé`.
    #[test]
    fn percent_decoding_never_slices_a_character() {
        assert_eq!(percent_decode("%aé"), "%aé");
        assert_eq!(percent_decode("a%20b%"), "a b%");
        assert_eq!(percent_decode("%é%41"), "%éA");
        assert!(split_dsn("host=h sslrootcert=%aé").is_ok());
        assert!(split_dsn("postgresql://h/db?sslrootcert=%aé").is_ok());
    }

    #[test]
    fn quoted_input_is_kept_only_when_it_is_an_option_name() {
        assert_eq!(
            plain_quotes("invalid value for option `port`"),
            "invalid value for option `port`"
        );
        assert_eq!(
            plain_quotes("unknown option `postgres:/u:pw@h/db?x`"),
            "unknown option `(withheld: it may hold the password)`"
        );
    }

    #[test]
    fn redact_hides_passwords_in_uris_and_key_values() {
        let cases = [
            ("postgresql://u:s3cret@h/db", "postgresql://u:******@h/db"),
            (
                "got \"postgres://u:a?b#c@h:5/db?sslmode=require\"",
                "got \"postgres://u:******@h:5/db?sslmode=require\"",
            ),
            ("postgresql://u:a b@h/db", "postgresql://u:******@h/db"),
            ("postgresql://h/db", "postgresql://h/db"),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            ("host=h password=s3cret user=u", "host=h password=****** user=u"),
            (
                "host=h PASSWORD = 'a b\\'c' user=u",
                "host=h PASSWORD = '******' user=u",
            ),
            ("password='unterminated", "password='******"),
            ("the password is fine", "the password is fine"),
            ("x?password=s3cret&a=b", "x?password=******&a=b"),
        ];
        for (text, want) in cases {
            assert_eq!(redact(text), want, "{text}");
        }
    }
}
