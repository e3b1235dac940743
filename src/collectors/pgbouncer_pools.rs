//! `pgbouncer_pools`: PgBouncer's `SHOW POOLS`, one row per (database, user)
//! pool, with pgbouncer_exporter's names. Its last run decides
//! `pgbouncer_up` (see `health`).
//!
//! Metrics, gauges labelled `database`, `user` (pgbouncer_exporter's):
//! - `pgbouncer_pools_client_active_connections` (`cl_active`),
//!   `_client_waiting_connections` (`cl_waiting`),
//!   `_client_active_cancel_connections` (`cl_active_cancel_req`),
//!   `_client_waiting_cancel_connections` (`cl_waiting_cancel_req`);
//! - `pgbouncer_pools_server_active_connections` (`sv_active`),
//!   `_server_active_cancel_connections` (`sv_active_cancel`),
//!   `_server_being_canceled_connections` (`sv_being_canceled`),
//!   `_server_idle_connections` (`sv_idle`), `_server_used_connections`
//!   (`sv_used`), `_server_testing_connections` (`sv_tested`),
//!   `_server_login_connections` (`sv_login`);
//! - `pgbouncer_pools_client_maxwait_seconds`: how long the oldest waiting
//!   client has waited, `maxwait` plus `maxwait_us` (PgBouncer ≥ 1.8) in
//!   seconds.
//!
//! And the thresholds of the PgBouncer alerts (`pgbouncer.thresholds`), new
//! in pgsidecar, unlabelled gauges:
//! - `pgsidecar_pgbouncer_waiting_clients_threshold`;
//! - `pgsidecar_pgbouncer_max_wait_threshold_seconds`.
//!
//! Version gates: none; columns a release lacks give no sample (the cancel
//! columns came with PgBouncer 1.18).

use super::console::{Row, Value, families, gauge, show};
use super::{Client, CollectFuture, Ctx, Definition};
use crate::config::PgBouncerThresholds;
use crate::metrics::Family;

pub const DEFINITION: Definition = Definition::custom("pgbouncer_pools", collect).pgbouncer().decides_up();

const LABELS: [&str; 2] = ["database", "user"];

const VALUES: [Value; 11] = [
    gauge(
        "cl_active",
        "pgbouncer_pools_client_active_connections",
        "Client connections linked to a server connection and able to process queries",
    ),
    gauge(
        "cl_waiting",
        "pgbouncer_pools_client_waiting_connections",
        "Client connections waiting on a server connection",
    ),
    gauge(
        "cl_active_cancel_req",
        "pgbouncer_pools_client_active_cancel_connections",
        "Client connections that have forwarded a cancel request to the server and wait for its answer",
    ),
    gauge(
        "cl_waiting_cancel_req",
        "pgbouncer_pools_client_waiting_cancel_connections",
        "Client connections whose cancel request has not been forwarded to the server yet",
    ),
    gauge(
        "sv_active",
        "pgbouncer_pools_server_active_connections",
        "Server connections linked to a client connection",
    ),
    gauge(
        "sv_active_cancel",
        "pgbouncer_pools_server_active_cancel_connections",
        "Server connections forwarding a cancel request",
    ),
    gauge(
        "sv_being_canceled",
        "pgbouncer_pools_server_being_canceled_connections",
        "Server connections that wait for in-flight cancel requests before they may become idle",
    ),
    gauge(
        "sv_idle",
        "pgbouncer_pools_server_idle_connections",
        "Server connections idle and ready for a client query",
    ),
    gauge(
        "sv_used",
        "pgbouncer_pools_server_used_connections",
        "Server connections idle for longer than server_check_delay, needing server_check_query",
    ),
    gauge(
        "sv_tested",
        "pgbouncer_pools_server_testing_connections",
        "Server connections running server_reset_query or server_check_query",
    ),
    gauge(
        "sv_login",
        "pgbouncer_pools_server_login_connections",
        "Server connections in the process of logging in",
    ),
];

fn collect<'a>(client: &'a Client, ctx: &'a Ctx) -> CollectFuture<'a> {
    Box::pin(async move {
        let rows = show(client, "SHOW POOLS").await?;
        let (fams, notes) = pools_families(&rows, &ctx.checks.pgbouncer);
        for n in notes {
            ctx.note(n);
        }
        Ok(fams)
    })
}

