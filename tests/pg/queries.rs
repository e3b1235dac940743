//! Custom queries (`queries:`, `--extend.query-path`) against a real server:
//! `examples/queries.yaml` runs on this version; a `queries.yaml` covering
//! every usage gives the series Debian's `prometheus-postgres-exporter`
//! gives with the same file (names, labels, values); and each run-time
//! failure (too many rows, a value that is not a number, duplicate label
//! sets, a failing query) fails only its own collector, with its message on
//! the status page, while a query outside its `runonserver` range is
//! unavailable with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use pgsidecar::config::Flags;

use crate::support::pg::{self, Cluster};
use crate::support::scrape::{Metrics, get, until};
use crate::support::{WAIT, eventually, root, test_yaml};

/// pgsidecar with this YAML and `--extend.query-path`.
async fn start_with(yaml: &str, extend: Option<&str>) -> pgsidecar::Running {
    let flags = Flags {
        extend_query_path: extend.map(str::to_string),
        ..Flags::default()
    };
    let config = pgsidecar::config_from_yaml(yaml, "test.yaml", &flags, &BTreeMap::<String, String>::new())
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"));
    pgsidecar::Running::start(config).await.expect("start pgsidecar")
}

/// Only what these tests look at: the other collectors off.
const QUIET: &str = "collectors:\n  database:\n    enabled: false\n";

