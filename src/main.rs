//! The `pgsidecar` binary: parses flags, loads the configuration, installs
//! logging and signal handling, and runs the exporter.
//!
//! Signals: SIGTERM and SIGINT shut down cleanly; SIGHUP reloads the
//! configuration (see `app`); SIGUSR1 and SIGUSR2 are logged and otherwise
//! ignored, so a logrotate hook or a stray `kill -USR1` cannot end it.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    /// Serve POST /-/reload, which reloads the configuration as SIGHUP does.
    #[arg(long = "web.enable-lifecycle")]
    enable_lifecycle: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the `pgsidecar` schema and event triggers that record
    /// materialized-view refreshes, in the configured database (needs a superuser).
    Install {
        /// Print the SQL instead of running it (for your own migrations).
        #[arg(long = "print-sql")]
        print_sql: bool,
    },
    /// Remove the `pgsidecar` schema and its event triggers.
    Uninstall {
        /// Print the SQL instead of running it.
        #[arg(long = "print-sql")]
        print_sql: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = Flags {
        config_file: cli.config_file,
        listen_address: cli.listen_address,
        telemetry_path: cli.telemetry_path,
        log_level: cli.log_level,
        log_format: cli.log_format,
        enable_lifecycle: cli.enable_lifecycle,
    };
    let (sql, action) = match cli.command {
        Some(Command::Install { print_sql: true }) => return print(pgsidecar::install::INSTALL_SQL),
        Some(Command::Uninstall { print_sql: true }) => return print(pgsidecar::install::UNINSTALL_SQL),
        Some(Command::Install { .. }) => (Some(pgsidecar::install::INSTALL_SQL), "install"),
        Some(Command::Uninstall { .. }) => (Some(pgsidecar::install::UNINSTALL_SQL), "uninstall"),
        None => (None, ""),
    };
    let config = match pgsidecar::load_config(&flags, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgsidecar: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(sql) = sql {
        return admin(&config, sql, action);
    }
    if cli.config_check {
        let enabled: Vec<_> = config.collectors.iter().filter(|c| c.enabled).map(|c| c.name).collect();
        let pgbouncer = config.pgbouncer.as_ref().map_or_else(String::new, |p| {
            format!(", pgbouncer {} (run by {})", p.datasource.target(), p.run_by.as_str())
        });
        println!(
            "configuration is valid: target {}{pgbouncer}, listen {}, collectors: {}",
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
        let (reloads, reload) = pgsidecar::Reloads::new(Box::new(move || pgsidecar::load_config(&flags, &ProcessEnv)));
        if let Err(e) = listen_for_signals(reload) {
            tracing::error!(error = %e, "cannot install the signal handlers");
            return ExitCode::FAILURE;
        }
        let listener = match pgsidecar::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        match pgsidecar::run(config, listener, shutdown_signal(), Some(reloads)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                ExitCode::FAILURE
            }
        }
    })
}

fn print(sql: &str) -> ExitCode {
    print!("{sql}");
    ExitCode::SUCCESS
}

/// `install` / `uninstall` against the configured database.
fn admin(config: &Config, sql: &str, action: &'static str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgsidecar: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pgsidecar::install::apply(&config.datasource, sql, action)) {
        Ok(()) => {
            println!("pgsidecar: {action} done in {}", config.datasource.target());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgsidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP asks for a reload and logs nothing itself (the reload logs its
/// outcome); SIGUSR1 and SIGUSR2 are logged and ignored.
fn listen_for_signals(
    reload: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<(), String>>>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let (tx, _outcome) = tokio::sync::oneshot::channel();
                    if reload.send(tx).await.is_err() {
                        return;
                    }
                }
                Some(()) = usr1.recv() => tracing::info!("SIGUSR1 ignored"),
                Some(()) = usr2.recv() => tracing::info!("SIGUSR2 ignored"),
                else => return,
            }
        }
    });
    Ok(())
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
