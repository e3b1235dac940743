//! The application team's schema (see the optimization guide): users,
//! messages, daily_stats, saved_words, the `user_stats_summary` materialized
//! view, their eleven `idx_` indexes and alembic's `alembic_version` at "003".
//! Checklist tests create it in a database of their own and then break it.

use crate::support::pg::Cluster;

pub const NAMED_INDEXES: [&str; 6] = [
    "idx_messages_user_created",
    "idx_daily_stats_user_date",
    "idx_saved_words_user_word",
    "idx_messages_text_search",
    "idx_messages_correctness_score",
    "idx_saved_words_review",
];

const SCHEMA: &str = include_str!("../../examples/mluvme-schema.sql");

/// Creates database `name` (dropping an old one) with the application schema;
/// returns a superuser connection to it.
pub async fn create_app_db(cluster: &Cluster, name: &str) -> tokio_postgres::Client {
    let admin = cluster.connect("postgres", "it-fixture").await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let db = cluster.connect(name, "it-fixture").await;
    db.batch_execute(SCHEMA)
        .await
        .unwrap_or_else(|e| panic!("create the app schema: {e:?}"));
    db
}

/// The application database as pgsidecar watches it in production: the
/// schema, a login role `pgsidecar` with `password` in `pg_monitor` that may
/// read the application's tables (the migration table, and what the probes
/// and the statement plans read), the refresh log installed, and the view
/// refreshed once. Returns a superuser connection to it and the role's DSN.
pub async fn monitored_app_db(cluster: &Cluster, password: &str) -> (tokio_postgres::Client, String) {
    let db = create_app_db(cluster, "mluvme").await;
    db.batch_execute(&format!(
        "DROP ROLE IF EXISTS pgsidecar; CREATE ROLE pgsidecar LOGIN PASSWORD '{password}' IN ROLE pg_monitor; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO pgsidecar"
    ))
    .await
    .unwrap();
    let (code, out) = crate::support::run_pgsidecar(&["install"], &cluster.dsn("mluvme"));
    assert_eq!(code, 0, "pgsidecar install: {out}");
    db.batch_execute("REFRESH MATERIALIZED VIEW user_stats_summary")
        .await
        .unwrap();
    let dsn = format!(
        "host=127.0.0.1 port={} user=pgsidecar password={password} dbname=mluvme sslmode=disable",
        cluster.port()
    );
    (db, dsn)
}

/// `examples/mluvme.yaml` with `extra` YAML and every collector (the
/// five-minute `database` one too) collecting each second.
pub fn example_config(extra: &str) -> String {
    let example = std::fs::read_to_string(crate::support::root().join("examples/mluvme.yaml"))
        .expect("read examples/mluvme.yaml");
    format!(
        "{example}
{extra}collection:
  interval: 1s
collectors:
  database:
    interval: 1s
"
    )
}

/// How many collectors the leader runs with [`example_config`]: the
/// built-in ones enabled, one per probe, and the statement plans.
pub fn example_collectors() -> usize {
    let env: std::collections::BTreeMap<String, String> = [("DB_HOST".to_string(), "127.0.0.1".to_string())].into();
    let config = pgsidecar::config_from_yaml(
        &example_config(""),
        "examples/mluvme.yaml",
        &pgsidecar::config::Flags::default(),
        &env,
    )
    .expect("the example config is valid");
    config.collectors.iter().filter(|c| c.enabled).count()
        + pgsidecar::collectors::from_checks(&config.checks, &mut pgsidecar::collectors::Made::default()).len()
}