/// The pools' families, the maximum wait and the thresholds; a note per
/// value that is not a number.
pub fn pools_families(rows: &[Row], thresholds: &PgBouncerThresholds) -> (Vec<Family>, Vec<String>) {
    let (mut fams, mut notes) = families(rows, &LABELS, &VALUES);
    let mut maxwait = Family::gauge(
        "pgbouncer_pools_client_maxwait_seconds",
        "Age of the oldest unserved client connection, in seconds",
        &LABELS,
    );
    for row in rows {
        let labels = [row.text("database"), row.text("user")];
        match (row.number("maxwait"), row.number("maxwait_us")) {
            (Some(Ok(s)), None) => maxwait.set(&labels, s),
            (Some(Ok(s)), Some(Ok(us))) => maxwait.set(&labels, s + us * 1e-6),
            (Some(Err(e)), _) | (_, Some(Err(e))) => notes.push(format!(
                "pgbouncer_pools_client_maxwait_seconds ({}): {e}",
                labels.join(", ")
            )),
            (None, _) => {}
        }
    }
    fams.push(maxwait);
    let mut waiting = Family::gauge(
        "pgsidecar_pgbouncer_waiting_clients_threshold",
        "Configured pgbouncer.thresholds.waiting_clients: more waiting clients in a pool alert",
        &[],
    );
    waiting.set(&[], f64::from(thresholds.waiting_clients));
    let mut max_wait = Family::gauge(
        "pgsidecar_pgbouncer_max_wait_threshold_seconds",
        "Configured pgbouncer.thresholds.max_wait: a longer client wait alerts",
        &[],
    );
    max_wait.set(&[], thresholds.max_wait.as_secs_f64());
    fams.extend([waiting, max_wait]);
    (fams, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::value;

    #[test]
    fn a_pool_row_of_pgbouncer_1_18_gives_every_family() {
        // SHOW POOLS of Debian's PgBouncer 1.18, with one waiting client.
        let row = Row::of(&[
            ("database", "app"),
            ("user", "api"),
            ("cl_active", "2"),
            ("cl_waiting", "3"),
            ("cl_active_cancel_req", "0"),
            ("cl_waiting_cancel_req", "0"),
            ("sv_active", "2"),
            ("sv_active_cancel", "0"),
            ("sv_being_canceled", "0"),
            ("sv_idle", "0"),
            ("sv_used", "0"),
            ("sv_tested", "0"),
            ("sv_login", "0"),
            ("maxwait", "4"),
            ("maxwait_us", "250000"),
            ("pool_mode", "transaction"),
        ]);
        let (f, notes) = pools_families(&[row], &PgBouncerThresholds::default());
        assert!(notes.is_empty(), "{notes:?}");
        let l = ["app", "api"];
        assert_eq!(value(&f, "pgbouncer_pools_client_waiting_connections", &l), Some(3.0));
        assert_eq!(value(&f, "pgbouncer_pools_server_active_connections", &l), Some(2.0));
        assert_eq!(value(&f, "pgbouncer_pools_client_maxwait_seconds", &l), Some(4.25));
        assert_eq!(
            value(&f, "pgsidecar_pgbouncer_max_wait_threshold_seconds", &[]),
            Some(5.0)
        );
        assert_eq!(
            value(&f, "pgsidecar_pgbouncer_waiting_clients_threshold", &[]),
            Some(0.0)
        );
        // Every declared column became a sample; pool_mode, a text, is not one.
        assert_eq!(f.iter().filter(|f| f.len() == 1).count(), VALUES.len() + 3);
    }

    #[test]
    fn an_older_pgbouncer_without_the_newer_columns_still_reports_the_rest() {
        // PgBouncer 1.7: no cancel columns, no maxwait_us.
        let row = Row::of(&[
            ("database", "app"),
            ("user", "api"),
            ("cl_waiting", "1"),
            ("maxwait", "2"),
        ]);
        let (f, _) = pools_families(&[row], &PgBouncerThresholds::default());
        assert_eq!(
            value(&f, "pgbouncer_pools_client_maxwait_seconds", &["app", "api"]),
            Some(2.0)
        );
        assert_eq!(
            value(&f, "pgbouncer_pools_client_active_cancel_connections", &["app", "api"]),
            None
        );
    }
}
