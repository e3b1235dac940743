//! `--web.config.file` (the exporter-toolkit's format) with real parts:
//! certificates made here by `openssl`, the pgsidecar binary, a real
//! Prometheus scraping it over HTTPS with basic auth (and failing without:
//! the target shows 401), curl with client certificates against
//! RequireAndVerifyClientCert, the file changed while running, a bad file at
//! start, and credentials that never reach the log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::certs::{self, leaf};
use crate::support::process::Proc;
use crate::support::{WAIT, eventually, pg, test_yaml};

const PASSWORD: &str = "Scrape-4u7Q-pass";
const WRONG: &str = "Guess-9zX2-wrong";

/// A fresh directory for one test.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsidecar-web-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `ca.pem`/`ca.key` and `other-ca.*`, a server certificate for 127.0.0.1
/// and localhost signed by the first, two client certificates signed by the
/// first (`client.*` for DNS:prometheus.example, `scraper.*` for
/// DNS:scraper.example and a URI) and one signed by the other (`stranger.*`).
fn make_certs(dir: &Path) {
    certs::ca(dir, "ca");
    certs::ca(dir, "other-ca");
    leaf(dir, "server", "ca", "subjectAltName = IP:127.0.0.1, DNS:localhost\n");
    leaf(
        dir,
        "client",
        "ca",
        "extendedKeyUsage = clientAuth\nsubjectAltName = DNS:prometheus.example\n",
    );
    leaf(
        dir,
        "scraper",
        "ca",
        "extendedKeyUsage = clientAuth\nsubjectAltName = DNS:scraper.example, URI:spiffe://example/scraper\n",
    );
    leaf(dir, "stranger", "other-ca", "extendedKeyUsage = clientAuth\n");
}

fn bcrypt(password: &str) -> String {
    // Cost 4 keeps the test fast; the format is the one htpasswd -B writes.
    bcrypt::hash(password, 4).unwrap()
}

/// Starts the binary on the shared cluster (collecting every second) with
/// `web.yml` of `dir` and extra flags.
async fn start(dir: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let config = dir.join("pgsidecar.yaml");
    std::fs::write(&config, test_yaml(&pg::shared().dsn("postgres"), "")).unwrap();
    Proc::pgsidecar(
        Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
            .arg("--config.file")
            .arg(&config)
            .arg("--web.config.file")
            .arg(dir.join("web.yml"))
            .args(extra)
            .env_remove("DATA_SOURCE_NAME"),
        "pgsidecar",
        &dir.join("pgsidecar.log"),
    )
    .await
}

/// What curl got: the status code (0 when no HTTP response came), the body
/// and what curl said on stderr.
struct Curl {
    status: u16,
    body: String,
    error: String,
    headers: String,
}

