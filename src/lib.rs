//! pgsidecar: a Prometheus exporter sidecar for PostgreSQL.
//!
//! Data flow: [`config`] → scheduler → [`collectors`] → snapshot → http.
//! See `ARCHITECTURE.md` for the map and the invariants. The public surface
//! is what the binary and the integration tests use: loading a
//! configuration, running pgsidecar, the collector list, `install`, logging.

pub mod collectors;
pub mod config;
pub mod install;
pub mod logging;

mod app;
mod db;
mod health;
mod http;
mod leader;
mod metrics;
mod scheduler;
mod snapshot;
mod sql;
mod state;
mod swap;

pub use app::{Reloads, RunError, Running, bind, run};
pub use config::Config;

/// Loads and validates the configuration from all sources (see
/// [`Config::load`]), for pgsidecar's collectors.
pub fn load_config(flags: &config::Flags, env: &dyn config::Env) -> Result<Config, config::ConfigError> {
    Config::load(flags, env, &collectors::defaults())
}

/// Validates YAML text as if read from `source` (see [`Config::from_yaml`]),
/// for pgsidecar's collectors.
pub fn config_from_yaml(
    text: &str,
    source: &str,
    flags: &config::Flags,
    env: &dyn config::Env,
) -> Result<Config, config::ConfigError> {
    Config::from_yaml(text, source, flags, env, &collectors::defaults())
}
