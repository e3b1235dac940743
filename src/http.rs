//! The HTTP server (hyper 1, HTTP/1.1, no framework): `/metrics` (or the
//! configured telemetry path), `/healthz`, `/readyz`, the landing page `/`
//! and, with `--web.enable-lifecycle`, `POST /-/reload`, over TLS and behind basic auth when the web configuration file says so
//! (`access.rs`; every endpoint, as in the exporter-toolkit), with what one
//! client may hold bounded (`conn.rs`: connections, write time, `/metrics`
//! bodies in flight).
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
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::config::{Web, show};
use crate::state::{ReloadRequest, State};
use crate::swap::Swap;

mod access;
mod conn;

use access::Access;
use conn::{Admitted, Conn, Guarded, Registry, Tracked};

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a client may take to send its request head (also: how long an
/// idle keep-alive connection stays open), and to complete a TLS handshake.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the HTTP server may see.
pub struct View {
    pub state: Arc<State>,
    /// A reload may change the telemetry path, the grace period and the
    /// write timeout; the rest of it (the address, the limits, the web
    /// configuration file's name) is read at the start.
    pub web: Swap<Web>,
    /// `user@host:port/dbname`, never the password.
    pub target: Swap<String>,
    /// Where `POST /-/reload` asks for a reload.
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
}

/// What every connection's service shares.
struct Server {
    view: Arc<View>,
    access: Arc<Access>,
    registry: Arc<Registry>,
}

/// Serves until `shutdown` completes, then lets in-flight responses finish
/// within the configured grace period.
pub async fn serve(listener: TcpListener, view: Arc<View>, shutdown: impl Future<Output = ()>) {
    let web = view.web.get();
    let max_connections = conn::cap(web.max_connections);
    if max_connections < web.max_connections {
        tracing::warn!(
            configured = web.max_connections,
            max_connections,
            "the open file limit leaves room for fewer connections than configured"
        );
    }
    let access = Arc::new(Access::new(web.config_file.clone(), web.security.clone()));
    let security = access.current();
    tracing::info!(
        tls = security.tls.is_some(),
        http2 = false,
        basic_auth = !security.users.is_empty(),
        max_connections,
        write_timeout = %show(web.write_timeout),
        "serving HTTP"
    );
    let server = Arc::new(Server {
        registry: Registry::new(max_connections, web.max_concurrent_scrapes),
        access: access.clone(),
        view: view.clone(),
    });
    let (stop_watch, stopped) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(async move {
        access
            .watch(async move {
                let _ = stopped.await;
            })
            .await
    });

    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
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
                let admitted = server.registry.admit();
                let task = connection(stream, admitted, server.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(task);
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_watch.send(());
    let _ = watch.await;
    let grace = view.web.get().shutdown_grace;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(grace = %show(grace), "http connections still open after the grace period; closing them");
        }
    }
}

