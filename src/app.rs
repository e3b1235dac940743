//! Wiring: builds the pool, the published state and the tasks from a
//! [`Config`], starts the scheduler, the leader election and the HTTP
//! server, and shuts them down in order. Each task gets only what it needs:
//! the scheduler the pool, the state and the checks; the leader election
//! the pool (for its own session) and the leadership flag; the HTTP server a
//! [`View`] without any path to the database.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::collectors;
use crate::config::{Config, CoordinationMode};
use crate::db::{Db, DbError};
use crate::health::Health;
use crate::http::View;
use crate::leader::Leadership;
use crate::scheduler::Pooled;
use crate::state::State;

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
        .chain(collectors::from_checks(&config.checks))
        .collect();
    let shortest = enabled
        .iter()
        .map(|(_, c)| c.interval)
        .min()
        .unwrap_or(std::time::Duration::from_secs(15));
    let db = Arc::new(Db::new(&config.datasource, shortest / 2)?);
    let leadership = Arc::new(Leadership::new(config.coordination.mode));
    let state = Arc::new(State::new(Health::new(&enabled, &config.checks), leadership.clone()));
    state.refresh_health(db.pool_status());

    let local = listener.local_addr().ok();
    tracing::info!(
        listen = %local.map(|a| a.to_string()).unwrap_or_default(),
        target = %db.target(),
        collectors = %enabled.iter().map(|(d, _)| d.name).collect::<Vec<_>>().join(","),
        coordination = leadership.mode().as_str(),
        version = env!("CARGO_PKG_VERSION"),
        "pgsidecar started"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let runner = Arc::new(Pooled {
        db: db.clone(),
        checks: config.checks.clone(),
    });
    let scheduler = tokio::spawn(crate::scheduler::run(runner, state.clone(), enabled, stop_rx.clone()));
    let leader = (leadership.mode() == CoordinationMode::LeaderElection).then(|| {
        let task = crate::leader::run(db.clone(), config.coordination.clone(), leadership, stop_rx.clone());
        tokio::spawn(task.instrument(tracing::info_span!("leader")))
    });
    let view = Arc::new(View {
        state,
        web: config.web.clone(),
        target: db.target().to_string(),
    });
    let mut http_stop = stop_rx;
    let http = tokio::spawn(
        crate::http::serve(listener, view, async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        })
        .instrument(tracing::info_span!("http")),
    );

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
    db.close();
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
