//! Compatibility with what users already run: the metric names and grouping
//! labels that the postgres-mixin (alerts and dashboard), and the community
//! alert collection awesome-prometheus-alerts rely on, all in a real scrape
//! of pgsidecar with its default collectors, on a primary and on a hot
//! standby. The list is written here as facts, each with where it comes
//! from. The few names those rules use that even postgres_exporter no
//! longer exports are listed in the README ("Where pgsidecar differs") and
//! in [`EXCEPTED`].

use crate::support::pg;
use crate::support::scrape::{Metrics, until};
use crate::support::{WAIT, start, test_yaml};

/// postgres_exporter's `postgres_mixin/alerts/postgres.libsonnet`.
const MIXIN_ALERTS: &str = "postgres-mixin alerts";
/// postgres_exporter's `postgres_mixin/dashboards/queries.libsonnet`.
const MIXIN_DASHBOARD: &str = "postgres-mixin dashboard";
/// samber/awesome-prometheus-alerts, `dist/rules/postgresql/postgres-exporter.yml`.
const AWESOME: &str = "awesome-prometheus-alerts";

/// Where a name must appear.
#[derive(Clone, Copy, PartialEq)]
enum On {
    Both,
    /// Slots and the bgwriter's checkpoint counters are about a primary's work.
    Primary,
}

/// A name, the labels rules group or filter by, who uses it, where, and the
/// server versions that have it (`since` inclusive, `until` exclusive, 0: none).
struct Need {
    name: &'static str,
    labels: &'static [&'static str],
    from: &'static [&'static str],
    on: On,
    since: i32,
    until: i32,
}

