//! Wiring: builds the pool, the published state and the tasks from a
//! [`Config`], starts the scheduler, the leader election and the HTTP
//! server, applies configuration reloads, and shuts them down in order.
//! Each task gets only what it needs: the scheduler the pool, the state and
//! the checks; the leader election the pool (for its own session) and the
//! leadership flag; the HTTP server a [`View`] without any path to the
//! database.
//!
//! A reload (SIGHUP or `POST /-/reload`) loads the configuration anew from
//! the same sources, password files included. An invalid one changes
//! nothing: every problem is logged and
//! `pgsidecar_config_last_reload_successful` drops to 0. A valid one applies
//! at once: a new pool if the datasource changed (credentials rotated), the
//! new checks and thresholds, and the collectors as `Scheduler::apply`
//! describes. A new listen address, log settings or coordination mode need
//! a restart, and say so.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::collectors::{self, Definition};
use crate::config::{CollectorConfig, Config, ConfigError, CoordinationMode};
use crate::db::{Bouncer, Db, DbError, Others};
use crate::health::Health;
use crate::http::View;
use crate::leader::Leadership;
use crate::scheduler::{Pooled, Scheduler};
use crate::state::{ReloadRequest, State};
use crate::swap::Swap;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("pgsidecar task ended abnormally: {0}")]
    Task(String),
    #[error("listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Binds the configured listen address.
pub async fn bind(config: &Config) -> Result<TcpListener, RunError> {
    let addr = config.web.listen_address;
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })
}

/// How a reload loads the configuration anew (the binary's flags and the
/// process environment), and where requests for one come from besides
/// `POST /-/reload` (SIGHUP, in the binary).
pub struct Reloads {
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    pub requests: mpsc::Receiver<ReloadRequest>,
    /// Handed to the HTTP server for `POST /-/reload`.
    pub sender: mpsc::Sender<ReloadRequest>,
}

impl Reloads {
    /// Reloads loaded by `load`, and the sender that asks for one.
    pub fn new(
        load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    ) -> (Reloads, mpsc::Sender<ReloadRequest>) {
        let (sender, requests) = mpsc::channel(4);
        (
            Reloads {
                load,
                requests,
                sender: sender.clone(),
            },
            sender,
        )
    }
}

/// The collectors a configuration enables, in registration order, then
/// those its checks make (a probe each, the statement plans), then one per
/// custom query, then the discovery of the other databases.
fn enabled(
    config: &Config,
    made: &mut collectors::Made,
    databases: Option<&Databases>,
) -> Vec<(&'static Definition, CollectorConfig)> {
    collectors::ALL
        .iter()
        .filter_map(|def| {
            let c = config.collector(def.name)?.clone();
            c.enabled.then_some((def, c))
        })
        .chain(collectors::from_checks(&config.checks, made))
        .chain(collectors::from_queries(&config.queries, made))
        .chain(databases.map(|d| d.discovery.clone()))
        .collect()
}