/// One connection: the TLS handshake if configured, then HTTP/1.1, until
/// either ends or the registry closes it.
async fn connection(
    stream: TcpStream,
    admitted: Admitted,
    server: Arc<Server>,
    builder: http1::Builder,
    watcher: Watcher,
) {
    let conn = admitted.conn.clone();
    let io = Guarded::new(stream, conn.clone());
    let tls = server.access.current().tls.clone();
    let work = async {
        match tls {
            None => drive(io, &conn, server, builder, watcher).await,
            Some(config) => {
                let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
                match tokio::time::timeout(HEADER_READ_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => drive(stream, &conn, server, builder, watcher).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake"),
                    Err(_) => tracing::debug!("tls handshake timed out"),
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = conn.aborted() => {}
    }
    drop(admitted);
}

async fn drive<I>(io: I, conn: &Arc<Conn>, server: Arc<Server>, builder: http1::Builder, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = conn.clone();
    let service = hyper::service::service_fn(move |req| {
        let (server, conn) = (server.clone(), conn.clone());
        async move { Ok::<_, Infallible>(server.respond(req, &conn).await) }
    });
    if let Err(e) = watcher.watch(builder.serve_connection(TokioIo::new(io), service)).await {
        tracing::debug!(error = %e, "http connection");
    }
}

impl Server {
    /// The rate limit, then basic auth, then the route; the configured
    /// headers go on every response.
    async fn respond(&self, req: Request<Incoming>, conn: &Arc<Conn>) -> Response<Tracked> {
        conn.request(self.view.web.get().write_timeout);
        let security = self.access.current();
        let mut r = if !self.access.allow() {
            plain(StatusCode::TOO_MANY_REQUESTS, "too many requests\n".into())
        } else if !self
            .access
            .authorized(&security, req.headers().get(header::AUTHORIZATION))
            .await
        {
            let mut r = plain(StatusCode::UNAUTHORIZED, "unauthorized\n".into());
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            r
        } else if req.uri().path() == "/-/reload" {
            self.reload(&req).await
        } else {
            self.route(&req, conn)
        };
        for (name, value) in &security.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                r.headers_mut().insert(*name, v);
            }
        }
        r
    }

    /// `POST /-/reload`, when `--web.enable-lifecycle` allows it: 200 once
    /// the new configuration applies, 500 with the problems if it is invalid
    /// (the old one stays), as Prometheus answers its own.
    async fn reload(&self, req: &Request<Incoming>) -> Response<Tracked> {
        if !self.view.web.get().enable_lifecycle {
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
        if self.view.reload.send(tx).await.is_err() {
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

    fn route(&self, req: &Request<Incoming>, conn: &Arc<Conn>) -> Response<Tracked> {
        let view = &self.view;
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
                let mut r = Response::new(Tracked::plain(Bytes::from(landing(view))));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            _ => self.metrics(req, conn),
        }
    }

    fn metrics(&self, req: &Request<Incoming>, conn: &Arc<Conn>) -> Response<Tracked> {
        let body = self.view.state.snapshot.body();
        let values = req.headers().get_all(header::ACCEPT_ENCODING);
        let gzip = accepts_gzip(values.iter().filter_map(|v| v.to_str().ok()));
        let parts = if gzip { vec![body.gzip()] } else { body.parts().to_vec() };
        let body = if req.method() == Method::HEAD {
            Tracked::parts(parts, None)
        } else {
            self.registry.start_scrape(conn, parts)
        };
        let mut r = Response::new(body);
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    }
}

/// Whether a request's `Accept-Encoding` values (all of them, in order) let
/// the response be gzipped, per RFC 9110 (12.5.3): `gzip` (or `x-gzip`) is
/// listed with a weight above 0, or it is not listed and `*` is. A weight
/// that is not a qvalue (`q=-1`, `q=nan`, `q=2`, `q=0.0001`), or a parameter
/// other than `q`, makes its entry count as a refusal; so does any `gzip`
/// entry of weight 0, whatever else is listed.
pub fn accepts_gzip<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    let (mut gzip, mut any): (Option<bool>, Option<bool>) = (None, None);
    for item in values.into_iter().flat_map(|v| v.split(',')) {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let mut weight = Some(1000);
        for param in parts {
            weight = match param.split_once('=') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("q") => weight.and(qvalue(value.trim())),
                _ => None,
            };
        }
        let slot = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if coding == "*" {
            &mut any
        } else {
            continue;
        };
        *slot = Some(slot.unwrap_or(true) && weight.is_some_and(|w| w > 0));
    }
    gzip.or(any).unwrap_or(false)
}

/// An RFC 9110 qvalue in thousandths: `0`, `0.5`, `0.125`, `1`, `1.000`.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match int {
        "0" => Some(
            frac.bytes()
                .zip([100, 10, 1])
                .map(|(b, scale)| u16::from(b - b'0') * scale)
                .sum(),
        ),
        "1" if frac.bytes().all(|b| b == b'0') => Some(1000),
        _ => None,
    }
}

fn plain(status: StatusCode, body: String) -> Response<Tracked> {
    let mut r = Response::new(Tracked::plain(Bytes::from(body)));
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

    fn gzip(values: &[&str]) -> bool {
        accepts_gzip(values.iter().copied())
    }

    #[test]
    fn gzip_when_listed_with_a_weight_above_zero() {
        assert!(gzip(&["gzip"]));
        assert!(gzip(&["deflate, gzip;q=0.5"]));
        assert!(gzip(&["gzip ; q=0.001"]));
        assert!(gzip(&["GZIP;Q=1.000"]));
        assert!(gzip(&["x-gzip"]));
        assert!(gzip(&["*"]));
        assert!(gzip(&["br;q=1, *;q=0.1"]));
        assert!(gzip(&["identity", "gzip"]), "several headers are one list");
    }

    #[test]
    fn no_gzip_when_refused_or_not_listed() {
        assert!(!gzip(&[]));
        assert!(!gzip(&[""]));
        assert!(!gzip(&["identity"]));
        assert!(!gzip(&["br, deflate"]));
        assert!(!gzip(&["gzip;q=0"]));
        assert!(!gzip(&["gzip; q=0"]));
        assert!(!gzip(&["gzip;Q=0"]));
        assert!(!gzip(&["gzip;q=0.000"]));
        assert!(!gzip(&["x-gzip;q=0"]));
        assert!(!gzip(&["*;q=0"]));
    }

    #[test]
    fn an_explicit_refusal_beats_the_wildcard() {
        assert!(!gzip(&["*, gzip;q=0"]));
        assert!(!gzip(&["gzip;q=0, *"]));
        assert!(!gzip(&["*", "gzip;q=0"]));
        assert!(!gzip(&["gzip, gzip;q=0"]), "contradictory entries: not gzip");
    }

    #[test]
    fn a_weight_that_is_not_a_qvalue_is_a_refusal() {
        for bad in [
            "-1", "nan", "NaN", "inf", "2", "1.5", "0.0001", "", "0x1", "+0.5", ".5", "1.001", "\"0.5\"",
        ] {
            assert!(!gzip(&[&format!("gzip;q={bad}")]), "gzip;q={bad}");
            assert!(!gzip(&[&format!("*, gzip;q={bad}")]), "*, gzip;q={bad}");
            assert!(!gzip(&[&format!("*;q={bad}")]), "*;q={bad}");
        }
        assert!(!gzip(&["gzip;level=9"]), "a parameter other than q");
        assert!(!gzip(&["gzip;q"]));
    }

    #[test]
    fn qvalues_parse_as_rfc_9110_writes_them() {
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0."), Some(0));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.125"), Some(125));
        assert_eq!(qvalue("0.01"), Some(10));
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.0"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("1.0000"), None);
        assert_eq!(qvalue("00.5"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
