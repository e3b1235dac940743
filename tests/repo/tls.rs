//! TLS to Postgres through rustls: each sslmode against a real server with a
//! certificate made by `openssl` for this test.

use std::path::Path;

use crate::support::certs;
use crate::support::pg::{self, Cluster};
use crate::support::scrape::{get, until, until_pg_up};
use crate::support::{WAIT, start, test_yaml};

/// A CA, a server certificate for DNS name `localhost` signed by it, and an
/// unrelated second CA.
fn make_certs(dir: &Path) {
    certs::ca(dir, "ca");
    certs::ca(dir, "other-ca");
    certs::leaf(dir, "server", "ca", "subjectAltName = DNS:localhost\n");
}

fn yaml(port: u16, host: &str, sslmode: &str, rootcert: Option<&Path>) -> String {
    let mut dsn = format!("host={host} port={port} user=postgres dbname=postgres sslmode={sslmode}");
    if let Some(r) = rootcert {
        dsn.push_str(&format!(" sslrootcert={}", r.display()));
    }
    test_yaml(
        &dsn,
        "collectors:\n  settings:\n    enabled: false\n  database:\n    enabled: false\n  stat_database_conflicts:\n    enabled: false\n",
    )
}

async fn expect_up(yaml: &str) {
    let px = start(yaml).await;
    let m = until(px.addr, WAIT, "pg_up 1 over TLS", |m| {
        (m.get("pg_up", &[]) == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pg_settings_ssl", &[]), None, "settings is disabled here");
    px.stop().await.unwrap();
}

async fn expect_error(yaml: &str, fragment: &str) {
    let px = start(yaml).await;
    until(px.addr, WAIT, "postmaster failed", |m| {
        m.get("pg_scrape_collector_success", &[("collector", "postmaster")])
            .filter(|v| *v == 0.0)
    })
    .await;
    let page = get(px.addr, "/").await.text();
    assert!(
        page.contains(fragment),
        "expected {fragment:?} on the status page:\n{page}"
    );
    assert_eq!(get(px.addr, "/metrics").await.status, 200);
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_against_a_tls_server() {
    let cluster = Cluster::init();
    let certs = cluster.dir().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    cluster.enable_tls(&certs.join("server.crt"), &certs.join("server.key"));
    cluster.start();
    let (ca, other) = (certs.join("ca.pem"), certs.join("other-ca.pem"));
    let port = cluster.port();

    // verify-full: chain and host name both check out.
    expect_up(&yaml(port, "localhost", "verify-full", Some(&ca))).await;
    let admin = cluster.connect("postgres", "it-tls").await;
    // verify-ca: the chain is enough, the name (an IP here) is not checked.
    expect_up(&yaml(port, "127.0.0.1", "verify-ca", Some(&ca))).await;
    // require without a root certificate: encrypted, not verified. Under an
    // application name of its own, so that the sessions counted are this
    // pgsidecar's, not those the two before may have left for a moment.
    let require = yaml(port, "127.0.0.1", "require", None)
        .replace("datasource:\n", "datasource:\n  application_name: it-tls-require\n");
    let px = start(&require).await;
    until_pg_up(px.addr, WAIT, 1.0).await;
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE ssl), count(*) FILTER (WHERE NOT ssl) \
             FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'it-tls-require'",
            &[],
        )
        .await
        .unwrap();
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(encrypted >= 1, "pgsidecar's sessions should use TLS");
    assert_eq!(plain, 0, "pgsidecar sessions without TLS");
    px.stop().await.unwrap();

    // verify-full refuses a certificate for another name, and one from another CA.
    expect_error(&yaml(port, "127.0.0.1", "verify-full", Some(&ca)), "not valid for").await;
    expect_error(&yaml(port, "localhost", "verify-full", Some(&other)), "UnknownIssuer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_fails_clearly() {
    let cluster = pg::shared();
    expect_error(
        &yaml(cluster.port(), "127.0.0.1", "require", None),
        "server does not support TLS",
    )
    .await;
}
