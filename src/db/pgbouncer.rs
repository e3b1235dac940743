//! The connection to PgBouncer's admin console: a pool of one session, the
//! only other kind of session pgsidecar opens.
//!
//! The admin console is not Postgres. It speaks only the simple query
//! protocol and refuses startup parameters it does not track, so its
//! sessions differ from the pool's in [`super::session_config`]:
//!
//! - the startup packet carries the user, the database `pgbouncer`,
//!   `application_name` and tokio-postgres's `client_encoding` only: no
//!   `options` (PgBouncer answers "unsupported startup parameter: options");
//! - no post-create hook (the pool's reads `server_version_num` with an
//!   extended-protocol query, which the console refuses), and recycling
//!   only checks that the session is open, without a query;
//! - collectors run `SHOW` commands with `simple_query` only.
//!
//! With no `statement_timeout` on the server side, every call is bounded on
//! the client side: a login by the connect timeout, a collection by its
//! collector's timeout. A session whose command overran is closed rather
//! than returned (PgBouncer answers `SHOW` from memory, so a silent one is
//! stuck or cut off). Logins back off as the pool's do, with a backoff of
//! their own: a PgBouncer that is down never delays Postgres logins.

use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Pool, PoolError};

use super::{
    Backoff, Client, DbError, Failure, describe_pool, is_auth, pg_ssl_mode, pool_builder, scrub, tls_connector,
};
use crate::config::Datasource;

/// The admin console's pool and its login backoff.
pub struct Bouncer {
    pool: Pool,
    target: String,
    password: Option<String>,
    backoff: Mutex<Backoff>,
    /// Held by the one login attempt allowed while logins fail.
    login: tokio::sync::Mutex<()>,
}

/// The connection settings of an admin console session: the datasource's
/// host, port, user, password and TLS, with `application_name` and no
/// session options.
pub fn console_config(ds: &Datasource) -> tokio_postgres::Config {
    let mut pg = ds.pg.clone();
    pg.ssl_mode(pg_ssl_mode(ds.sslmode));
    pg.application_name(&ds.application_name);
    pg
}

impl Bouncer {
    /// Builds the pool of one session; connects lazily.
    pub fn new(ds: &Datasource, max_backoff: Duration) -> Result<Bouncer, DbError> {
        let pool = pool_builder(console_config(ds), tls_connector(ds)?, 1, ds.connect_timeout)
            .build()
            .map_err(|e| DbError::Tls(format!("build pgbouncer pool: {e}")))?;
        Ok(Bouncer {
            pool,
            target: ds.target(),
            password: ds.password(),
            backoff: Mutex::new(Backoff::new(max_backoff)),
            login: tokio::sync::Mutex::new(()),
        })
    }

    /// `user@host:port/pgbouncer`, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The console's session, or an error at once while backing off.
    pub async fn client(&self) -> Result<Client, DbError> {
        let healthy = self.lock_backoff().healthy;
        let _turn = if healthy { None } else { Some(self.login.lock().await) };
        let waiting = {
            let b = self.lock_backoff();
            b.wait().map(|retry_in| (retry_in, b.last_error.clone()))
        };
        if let Some((retry_in, last)) = waiting {
            return Err(DbError::Backoff {
                target: self.target.clone(),
                retry_in,
                last,
            });
        }
        match self.pool.get().await {
            Ok(c) => {
                self.lock_backoff().succeeded();
                Ok(c)
            }
            Err(e) => {
                let f = Failure {
                    message: self.scrub(&describe_pool(&e)),
                    auth: matches!(&e, PoolError::Backend(e) if is_auth(e)),
                    counts: !matches!(e, PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)),
                };
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

    /// Closes a session whose command overran its time limit.
    pub fn discard(&self, client: Client) {
        drop(deadpool_postgres::Object::take(client));
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the password from a message.
    pub fn scrub(&self, message: &str) -> String {
        scrub(self.password.as_deref(), message)
    }

    /// Forgets past login failures (a configuration reload).
    pub fn reset_backoff(&self) {
        let mut b = self.lock_backoff();
        b.next_attempt = None;
        b.delay = super::FIRST_BACKOFF;
    }

    pub fn close(&self) {
        self.pool.close();
    }
}
