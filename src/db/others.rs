//! Sessions to the server's other databases (`databases:`), within one
//! budget: [`Others`] keeps at most `databases.max_connections` of them open
//! at once, in use or idle, for all databases together.
//!
//! Each database gets a pool of one session, made when a run first needs
//! it and kept for the next runs while the budget allows. A run takes a
//! permit first (at most the budget in use), and when a new database's
//! pool would take the count of pools past the budget, the least recently
//! used pool with nothing in use is closed. So with 50 databases and a
//! budget of 2, two sessions are open at most and the others are opened as
//! the runs come to them. Closing waits for the server: the session ends
//! its own backend (`pg_terminate_backend(pg_backend_pid())`) and the run
//! waits until the server has closed the socket, which a backend does only
//! after leaving `pg_stat_activity`; a dropped connection would linger
//! there for a moment beside the new one, one over the budget.
//!
//! The sessions are the pool's kind ([`session_config`]: the bounding
//! options, `application_name`, TLS), with the datasource's database
//! replaced. A database whose login fails is not tried again before
//! `retry` has passed (its error is returned at once until then), so one
//! database that refuses the role costs one attempt per `retry`, not one per
//! collector run. Its failures never touch the main pool's backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Client, DbError, describe_pool, pool_builder, scrub, session_config, tls_connector};
use crate::config::{Databases, Datasource};

/// The sessions to the other databases.
pub struct Others {
    /// The `databases:` section these sessions serve.
    pub config: Databases,
    /// The databases the last discovery chose, besides the DSN's.
    found: Mutex<Arc<Vec<String>>>,
    /// True from the first discovery on.
    discovered: tokio::sync::watch::Sender<bool>,
    ds: Datasource,
    tls: MakeRustlsConnect,
    budget: usize,
    retry: Duration,
    permits: Arc<Semaphore>,
    password: Option<String>,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Least recently used first, each with the number of runs using it
    /// (from the choice of the pool to the end of its [`Session`]).
    pools: Vec<(String, Pool, usize)>,
    /// Databases whose last login failed: when, and why.
    refused: HashMap<String, (Instant, String)>,
}

/// A session to one database, and its share of the budget.
pub struct Session {
    pub client: Client,
    _lease: Lease,
}

/// A run's hold on a database's pool and on a share of the budget, given
/// back when the run is done with the session.
struct Lease {
    datname: String,
    others: Arc<Others>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.others.release(&self.datname);
    }
}

