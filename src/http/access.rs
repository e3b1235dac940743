//! Who may use the endpoints, per the web configuration file (see
//! `config/web.rs`): basic auth against bcrypt hashes, the rate limit, the
//! extra response headers, and the reload of the file.
//!
//! As in the exporter-toolkit, every endpoint needs the credentials when
//! users are configured, an unknown user costs as much as a wrong password
//! (a decoy hash is checked), one bcrypt comparison runs at a time, and each
//! (user, hash, password) outcome is remembered, so a scraper pays for bcrypt
//! once. The memory holds an HMAC of the three under a key made at start,
//! not the password. Nothing here logs a credential, right or wrong.
//!
//! [`Access::watch`] re-reads the file every second and whenever one of the
//! certificate, key or CA files it names changes, applies a good file at
//! once (new connections get the new certificate; the next request the new
//! users), and keeps the previous one when the new one is bad, logging its
//! problems once. TLS cannot be switched on or off while running, as in the
//! toolkit, which decides at start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::header::HeaderValue;
use ring::{digest, hmac};
use tokio::time::Instant;

use crate::config::{Problem, RateLimit, WebSecurity};

/// A bcrypt hash (cost 10) of a password nobody has: compared for unknown
/// users, so that a response's timing does not tell which users exist.
const DECOY: &str = "$2b$10$ssQUMZpJRhAfUOgdFpH.pe.GsJNiVcs4uVsi2GQtzLQJTGHP7JgTW";

/// How many outcomes are remembered before the memory starts afresh.
const REMEMBERED: usize = 1024;

/// How often the web configuration file is checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

pub struct Access {
    path: Option<PathBuf>,
    current: RwLock<Arc<WebSecurity>>,
    outcomes: Mutex<HashMap<Vec<u8>, bool>>,
    key: hmac::Key,
    /// Held while bcrypt runs: one comparison at a time.
    bcrypt: tokio::sync::Mutex<()>,
    bucket: Mutex<Option<Bucket>>,
}

struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl Access {
    pub fn new(path: Option<PathBuf>, security: Arc<WebSecurity>) -> Access {
        let rng = ring::rand::SystemRandom::new();
        // Without randomness an HMAC key is still a key; fall back to time.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes())
        });
        let bucket = security.rate_limit.map(Bucket::new);
        Access {
            path,
            current: RwLock::new(security),
            outcomes: Mutex::new(HashMap::new()),
            key,
            bcrypt: tokio::sync::Mutex::new(()),
            bucket: Mutex::new(bucket),
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<WebSecurity> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes a token from the rate limit's bucket; true without a limit.
    pub fn allow(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.as_mut().is_none_or(Bucket::take)
    }

    /// Whether `authorization` (the request's header) names a configured user
    /// and their password; true when no users are configured.
    pub async fn authorized(&self, security: &WebSecurity, authorization: Option<&HeaderValue>) -> bool {
        if security.users.is_empty() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| security.users.get(u))
            .cloned();
        let hash = known.clone().unwrap_or_else(|| DECOY.to_string());
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [&user[..], hash.as_bytes(), &password[..]] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign().as_ref().to_vec();
        let remembered = self
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&tag)
            .copied();
        let matches = match remembered {
            Some(m) => m,
            None => {
                let _one = self.bcrypt.lock().await;
                let m = tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                    .await
                    .unwrap_or(false);
                let mut outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
                if outcomes.len() >= REMEMBERED {
                    outcomes.clear();
                }
                outcomes.insert(tag, m);
                m
            }
        };
        matches && known.is_some()
    }

    /// Checks the file every [`RELOAD_CHECK`] until `stop` completes; see
    /// the module header.
    pub async fn watch(&self, stop: impl std::future::Future<Output = ()>) {
        let Some(path) = self.path.clone() else { return };
        tokio::pin!(stop);
        let mut seen = fingerprint(&self.current().files);
        // The problems of the last attempt, if it failed: logged once.
        let mut failing: Option<String> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_CHECK) => {}
                _ = &mut stop => return,
            }
            // While the last attempt failed, try every time: what it lacked (a
            // certificate at a new path) may appear without the file changing.
            if failing.is_none() && fingerprint(&self.current().files) == seen {
                continue;
            }
            let file = path.clone();
            let loaded = tokio::task::spawn_blocking(move || crate::config::load_web_file(&file))
                .await
                .unwrap_or_else(|e| Err(vec![problem(&path, format!("reload failed: {e}"))]));
            match self.apply(loaded) {
                Ok(()) => {
                    failing = None;
                    seen = fingerprint(&self.current().files);
                    tracing::info!(file = %path.display(), "web configuration reloaded");
                }
                Err(problems) => {
                    let text = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ");
                    if failing.as_deref() != Some(text.as_str()) {
                        tracing::error!(
                            file = %path.display(),
                            problems = %text,
                            "the web configuration file is invalid; keeping the previous one"
                        );
                    }
                    failing = Some(text);
                }
            }
        }
    }

    /// Puts a newly loaded configuration in force, unless it would turn TLS
    /// on or off.
    fn apply(&self, loaded: Result<WebSecurity, Vec<Problem>>) -> Result<(), Vec<Problem>> {
        let new = loaded?;
        let old = self.current();
        if new.tls.is_some() != old.tls.is_some() {
            let path = self.path.clone().unwrap_or_default();
            let now = if new.tls.is_some() {
                "turns TLS on"
            } else {
                "turns TLS off"
            };
            return Err(vec![problem(
                &path,
                format!("the new file {now}: that takes a restart of pgsidecar (as with the exporter-toolkit)"),
            )]);
        }
        if new.rate_limit != old.rate_limit {
            *self.bucket.lock().unwrap_or_else(|p| p.into_inner()) = new.rate_limit.map(Bucket::new);
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(())
    }
}

