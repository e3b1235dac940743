//! Database access: the small connection pool, the session settings that
//! bound every query, TLS, and reconnection with capped backoff. Every
//! session pgsidecar opens is opened here: the pool's, the leader's lock
//! session ([`Db::dedicated`]), `pgsidecar install`'s ([`admin_config`]),
//! and the PgBouncer admin console's ([`Bouncer`], in `db/pgbouncer.rs`).
//!
//! Every session pgsidecar opens sends, in its startup packet (no extra round
//! trip), `application_name`, `statement_timeout`, `lock_timeout`,
//! `idle_in_transaction_session_timeout` and
//! `default_transaction_read_only = on`.
//!
//! Logins share one backoff for the whole process, the pool's and the
//! leader's lock session's alike: after a failed attempt no session is
//! opened before the delay has passed (doubling from 250 ms; capped at half
//! the shortest collector interval after a connection failure, so a
//! returning server is seen within one interval, and at
//! [`AUTH_BACKOFF_CAP`] after an authentication failure, so a wrong password
//! cannot lock an LDAP or PAM account), and until a login succeeds again only
//! one attempt is made at a time: others wait for it. A success resets the
//! delay.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::time::Instant;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Datasource, SslMode};

mod others;
mod pgbouncer;
pub use others::Others;
pub use pgbouncer::Bouncer;

/// A pooled connection, as collectors get it.
pub type Client = deadpool_postgres::Client;

/// A session of its own, outside the pool, and the task that drives it.
pub type Dedicated = (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error("connect to {target}: waiting {}ms before the next attempt after: {last}", .retry_in.as_millis())]
    Backoff {
        target: String,
        retry_in: Duration,
        last: String,
    },
    #[error("tls setup: {0}")]
    Tls(String),
}

/// The longest wait between logins after authentication failures (a wrong
/// password, an unknown role, a pg_hba rejection).
pub const AUTH_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// When the process may next log in, after failed attempts: the delay
/// doubles from [`FIRST_BACKOFF`] up to `max` (or [`AUTH_BACKOFF_CAP`] after
/// an authentication failure), once per step however many attempts failed in
/// it, and a success resets it.
struct Backoff {
    next_attempt: Option<Instant>,
    delay: Duration,
    max: Duration,
    /// The last login succeeded (or none was tried yet and none failed).
    healthy: bool,
    last_error: String,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next_attempt: None,
            delay: FIRST_BACKOFF,
            max: max.max(FIRST_BACKOFF),
            healthy: false,
            last_error: String::new(),
        }
    }

    /// How long to wait before the next attempt, if at all.
    fn wait(&self) -> Option<Duration> {
        let until = self.next_attempt?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// A failed login; `auth`: it was refused for its credentials.
    fn failed(&mut self, error: String, auth: bool) {
        self.healthy = false;
        self.last_error = error;
        // Attempts that were already under way when another failed do not
        // make this step longer.
        if self.wait().is_some() {
            return;
        }
        self.next_attempt = Some(Instant::now() + self.delay);
        let cap = if auth { AUTH_BACKOFF_CAP } else { self.max };
        self.delay = (self.delay * 2).min(cap);
    }

    fn succeeded(&mut self) {
        self.healthy = true;
        self.next_attempt = None;
        self.delay = FIRST_BACKOFF;
    }
}

/// Why a login failed, as the backoff needs it.
struct Failure {
    message: String,
    /// Refused for its credentials: backs off up to [`AUTH_BACKOFF_CAP`].
    auth: bool,
    /// A failed attempt (not, say, a wait for a free pooled connection).
    counts: bool,
}

/// Whether the server refused the credentials.
fn is_auth(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.as_db_error().is_some_and(|db| {
        [
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        ]
        .contains(db.code())
    })
}

/// The pool plus what is needed to reconnect politely, cancel queries and
/// open the leader's lock session.
pub struct Db {
    pool: Pool,
    tls: MakeRustlsConnect,
    ds: Datasource,
    target: String,
    password: Option<String>,
    backoff: Mutex<Backoff>,
    /// Held by the one login attempt allowed while logins fail.
    login: tokio::sync::Mutex<()>,
    connect_timeout: Duration,
    server_version: Arc<AtomicU32>,
    /// `current_database()`, read with the version by the same query.
    database: Arc<Mutex<String>>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);