/// `curl https://127.0.0.1:PORT{path}` trusting `dir/ca.pem`, with `args`.
fn curl(dir: &Path, addr: SocketAddr, path: &str, args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .current_dir(dir)
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            "ca.pem",
            "-D",
            "headers.txt",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .arg(format!("https://{addr}{path}"))
        .output()
        .unwrap_or_else(|e| panic!("run curl (Debian package curl): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        error: String::from_utf8_lossy(&out.stderr).into_owned(),
        headers: std::fs::read_to_string(dir.join("headers.txt")).unwrap_or_default(),
    }
}

/// `pgsidecar EXTRA --web.config.file WEB` with a DSN of a port where
/// nothing listens: the exit code and what it printed on stderr.
fn config_check(web: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .args(extra)
        .arg("--web.config.file")
        .arg(web)
        .env("DATA_SOURCE_NAME", "host=127.0.0.1 port=1 user=u dbname=d")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn pg_up(body: &str) -> Option<f64> {
    crate::support::scrape::Metrics::parse(body).get("pg_up", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_https_with_basic_auth_and_gets_401_without() {
    let dir = workdir("prometheus");
    make_certs(&dir);
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {}\n",
            bcrypt(PASSWORD)
        ),
    )
    .unwrap();
    let (px, addr) = start(&dir, &[]).await;
    let ca = dir.join("ca.pem");
    let target = format!("static_configs:\n      - targets: ['{addr}']");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n\
             \x20 - job_name: with-auth\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: prometheus\n      password: {PASSWORD}\n    {target}\n\
             \x20 - job_name: without-auth\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    {target}\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    let (prom, prom_addr) = crate::e2e::start_prometheus(&dir).await;

    // Each job's target as Prometheus reports it: health and last error.
    let targets = async || {
        let r = crate::support::scrape::get(prom_addr, "/api/v1/targets").await;
        let v: serde_json::Value = serde_json::from_str(&r.text()).map_err(|e| e.to_string())?;
        let mut out = std::collections::BTreeMap::new();
        for t in v["data"]["activeTargets"].as_array().into_iter().flatten() {
            let job = t["labels"]["job"].as_str().unwrap_or_default().to_string();
            let state = (
                t["health"].as_str().unwrap_or_default().to_string(),
                t["lastError"].as_str().unwrap_or_default().to_string(),
            );
            out.insert(job, state);
        }
        Ok::<_, String>(out)
    };
    let seen = eventually(WAIT, "both targets scraped", async || {
        let t = targets().await?;
        let done = |job: &str| t.get(job).is_some_and(|(health, _)| health != "unknown");
        if done("with-auth") && done("without-auth") {
            Ok(t)
        } else {
            Err(format!("{t:?}"))
        }
    })
    .await;
    assert_eq!(seen["with-auth"].0, "up", "{seen:?}");
    assert_eq!(seen["without-auth"].0, "down", "{seen:?}");
    assert!(seen["without-auth"].1.contains("401"), "{seen:?}");

    // And the data arrived: pg_up through the authenticated job.
    eventually(WAIT, "pg_up 1 in Prometheus", async || {
        let r = crate::support::scrape::get(prom_addr, "/api/v1/query?query=pg_up%7Bjob%3D%22with-auth%22%7D").await;
        let v: serde_json::Value = serde_json::from_str(&r.text()).map_err(|e| e.to_string())?;
        match v["data"]["result"][0]["value"][1].as_str() {
            Some("1") => Ok(()),
            _ => Err(r.text()),
        }
    })
    .await;
    drop(prom);
    let log = px.log();
    assert!(
        log.contains("msg=\"serving HTTP\" tls=true http2=false basic_auth=true"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
    drop(px);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified() {
    let dir = workdir("mtls");
    make_certs(&dir);
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    )
    .unwrap();
    let (px, addr) = start(&dir, &[]).await;
    let good = ["--cert", "client.crt", "--key", "client.key"];
    let got = eventually(WAIT, "pg_up 1 with a client certificate", async || {
        let r = curl(&dir, addr, "/metrics", &good);
        match (r.status, pg_up(&r.body)) {
            (200, Some(1.0)) => Ok(r),
            _ => Err(format!("{} {}{}", r.status, r.error, r.body)),
        }
    })
    .await;
    assert!(got.body.contains("pg_scrape_collector_success"));

    // Without a certificate, and with one from another CA: no HTTP at all.
    let none = curl(&dir, addr, "/metrics", &[]);
    assert_eq!(none.status, 0, "{}", none.body);
    assert!(none.error.contains("certificate required"), "{}", none.error);
    let stranger = curl(
        &dir,
        addr,
        "/metrics",
        &["--cert", "stranger.crt", "--key", "stranger.key"],
    );
    assert_eq!(stranger.status, 0, "{}", stranger.body);
    assert!(stranger.error.contains("unknown ca"), "{}", stranger.error);
    // The other endpoints too.
    assert_eq!(curl(&dir, addr, "/healthz", &[]).status, 0);
    assert_eq!(curl(&dir, addr, "/healthz", &good).status, 200);

    // client_allowed_sans, applied by a reload: only the scraper's name passes.
    let scraper = ["--cert", "scraper.crt", "--key", "scraper.key"];
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    std::fs::write(
        dir.join("web.yml"),
        format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  client_allowed_sans: [spiffe://example/scraper]\n"),
    )
    .unwrap();
    eventually(WAIT, "the client without the allowed SAN refused", async || {
        let r = curl(&dir, addr, "/healthz", &good);
        if r.status == 0 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.error))
        }
    })
    .await;
    assert_eq!(curl(&dir, addr, "/healthz", &scraper).status, 200);
    assert_eq!(
        curl(
            &dir,
            addr,
            "/healthz",
            &["--cert", "stranger.crt", "--key", "stranger.key"]
        )
        .status,
        0
    );

    // RequireAnyClientCert: any certificate, checked against no CA, but one is needed.
    std::fs::write(
        dir.join("web.yml"),
        format!("{tls}  client_auth_type: RequireAnyClientCert\n"),
    )
    .unwrap();
    eventually(WAIT, "a certificate from another CA accepted", async || {
        let r = curl(
            &dir,
            addr,
            "/healthz",
            &["--cert", "stranger.crt", "--key", "stranger.key"],
        );
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.error))
        }
    })
    .await;
    assert_eq!(curl(&dir, addr, "/healthz", &[]).status, 0);
    drop(px);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Points `dir/live` at `dir/version` (holding `server.crt` and
/// `server.key`), replacing the link in one rename, as Kubernetes updates a
/// mounted secret.
fn publish(dir: &Path, version: &str) {
    let tmp = dir.join("live.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("live")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_applies_without_restart_and_a_bad_one_keeps_the_old() {
    let dir = workdir("reload");
    make_certs(&dir);
    leaf(&dir, "rotated", "ca", "subjectAltName = IP:127.0.0.1\n");
    for (version, name) in [("v1", "server"), ("v2", "rotated")] {
        std::fs::create_dir_all(dir.join(version)).unwrap();
        for ext in ["crt", "key"] {
            std::fs::copy(
                dir.join(format!("{name}.{ext}")),
                dir.join(version).join(format!("server.{ext}")),
            )
            .unwrap();
        }
    }
    publish(&dir, "v1");
    let web = dir.join("web.yml");
    let tls = "tls_server_config:\n  cert_file: live/server.crt\n  key_file: live/server.key\n";
    std::fs::write(
        &web,
        format!("{tls}basic_auth_users:\n  alice: {}\n", bcrypt("first-Pw1")),
    )
    .unwrap();
    let (px, addr) = start(&dir, &[]).await;
    let pid = px.id();
    assert_eq!(curl(&dir, addr, "/healthz", &["-u", "alice:first-Pw1"]).status, 200);
    assert_eq!(curl(&dir, addr, "/healthz", &["-u", "alice:second-Pw2"]).status, 401);

    // New password and a header: applied while running.
    std::fs::write(
        &web,
        format!(
            "{tls}basic_auth_users:\n  alice: {}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            bcrypt("second-Pw2")
        ),
    )
    .unwrap();
    let r = eventually(WAIT, "the new password accepted", async || {
        let r = curl(&dir, addr, "/metrics", &["-u", "alice:second-Pw2"]);
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.error))
        }
    })
    .await;
    assert!(
        r.headers.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{}",
        r.headers
    );
    assert_eq!(curl(&dir, addr, "/healthz", &["-u", "alice:first-Pw1"]).status, 401);

    // A rotated certificate (the file itself unchanged): new connections get it.
    let subject = |r: &Curl| {
        r.error
            .lines()
            .find(|l| l.contains("subject:"))
            .unwrap_or_default()
            .to_string()
    };
    let before = curl(&dir, addr, "/healthz", &["-u", "alice:second-Pw2", "-v"]);
    assert!(subject(&before).contains("pgsidecar test server"), "{}", before.error);
    publish(&dir, "v2");
    eventually(WAIT, "the rotated certificate served", async || {
        let r = curl(&dir, addr, "/healthz", &["-u", "alice:second-Pw2", "-v"]);
        if subject(&r).contains("pgsidecar test rotated") {
            Ok(())
        } else {
            Err(r.error)
        }
    })
    .await;

    // A bad file: logged once, the previous configuration stays, the endpoint stays up.
    let invalid = "the web configuration file is invalid; keeping the previous one";
    assert_eq!(px.log().matches(invalid).count(), 0, "{}", px.log());
    std::fs::write(&web, format!("{tls}basic_auth_users:\n  alice: not-a-hash\n  bob: [\n")).unwrap();
    eventually(WAIT, "the bad file reported", async || {
        let log = px.log();
        if log.contains(invalid) { Ok(()) } else { Err(log) }
    })
    .await;
    // Over several reload checks, the old password keeps working and the
    // problem is not logged again.
    let until = std::time::Instant::now() + 3 * RELOAD_CHECK;
    while std::time::Instant::now() < until {
        assert_eq!(curl(&dir, addr, "/healthz", &["-u", "alice:second-Pw2"]).status, 200);
    }
    let log = px.log();
    assert_eq!(log.matches(invalid).count(), 1, "{log}");
    assert!(log.contains("invalid YAML"), "{log}");

    // A certificate that cannot be read makes a bad file too ...
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: live/server.key\n",
    )
    .unwrap();
    eventually(WAIT, "the missing certificate reported", async || {
        let log = px.log();
        if log.contains("tls_server_config.cert_file: cannot read") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    assert_eq!(curl(&dir, addr, "/healthz", &["-u", "alice:second-Pw2"]).status, 200);
    // ... until it appears: then the file applies (and it has no users).
    std::fs::copy(dir.join("v2/server.crt"), dir.join("missing.crt")).unwrap();
    eventually(WAIT, "the fixed file applied", async || {
        let r = curl(&dir, addr, "/healthz", &[]);
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.error))
        }
    })
    .await;
    assert_eq!(pid, px.id(), "no restart");
    assert!(px.log().contains("web configuration reloaded"), "{}", px.log());
    drop(px);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How often pgsidecar checks the web configuration file for changes.
const RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Without TLS too: every endpoint needs the credentials (as in the
/// toolkit), and the rate limit answers 429 once its bucket is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_covers_every_endpoint_and_the_rate_limit_answers_429() {
    use base64::Engine;
    let dir = workdir("plain");
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "basic_auth_users:\n  prometheus: {}\nrate_limit:\n  interval: 1m\n  burst: 6\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            bcrypt(PASSWORD)
        ),
    )
    .unwrap();
    let (px, addr) = start(&dir, &[]).await;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("prometheus:{PASSWORD}"))
    );
    for path in ["/metrics", "/", "/healthz", "/readyz"] {
        let r = crate::support::scrape::get(addr, path).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Basic"), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
    }
    for _ in 0..2 {
        let r = crate::support::scrape::request(addr, "GET", "/healthz", &[("Authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Six tokens spent: the next request is refused before its credentials are checked.
    let r = crate::support::scrape::request(addr, "GET", "/healthz", &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        px.log().contains("tls=false http2=false basic_auth=true"),
        "{}",
        px.log()
    );
    drop(px);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_never_logged() {
    let dir = workdir("nolog");
    make_certs(&dir);
    let hash = bcrypt(PASSWORD);
    std::fs::write(
        dir.join("web.yml"),
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"),
    )
    .unwrap();
    let (px, addr) = start(&dir, &["--log.level", "debug"]).await;
    for (user, pass) in [("prometheus", WRONG), ("mallory-user", WRONG), ("prometheus", PASSWORD)] {
        let want = if pass == PASSWORD { 200 } else { 401 };
        let r = curl(&dir, addr, "/metrics", &["-u", &format!("{user}:{pass}")]);
        assert_eq!(r.status, want, "{user}: {}", r.error);
    }
    // A broken Authorization header, and a reload whose file has a bad hash
    // and a password pasted where a hash belongs.
    assert_eq!(
        curl(&dir, addr, "/", &["-H", &format!("Authorization: Basic {WRONG}")]).status,
        401
    );
    std::fs::write(
        dir.join("web.yml"),
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {WRONG}\n"),
    )
    .unwrap();
    eventually(WAIT, "the bad reload reported", async || {
        let log = px.log();
        if log.contains("basic_auth_users.prometheus: is not a bcrypt hash") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    let log = px.log();
    for secret in [WRONG, PASSWORD, &hash, "mallory-user"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    drop(px);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_example_file_loads() {
    let dir = workdir("example");
    make_certs(&dir);
    std::fs::copy(
        crate::support::root().join("examples/web-config.yml"),
        dir.join("web.yml"),
    )
    .unwrap();
    let (code, stderr) = config_check(&dir.join("web.yml"), &["--config.check"]);
    assert_eq!(code, Some(0), "{stderr}");
    let hash = std::fs::read_to_string(dir.join("web.yml")).unwrap();
    let hash = hash
        .lines()
        .find_map(|l| l.trim().strip_prefix("prometheus: "))
        .unwrap();
    let hash = hash.split_whitespace().next().unwrap();
    assert_eq!(
        bcrypt::verify("change-me", hash).ok(),
        Some(true),
        "the comment says the password"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_file_at_start_is_a_config_error_before_listening() {
    let dir = workdir("bad-start");
    make_certs(&dir);
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS11\nbasic_auth_users:\n  alice: \"$2y$10$not-a-real-hash\"\n",
    )
    .unwrap();
    // With --config.check, and when starting for real.
    for extra in [&["--config.check"][..], &["--web.listen-address", &addr]] {
        let (code, stderr) = config_check(&web, extra);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(!stderr.contains("listen on"), "it tried to listen first:\n{stderr}");
        let w = web.display();
        for want in [
            format!("{w}:6:3: tls_server_config.min_version: TLS11 is not supported by pgsidecar"),
            format!("{w}:8:3: basic_auth_users.alice: is not a bcrypt hash"),
        ] {
            assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
        }
        assert!(!stderr.contains("not-a-real-hash"), "{stderr}");
    }
    // With the version fixed, the key that does not fit the certificate is found.
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
    )
    .unwrap();
    let (code, stderr) = config_check(&web, &["--config.check"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("tls_server_config.key_file: the private key does not fit the certificate in cert_file"),
        "{stderr}"
    );
    // And a good file passes the check.
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let (code, stderr) = config_check(&web, &["--config.check"]);
    assert_eq!(code, Some(0), "{stderr}");
    drop(held);
    std::fs::remove_dir_all(&dir).unwrap();
}
