//! The environment: read through [`Env`], so tests need not touch the
//! process's, and `${NAME}` expansion in configuration strings.
//!
//! Expansion follows the shell: `${NAME}` is the variable's value (an error
//! if it is not set; empty if it is set to ""), `${NAME:-default}` is the
//! default when the variable is unset or empty, `${NAME-default}` only when
//! it is unset, and `$${` is a literal `${`.

use std::collections::BTreeMap;

/// Reads environment variables as they are: `Some("")` for a variable set
/// to the empty string.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A variable that is set and not empty, as libpq and postgres_exporter read
/// their own (`PGHOST=""` is no host).
pub(super) fn nonempty(env: &dyn Env, name: &str) -> Option<String> {
    env.var(name).filter(|v| !v.is_empty())
}

/// Expands `${NAME}`, `${NAME:-default}` and `${NAME-default}` in `s`.
/// Errors never quote `s`, which may hold a password.
pub(super) fn expand(s: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err("unterminated ${: close it with }, or write $${ for a literal ${".to_string());
        };
        let inner = &rest[i + 2..i + end];
        let (name, default) = match inner.find([':', '-']) {
            Some(at) if inner[at..].starts_with(":-") => (&inner[..at], Some((&inner[at + 2..], true))),
            Some(at) if inner[at..].starts_with('-') => (&inner[..at], Some((&inner[at + 1..], false))),
            Some(_) => {
                return Err(format!(
                    "unsupported ${{{}…}}: expected ${{NAME}}, ${{NAME:-default}} or ${{NAME-default}}",
                    safe_name(inner)
                ));
            }
            None => (inner, None),
        };
        if name.is_empty() {
            return Err("empty variable name in ${}: expected ${NAME}".to_string());
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("invalid variable name in ${…}: use letters, digits and _".to_string());
        }
        match (env.var(name), default) {
            (Some(v), Some((d, true))) if v.is_empty() => out.push_str(d),
            (Some(v), _) => out.push_str(&v),
            (None, Some((d, _))) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {name} is not set (used as ${{{name}}})")),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The part of `${…}` before an unsupported operator, if it is a plain name.
fn safe_name(inner: &str) -> &str {
    let name = inner.split([':', '-']).next().unwrap_or("");
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        name
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("POD_IP", "10.1.2.3"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_follows_the_shell() {
        let env = env();
        let ok = |s: &str| expand(s, &env).unwrap();
        assert_eq!(ok("${POD_IP}/32"), "10.1.2.3/32");
        assert_eq!(ok("a $${POD_IP}"), "a ${POD_IP}");
        assert_eq!(ok("[${EMPTY}]"), "[]");
        assert_eq!(ok("${EMPTY:-x}"), "x");
        assert_eq!(ok("${EMPTY-x}"), "");
        assert_eq!(ok("${NOPE:-127.0.0.1}"), "127.0.0.1");
        assert_eq!(ok("${NOPE-}"), "");
        assert_eq!(ok("${POD_IP:-x}"), "10.1.2.3");
        assert_eq!(ok("${NOPE:-a-b:c}"), "a-b:c");
    }

    #[test]
    fn errors_name_the_problem_and_never_quote_the_value() {
        let env = env();
        let err = |s: &str| expand(s, &env).unwrap_err();
        assert_eq!(err("${NOPE}"), "environment variable NOPE is not set (used as ${NOPE})");
        assert_eq!(err("${}"), "empty variable name in ${}: expected ${NAME}");
        assert_eq!(err("${:-x}"), "empty variable name in ${}: expected ${NAME}");
        let e = err("postgresql://u:s3cret@h/${DB");
        assert!(e.starts_with("unterminated ${"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(err("${A:=b}").contains("unsupported ${A…}"));
        assert!(!err("${s3cret word}").contains("s3cret"));
    }
}
