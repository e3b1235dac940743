//! The HTTP surface: status codes, content types, gzip, readiness, the
//! landing page, and the health metrics.

use crate::support::scrape::{Metrics, get, request, until, until_pg_up};
use crate::support::{WAIT, default_collectors, eventually, pg, shared_yaml, start, test_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_methods_and_unknown_paths() {
    let px = start(&shared_yaml()).await;
    let r = get(px.addr, "/healthz").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));

    until(px.addr, WAIT, "first runs", |m| {
        (m.all("pg_scrape_collector_success", &[]).len() == default_collectors()).then_some(())
    })
    .await;
    let r = get(px.addr, "/readyz").await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = get(px.addr, "/metrics").await;
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(r.header("content-encoding"), None);

    let r = get(px.addr, "/nope").await;
    assert_eq!(r.status, 404);
    let r = request(px.addr, "POST", "/metrics", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(px.addr, "DELETE", "/", &[]).await;
    assert_eq!(r.status, 405);
    let r = request(px.addr, "HEAD", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_is_served_when_accepted() {
    let px = start(&shared_yaml()).await;
    until_pg_up(px.addr, WAIT, 1.0).await;
    let r = request(px.addr, "GET", "/metrics", &[("Accept-Encoding", "gzip, deflate")]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let text = r.text();
    assert!(
        text.len() > 3 * r.body.len(),
        "gzip should shrink {} to well under a third, got {}",
        text.len(),
        r.body.len()
    );
    let m = Metrics::parse(&text);
    assert_eq!(m.get("pg_up", &[]), Some(1.0));
    // Regression: a weight of 0, or one that is not a qvalue, still got gzip.
    for refused in [
        "gzip;q=0",
        "gzip;Q=0",
        "gzip;q=-1",
        "gzip;q=nan",
        "*, gzip;q=0",
        "gzip;q=0, *",
    ] {
        let r = request(px.addr, "GET", "/metrics", &[("Accept-Encoding", refused)]).await;
        assert_eq!(r.header("content-encoding"), None, "Accept-Encoding: {refused}");
        assert!(Metrics::parse(&r.text()).has("pg_up"));
    }
    for accepted in ["*", "x-gzip", "identity;q=0.5, gzip;q=0.1"] {
        let r = request(px.addr, "GET", "/metrics", &[("Accept-Encoding", accepted)]).await;
        assert_eq!(
            r.header("content-encoding"),
            Some("gzip"),
            "Accept-Encoding: {accepted}"
        );
    }
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_landing_page() {
    let px = start(&shared_yaml()).await;
    let m = until(px.addr, WAIT, "all collectors succeeded", |m| {
        let ok = m.all("pg_scrape_collector_success", &[]);
        (ok.len() == default_collectors() && ok.iter().all(|s| s.value == 1.0)).then(|| m.clone())
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for c in [
        "postmaster",
        "settings",
        "stat_database",
        "stat_database_conflicts",
        "database",
        "stat_activity",
    ] {
        let last = m
            .get(
                "pgsidecar_collector_last_success_timestamp_seconds",
                &[("collector", c)],
            )
            .unwrap();
        assert!((now - last).abs() < 10.0, "{c} last success {last}, now {now}");
        let d = m
            .get("pg_scrape_collector_duration_seconds", &[("collector", c)])
            .unwrap();
        assert!(d > 0.0 && d < 1.0, "{c} took {d}");
        assert_eq!(
            m.get("pgsidecar_collector_interval_seconds", &[("collector", c)]),
            Some(1.0)
        );
        assert_eq!(
            m.get("pgsidecar_collector_stale_after_seconds", &[("collector", c)]),
            Some(3.0)
        );
    }
    let build = &m.all("pgsidecar_build_info", &[])[0];
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(m.get("pgsidecar_db_pool_max_size", &[]), Some(3.0));
    let size = m.get("pgsidecar_db_pool_size", &[]).unwrap();
    assert!((1.0..=3.0).contains(&size), "pool size {size}");
    assert!(m.get("process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(m.get("process_open_fds", &[]).unwrap() > 3.0);
    assert!(m.has("process_cpu_seconds_total"));

    let page = get(px.addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = page.text();
    for c in ["postmaster", "stat_activity", "database"] {
        assert!(html.contains(&format!("<td>{c}</td><td class=ok>ok</td>")), "{html}");
    }
    assert!(html.contains("postgres@127.0.0.1:"), "{html}");
    px.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_telemetry_path_and_disabled_collectors() {
    let yaml = test_yaml(
        &pg::shared().dsn("postgres"),
        "web:\n  telemetry_path: /stats\ncollectors:\n  settings:\n    enabled: false\n  database:\n    enabled: false\n",
    );
    let px = start(&yaml).await;
    // Every enabled collector has run once: the two disabled never do.
    let m = eventually(WAIT, "data on /stats", async || {
        let r = get(px.addr, "/stats").await;
        assert_eq!(r.status, 200);
        let m = Metrics::parse(&r.text());
        let ran = m.all("pg_scrape_collector_success", &[]).len();
        if m.get("pg_up", &[]) == Some(1.0) && ran == default_collectors() - 2 {
            Ok(m)
        } else {
            Err(m.text)
        }
    })
    .await;
    assert!(m.has("pg_stat_activity_count"));
    assert!(!m.has("pg_settings_max_connections"), "settings is disabled");
    assert!(!m.has("pg_database_size_bytes"), "database is disabled");
    assert!(
        m.all("pg_scrape_collector_success", &[("collector", "settings")])
            .is_empty()
    );
    assert_eq!(get(px.addr, "/metrics").await.status, 404);
    px.stop().await.unwrap();
}