fn problem(path: &std::path::Path, message: String) -> Problem {
    Problem {
        source: path.display().to_string(),
        line: None,
        column: None,
        key: String::new(),
        message,
    }
}

/// A digest of what each file holds now (or of its read error).
fn fingerprint(files: &[PathBuf]) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for f in files {
        match std::fs::read(f) {
            Ok(bytes) => {
                ctx.update(&[1]);
                ctx.update(&(bytes.len() as u64).to_be_bytes());
                ctx.update(&bytes);
            }
            Err(e) => {
                ctx.update(&[0]);
                ctx.update(e.to_string().as_bytes());
            }
        }
    }
    ctx.finish().as_ref().to_vec()
}

/// The user and password of a `Basic` authorization header.
fn basic_credentials(value: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    use base64::Engine;
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

impl Bucket {
    fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = (now - self.at).as_secs_f64() / self.limit.interval.as_secs_f64();
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        use base64::Engine;
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {v}")).unwrap()
    }

    fn with_users(users: &[(&str, &str)]) -> WebSecurity {
        WebSecurity {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), bcrypt::hash(p, 4).unwrap()))
                .collect(),
            ..WebSecurity::default()
        }
    }

    #[tokio::test]
    async fn basic_auth_takes_only_a_configured_user_and_password() {
        let sec = with_users(&[("alice", "s3cret:with colon")]);
        let a = Access::new(None, Arc::new(sec.clone()));
        assert!(a.authorized(&sec, Some(&header("alice", "s3cret:with colon"))).await);
        // Remembered: the same answer again, without bcrypt.
        assert!(a.authorized(&sec, Some(&header("alice", "s3cret:with colon"))).await);
        assert!(!a.authorized(&sec, Some(&header("alice", "wrong"))).await);
        assert!(!a.authorized(&sec, Some(&header("alice", "wrong"))).await);
        assert!(!a.authorized(&sec, Some(&header("bob", "s3cret:with colon"))).await);
        assert!(!a.authorized(&sec, None).await);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert!(!a.authorized(&sec, Some(&bearer)).await);
        let garbage = HeaderValue::from_static("Basic !!!");
        assert!(!a.authorized(&sec, Some(&garbage)).await);
        // The scheme is case-insensitive.
        let lower = HeaderValue::from_str(
            &header("alice", "s3cret:with colon")
                .to_str()
                .unwrap()
                .replace("Basic", "basic"),
        )
        .unwrap();
        assert!(a.authorized(&sec, Some(&lower)).await);
        // No users: no authentication.
        let open = WebSecurity::default();
        assert!(a.authorized(&open, None).await);
    }

    #[tokio::test]
    async fn a_changed_hash_is_not_answered_from_memory() {
        let old = with_users(&[("alice", "one")]);
        let a = Access::new(None, Arc::new(old.clone()));
        assert!(a.authorized(&old, Some(&header("alice", "one"))).await);
        let new = with_users(&[("alice", "two")]);
        assert!(!a.authorized(&new, Some(&header("alice", "one"))).await);
        assert!(a.authorized(&new, Some(&header("alice", "two"))).await);
    }

    #[test]
    fn the_decoy_is_a_bcrypt_hash() {
        assert_eq!(bcrypt::verify("pgsidecar-decoy-password", DECOY).ok(), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_is_a_token_bucket() {
        let sec = WebSecurity {
            rate_limit: Some(RateLimit {
                interval: Duration::from_secs(1),
                burst: 2,
            }),
            ..WebSecurity::default()
        };
        let a = Access::new(None, Arc::new(sec));
        assert!(a.allow() && a.allow());
        assert!(!a.allow(), "the burst is spent");
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(a.allow());
        assert!(!a.allow());
        let open = Access::new(None, Arc::new(WebSecurity::default()));
        assert!((0..100).all(|_| open.allow()));
    }

    #[test]
    fn tls_cannot_be_switched_while_running() {
        let a = Access::new(Some(PathBuf::from("web.yml")), Arc::new(WebSecurity::default()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Any server config will do: only its presence is compared.
        let resolver = Arc::new(rustls::server::ResolvesServerCertUsingSni::new());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        let with_tls = WebSecurity {
            tls: Some(Arc::new(tls)),
            ..WebSecurity::default()
        };
        let err = a.apply(Ok(with_tls)).unwrap_err();
        assert!(err[0].message.contains("turns TLS on"), "{err:?}");
        assert!(a.current().tls.is_none());
        let users = with_users(&[("alice", "x")]);
        a.apply(Ok(users)).unwrap();
        assert!(a.current().users.contains_key("alice"));
    }
}