const fn need(name: &'static str, labels: &'static [&'static str], from: &'static [&'static str]) -> Need {
    Need {
        name,
        labels,
        from,
        on: On::Both,
        since: 0,
        until: 0,
    }
}

const NEEDS: &[Need] = &[
    need("pg_up", &[], &[MIXIN_ALERTS, AWESOME]),
    need("pg_exporter_last_scrape_error", &[], &[MIXIN_ALERTS, AWESOME]),
    need("pg_postmaster_start_time_seconds", &[], &[AWESOME]),
    need(
        "pg_stat_activity_count",
        &["datname", "state"],
        &[MIXIN_ALERTS, AWESOME],
    ),
    need(
        "pg_stat_activity_max_tx_duration",
        &["datname", "state"],
        &[MIXIN_ALERTS],
    ),
    need("pg_settings_max_connections", &[], &[MIXIN_ALERTS, AWESOME]),
    need("pg_settings_superuser_reserved_connections", &[], &[MIXIN_ALERTS]),
    need("pg_settings_max_locks_per_transaction", &[], &[MIXIN_ALERTS, AWESOME]),
    need("pg_settings_autovacuum_vacuum_scale_factor", &[], &[MIXIN_ALERTS]),
    need("pg_settings_autovacuum_vacuum_threshold", &[], &[MIXIN_ALERTS, AWESOME]),
    need("pg_settings_autovacuum_analyze_threshold", &[], &[AWESOME]),
    need(
        "pg_stat_database_xact_commit",
        &["datname", "datid"],
        &[MIXIN_ALERTS, MIXIN_DASHBOARD, AWESOME],
    ),
    need(
        "pg_stat_database_xact_rollback",
        &["datname", "datid"],
        &[MIXIN_ALERTS, MIXIN_DASHBOARD, AWESOME],
    ),
    need(
        "pg_stat_database_blks_hit",
        &["datname"],
        &[MIXIN_ALERTS, MIXIN_DASHBOARD],
    ),
    need(
        "pg_stat_database_blks_read",
        &["datname"],
        &[MIXIN_ALERTS, MIXIN_DASHBOARD],
    ),
    need(
        "pg_stat_database_deadlocks",
        &["datname"],
        &[MIXIN_ALERTS, MIXIN_DASHBOARD, AWESOME],
    ),
    need("pg_stat_database_numbackends", &["datname"], &[MIXIN_DASHBOARD]),
    need("pg_stat_database_conflicts", &["datname"], &[MIXIN_DASHBOARD]),
    need("pg_stat_database_tup_fetched", &["datname"], &[MIXIN_DASHBOARD]),
    need("pg_stat_database_tup_returned", &["datname"], &[MIXIN_DASHBOARD]),
    need("pg_stat_database_tup_inserted", &["datname"], &[MIXIN_DASHBOARD]),
    need("pg_stat_database_tup_updated", &["datname"], &[MIXIN_DASHBOARD]),
    need("pg_stat_database_tup_deleted", &["datname"], &[MIXIN_DASHBOARD]),
    need("pg_locks_count", &["datname", "mode"], &[MIXIN_ALERTS, AWESOME]),
    need("pg_replication_is_replica", &[], &[MIXIN_ALERTS]),
    Need {
        on: On::Primary,
        ..need("pg_replication_slots_active", &["slot_name"], &[MIXIN_ALERTS, AWESOME])
    },
    need(
        "pg_stat_user_tables_n_dead_tup",
        &["datname", "relname"],
        &[MIXIN_ALERTS, AWESOME],
    ),
    need(
        "pg_stat_user_tables_n_live_tup",
        &["datname", "relname"],
        &[MIXIN_ALERTS, AWESOME],
    ),
    need("pg_stat_user_tables_n_tup_del", &["relname"], &[AWESOME]),
    need("pg_stat_user_tables_n_tup_upd", &["relname"], &[AWESOME]),
    need("pg_stat_user_tables_n_tup_hot_upd", &["relname"], &[AWESOME]),
    need("pg_stat_user_tables_last_autovacuum", &["relname"], &[AWESOME]),
    need("pg_stat_user_tables_last_autoanalyze", &["relname"], &[AWESOME]),
    need("pg_stat_bgwriter_buffers_alloc_total", &[], &[MIXIN_DASHBOARD]),
    need("pg_stat_bgwriter_buffers_clean_total", &[], &[MIXIN_DASHBOARD]),
    // PostgreSQL 17 moved these out of pg_stat_bgwriter: upstream's rules
    // and panels on them go blank there; pgsidecar's stat_checkpointer has
    // the checkpoint counters (below).
    Need {
        until: 170000,
        ..need("pg_stat_bgwriter_checkpoints_timed_total", &[], &[MIXIN_ALERTS])
    },
    Need {
        until: 170000,
        ..need("pg_stat_bgwriter_checkpoints_req_total", &[], &[MIXIN_ALERTS])
    },
    Need {
        until: 170000,
        ..need("pg_stat_bgwriter_buffers_backend_total", &[], &[MIXIN_DASHBOARD])
    },
    Need {
        until: 170000,
        ..need("pg_stat_bgwriter_buffers_backend_fsync_total", &[], &[MIXIN_DASHBOARD])
    },
    Need {
        until: 170000,
        ..need("pg_stat_bgwriter_buffers_checkpoint_total", &[], &[MIXIN_DASHBOARD])
    },
    Need {
        since: 170000,
        ..need(
            "pg_stat_checkpointer_num_timed_total",
            &[],
            &["pgsidecar, for the mixin's checkpoint alert on 17+"],
        )
    },
    Need {
        since: 170000,
        ..need(
            "pg_stat_checkpointer_num_requested_total",
            &[],
            &["pgsidecar, for the mixin's checkpoint alert on 17+"],
        )
    },
];

/// Names these rules use that postgres_exporter v0.20 does not export
/// either (they predate PostgreSQL 10, or come from users' own
/// queries.yaml): never expected.
pub const EXCEPTED: &[(&str, &str)] = &[
    ("pg_replication_lag", MIXIN_ALERTS),
    ("pg_xlog_position_bytes", MIXIN_ALERTS),
    ("pg_stat_replication_pg_xlog_location_diff", MIXIN_ALERTS),
    ("pg_replication_slots_xmin_age", MIXIN_ALERTS),
    ("pg_txid_current", AWESOME),
    ("postgresql_errors_total", AWESOME),
    ("pg_stat_ssl_compression", AWESOME),
    ("pg_bloat_btree_bloat_pct", AWESOME),
    ("pg_bloat_table_bloat_pct", AWESOME),
    ("pg_general_index_info_pg_relation_size", AWESOME),
];

/// What is missing from a scrape of a primary or (`standby`) a standby.
fn missing(m: &Metrics, version: i32, standby: bool) -> Vec<String> {
    NEEDS
        .iter()
        .filter(|n| version >= n.since && (n.until == 0 || version < n.until))
        .filter(|n| !standby || n.on == On::Both)
        .filter(|n| {
            !m.samples
                .iter()
                .any(|s| s.name == n.name && n.labels.iter().all(|l| s.labels.contains_key(*l)))
        })
        .map(|n| format!("{}{:?} (used by {})", n.name, n.labels, n.from.join(", ")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_names_existing_rules_and_dashboards_use_are_all_there() {
    let (primary, standby) = pg::replicated();
    let c = primary.connect("postgres", "it-compat").await;
    let version: i32 = c
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    for (cluster, standby) in [(primary, false), (standby, true)] {
        let px = start(&test_yaml(&cluster.dsn("postgres"), "")).await;
        let default = crate::support::default_collectors();
        let m = until(px.addr, WAIT, "every default collector ran", |m| {
            (m.all("pg_scrape_collector_success", &[]).len() == default
                && m.all("pg_scrape_collector_success", &[]).iter().all(|s| s.value == 1.0))
            .then(|| m.clone())
        })
        .await;
        let gone = missing(&m, version, standby);
        assert!(
            gone.is_empty(),
            "missing on the {}:\n{}\n{}",
            if standby { "standby" } else { "primary" },
            gone.join("\n"),
            m.text
        );
        for (name, _) in EXCEPTED {
            assert!(!m.has(name), "{name} is listed as excepted but exported");
        }
        px.stop().await.unwrap();
    }
}

/// The check itself can fail: a scrape without a name, or with the name
/// but not its grouping label, is reported.
#[test]
fn a_missing_name_or_label_is_reported() {
    let m = Metrics::parse("pg_up 1\npg_locks_count{mode=\"sharelock\"} 0\n");
    let gone = missing(&m, 160000, false);
    assert!(
        gone.iter()
            .any(|g| g.starts_with("pg_locks_count[\"datname\", \"mode\"]")),
        "{gone:?}"
    );
    assert!(!gone.iter().any(|g| g.starts_with("pg_up[")), "{gone:?}");
    assert!(
        gone.iter()
            .any(|g| g.starts_with("pg_stat_bgwriter_checkpoints_req_total"))
    );
    assert!(
        !missing(&m, 170000, false)
            .iter()
            .any(|g| g.starts_with("pg_stat_bgwriter_checkpoints_req_total"))
    );
}