impl Db {
    /// Builds the pool; connects lazily, so a down server does not stop start-up.
    pub fn new(ds: &Datasource, max_backoff: Duration) -> Result<Db, DbError> {
        let tls = tls_connector(ds)?;
        let pg = session_config(ds, &[]);

        let server_version = Arc::new(AtomicU32::new(0));
        let version = server_version.clone();
        let database = Arc::new(Mutex::new(String::new()));
        let datname = database.clone();
        let pool = pool_builder(pg, tls.clone(), ds.pool_size, ds.connect_timeout)
            .post_create(Hook::async_fn(move |client, _| {
                let version = version.clone();
                let datname = datname.clone();
                Box::pin(async move {
                    let row = client
                        .query_one(
                            "SELECT current_setting('server_version_num')::int4, current_database()::text",
                            &[],
                        )
                        .await
                        .map_err(HookError::Backend)?;
                    let v: i32 = row.get(0);
                    version.store(u32::try_from(v).unwrap_or(0), Ordering::Relaxed);
                    if let Ok(name) = row.try_get::<_, String>(1) {
                        *datname.lock().unwrap_or_else(|p| p.into_inner()) = name;
                    }
                    Ok(())
                })
            }))
            .build()
            .map_err(|e| DbError::Tls(format!("build pool: {e}")))?;
        Ok(Db {
            pool,
            tls,
            ds: ds.clone(),
            target: ds.target(),
            password: ds.password(),
            backoff: Mutex::new(Backoff::new(max_backoff)),
            login: tokio::sync::Mutex::new(()),
            connect_timeout: ds.connect_timeout,
            server_version,
            database,
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// `server_version_num` as of the newest connection (0 before the first).
    pub fn server_version(&self) -> u32 {
        self.server_version.load(Ordering::Relaxed)
    }

    /// The database the pool's sessions are connected to, as of the newest
    /// connection ("" before the first).
    pub fn database(&self) -> String {
        self.database.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A session outside the pool with the same datasource, TLS and bounding
    /// options, plus `extra` session options and, when given, client-side
    /// TCP keepalives (the leader's lock session).
    pub async fn dedicated(
        &self,
        extra: &[(&str, String)],
        keepalives_idle: Option<Duration>,
    ) -> Result<Dedicated, String> {
        let mut pg = session_config(&self.ds, extra);
        if let Some(idle) = keepalives_idle {
            pg.keepalives(true).keepalives_idle(idle);
        }
        let attempt = async {
            connect_dedicated_session(&self.ds, &pg).await.map_err(|e| match e {
                Dial::Refused(e) => Failure {
                    auth: is_auth(&e),
                    message: self.scrub(&describe(&e)),
                    counts: true,
                },
                Dial::Other(message) => Failure {
                    message: self.scrub(&message),
                    auth: false,
                    counts: true,
                },
            })
        };
        self.login_with(attempt).await.map_err(|e| e.to_string())
    }

    /// A pooled connection, or an error at once while backing off.
    pub async fn client(&self) -> Result<Client, DbError> {
        let attempt = async {
            self.pool.get().await.map_err(|e| Failure {
                message: self.scrub(&describe_pool(&e)),
                auth: match &e {
                    PoolError::Backend(e) | PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => {
                        is_auth(e)
                    }
                    _ => false,
                },
                // Waiting for a free connection is not a failed attempt.
                counts: !matches!(e, PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)),
            })
        };
        self.login_with(attempt).await
    }

    /// Runs `attempt` under the shared backoff: refused at once while it
    /// waits, one at a time while logins fail, recorded either way.
    async fn login_with<T>(&self, attempt: impl Future<Output = Result<T, Failure>>) -> Result<T, DbError> {
        let healthy = self.lock_backoff().healthy;
        let _turn = if healthy { None } else { Some(self.login.lock().await) };
        if let Some(e) = self.backing_off() {
            return Err(e);
        }
        match attempt.await {
            Ok(v) => {
                self.lock_backoff().succeeded();
                Ok(v)
            }
            Err(f) => {
                if f.counts {
                    self.lock_backoff().failed(f.message.clone(), f.auth);
                }
                Err(DbError::Connect {
                    target: self.target.clone(),
                    message: f.message,
                })
            }
        }
    }

    fn backing_off(&self) -> Option<DbError> {
        let b = self.lock_backoff();
        b.wait().map(|retry_in| DbError::Backoff {
            target: self.target.clone(),
            retry_in,
            last: b.last_error.clone(),
        })
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        // A poisoned lock only means a panic elsewhere; the data stays usable.
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a collector timeout: asks the server, in the background and
    /// within the connect timeout, to cancel what this client runs, then
    /// checks that the session answers (a `ROLLBACK`, within the connect
    /// timeout again, which also ends a transaction the run had open, such
    /// as a probe's). A session that answers goes back to the pool: a new
    /// one might wait on the very lock that held the query up. Any other is
    /// closed: behind a network cut it would stay silent, and every later
    /// collection would time out on it again.
    pub fn cancel(&self, client: Client) {
        let token = client.cancel_token();
        let tls = self.tls.clone();
        let limit = self.connect_timeout;
        tokio::spawn(async move {
            let silent = "no answer within the connect timeout";
            let why = match tokio::time::timeout(limit, token.cancel_query(tls)).await {
                Ok(Ok(())) => match tokio::time::timeout(limit, client.simple_query("ROLLBACK")).await {
                    Ok(Ok(_)) => return drop(client),
                    Ok(Err(e)) => format!("the session after the cancel: {e}"),
                    Err(_) => format!("the session after the cancel: {silent}"),
                },
                Ok(Err(e)) => format!("cancel request: {e}"),
                Err(_) => format!("cancel request: {silent}"),
            };
            tracing::debug!(error = %why, "closing the connection of a timed-out query");
            drop(deadpool_postgres::Object::take(client));
        });
    }

    /// Removes the password from a message, whatever produced it.
    pub fn scrub(&self, message: &str) -> String {
        scrub(self.password.as_deref(), message)
    }

    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// Forgets past login failures (a configuration reload): the next
    /// attempt is made at once.
    pub fn reset_backoff(&self) {
        let mut b = self.lock_backoff();
        b.next_attempt = None;
        b.delay = FIRST_BACKOFF;
    }

    pub fn close(&self) {
        self.pool.close();
    }
}

/// A pool of at most `max_size` sessions of `pg`: fast recycling, and
/// waiting for, opening and recycling a session each bounded by `timeout`
/// (the connect timeout). The main pool, PgBouncer's console and the other
/// databases' pools are all built from it.
fn pool_builder(
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    max_size: usize,
    timeout: Duration,
) -> deadpool_postgres::PoolBuilder {
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
}

/// The connection settings of every session pgsidecar opens for collecting:
/// the datasource's, plus the bounding session options (and `extra` ones) in
/// the startup packet.
pub fn session_config(ds: &Datasource, extra: &[(&str, String)]) -> tokio_postgres::Config {
    let mut pg = ds.pg.clone();
    pg.ssl_mode(pg_ssl_mode(ds.sslmode));
    pg.application_name(&ds.application_name);
    let mut options = pg.get_options().map(str::to_string).unwrap_or_default();
    for (k, v) in [
        ("statement_timeout", ds.statement_timeout.as_millis().to_string()),
        ("lock_timeout", ds.lock_timeout.as_millis().to_string()),
        (
            "idle_in_transaction_session_timeout",
            ds.idle_in_transaction_session_timeout.as_millis().to_string(),
        ),
        ("default_transaction_read_only", "on".to_string()),
    ]
    .iter()
    .chain(extra)
    {
        options.push_str(&format!(" -c {k}={v}"));
    }
    pg.options(options.trim());
    pg
}

/// Removes `password`, if any, from a message.
pub fn scrub(password: Option<&str>, message: &str) -> String {
    match password {
        Some(p) => message.replace(p, "******"),
        None => message.to_string(),
    }
}

/// The session of `pgsidecar install` and `uninstall`: the datasource's
/// connection settings, read-write (they create the refresh log), bounded
/// and named `pgsidecar-install`.
pub fn admin_config(ds: &Datasource) -> tokio_postgres::Config {
    let mut pg = ds.pg.clone();
    pg.application_name("pgsidecar-install");
    pg.options("-c statement_timeout=60000 -c lock_timeout=5000");
    pg.ssl_mode(pg_ssl_mode(ds.sslmode));
    pg
}

/// A session of its own, outside the pool (`pgsidecar install`): connects
/// with `pg` within the connect timeout and drives the connection on a task.
/// The error says the target and why, without the password.
pub async fn connect_dedicated(ds: &Datasource, pg: &tokio_postgres::Config) -> Result<Dedicated, String> {
    let target = ds.target();
    connect_dedicated_session(ds, pg).await.map_err(|e| {
        let why = match e {
            Dial::Refused(e) => describe(&e),
            Dial::Other(message) => message,
        };
        scrub(ds.password().as_deref(), &format!("connect to {target}: {why}"))
    })
}

/// Why a dedicated session could not be opened.
enum Dial {
    /// The server (or the network) said no.
    Refused(tokio_postgres::Error),
    Other(String),
}

/// The one place that opens a session outside the pool.
#[allow(clippy::disallowed_methods)]
async fn connect_dedicated_session(ds: &Datasource, pg: &tokio_postgres::Config) -> Result<Dedicated, Dial> {
    let tls = tls_connector(ds).map_err(|e| Dial::Other(e.to_string()))?;
    match tokio::time::timeout(ds.connect_timeout + Duration::from_secs(1), pg.connect(tls)).await {
        Ok(Ok((client, conn))) => Ok((client, tokio::spawn(conn))),
        Ok(Err(e)) => Err(Dial::Refused(e)),
        Err(_) => Err(Dial::Other("timed out".to_string())),
    }
}

/// The TLS connector for a datasource's sslmode and root certificates.
fn tls_connector(ds: &Datasource) -> Result<MakeRustlsConnect, DbError> {
    Ok(MakeRustlsConnect::new(tls_config(ds)?))
}

/// tokio-postgres's mode: verify-ca and verify-full require TLS; the
/// verification itself is ours (see `tls_config`).
fn pg_ssl_mode(mode: SslMode) -> PgSslMode {
    match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    }
}

/// A tokio-postgres error with the server's message, code and detail.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => describe(e),
        PoolError::Timeout(t) => format!("timed out ({t:?})").to_lowercase(),
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => describe(e),
        other => other.to_string(),
    }
}

fn tls_config(ds: &Datasource) -> Result<rustls::ClientConfig, DbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?;
    let roots = match &ds.sslrootcert {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| DbError::Tls(format!("read sslrootcert {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| DbError::Tls(format!("parse sslrootcert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| DbError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    // libpq: with a root certificate, prefer and require check the chain too
    // (as verify-ca); without one they encrypt without verifying.
    let chain = match roots {
        Some(roots) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| DbError::Tls(e.to_string()))?,
        ),
        None => None,
    };
    let verifier = Verifier {
        chain,
        verify_name: ds.sslmode == SslMode::VerifyFull,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// Verifies the chain against sslrootcert when there is one (the host name
/// only in verify-full); accepts any certificate when there is none. The
/// handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    verify_name: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_backoff_doubles_to_its_cap_and_a_success_resets_it() {
        let mut b = Backoff::new(Duration::from_secs(1));
        assert_eq!(b.wait(), None);
        b.failed("refused".into(), false);
        assert_eq!(b.wait(), Some(Duration::from_millis(250)));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.wait(), Some(Duration::from_millis(150)));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(b.wait(), None);
        for expected in [500, 1000, 1000] {
            b.failed("refused".into(), false);
            assert_eq!(b.wait(), Some(Duration::from_millis(expected)));
            tokio::time::advance(Duration::from_millis(expected)).await;
            assert_eq!(b.wait(), None);
        }
        assert_eq!(b.last_error, "refused");
        b.succeeded();
        b.failed("refused".into(), false);
        assert_eq!(b.wait(), Some(Duration::from_millis(250)));
        // Others failing within the same step do not lengthen it.
        b.failed("refused".into(), false);
        b.failed("refused".into(), false);
        assert_eq!(b.wait(), Some(Duration::from_millis(250)));
    }

    #[tokio::test(start_paused = true)]
    async fn authentication_failures_back_off_up_to_five_minutes() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let mut waits = Vec::new();
        for _ in 0..14 {
            b.failed("password authentication failed".into(), true);
            let w = b.wait().unwrap();
            waits.push(w.as_secs_f64());
            tokio::time::advance(w).await;
        }
        assert_eq!(waits[..4], [0.25, 0.5, 1.0, 2.0]);
        assert_eq!(waits.last(), Some(&300.0));
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_is_never_below_the_first_delay() {
        let mut b = Backoff::new(Duration::from_millis(10));
        b.failed("x".into(), false);
        tokio::time::advance(Duration::from_secs(1)).await;
        b.failed("x".into(), false);
        assert_eq!(b.delay, FIRST_BACKOFF);
    }
}
