//! `statio_user_indexes` (opt-in, as upstream): postgres_exporter's
//! collector of per-index block I/O, whose series pgsidecar's
//! `stat_user_indexes` already exports with the same names and labels
//! (`pg_statio_user_indexes_idx_blks_read_total`, `_idx_blks_hit_total`,
//! labels `schemaname`, `relname`, `indexrelname`).
//!
//! It runs nothing itself. Enabling it (in the config or with
//! `--collector.statio_user_indexes`) enables `stat_user_indexes` instead,
//! when the enabled set is built, so the series appear once, not twice.

use super::Definition;

pub const DEFINITION: Definition = Definition::covered_by("statio_user_indexes", "stat_user_indexes");
