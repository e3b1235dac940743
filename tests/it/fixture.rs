//! The application team's schema (see the optimization guide): users,
//! messages, daily_stats, saved_words, the `user_stats_summary` materialized
//! view, their eleven `idx_` indexes and alembic's `alembic_version` at "003".
//! Checklist tests create it in a database of their own and then break it.

use crate::pg::Cluster;

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