/// With `databases:`: the sessions to the other databases and the
/// collector that discovers them, made anew only when the section or the
/// datasource changes.
struct Databases {
    others: Arc<Others>,
    discovery: (&'static Definition, CollectorConfig),
}

impl Databases {
    fn new(config: &Config) -> Result<Option<Databases>, DbError> {
        let Some(d) = &config.databases else { return Ok(None) };
        let others = Arc::new(Others::new(&config.datasource, d)?);
        Ok(Some(Databases {
            discovery: collectors::from_databases(others.clone()),
            others,
        }))
    }
}

/// Half the shortest interval: the longest wait between logins after a
/// connection failure (see `db`).
fn max_backoff(collectors: &[(&'static Definition, CollectorConfig)]) -> std::time::Duration {
    collectors
        .iter()
        .map(|(_, c)| c.interval)
        .min()
        .unwrap_or(std::time::Duration::from_secs(15))
        / 2
}

/// The admin console's pool, if `pgbouncer:` is configured.
fn bouncer(config: &Config, collectors: &[(&'static Definition, CollectorConfig)]) -> Result<Option<Bouncer>, DbError> {
    config
        .pgbouncer
        .as_ref()
        .map(|p| Bouncer::new(&p.datasource, max_backoff(collectors)))
        .transpose()
}

/// The leader election's task and its switch.
struct Election {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Election {
    fn start(db: &Arc<Swap<Db>>, config: &Config, leadership: &Arc<Leadership>) -> Option<Election> {
        (leadership.mode() == CoordinationMode::LeaderElection).then(|| {
            let (stop, stopped) = watch::channel(false);
            let run = crate::leader::run(db.clone(), config.coordination.clone(), leadership.clone(), stopped);
            Election {
                stop,
                task: tokio::spawn(run.instrument(tracing::info_span!("leader"))),
            }
        })
    }

    /// Closing the lock session releases the lock for another sidecar.
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "leader election ended abnormally");
        }
    }
}

/// What runs, and what a reload changes.
struct Wired {
    config: Config,
    /// The collectors made from the checks so far.
    made: collectors::Made,
    databases: Option<Databases>,
    db: Arc<Swap<Db>>,
    runner: Arc<Pooled>,
    scheduler: Scheduler<Pooled>,
    election: Option<Election>,
    leadership: Arc<Leadership>,
    state: Arc<State>,
    view: Arc<View>,
}

impl Wired {
    /// Applies a valid new configuration.
    async fn apply(&mut self, new: Config) -> Result<(), RunError> {
        let old = &self.config;
        if new.web.listen_address != old.web.listen_address {
            tracing::warn!(
                listen = %old.web.listen_address,
                wanted = %new.web.listen_address,
                "web.listen_address changes need a restart; still listening on the old address"
            );
        }
        if new.log != old.log {
            tracing::warn!("log.level and log.format changes need a restart");
        }
        if new.coordination.mode != old.coordination.mode {
            tracing::warn!(
                mode = old.coordination.mode.as_str(),
                wanted = new.coordination.mode.as_str(),
                "coordination.mode changes need a restart; the old mode stays"
            );
        }
        if new.databases != old.databases || new.datasource != old.datasource {
            let next = Databases::new(&new)?;
            let prev = self
                .runner
                .others
                .set(Arc::new(next.as_ref().map(|d| d.others.clone())));
            if let Some(o) = prev.as_ref() {
                o.close();
            }
            self.databases = next;
        }
        let collectors = enabled(&new, &mut self.made, self.databases.as_ref());
        if new.datasource != old.datasource {
            let db = Arc::new(Db::new(&new.datasource, max_backoff(&collectors))?);
            self.view.target.set(Arc::new(db.target().to_string()));
            // The old pool closes when its last run lets it go.
            self.db.set(db).close();
            tracing::info!(target = %self.view.target.get(), "new datasource: a new pool");
        } else {
            self.db.get().reset_backoff();
        }
        let pgbouncer = |c: &Config| c.pgbouncer.as_ref().map(|p| p.datasource.clone());
        if pgbouncer(&new) != pgbouncer(old) {
            let next = Arc::new(bouncer(&new, &collectors)?);
            if let Some(b) = next.as_ref() {
                tracing::info!(pgbouncer = %b.target(), "new pgbouncer datasource: a new pool");
            }
            // Runs under way finish on the old session, which closes when
            // they let it go; the next runs take the new pool.
            if let Some(b) = self.runner.bouncer.set(next).as_ref() {
                b.close();
            }
        } else if let Some(b) = self.runner.bouncer.get().as_ref() {
            b.reset_backoff();
        }
        self.runner.checks.set(new.checks.clone());
        self.view.web.set(Arc::new(crate::config::Web {
            listen_address: old.web.listen_address,
            ..new.web.clone()
        }));
        self.state.health.reconfigure(&collectors, &new.checks);
        self.scheduler.apply(collectors).await;
        let coordination_changed = new.coordination != old.coordination;
        if coordination_changed && new.coordination.mode == old.coordination.mode {
            if let Some(e) = self.election.take() {
                e.stop().await;
            }
            self.election = Election::start(&self.db, &new, &self.leadership);
        }
        let mode = old.coordination.mode;
        self.config = Config {
            coordination: crate::config::Coordination {
                mode,
                ..new.coordination.clone()
            },
            ..new
        };
        Ok(())
    }
}

/// Runs pgsidecar until `shutdown` completes: stops collecting, drains HTTP
/// within the grace period, closes the pool. With `reloads`, applies each
/// reload asked for in between.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    reloads: Option<Reloads>,
) -> Result<(), RunError> {
    let mut made = collectors::Made::default();
    let databases = Databases::new(&config)?;
    let collectors = enabled(&config, &mut made, databases.as_ref());
    let db = Arc::new(Swap::new(Arc::new(Db::new(
        &config.datasource,
        max_backoff(&collectors),
    )?)));
    let leadership = Arc::new(Leadership::new(config.coordination.mode));
    let state = Arc::new(State::new(Health::new(&collectors, &config.checks), leadership.clone()));
    state.refresh_health(db.get().pool_status());

    let local = listener.local_addr().ok();
    tracing::info!(
        listen = %local.map(|a| a.to_string()).unwrap_or_default(),
        target = %db.get().target(),
        collectors = %collectors.iter().map(|(d, _)| d.name).collect::<Vec<_>>().join(","),
        coordination = leadership.mode().as_str(),
        pgbouncer = %config.pgbouncer.as_ref().map_or_else(String::new, |p| format!("{} (run by {})", p.datasource.target(), p.run_by.as_str())),
        version = env!("CARGO_PKG_VERSION"),
        "pgsidecar started"
    );

    let runner = Arc::new(Pooled {
        db: db.clone(),
        bouncer: Swap::new(Arc::new(bouncer(&config, &collectors)?)),
        checks: Swap::new(config.checks.clone()),
        others: Swap::new(Arc::new(databases.as_ref().map(|d| d.others.clone()))),
        memory: Arc::default(),
    });
    let scheduler = Scheduler::start(runner.clone(), state.clone(), collectors);
    let election = Election::start(&db, &config, &leadership);
    let (mut reloads, sender) = match reloads {
        Some(r) => {
            let sender = r.sender.clone();
            (Some(r), sender)
        }
        // Without a loader, POST /-/reload is answered at once.
        None => {
            let (sender, mut requests) = mpsc::channel::<ReloadRequest>(1);
            tokio::spawn(async move {
                while let Some(reply) = requests.recv().await {
                    let _ = reply.send(Err("this pgsidecar cannot reload (it was started in-process)".into()));
                }
            });
            (None, sender)
        }
    };
    let view = Arc::new(View {
        state: state.clone(),
        web: Swap::new(Arc::new(config.web.clone())),
        target: Swap::new(Arc::new(db.get().target().to_string())),
        reload: sender,
    });
    let (http_stop, mut http_stopped) = watch::channel(false);
    let http = tokio::spawn(
        crate::http::serve(listener, view.clone(), async move {
            let _ = http_stopped.wait_for(|stop| *stop).await;
        })
        .instrument(tracing::info_span!("http")),
    );
    let mut wired = Wired {
        config,
        made,
        databases,
        db,
        runner,
        scheduler,
        election,
        leadership,
        state,
        view,
    };

    tokio::pin!(shutdown);
    loop {
        let request = match reloads.as_mut() {
            Some(r) => tokio::select! {
                _ = &mut shutdown => break,
                request = r.requests.recv() => request,
            },
            None => {
                (&mut shutdown).await;
                break;
            }
        };
        let Some(reply) = request else { continue };
        let Some(r) = reloads.as_ref() else { continue };
        let outcome = match (r.load)() {
            Ok(new) => wired.apply(new).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match &outcome {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(problems) => tracing::error!(error = %problems, "configuration not reloaded; the old one stays"),
        }
        wired.state.health.record_reload(outcome.is_ok());
        wired.state.refresh_health(wired.db.get().pool_status());
        let _ = reply.send(outcome);
    }
    tracing::info!("shutting down");
    wired.scheduler.stop().await;
    let _ = http_stop.send(true);
    if let Err(e) = http.await {
        tracing::error!(error = %e, "http server ended abnormally");
    }
    if let Some(e) = wired.election.take() {
        e.stop().await;
    }
    wired.db.get().close();
    if let Some(b) = wired.runner.bouncer.get().as_ref() {
        b.close();
    }
    tracing::info!("stopped");
    Ok(())
}

/// A pgsidecar running in this process (for tests and embedding).
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl Running {
    /// Binds `127.0.0.1:0` (ignoring the configured address) and starts.
    pub async fn start(config: Config) -> Result<Running, RunError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| RunError::Bind { addr, source })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(
            config,
            listener,
            async move {
                let _ = rx.await;
            },
            None,
        ));
        Ok(Running {
            addr,
            stop: Some(tx),
            task,
        })
    }

    pub async fn stop(mut self) -> Result<(), RunError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(RunError::Task(e.to_string())),
        }
    }
}
