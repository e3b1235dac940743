//! `roles`: the connection limit of every role that may log in, from
//! `pg_roles`.
//!
//! Metrics, label `rolname` (postgres_exporter's name, type and label):
//! `pg_roles_connection_limit` gauge, the role's `CONNECTION LIMIT` (-1: no
//! limit). Roles that cannot log in are left out: a connection limit means
//! nothing for them, and on a server with many group roles they are most
//! of the list.
//!
//! Version gates: none. Works on a hot standby.

use super::Definition;
use super::table::{Column, Params, Table, label};

pub const DEFINITION: Definition = Definition::table("roles", TABLE);

const TABLE: Table = Table {
    from: "pg_roles WHERE rolcanlogin",
    labels: &[label("rolname")],
    columns: &[Column::gauge(
        "rolconnlimit",
        "pg_roles_connection_limit",
        "Connection limit set for the role (-1: none)",
    )
    .upstream()],
    params: Params::None,
};

#[cfg(test)]
mod tests {
    use super::super::table::Row;
    use super::*;
    use crate::metrics::value;

    #[test]
    fn limit_per_role() {
        let f = TABLE.families(130000, &[Row::new(&["app"], &[("rolconnlimit", 3.0)])]);
        assert_eq!(value(&f, "pg_roles_connection_limit", &["app"]), Some(3.0));
        assert!(TABLE.sql(130000).ends_with("FROM pg_roles WHERE rolcanlogin"));
    }
}
