//! Leader election among the sidecars of one application, through a
//! PostgreSQL session-level advisory lock: no Kubernetes API, no RBAC.
//!
//! With `coordination.mode: leader-election`, one task holds a dedicated
//! session (not from the pool, but with the same datasource, TLS,
//! `application_name` and bounding session options). Every
//! `check_interval` it either tries `pg_try_advisory_lock(lock_key)` (when
//! not leader) or checks that its session still answers (`SELECT 1`, when
//! leader). Only the leader runs the server-scoped collectors; every sidecar
//! runs the per-pod ones. With `all` a sidecar is always leader and takes no
//! lock; with `none` it is never leader.
//!
//! Why there are never two leaders, even across a network cut: the lock
//! belongs to the session, and Postgres releases it only when that session
//! ends. A leader steps down (the flag the scheduler reads turns false)
//! *before* it closes its session, as soon as a check fails, the connection
//! ends, or a check has no answer within `check_interval`. So a leader that
//! cannot reach the server steps down at most two check intervals after its
//! last exchange with it. The server, for its part, notices a silent peer
//! only through TCP: this session asks for `tcp_keepalives_idle` and
//! `tcp_keepalives_interval` of `check_interval` (rounded up to whole
//! seconds), `tcp_keepalives_count` 2 and a matching `tcp_user_timeout`, so
//! the server drops it, and frees the lock for another sidecar, at the
//! earliest three check intervals after the last exchange: after the old
//! leader has stepped down. (These settings apply to TCP sessions only; on a
//! Unix socket the peer cannot be cut off.) When the leader process dies,
//! its kernel closes the socket, the server ends the session at once, and
//! another sidecar takes the lock at its next check. A sidecar that cannot
//! reach Postgres has no session, so it is never leader. (`tests/repo/leader.rs`
//! cuts a leader off behind a TCP link that forwards nothing and checks it
//! steps down before the link, standing in for the server's keepalives, ends
//! its session.)
//!
//! Metrics (in the health part): `pgsidecar_leader` gauge (0/1),
//! `pgsidecar_leader_changes_total` counter (each time this sidecar became or
//! stopped being leader) and `pgsidecar_coordination_mode{mode}` gauge, 1.
//! Each change of leadership is logged once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, timeout};

use crate::config::{Coordination, CoordinationMode, show};
use crate::db::{Db, describe};
use crate::logging::ErrorLog;
use crate::swap::Swap;

/// Whether this sidecar is leader, as the scheduler and health read it.
pub struct Leadership {
    mode: CoordinationMode,
    state: watch::Sender<bool>,
    /// Changes of `state` since start, counted under the channel's lock.
    changes: AtomicU64,
}

impl Leadership {
    pub fn new(mode: CoordinationMode) -> Self {
        let (state, _) = watch::channel(mode == CoordinationMode::All);
        Leadership {
            mode,
            state,
            changes: AtomicU64::new(0),
        }
    }

