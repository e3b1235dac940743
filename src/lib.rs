//! pgsidecar: a Prometheus exporter sidecar for PostgreSQL.
//!
//! Data flow: [`config`] → [`scheduler`] → [`collectors`] → [`snapshot`] →
//! [`http`]. See `ARCHITECTURE.md` for the map and the invariants.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod collectors;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod install;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod scheduler;
pub mod snapshot;

pub use app::{Running, run};
pub use config::Config;
