//! The integration tests whose outcome depends on the PostgreSQL server
//! version: the collectors against a real server, Postgres faults, and
//! `promtool check metrics` on an exposition with version-gated families.
//! `scripts/test-matrix` runs this binary once per major version (13 to 18);
//! `PG_BIN` picks the server (see `support::pg`).

// A test fails by panicking, and it sets up its fixtures on superuser
// sessions of its own, outside pgsidecar's `db`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../support/mod.rs"]
mod support;

mod collectors;
mod compat;
mod cost;
mod faults;
mod health;
mod indexes;
mod locks;
mod matviews;
mod probes;
mod promtool;
mod queries;
mod replication;
mod stat_statements;
mod statement_plans;
mod tables;
