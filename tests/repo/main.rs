//! The integration tests whose outcome does not depend on the PostgreSQL
//! server version, run once (against the default server where one is
//! needed): the alert rules, dashboards, Kubernetes manifests and image,
//! configuration errors, secrets, the HTTP surface, TLS, leader election,
//! PgBouncer (Debian's, in front of a test cluster),
//! and the end-to-end runs with Prometheus and Alertmanager.

// A test fails by panicking, and it sets up its fixtures on superuser
// sessions of its own, outside pgsidecar's `db`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../support/mod.rs"]
mod support;

mod alerts;
mod config_errors;
mod dashboards;
mod dashboards_move;
mod databases;
mod demo;
mod e2e;
mod flags;
mod http;
mod http_limits;
mod image;
mod k8s;
mod layout;
mod leader;
mod logins;
mod pgbouncer;
mod probe_config;
mod query_config;
mod reload;
mod secrets;
mod tls;
mod web_config;