impl Session {
    /// Closes the session instead of keeping it (its query overran the
    /// collector's time limit).
    pub fn discard(self) {
        let Session { client, _lease: lease } = self;
        let limit = lease.others.ds.connect_timeout;
        let tls = lease.others.tls.clone();
        // The session keeps its share of the budget until the server has
        // ended it: its query is cancelled first, then the session ends.
        tokio::spawn(async move {
            let token = client.cancel_token();
            let _ = tokio::time::timeout(limit, token.cancel_query(tls)).await;
            end_session(&client, limit).await;
            drop(deadpool_postgres::Object::take(client));
            drop(lease);
        });
    }
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Asks the server to end this session (`pg_terminate_backend` of its own
/// backend, which a role may do) and waits, at most `limit`, until the
/// server has closed it: the backend leaves `pg_stat_activity` before it
/// closes the socket.
async fn end_session(client: &tokio_postgres::Client, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let _ = client
            .simple_query("SELECT pg_terminate_backend(pg_backend_pid())")
            .await;
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

impl Others {
    /// At most `databases.max_connections` sessions; a refused database is
    /// retried after a minute, or the discovery interval if shorter.
    pub fn new(ds: &Datasource, databases: &Databases) -> Result<Others, DbError> {
        let budget = databases.max_connections.max(1);
        let retry = databases.discovery_interval.min(Duration::from_secs(60));
        Ok(Others {
            config: databases.clone(),
            found: Mutex::new(Arc::new(Vec::new())),
            discovered: tokio::sync::watch::Sender::new(false),
            ds: ds.clone(),
            tls: tls_connector(ds)?,
            budget,
            retry,
            permits: Arc::new(Semaphore::new(budget)),
            password: ds.password(),
            inner: Mutex::new(Inner {
                pools: Vec::new(),
                refused: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the data stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user@host:port/datname`, for messages.
    fn target(&self, datname: &str) -> String {
        let mut ds = self.ds.clone();
        ds.pg.dbname(datname);
        ds.target()
    }

    /// A session to `datname`, waiting for a share of the budget.
    pub async fn client(self: &Arc<Self>, datname: &str) -> Result<Session, DbError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::Connect {
                target: self.target(datname),
                message: "the sessions to the other databases were closed (a reload replaced them)".into(),
            })?;
        let (pool, evicted) = {
            let mut inner = self.lock();
            if let Some((at, why)) = inner.refused.get(datname) {
                let left = self.retry.saturating_sub(at.elapsed());
                if !left.is_zero() {
                    return Err(DbError::Backoff {
                        target: self.target(datname),
                        retry_in: left,
                        last: why.clone(),
                    });
                }
            }
            let (pool, users) = match inner.pools.iter().position(|(n, _, _)| n == datname) {
                Some(i) => {
                    let (_, p, u) = inner.pools.remove(i);
                    (p, u)
                }
                None => (self.pool(datname)?, 0),
            };
            inner.pools.push((datname.to_string(), pool.clone(), users + 1));
            // Over the budget: take out the least recently used pools no
            // run uses; their sessions are closed below. Those in use are at
            // most the permits, so this ends within the budget.
            let mut evicted = Vec::new();
            while inner.pools.len() > self.budget {
                match inner.pools.iter().position(|(_, _, u)| *u == 0) {
                    Some(i) => evicted.push(inner.pools.remove(i).1),
                    None => break,
                }
            }
            (pool, evicted)
        };
        for old in evicted {
            self.close_pool(old).await;
        }
        match pool.get().await {
            Ok(client) => {
                self.lock().refused.remove(datname);
                Ok(Session {
                    client,
                    _lease: Lease {
                        datname: datname.to_string(),
                        others: self.clone(),
                        _permit: permit,
                    },
                })
            }
            Err(e) => {
                self.release(datname);
                let message = scrub(self.password.as_deref(), &describe_pool(&e));
                let mut inner = self.lock();
                inner
                    .refused
                    .insert(datname.to_string(), (Instant::now(), message.clone()));
                inner.pools.retain(|(n, _, u)| n != datname || *u > 0);
                Err(DbError::Connect {
                    target: self.target(datname),
                    message,
                })
            }
        }
    }

    /// Closes a pool's idle session and waits until the server has ended
    /// it (within the connect timeout), so that the session opened next is
    /// never one more than the budget in `pg_stat_activity`.
    async fn close_pool(&self, pool: Pool) {
        let idle = pool.status().available > 0;
        if idle && let Ok(Ok(client)) = tokio::time::timeout(self.ds.connect_timeout, pool.get()).await {
            end_session(&client, self.ds.connect_timeout).await;
        }
        pool.close();
    }

    /// A run is done with `datname`'s pool.
    fn release(&self, datname: &str) {
        if let Some(e) = self.lock().pools.iter_mut().find(|(n, _, _)| n == datname) {
            e.2 = e.2.saturating_sub(1);
        }
    }

    fn pool(&self, datname: &str) -> Result<Pool, DbError> {
        let mut pg = session_config(&self.ds, &[]);
        pg.dbname(datname);
        pool_builder(pg, self.tls.clone(), 1, self.ds.connect_timeout)
            .build()
            .map_err(|e| DbError::Tls(format!("build pool: {e}")))
    }

    /// The databases to read besides the DSN's, as last discovered.
    pub fn found(&self) -> Arc<Vec<String>> {
        self.found.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What a discovery chose. Pools of databases no longer in it are
    /// dropped, and so are their past login failures.
    pub fn set_found(&self, names: Vec<String>) {
        {
            let mut inner = self.lock();
            inner.pools.retain(|(n, _, u)| *u > 0 || names.contains(n));
            inner.refused.retain(|n, _| names.contains(n));
        }
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(names);
        self.discovered.send_replace(true);
    }

    /// A discovery failed: the runs waiting for the first one stop waiting
    /// (they read the DSN's database alone until one succeeds).
    pub fn discovery_failed(&self) {
        self.discovered.send_replace(true);
    }

    /// Returns once the first discovery is done or failed (at once after
    /// that), so that the first runs at start-up read the other databases too.
    pub async fn discovered(&self) {
        let mut rx = self.discovered.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// The most sessions open at once.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Sessions open now, in use or idle.
    pub fn open(&self) -> usize {
        self.lock().pools.iter().map(|(_, p, _)| p.status().size).sum()
    }

    /// Closes every session (a reload that changes the datasource or the section).
    pub fn close(&self) {
        self.permits.close();
        for (_, p, _) in self.lock().pools.drain(..) {
            p.close();
        }
    }

    /// Removes the password from a message.
    pub fn scrub(&self, message: &str) -> String {
        scrub(self.password.as_deref(), message)
    }
}
