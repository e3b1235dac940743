//! The HTTP server (hyper 1, no framework): `/metrics` (or the configured
//! telemetry path), `/healthz`, `/readyz`, the landing page `/`, and with
//! `--web.enable-lifecycle` `POST /-/reload`.
//!
//! Invariant: no handler here talks to Postgres, and none can: the server is
//! given a [`View`], which holds the published state, the web settings and a
//! password-free target string, and no database handle or datasource.
//! `/metrics` writes the snapshot's current body (gzip when the client
//! accepts it); everything else reads in-memory status.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::{Web, show};
use crate::state::{ReloadRequest, State};
use crate::swap::Swap;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything the HTTP server may see.
pub struct View {
    pub state: Arc<State>,
    /// A reload may change the telemetry path and the grace period.
    pub web: Swap<Web>,
    /// `user@host:port/dbname`, never the password.
    pub target: Swap<String>,
    /// Where `POST /-/reload` asks for a reload.
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
}

/// Serves until `shutdown` completes, then lets in-flight responses finish
/// within the configured grace period.
pub async fn serve(listener: TcpListener, view: Arc<View>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accept connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let view = view.clone();
                let service = hyper::service::service_fn(move |req| {
                    let view = view.clone();
                    async move {
                        if req.uri().path() == "/-/reload" {
                            return Ok::<_, Infallible>(reload(&req, &view).await);
                        }
                        Ok::<_, Infallible>(handle(&req, &view))
                    }
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "http connection");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = view.web.get().shutdown_grace;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(grace = %show(grace), "http connections still open after the grace period; closing them");
        }
    }
}

/// `POST /-/reload`, when `--web.enable-lifecycle` allows it: 200 once the
/// new configuration applies, 500 with the problems if it is invalid (the
/// old one stays), as Prometheus answers its own.
async fn reload(req: &Request<Incoming>, view: &View) -> Response<Full<Bytes>> {
    if !view.web.get().enable_lifecycle {
        return plain(
            StatusCode::FORBIDDEN,
            "lifecycle endpoints are off: start pgsidecar with --web.enable-lifecycle\n".into(),
        );
    }
    if req.method() != Method::POST && req.method() != Method::PUT {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: POST\n".into());
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
        return r;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if view.reload.send(tx).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match rx.await {
        Ok(Ok(())) => plain(StatusCode::OK, "configuration reloaded\n".into()),
        Ok(Err(problems)) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the configuration was not reloaded, the old one stays: {problems}\n"),
        ),
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
    }
}

fn handle(req: &Request<Incoming>, view: &View) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let web = view.web.get();
    let known = path == web.telemetry_path || matches!(path, "/" | "/healthz" | "/readyz");
    if !known {
        return plain(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into());
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" => plain(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let waiting = view.state.health.not_ready(view.state.leadership.is_leader());
            if waiting.is_empty() {
                plain(StatusCode::OK, "ready\n".into())
            } else {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: waiting for the first run of {}\n", waiting.join(", ")),
                )
            }
        }
        "/" => {
            let mut r = Response::new(Full::new(Bytes::from(landing(view))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        _ => metrics(req, &view.state),
    }
}

fn metrics(req: &Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let body = state.snapshot.body();
    let gzip = req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(accepts_gzip);
    let mut r = Response::new(Full::new(if gzip { body.gzip() } else { body.text.clone() }));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// True if an `Accept-Encoding` value lists gzip with a non-zero quality.
pub fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let zero = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero
    })
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn landing(view: &View) -> String {
    let state = &view.state;
    let path = escape(&view.web.get().telemetry_path);
    let leader = state.leadership.is_leader();
    let mut rows = String::new();
    for s in state.health.statuses() {
        let state = match s.ok() {
            None => "<td class=wait>waiting</td>",
            Some(true) => "<td class=ok>ok</td>",
            Some(false) => "<td class=fail>failed</td>",
        };
        rows.push_str(&format!(
            "<tr><td>{}</td>{state}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(s.name),
            show(s.interval),
            ago(s.last_run),
            s.last_duration
                .map_or("-".to_string(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
            ago(s.last_success),
            s.failures,
            escape(s.error().as_deref().unwrap_or("")),
            escape(&s.report.notes.join("; ")),
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=utf-8><title>pgsidecar</title>\n\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
.ok{{color:#070}}.fail{{color:#b00;font-weight:bold}}.wait{{color:#777}}</style></head><body>\n\
<h1>pgsidecar {version}</h1>\n<p>Postgres: <code>{target}</code> &middot; up: {up} &middot; coordination: {mode}, leader: {leader}</p>\n\
<p><a href=\"{path}\">{path}</a> &middot; <a href=\"/healthz\">/healthz</a> &middot; <a href=\"/readyz\">/readyz</a></p>\n\
<table><tr><th>collector</th><th>state</th><th>interval</th><th>last run</th><th>duration</th><th>last success</th><th>failures</th><th>last error</th><th>notes</th></tr>\n{rows}</table>\n</body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        target = escape(&view.target.get()),
        up = if state.health.pg_up(leader) { "yes" } else { "no" },
        mode = state.leadership.mode().as_str(),
        leader = if leader { "yes" } else { "no" },
    )
}

fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| t.elapsed().ok()) {
        Some(d) => format!("{:.1} s ago", d.as_secs_f64()),
        None => "never".to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("br, deflate"));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
