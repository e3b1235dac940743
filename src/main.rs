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
#[command(name = "pgsidecar", version, about, long_about = None, after_help = COLLECTOR_HELP)]
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
    /// Web configuration file (Prometheus exporter-toolkit format): TLS,
    /// basic auth and response headers; re-read when it changes.
    #[arg(long = "web.config.file", value_name = "PATH")]
    web_config_file: Option<String>,
    /// Most HTTP connections open at once [default: 128].
    #[arg(long = "web.max-connections", value_name = "N")]
    max_connections: Option<String>,
    /// Log level: debug, info, warn, error [default: info].
    #[arg(long = "log.level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format: logfmt or json [default: logfmt].
    #[arg(long = "log.format", value_name = "FORMAT")]
    log_format: Option<String>,
    /// Time limit of every collector's run, e.g. 5s; cut to each collector's
    /// interval [default: collection.timeout].
    #[arg(long = "collection-timeout", value_name = "DURATION")]
    collection_timeout: Option<String>,
    /// A postgres_exporter queries.yaml of custom queries, added to the
    /// config file's queries: [env: PG_EXPORTER_EXTEND_QUERY_PATH].
    #[arg(long = "extend.query-path", value_name = "PATH")]
    extend_query_path: Option<String>,
    /// Read every database the role may connect to (databases: auto)
    /// [env: PG_EXPORTER_AUTO_DISCOVER_DATABASES].
    #[arg(long = "auto-discover-databases")]
    auto_discover_databases: bool,
    /// Databases to read besides the DSN's, comma-separated (databases.include)
    /// [env: PG_EXPORTER_INCLUDE_DATABASES].
    #[arg(long = "include-databases", value_name = "NAMES")]
    include_databases: Option<String>,
    /// Databases not to read, comma-separated (databases.exclude); alone it
    /// means every other database [env: PG_EXPORTER_EXCLUDE_DATABASES].
    #[arg(long = "exclude-databases", value_name = "NAMES")]
    exclude_databases: Option<String>,
    /// Turn the settings collector (pg_settings_*) off.
    #[arg(long = "disable-settings-metrics")]
    disable_settings_metrics: bool,
    /// postgres_exporter's flag; refused with what to use instead.
    #[arg(long = "disable-default-metrics", hide = true)]
    disable_default_metrics: bool,
    /// How many statements pg_stat_statements exports (checks.slow_queries.top).
    #[arg(long = "collector.stat_statements.limit", value_name = "N")]
    stat_statements_limit: Option<String>,
    /// Export query texts (checks.slow_queries.include_query_text).
    #[arg(
        long = "collector.stat_statements.include_query",
        overrides_with = "no_include_query"
    )]
    include_query: bool,
    /// Do not export query texts.
    #[arg(
        long = "no-collector.stat_statements.include_query",
        overrides_with = "include_query"
    )]
    no_include_query: bool,
    /// Query text length (checks.slow_queries.query_text_length).
    #[arg(long = "collector.stat_statements.query_length", value_name = "N")]
    stat_statements_query_length: Option<String>,
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

/// The collector switches clap cannot declare, after the help.
const COLLECTOR_HELP: &str = "Collectors: --collector.<name> turns one on, --no-collector.<name> off \
(over the config file), for every collector name as in the config file's collectors: section.";

fn main() -> ExitCode {
    // `--collector.<name>` and `--no-collector.<name>` exist for every
    // collector, so they are taken out before clap sees the rest.
    let (args, collectors) = pgsidecar::config::take_collector_flags(std::env::args().collect());
    let cli = Cli::parse_from(args);
    let flags = Flags {
        config_file: cli.config_file,
        listen_address: cli.listen_address,
        telemetry_path: cli.telemetry_path,
        web_config_file: cli.web_config_file,
        max_connections: cli.max_connections,
        log_level: cli.log_level,
        log_format: cli.log_format,
        collectors,
        stat_statements_limit: cli.stat_statements_limit,
        stat_statements_include_query: match (cli.include_query, cli.no_include_query) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        stat_statements_query_length: cli.stat_statements_query_length,
        collection_timeout: cli.collection_timeout,
        disable_settings_metrics: cli.disable_settings_metrics,
        disable_default_metrics: cli.disable_default_metrics,
        enable_lifecycle: cli.enable_lifecycle,
        extend_query_path: cli.extend_query_path,
        auto_discover_databases: cli.auto_discover_databases,
        include_databases: cli.include_databases,
        exclude_databases: cli.exclude_databases,
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
        let enabled: Vec<String> = config
            .collectors
            .iter()
            .filter(|c| c.enabled)
            .map(|c| c.name.to_string())
            .chain(config.queries.iter().map(|q| q.collector()))
            .collect();
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
    // Sockets, the pool's sessions and files share one limit; raise it as far
    // as allowed (often from 1024 to the hard limit), before anything opens.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }

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