fn success(m: &Metrics, collector: &str) -> Option<f64> {
    m.get("pg_scrape_collector_success", &[("collector", collector)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_file_runs_on_this_server() {
    let cluster = pg::shared();
    let db = crate::support::fixture::create_app_db(cluster, "queries_example_db").await;
    db.batch_execute("UPDATE saved_words SET next_review_date = current_date - 1 WHERE id % 2 = 0")
        .await
        .unwrap();
    let example = root().join("examples/queries.yaml");
    let px = start_with(
        &test_yaml(&cluster.dsn("queries_example_db"), QUIET),
        Some(example.to_str().unwrap()),
    )
    .await;
    let names = [
        "pg_table_bloat",
        "pg_prepared_transactions",
        "pg_sequence_usage",
        "mluvme_users",
        "mluvme_words",
    ];
    let m = until(px.addr, WAIT, "every example query run", |m| {
        names
            .iter()
            .all(|n| success(m, &format!("query:{n}")).is_some())
            .then(|| m.clone())
    })
    .await;
    for n in names {
        assert_eq!(
            success(&m, &format!("query:{n}")),
            Some(1.0),
            "query:{n}\n{}",
            get(px.addr, "/").await.text()
        );
    }
    let users: f64 = ["beginner", "intermediate", "advanced"]
        .iter()
        .map(|l| m.get("mluvme_users_count", &[("level", l)]).unwrap())
        .sum();
    assert_eq!(users, 200.0);
    let saved: i64 = db
        .query_one("SELECT count(*) FROM saved_words", &[])
        .await
        .unwrap()
        .get(0);
    let due: i64 = db
        .query_one(
            "SELECT count(*) FROM saved_words WHERE next_review_date <= current_date",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(due > 0);
    assert_eq!(m.get("mluvme_words_saved", &[]), Some(saved as f64));
    assert_eq!(m.get("mluvme_words_due_for_review", &[]), Some(due as f64));
    assert_eq!(m.get("pg_prepared_transactions_count", &[]), Some(0.0));
    assert_eq!(
        m.get("pg_prepared_transactions_oldest_age_milliseconds", &[]),
        Some(0.0)
    );
    let messages = [("schemaname", "public"), ("relname", "messages")];
    assert!(m.get("pg_table_bloat_size_bytes", &messages).unwrap() > 0.0);
    // The fixture's serial sequences have been used; the role is the superuser.
    let seq = [("schemaname", "public"), ("sequencename", "users_id_seq")];
    assert_eq!(m.get("pg_sequence_usage_last_value", &seq), Some(200.0));
    assert_eq!(m.get("pg_sequence_usage_max_value", &seq), Some(2147483647.0));
    let ratio = m.get("pg_sequence_usage_used_ratio", &seq).unwrap();
    assert!((ratio - 199.0 / 2147483646.0).abs() < 1e-12, "{ratio}");
    px.stop().await.unwrap();
}

/// A queries.yaml a team would write, covering every usage kind, with no
/// NULL values (postgres_exporter exports NULL as NaN, pgsidecar leaves the
/// sample out).
const PEER_QUERIES: &str = r#"
shop_orders:
  query: |
    SELECT status,
           count(*) AS orders,
           sum(amount) AS amount_total,
           'internal' AS note,
           CASE WHEN count(*) > 2 THEN 'busy' ELSE 'quiet' END AS load,
           (extract(epoch FROM max(created_at) - min(created_at))::bigint || 's') AS span,
           max(priority) AS max_priority,
           bool_or(express) AS any_express
    FROM orders GROUP BY status
  metrics:
    - status:
        usage: "LABEL"
        description: "Order status"
    - orders:
        usage: "GAUGE"
        description: "Orders in this status"
    - amount_total:
        usage: "COUNTER"
        description: "Sum of the orders' amounts"
    - note:
        usage: "DISCARD"
        description: "Not exported"
    - load:
        usage: "MAPPEDMETRIC"
        description: "1 when busy"
        metric_mapping:
          busy: 1
          quiet: 0
    - span:
        usage: "DURATION"
        description: "Time between the first and the last order"
    - any_express:
        usage: "GAUGE"
        description: "Whether an order is express"
shop_settings:
  query: "SELECT name AS setting, setting::float8 AS value FROM pg_settings WHERE name IN ('max_connections', 'shared_buffers')"
  # pgsidecar's keys, which postgres_exporter ignores.
  interval: 2s
  timeout: 1s
  max_series: 10
  metrics:
    - setting:
        usage: "LABEL"
        description: "Setting name"
    - value:
        usage: "GAUGE"
        description: "Setting value"
"#;

/// A child process killed when dropped, also when the test fails first.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sample: name, labels, value as text.
type Series = (String, Vec<(String, String)>, String);

/// The custom series of a scrape: name, labels (without postgres_exporter's
/// `server`), value.
fn custom(m: &Metrics) -> BTreeSet<Series> {
    m.samples
        .iter()
        .filter(|s| s.name.starts_with("shop_"))
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "server")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (s.name.clone(), labels, s.value.to_string())
        })
        .collect()
}

/// The families' types, from the `# TYPE` lines.
fn types(m: &Metrics) -> BTreeMap<String, String> {
    m.text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE shop_"))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (format!("shop_{n}"), t.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_series_as_postgres_exporter() {
    let cluster = pg::shared();
    let db = make_shop(cluster).await;
    drop(db);
    let dir = tempfile_dir("queries_peer");
    let file = dir.join("queries.yaml");
    std::fs::write(&file, PEER_QUERIES).unwrap();

    let port = free_port();
    let log = std::fs::File::create(dir.join("postgres_exporter.log")).unwrap();
    let dsn = format!(
        "postgresql://postgres@127.0.0.1:{}/queries_shop_db?sslmode=disable",
        cluster.port()
    );
    let peer = Killed(
        Command::new("prometheus-postgres-exporter")
            .arg(format!("--extend.query-path={}", file.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--disable-default-metrics", "--disable-settings-metrics"])
            .args(["--no-collector.database", "--no-collector.bgwriter"])
            .env("DATA_SOURCE_NAME", &dsn)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus-postgres-exporter (Debian's package; scripts/test installs it)"),
    );
    let peer_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let theirs = eventually(WAIT, "postgres_exporter's custom series", async || {
        if let Err(e) = tokio::net::TcpStream::connect(peer_addr).await {
            return Err(format!("postgres_exporter on {peer_addr}: {e}"));
        }
        let m = Metrics::parse(&get(peer_addr, "/metrics").await.text());
        // It answers before its first run of the queries has finished.
        if m.has("shop_orders_orders") && m.has("shop_settings_value") {
            Ok(m)
        } else {
            Err(format!("no custom series yet:\n{}", m.text))
        }
    })
    .await;
    drop(peer);

    let px = start_with(
        &test_yaml(&cluster.dsn("queries_shop_db"), QUIET),
        Some(file.to_str().unwrap()),
    )
    .await;
    let ours = until(px.addr, WAIT, "pgsidecar's custom series", |m| {
        (m.has("shop_orders_orders") && m.has("shop_settings_value")).then(|| m.clone())
    })
    .await;
    // Debian's 0.11.1 reads every mapped column as a number, so its
    // MAPPEDMETRIC and DURATION columns give no sample (it logs
    // "Unexpected error parsing column"); pgsidecar converts them as
    // upstream's column mapping defines (a text looked up in the mapping, a
    // Go duration in whole milliseconds). Those two are compared with the
    // definition below, the rest with the peer.
    let peer_log = std::fs::read_to_string(dir.join("postgres_exporter.log")).unwrap_or_default();
    let mapped = ["shop_orders_load", "shop_orders_span_milliseconds"];
    for (name, column) in [("shop_orders_load", "load"), ("shop_orders_span_milliseconds", "span")] {
        if theirs.has(name) {
            assert_eq!(ours.all(name, &[]).len(), theirs.all(name, &[]).len(), "{name}");
        } else {
            assert!(
                peer_log.contains(&format!("Unexpected error parsing column:  shop_orders {column}")),
                "{name}: no sample from postgres_exporter, and no error in its log:\n{peer_log}"
            );
        }
    }
    let without = |m: &Metrics| {
        let mut set = custom(m);
        set.retain(|(n, _, _)| !mapped.contains(&n.as_str()) || theirs.has(n));
        set
    };
    assert_eq!(
        without(&ours),
        without(&theirs),
        "pgsidecar's custom series (left) against postgres_exporter's (right)\n{peer_log}"
    );
    let (ours_t, theirs_t) = (types(&ours), types(&theirs));
    for (name, t) in &theirs_t {
        assert_eq!(ours_t.get(name), Some(t), "the type of {name}");
    }
    // postgres_exporter labels its custom series with the server it
    // scraped; pgsidecar watches one server, which Prometheus's `instance`
    // names already.
    let peer_sample = theirs.all("shop_orders_orders", &[("status", "open")]);
    assert!(peer_sample[0].labels.contains_key("server"), "{peer_sample:?}");
    assert!(!ours.all("shop_orders_orders", &[])[0].labels.contains_key("server"));
    assert_eq!(ours.get("shop_orders_load", &[("status", "open")]), Some(1.0));
    assert_eq!(ours.get("shop_orders_load", &[("status", "shipped")]), Some(0.0));
    // What the comparison covers: every usage kind gave a series.
    for name in [
        "shop_orders_orders",
        "shop_orders_amount_total",
        "shop_orders_load",
        "shop_orders_span_milliseconds",
        "shop_orders_any_express",
        "shop_orders_max_priority",
    ] {
        assert!(ours.has(name), "{name}");
    }
    assert!(!ours.has("shop_orders_note"));
    assert_eq!(
        ours.get("shop_orders_span_milliseconds", &[("status", "open")]),
        Some(7_200_000.0)
    );
    px.stop().await.unwrap();
}

async fn make_shop(cluster: &Cluster) -> tokio_postgres::Client {
    let admin = cluster.connect("postgres", "it-fixture").await;
    admin
        .batch_execute("DROP DATABASE IF EXISTS queries_shop_db WITH (FORCE)")
        .await
        .unwrap();
    admin.batch_execute("CREATE DATABASE queries_shop_db").await.unwrap();
    let db = cluster.connect("queries_shop_db", "it-fixture").await;
    db.batch_execute(
        "CREATE TABLE orders (id serial PRIMARY KEY, status text NOT NULL, amount numeric(10,2) NOT NULL, \
         priority int NOT NULL, express bool NOT NULL, created_at timestamptz NOT NULL); \
         INSERT INTO orders (status, amount, priority, express, created_at) VALUES \
         ('open', 10.50, 1, false, '2026-01-01 10:00+00'), ('open', 20.25, 3, true, '2026-01-01 11:00+00'), \
         ('open', 5, 2, false, '2026-01-01 12:00+00'), ('shipped', 99.99, 5, false, '2026-01-02 08:00+00')",
    )
    .await
    .unwrap();
    db
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsidecar-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_fails_only_its_collector() {
    let cluster = pg::shared();
    let admin = cluster.connect("postgres", "it-fixture").await;
    admin
        .batch_execute("DROP DATABASE IF EXISTS queries_fail_db WITH (FORCE)")
        .await
        .unwrap();
    admin.batch_execute("CREATE DATABASE queries_fail_db").await.unwrap();
    let db = cluster.connect("queries_fail_db", "it-fixture").await;
    // A function that writes, which the lexer cannot see through: the
    // read-only transaction refuses it.
    db.batch_execute(
        "CREATE TABLE hits (n int); \
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'INSERT INTO hits VALUES (1) RETURNING 1'",
    )
    .await
    .unwrap();
    let yaml = format!(
        "{QUIET}queries:\n\
         \x20 q_rows:\n    query: SELECT g AS n, g AS v FROM generate_series(1, 5) g\n    max_series: 3\n    \
         metrics: [{{n: {{usage: LABEL}}}}, {{v: {{usage: GAUGE}}}}]\n\
         \x20 q_text:\n    query: SELECT 'lots' AS v\n    metrics: [{{v: {{usage: GAUGE}}}}]\n\
         \x20 q_dup:\n    query: SELECT 'a' AS k, g AS v FROM generate_series(1, 2) g\n    \
         metrics: [{{k: {{usage: LABEL}}}}, {{v: {{usage: GAUGE}}}}]\n\
         \x20 q_error:\n    query: SELECT 1 / (random() * 0)::int AS v\n    metrics: [{{v: {{usage: GAUGE}}}}]\n\
         \x20 q_write:\n    query: SELECT bump() AS v\n    metrics: [{{v: {{usage: GAUGE}}}}]\n\
         \x20 q_old:\n    query: SELECT 1 AS v\n    runonserver: '<9.6.0'\n    metrics: [{{v: {{usage: GAUGE}}}}]\n\
         \x20 q_comment:\n    query: SELECT 7 AS v -- a trailing comment\n    metrics: [{{v: {{usage: GAUGE}}}}]\n\
         \x20 q_null:\n    query: SELECT NULL::int AS v, 2 AS w\n    metrics: [{{v: {{usage: GAUGE}}}}, {{w: {{usage: GAUGE}}}}]\n"
    );
    let px = start_with(&test_yaml(&cluster.dsn("queries_fail_db"), &yaml), None).await;
    let m = until(px.addr, WAIT, "every query run", |m| {
        [
            "q_rows",
            "q_text",
            "q_dup",
            "q_error",
            "q_write",
            "q_null",
            "q_comment",
            "postmaster",
        ]
        .iter()
        .all(|n| {
            let c = if n.starts_with("q_") {
                format!("query:{n}")
            } else {
                n.to_string()
            };
            success(m, &c).is_some()
        })
        .then(|| m.clone())
    })
    .await;
    for n in ["q_rows", "q_text", "q_dup", "q_error", "q_write"] {
        assert_eq!(success(&m, &format!("query:{n}")), Some(0.0), "query:{n}");
    }
    assert_eq!(success(&m, "query:q_null"), Some(1.0));
    assert_eq!(
        m.get("q_comment_v", &[]),
        Some(7.0),
        "a trailing comment ends nothing but the query"
    );
    assert_eq!(
        success(&m, "postmaster"),
        Some(1.0),
        "the other collectors keep working"
    );
    assert!(m.has("pg_postmaster_start_time_seconds"));
    assert_eq!(m.get("q_null_w", &[]), Some(2.0));
    assert!(!m.has("q_null_v"), "a NULL value is no sample");
    assert!(!m.has("q_rows_v") && !m.has("q_dup_v"), "a failed run exports nothing");
    let reason = m.all("pgsidecar_collector_unavailable", &[("collector", "query:q_old")]);
    assert_eq!(reason.len(), 1, "{:?}", m.all("pgsidecar_collector_unavailable", &[]));
    assert!(
        reason[0].labels["reason"].contains("runonserver \"<9.6.0\" does not match the server's"),
        "{:?}",
        reason[0].labels
    );
    let page = get(px.addr, "/").await.text();
    for want in [
        "query:q_rows: the query returned more than its max_series 3 rows",
        "query:q_text: column v, row 1: the text ",
        " is not a number",
        "query:q_dup: rows 1 and 2 have the same labels {k=",
        "division by zero",
        "read-only transaction",
    ] {
        assert!(page.contains(want), "{want:?} not on the status page:\n{page}");
    }
    px.stop().await.unwrap();
}
