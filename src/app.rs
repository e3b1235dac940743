//! Wiring: builds the shared state from a [`Config`], starts the scheduler and
//! the HTTP server, and shuts both down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::collectors;
use crate::config::{Config, CoordinationMode};
use crate::db::{Db, DbError};
use crate::health::Health;
use crate::leader::Leadership;
use crate::snapshot::{HEALTH, Snapshot};

/// What the scheduler writes and the HTTP server reads.
pub struct Shared {
    pub config: Config,
    pub db: Db,
    pub snapshot: Snapshot,
    pub health: Health,
    pub leadership: Leadership,
    /// Held from rendering the health families to publishing them, so that
    /// concurrent collectors never publish an older rendering over a newer one.
    publishing: std::sync::Mutex<()>,
}

impl Shared {
    fn render_health(&self) -> bytes::Bytes {
        self.health.render(self.db.pool_status(), &self.leadership)
    }

    pub fn refresh_health(&self) {
        let _order = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        self.snapshot.set(HEALTH, Some(self.render_health()));
    }

    /// Replaces (or with `None` drops) a collector's part together with the
    /// health families, in one body: a scrape never sees a collection's
    /// series without its outcome, or the other way round.
    pub fn publish(&self, collector: &'static str, part: Option<bytes::Bytes>) {
        let _order = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        self.snapshot
            .update([(collector, part), (HEALTH, Some(self.render_health()))]);
    }
}

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

/// Runs pgsidecar until `shutdown` completes: stops collecting, drains HTTP
/// within the grace period, closes the pool.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let enabled: Vec<_> = collectors::ALL
        .iter()
        .filter_map(|def| {
            let c = config.collector(def.name)?.clone();
            c.enabled.then_some((def, c))
        })
        .collect();
    let configs: Vec<_> = enabled.iter().map(|(_, c)| c.clone()).collect();
    let shortest = configs
        .iter()
        .map(|c| c.interval)
        .min()
        .unwrap_or(std::time::Duration::from_secs(15));
    let db = Db::new(&config.datasource, shortest / 2)?;
    let shared = Arc::new(Shared {
        health: Health::new(&configs, &config.checks),
        leadership: Leadership::new(config.coordination.mode),
        publishing: std::sync::Mutex::new(()),
        db,
        snapshot: Snapshot::default(),
        config,
    });
    shared.refresh_health();

    let local = listener.local_addr().ok();
    tracing::info!(
        listen = %local.map(|a| a.to_string()).unwrap_or_default(),
        target = %shared.db.target(),
        collectors = %configs.iter().map(|c| c.name).collect::<Vec<_>>().join(","),
        coordination = shared.leadership.mode().as_str(),
        version = env!("CARGO_PKG_VERSION"),
        "pgsidecar started"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let scheduler = tokio::spawn(crate::scheduler::run(shared.clone(), enabled, stop_rx.clone()));
    let leader = (shared.leadership.mode() == CoordinationMode::LeaderElection)
        .then(|| tokio::spawn(crate::leader::run(shared.clone(), stop_rx.clone())));
    let mut http_stop = stop_rx;
    let http = tokio::spawn(crate::http::serve(listener, shared.clone(), async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    }));

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = scheduler.await {
        tracing::error!(error = %e, "scheduler ended abnormally");
    }
    if let Err(e) = http.await {
        tracing::error!(error = %e, "http server ended abnormally");
    }
    // Closing the lock session releases the lock for another sidecar.
    if let Some(task) = leader
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "leader election ended abnormally");
    }
    shared.db.close();
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
        let task = tokio::spawn(run(config, listener, async move {
            let _ = rx.await;
        }));
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