    pub fn mode(&self) -> CoordinationMode {
        self.mode
    }

    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// How many times this sidecar became or stopped being leader.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Sees every change of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// Sets the state; true if it changed.
    pub(crate) fn set(&self, leader: bool) -> bool {
        self.state.send_if_modified(|v| {
            let changed = std::mem::replace(v, leader) != leader;
            if changed {
                self.changes.fetch_add(1, Ordering::SeqCst);
            }
            changed
        })
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// How long a closing session may take to say goodbye before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Contends for the lock, and holds it, until `shutdown` turns true; then
/// closes the session, which releases the lock. Every change of leadership
/// is seen by the scheduler and the health families through `leadership`.
/// Each new session is opened through the pool current at that moment (a
/// reload may replace it); a session that is up stays as it is.
pub async fn run(
    db: Arc<Swap<Db>>,
    cfg: Coordination,
    leadership: Arc<Leadership>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = FIRST_BACKOFF;
    let mut errors = ErrorLog::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut connected = false;
        let db = db.get();
        let result = session(&db, &cfg, &leadership, &mut shutdown, &mut connected).await;
        let message = match result {
            Ok(()) => return,
            Err(e) => db.scrub(&e),
        };
        if errors.is_new(&message) {
            tracing::warn!(error = %message, "leader election session failed");
        } else {
            tracing::debug!(error = %message, "leader election session failed again");
        }
        // A session that was up ended: reconnect soon. A failed connection: back off.
        delay = if connected {
            FIRST_BACKOFF
        } else {
            (delay * 2).min(cfg.check_interval.max(FIRST_BACKOFF))
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One session: connects, then tries or checks the lock every
/// `check_interval`. Returns `Ok` on shutdown, the reason otherwise; either
/// way this sidecar is no longer leader and the session is closed.
async fn session(
    db: &Db,
    cfg: &Coordination,
    leadership: &Leadership,
    shutdown: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), String> {
    let keepalive = Some(cfg.check_interval.max(Duration::from_secs(1)));
    let options = keepalive_options(cfg.check_interval);
    let (client, mut conn) = tokio::select! {
        r = db.dedicated(&options, keepalive) => r?,
        _ = shutdown.changed() => return Ok(()),
    };
    *connected = true;
    let key = cfg.lock_key;
    let check = |leader: bool| {
        let client = &client;
        async move {
            let answer = if leader {
                client.simple_query("SELECT 1").await.map(|_| true)
            } else {
                client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                    .await
                    .and_then(|row| row.try_get::<_, bool>(0))
            };
            answer.map_err(|e| format!("lock session: {}", describe(&e)))
        }
    };
    let result = hold(leadership, cfg, check, &mut conn, shutdown).await;
    // Step down first, then close: never leader without the session.
    match &result {
        Ok(()) => {
            if leadership.set(false) {
                tracing::info!("released leadership: shutting down");
            }
        }
        Err(reason) => step(leadership, cfg, false, reason),
    }
    drop(client);
    // `hold` may have seen the connection end already; a finished handle is not polled again.
    if !conn.is_finished() && timeout(CLOSE_GRACE, &mut conn).await.is_err() {
        conn.abort();
    }
    result
}

/// The check loop of a connected session: every `check_interval`,
/// `check(leader)` tries the lock (a follower) or checks the session (the
/// leader). `Ok(true)`: this sidecar holds the lock; `Ok(false)`: another
/// one does. A failed check, one without an answer within `check_interval`,
/// or the end of `conn` ends the loop with the reason.
async fn hold<C, F>(
    leadership: &Leadership,
    cfg: &Coordination,
    mut check: C,
    conn: &mut JoinHandle<Result<(), tokio_postgres::Error>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String>
where
    C: FnMut(bool) -> F,
    F: Future<Output = Result<bool, String>>,
{
    let mut ticker = tokio::time::interval(cfg.check_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            r = &mut *conn => return Err(ended(r)),
            _ = shutdown.changed() => return Ok(()),
        }
        let outcome = tokio::select! {
            r = timeout(cfg.check_interval, check(leadership.is_leader())) => r,
            r = &mut *conn => return Err(ended(r)),
            _ = shutdown.changed() => return Ok(()),
        };
        match outcome {
            Ok(Ok(true)) => step(leadership, cfg, true, ""),
            // Another sidecar holds the lock.
            Ok(Ok(false)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(format!("lock session: no answer within {}", show(cfg.check_interval)));
            }
        }
    }
}

/// Records a change of leadership and logs it once.
fn step(leadership: &Leadership, cfg: &Coordination, leader: bool, reason: &str) {
    if !leadership.set(leader) {
        return;
    }
    if leader {
        tracing::info!(lock_key = cfg.lock_key, "became leader");
    } else {
        tracing::warn!(reason = %reason, "lost leadership");
    }
}

fn ended(r: Result<Result<(), tokio_postgres::Error>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "lock session: the server closed the connection".to_string(),
        Ok(Err(e)) => format!("lock session: {}", describe(&e)),
        Err(e) => format!("lock session: {e}"),
    }
}

/// Server-side TCP settings for the lock session, so that the server drops
/// a silent leader (and frees the lock) only after it has stepped down: see
/// the module header.
fn keepalive_options(check: Duration) -> Vec<(&'static str, String)> {
    let secs = check.as_millis().div_ceil(1000).max(1);
    vec![
        ("tcp_keepalives_idle", secs.to_string()),
        ("tcp_keepalives_interval", secs.to_string()),
        ("tcp_keepalives_count", "2".to_string()),
        ("tcp_user_timeout", (secs * 3000).to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_starts_by_mode_and_reports_changes() {
        assert!(Leadership::new(CoordinationMode::All).is_leader());
        assert!(!Leadership::new(CoordinationMode::None).is_leader());
        let l = Leadership::new(CoordinationMode::LeaderElection);
        assert!(!l.is_leader());
        assert!(l.set(true));
        assert!(!l.set(true));
        assert!(l.is_leader());
        assert!(l.set(false));
        assert_eq!(l.changes(), 2);
    }

    fn coordination(check: Duration) -> Coordination {
        Coordination {
            mode: CoordinationMode::LeaderElection,
            lock_key: 1,
            check_interval: check,
        }
    }

    /// A connection task that never ends, as a live session's.
    fn live() -> JoinHandle<Result<(), tokio_postgres::Error>> {
        tokio::spawn(std::future::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_check_goes_unanswered_steps_down_within_two_intervals() {
        let l = Leadership::new(CoordinationMode::LeaderElection);
        let cfg = coordination(Duration::from_secs(5));
        let (_stop, mut stopped) = watch::channel(false);
        let started = tokio::time::Instant::now();
        // The first check wins the lock; the next one never answers.
        let mut answers = vec![None, Some(true)];
        let check = |_leader: bool| {
            let answer = answers.pop().flatten();
            async move {
                match answer {
                    Some(a) => Ok(a),
                    None => std::future::pending().await,
                }
            }
        };
        let mut conn = live();
        let err = hold(&l, &cfg, check, &mut conn, &mut stopped).await.unwrap_err();
        assert_eq!(err, "lock session: no answer within 5s");
        // Leader at once (the first tick), silent check at 5 s, given up at 10 s.
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(l.is_leader(), "hold leaves stepping down to its caller");
        step(&l, &cfg, false, &err);
        assert!(!l.is_leader());
        assert_eq!(l.changes(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_tries_the_lock_every_interval_and_a_failed_check_ends_the_session() {
        let l = Leadership::new(CoordinationMode::LeaderElection);
        let cfg = coordination(Duration::from_millis(500));
        let (_stop, mut stopped) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let mut tries = Vec::new();
        let check = |leader: bool| {
            tries.push((started.elapsed(), leader));
            let n = tries.len();
            async move {
                match n {
                    1..=3 => Ok(false),
                    4 => Ok(true),
                    _ => Err("lock session: ERROR 57P01: terminating connection".to_string()),
                }
            }
        };
        let mut conn = live();
        let err = hold(&l, &cfg, check, &mut conn, &mut stopped).await.unwrap_err();
        assert!(err.contains("57P01"), "{err}");
        let ms = |m| Duration::from_millis(m);
        assert_eq!(
            tries,
            vec![
                (ms(0), false),
                (ms(500), false),
                (ms(1000), false),
                (ms(1500), false),
                (ms(2000), true)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_loop_without_an_error() {
        let l = Leadership::new(CoordinationMode::LeaderElection);
        let cfg = coordination(Duration::from_secs(1));
        let (stop, mut stopped) = watch::channel(false);
        let mut conn = live();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            stop.send(true).unwrap();
        });
        let check = |_| async { Ok(true) };
        assert_eq!(hold(&l, &cfg, check, &mut conn, &mut stopped).await, Ok(()));
        assert!(l.is_leader());
        stopper.await.unwrap();
    }

    #[test]
    fn the_server_drops_a_silent_session_after_three_checks() {
        let o = keepalive_options(Duration::from_millis(500));
        assert_eq!(o[0], ("tcp_keepalives_idle", "1".to_string()));
        assert_eq!(o[3], ("tcp_user_timeout", "3000".to_string()));
        let o = keepalive_options(Duration::from_secs(5));
        assert_eq!(o[1], ("tcp_keepalives_interval", "5".to_string()));
        assert_eq!(o[3], ("tcp_user_timeout", "15000".to_string()));
    }
}
