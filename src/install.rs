//! `pgsidecar install` / `uninstall`: the small `pgsidecar` schema that
//! records materialized-view refreshes, which PostgreSQL itself does not.
//!
//! Two event triggers fire on `REFRESH MATERIALIZED VIEW` (plain and
//! `CONCURRENTLY`): at `ddl_command_start` one notes the time in a session
//! variable; at `ddl_command_end` the other writes the view's end time,
//! duration and refresh count to `pgsidecar.matview_refresh`. Both functions
//! are `SECURITY DEFINER`, so the role that refreshes needs no new privilege.
//! The SQL is idempotent and versioned (`pgsidecar.schema_version`), so a later
//! pgsidecar can upgrade it. Installing needs a superuser (event triggers do);
//! `--print-sql` prints it for teams that apply SQL through their migrations.
//!
//! These are the only statements pgsidecar runs that write; they run only on
//! the operator's command, in a session of their own.

/// The schema version this pgsidecar installs.
pub const SCHEMA_VERSION: i32 = 1;

pub const INSTALL_SQL: &str = r#"-- pgsidecar refresh log, schema version 1. Idempotent; run as a superuser.
CREATE SCHEMA IF NOT EXISTS pgsidecar;
COMMENT ON SCHEMA pgsidecar IS 'pgsidecar: records materialized view refreshes (pgsidecar uninstall removes it)';
CREATE TABLE IF NOT EXISTS pgsidecar.schema_version (version int NOT NULL);
CREATE TABLE IF NOT EXISTS pgsidecar.matview_refresh (
    schemaname name NOT NULL,
    matviewname name NOT NULL,
    last_refresh timestamptz NOT NULL,
    last_duration_seconds float8 NOT NULL,
    refreshes bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (schemaname, matviewname)
);

CREATE OR REPLACE FUNCTION pgsidecar.refresh_started() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM set_config('pgsidecar.refresh_started', clock_timestamp()::text, false);
END
$$;

CREATE OR REPLACE FUNCTION pgsidecar.refresh_ended() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    cmd record;
    started timestamptz := COALESCE(NULLIF(current_setting('pgsidecar.refresh_started', true), '')::timestamptz, clock_timestamp());
    ended timestamptz := clock_timestamp();
BEGIN
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'REFRESH MATERIALIZED VIEW' LOOP
        INSERT INTO pgsidecar.matview_refresh AS r (schemaname, matviewname, last_refresh, last_duration_seconds)
        SELECT n.nspname, c.relname, ended, extract(epoch FROM ended - started)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = cmd.objid
        ON CONFLICT (schemaname, matviewname) DO UPDATE
            SET last_refresh = EXCLUDED.last_refresh,
                last_duration_seconds = EXCLUDED.last_duration_seconds,
                refreshes = r.refreshes + 1;
    END LOOP;
END
$$;

DROP EVENT TRIGGER IF EXISTS pgsidecar_refresh_started;
CREATE EVENT TRIGGER pgsidecar_refresh_started ON ddl_command_start
    WHEN TAG IN ('REFRESH MATERIALIZED VIEW') EXECUTE FUNCTION pgsidecar.refresh_started();
DROP EVENT TRIGGER IF EXISTS pgsidecar_refresh_ended;
CREATE EVENT TRIGGER pgsidecar_refresh_ended ON ddl_command_end
    WHEN TAG IN ('REFRESH MATERIALIZED VIEW') EXECUTE FUNCTION pgsidecar.refresh_ended();

REVOKE ALL ON FUNCTION pgsidecar.refresh_started(), pgsidecar.refresh_ended() FROM PUBLIC;
GRANT USAGE ON SCHEMA pgsidecar TO PUBLIC;
GRANT SELECT ON pgsidecar.matview_refresh, pgsidecar.schema_version TO PUBLIC;
DELETE FROM pgsidecar.schema_version;
INSERT INTO pgsidecar.schema_version VALUES (1);
"#;

pub const UNINSTALL_SQL: &str = "-- Removes pgsidecar's refresh log. Run as a superuser.
DROP EVENT TRIGGER IF EXISTS pgsidecar_refresh_started;
DROP EVENT TRIGGER IF EXISTS pgsidecar_refresh_ended;
DROP SCHEMA IF EXISTS pgsidecar CASCADE;
";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Says the target and why (see `db::connect_dedicated`).
    #[error("{0}")]
    Connect(String),
    #[error("{action} in {target}: {message}")]
    Sql {
        action: &'static str,
        target: String,
        message: String,
    },
}

/// Runs `sql` in one transaction on a session of its own (read-write, but
/// bounded and named `pgsidecar-install`: see `db::admin_config`).
pub async fn apply(ds: &crate::config::Datasource, sql: &str, action: &'static str) -> Result<(), InstallError> {
    let target = ds.target();
    let (client, task) = crate::db::connect_dedicated(ds, &crate::db::admin_config(ds))
        .await
        .map_err(InstallError::Connect)?;
    let result = client
        .batch_execute(&format!("BEGIN;\n{sql}\nCOMMIT;"))
        .await
        .map_err(|e| InstallError::Sql {
            action,
            target: target.clone(),
            message: crate::db::scrub(ds.password().as_deref(), &crate::db::describe(&e)),
        });
    drop(client);
    let _ = task.await;
    result
}
