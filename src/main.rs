//! The `pgsidecar` binary: parses flags, loads the configuration, installs
//! logging and signal handling, and runs the exporter.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pgsidecar::config::{Config, Flags, ProcessEnv};

/// Prometheus exporter sidecar for PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "pgsidecar", version, about, long_about = None)]
struct Cli {
    /// YAML configuration file.
    #[arg(long = "config.file", value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// Validate the configuration (without connecting) and exit: 0 if valid.
    #[arg(long = "config.check")]
    config_check: bool,
    /// Address to listen on, e.g. `:9188` or `127.0.0.1:9188` [default: :9188].
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    listen_address: Option<String>,
    /// Path under which to expose metrics [default: /metrics].
    #[arg(long = "web.telemetry-path", value_name = "PATH")]
    telemetry_path: Option<String>,
    /// Log level: debug, info, warn, error [default: info].
    #[arg(long = "log.level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format: logfmt or json [default: logfmt].
    #[arg(long = "log.format", value_name = "FORMAT")]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = Flags {
        config_file: cli.config_file,
        listen_address: cli.listen_address,
        telemetry_path: cli.telemetry_path,
        log_level: cli.log_level,
        log_format: cli.log_format,
    };
    let config = match Config::load(&flags, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgsidecar: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.config_check {
        let enabled: Vec<_> = config.collectors.iter().filter(|c| c.enabled).map(|c| c.name).collect();
        println!(
            "configuration is valid: target {}, listen {}, collectors: {}",
            config.datasource.target(),
            config.web.listen_address,
            enabled.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    pgsidecar::logging::init(&config.log);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgsidecar: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match pgsidecar::app::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        match pgsidecar::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                ExitCode::FAILURE
            }
        }
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C is still caught.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
