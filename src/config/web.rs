//! `--web.config.file`: the web configuration file of the Prometheus
//! exporter-toolkit (`tls_server_config`, `http_server_config`,
//! `basic_auth_users`, `rate_limit`), so that the file a team already has for
//! node_exporter serves pgsidecar too.
//!
//! [`load`] is the one way in, at start (a problem is a configuration error
//! before pgsidecar listens) and on every reload (`http` keeps the old
//! [`WebSecurity`] when the new file is bad). It walks the file with the same
//! walker as the main configuration, so each problem names the file, the line,
//! the key and what is wrong; then it reads the certificates and keys the file
//! names and builds the rustls server configuration, so that a key that does
//! not match its certificate is found here too.
//!
//! As in the toolkit: paths are relative to the file's directory; TLS is on
//! when a certificate, key, client CA or `client_auth_type` is given, and then
//! needs both a certificate and a key; `min_version` defaults to TLS12,
//! `prefer_server_cipher_suites` to true, `http2` to true; the five response
//! headers and their enumerated values are the toolkit's. Where pgsidecar
//! cannot do what a key asks (TLS 1.0 and 1.1, CBC cipher suites, the P-521
//! curve, e-mail SANs) the file is refused with a message that says so:
//! nothing is silently ignored. pgsidecar speaks HTTP/1.1 only, so `http2` is
//! accepted and HTTP/2 is never offered (clients fall back, as they do to any
//! server without it). No message quotes a password hash or a private key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme, SupportedCipherSuite};
use serde_yaml::Value;

use super::{Fields, Problem, Walker, join, kind, redact, shown, strip_location};

/// The response headers the toolkit lets a file set, and their allowed
/// values (any value where none are listed).
const HEADERS: &[(&str, &[&str])] = &[
    ("Content-Security-Policy", &[]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-XSS-Protection", &[]),
    ("Strict-Transport-Security", &[]),
];

const FILE_KEYS: &[&str] = &[
    "tls_server_config",
    "http_server_config",
    "basic_auth_users",
    "rate_limit",
];
const TLS_KEYS: &[&str] = &[
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
];
const HTTP_KEYS: &[&str] = &["http2", "headers"];
const RATE_KEYS: &[&str] = &["interval", "burst"];

/// What the web configuration file asks for, loaded: the default (no file)
/// is plain HTTP without authentication.
#[derive(Clone)]
pub struct WebSecurity {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name → bcrypt hash. Empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Extra response headers, on every response.
    pub headers: Vec<(&'static str, String)>,
    /// `http_server_config.http2` as given (pgsidecar serves HTTP/1.1 only).
    pub http2: bool,
    pub rate_limit: Option<RateLimit>,
    /// The file and the certificate, key and CA files it names: a reload is
    /// due when one of them changes.
    pub files: Vec<PathBuf>,
}

impl Default for WebSecurity {
    fn default() -> Self {
        WebSecurity {
            tls: None,
            users: BTreeMap::new(),
            headers: Vec::new(),
            http2: true,
            rate_limit: None,
            files: Vec::new(),
        }
    }
}

// By hand: the hashes stay out of every debug print.
impl fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .field("http2", &self.http2)
            .field("rate_limit", &self.rate_limit)
            .field("files", &self.files)
            .finish()
    }
}

/// `rate_limit`: a token bucket over all requests, refilled by one token per
/// `interval`, holding at most `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub interval: Duration,
    pub burst: u32,
}

/// Reads, checks and loads the web configuration file at `path`.
pub fn load(path: &Path) -> Result<WebSecurity, Vec<Problem>> {
    match std::fs::read_to_string(path) {
        Ok(text) => from_text(&text, path),
        Err(e) => Err(vec![Problem {
            source: path.display().to_string(),
            line: None,
            column: None,
            key: String::new(),
            message: format!("cannot read the web configuration file: {e}"),
        }]),
    }
}

/// Checks and loads `text` as the web configuration file at `path` (whose
/// directory relative paths start from).
fn from_text(text: &str, path: &Path) -> Result<WebSecurity, Vec<Problem>> {
    let source = path.display().to_string();
    let root = match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(v) => v,
        Err(e) => {
            let loc = e.location();
            let message = redact(&format!("invalid YAML: {}", strip_location(&e.to_string())));
            return Err(vec![Problem {
                source,
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                key: String::new(),
                message: scrub(&message, &pem_lines(text)),
            }]);
        }
    };
    let no_env = BTreeMap::<String, String>::new();
    let mut w = Walker {
        source: &source,
        text,
        env: &no_env,
        collectors: &[],
        problems: Vec::new(),
        secrets: pem_lines(text),
        prefix: Vec::new(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut security = w.web_file(&root, dir);
    if w.problems.is_empty() {
        security.files.insert(0, path.to_path_buf());
        return Ok(security);
    }
    let mut problems = w.problems;
    for p in &mut problems {
        p.message = scrub(&p.message, &w.secrets);
        p.key = scrub(&p.key, &w.secrets);
    }
    Err(problems)
}

/// The lines of every PEM block in the raw text, wherever the YAML put
/// them: a mangled file can move a private key's lines into any value.
fn pem_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let l = line.trim().trim_start_matches(['-', ' ']).trim_matches('"');
        if line.contains("-----BEGIN") {
            inside = true;
        } else if line.contains("-----END") {
            inside = false;
        } else if inside && !l.is_empty() {
            out.push(l.to_string());
        }
    }
    out
}

/// `message` without the secrets given and without anything shaped like a
/// bcrypt hash (`$2y$10$` and what follows).
fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        out = out.replace(secret.as_str(), "******");
    }
    let mut scrubbed = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("$2") {
        let tail = &rest[at..];
        let b = tail.as_bytes();
        let hash_like = b.len() >= 7
            && matches!(b[2], b'a' | b'b' | b'x' | b'y')
            && b[3] == b'$'
            && b[4].is_ascii_digit()
            && b[5].is_ascii_digit()
            && b[6] == b'$';
        if hash_like {
            scrubbed.push_str(&rest[..at]);
            scrubbed.push_str("******");
            let len = tail[7..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '/'))
                .map_or(tail.len(), |n| n + 7);
            rest = &tail[len..];
        } else {
            scrubbed.push_str(&rest[..at + 2]);
            rest = &tail[2..];
        }
    }
    scrubbed.push_str(rest);
    scrubbed
}

/// Where PEM data comes from: a file, or the file's own text (`cert:`).
enum Pem {
    File(PathBuf),
    Inline(String),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// A subject alternative name a client certificate may carry.
#[derive(Clone, Debug, PartialEq)]
enum San {
    Dns(String),
    Ip(IpAddr),
    Uri(String),
}

impl Walker<'_> {
    fn web_file(&mut self, root: &Value, dir: &Path) -> WebSecurity {
        let top = self.mapping(root, &[], FILE_KEYS);
        let empty = Value::Null;
        let get = |k: &str| top.get(k).copied().unwrap_or(&empty);
        let mut files = Vec::new();
        let tls = self.tls_server_config(get("tls_server_config"), dir, &mut files);
        let (http2, headers) = self.http_server_config(get("http_server_config"));
        let users = self.basic_auth_users(get("basic_auth_users"));
        let rate_limit = self.rate_limit(get("rate_limit"));
        WebSecurity {
            tls,
            users,
            headers,
            http2,
            rate_limit,
            files,
        }
    }

    /// A string value as written (no `${VAR}` expansion, as in the toolkit);
    /// empty is the same as absent.
    fn plain(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<String> {
        match f.get(key)? {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                self.problem(&join(path, key), format!("expected a string, got {}", kind(other)));
                None
            }
        }
    }

    /// A list of strings; `[n]` names the item in a problem.
    fn plain_list(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<Vec<(usize, String)>> {
        let items = match f.get(key)? {
            Value::Null => return None,
            Value::Sequence(items) => items,
            other => {
                self.problem(&join(path, key), format!("expected a list, got {}", kind(other)));
                return None;
            }
        };
        let mut out = Vec::new();
        for (n, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push((n, s.clone())),
                other => {
                    let idx = format!("[{n}]");
                    let mut p = join(path, key);
                    p.push(&idx);
                    self.problem(&p, format!("expected a string, got {}", kind(other)));
                }
            }
        }
        Some(out)
    }

    /// `<file_key>` or `<inline_key>`, not both; relative files are taken
    /// from the configuration file's directory.
    fn pem_source(&mut self, f: &Fields, file_key: &str, inline_key: &str, path: &[&str], dir: &Path) -> Option<Pem> {
        let file = self.plain(f, file_key, path);
        let inline = self.plain(f, inline_key, path);
        match (file, inline) {
            (Some(_), Some(_)) => {
                self.problem(
                    &join(path, inline_key),
                    format!("give {file_key} or {inline_key}, not both"),
                );
                None
            }
            (Some(file), None) => Some(Pem::File(dir.join(file))),
            (None, Some(text)) => Some(Pem::Inline(text)),
            (None, None) => None,
        }
    }

    /// The bytes of a PEM source; a file read is remembered for reloads.
    fn pem_bytes(&mut self, pem: &Pem, key: &str, path: &[&str], files: &mut Vec<PathBuf>) -> Option<Vec<u8>> {
        match pem {
            Pem::Inline(text) => Some(text.clone().into_bytes()),
            Pem::File(file) => {
                files.push(file.clone());
                match std::fs::read(file) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        self.problem(&join(path, key), format!("cannot read {}: {e}", file.display()));
                        None
                    }
                }
            }
        }
    }

    fn certificates(&mut self, bytes: &[u8], key: &str, path: &[&str]) -> Option<Vec<CertificateDer<'static>>> {
        match CertificateDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>() {
            Ok(certs) if !certs.is_empty() => Some(certs),
            Ok(_) => {
                self.problem(
                    &join(path, key),
                    "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                );
                None
            }
            Err(e) => {
                self.problem(&join(path, key), format!("is not valid PEM: {e}"));
                None
            }
        }
    }

    fn tls_server_config(
        &mut self,
        v: &Value,
        dir: &Path,
        files: &mut Vec<PathBuf>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        let path = ["tls_server_config"];
        let f = self.mapping(v, &path, TLS_KEYS);
        let cert = self.pem_source(&f, "cert_file", "cert", &path, dir);
        let key = self.pem_source(&f, "key_file", "key", &path, dir);
        if let Some(Value::String(k)) = f.get("key") {
            self.secrets.push(k.clone());
        }
        let client_ca = self.pem_source(&f, "client_ca_file", "client_ca", &path, dir);
        let auth_text = self.plain(&f, "client_auth_type", &path);
        let enabled = cert.is_some() || key.is_some() || client_ca.is_some() || auth_text.is_some();
        if !enabled {
            // The toolkit serves plain HTTP here and ignores the rest; pgsidecar says so.
            if let Some(k) = f.keys().find(|k| !matches!(f.get(k.as_str()), Some(Value::Null))) {
                self.problem(
                    &join(&path, k),
                    "has no effect without a certificate and key (cert_file and key_file): TLS is off",
                );
            }
            return None;
        }
        let key_names = |p: &Option<Pem>, file: &'static str, inline: &'static str| match p {
            Some(Pem::Inline(_)) => inline,
            _ => file,
        };
        let (cert_key, key_key) = (
            key_names(&cert, "cert_file", "cert"),
            key_names(&key, "key_file", "key"),
        );
        if cert.is_none() {
            self.problem(&path, "TLS needs a certificate: cert_file (or cert) is missing");
        }
        if key.is_none() {
            self.problem(&path, "TLS needs a private key: key_file (or key) is missing");
        }

        let auth = match auth_text.as_deref() {
            None | Some("NoClientCert") => Some(ClientAuth::NoClientCert),
            Some("RequestClientCert") => Some(ClientAuth::RequestClientCert),
            // RequireClientCert: the toolkit's older spelling.
            Some("RequireAnyClientCert" | "RequireClientCert") => Some(ClientAuth::RequireAnyClientCert),
            Some("VerifyClientCertIfGiven") => Some(ClientAuth::VerifyClientCertIfGiven),
            Some("RequireAndVerifyClientCert") => Some(ClientAuth::RequireAndVerifyClientCert),
            Some(other) => {
                self.problem(
                    &join(&path, "client_auth_type"),
                    format!(
                        "unknown client_auth_type {}: expected NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert",
                        shown(other)
                    ),
                );
                None
            }
        };
        let verifies = matches!(
            auth,
            Some(ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert)
        );
        if client_ca.is_some() && auth == Some(ClientAuth::NoClientCert) {
            self.problem(
                &join(&path, "client_auth_type"),
                "a client CA is given but client_auth_type is NoClientCert: set RequireAndVerifyClientCert to check client certificates",
            );
        }
        if client_ca.is_none() && verifies {
            self.problem(
                &join(&path, "client_ca_file"),
                format!(
                    "client_auth_type {} needs the CA that signs client certificates: client_ca_file (or client_ca) is missing",
                    auth_text.as_deref().unwrap_or_default()
                ),
            );
        }
        let sans = self.allowed_sans(&f, &path, auth);

        let min = self.tls_version(&f, "min_version", &path).unwrap_or(12);
        let max = self.tls_version(&f, "max_version", &path).unwrap_or(13);
        if min > max {
            self.problem(
                &join(&path, "min_version"),
                format!("min_version TLS{min} is above max_version TLS{max}"),
            );
        }
        let suites = self.cipher_suites(&f, &path);
        let groups = self.curves(&f, &path);
        let prefer_server = match f.get("prefer_server_cipher_suites") {
            Some(_) => self.boolean(&f, "prefer_server_cipher_suites", &path).unwrap_or(true),
            None => true,
        };

        // What the files hold.
        let cert_chain = match &cert {
            Some(p) => self
                .pem_bytes(p, cert_key, &path, files)
                .and_then(|b| self.certificates(&b, cert_key, &path)),
            None => None,
        };
        let private_key = match &key {
            Some(p) => self.pem_bytes(p, key_key, &path, files).and_then(|b| {
                PrivateKeyDer::from_pem_slice(&b)
                    .map_err(|e| {
                        self.problem(
                            &join(&path, key_key),
                            format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
                        )
                    })
                    .ok()
            }),
            None => None,
        };
        let ca_key = key_names(&client_ca, "client_ca_file", "client_ca");
        let roots = match &client_ca {
            Some(p) => self.pem_bytes(p, ca_key, &path, files).and_then(|b| {
                let certs = self.certificates(&b, ca_key, &path)?;
                let mut roots = rustls::RootCertStore::empty();
                let (_, bad) = roots.add_parsable_certificates(certs);
                if bad > 0 || roots.is_empty() {
                    self.problem(
                        &join(&path, ca_key),
                        format!("{bad} of its certificates cannot be used as a trust anchor"),
                    );
                    return None;
                }
                Some(Arc::new(roots))
            }),
            None => None,
        };

        let (auth, cert_chain, private_key, suites, groups) = (auth?, cert_chain?, private_key?, suites?, groups?);
        if !self.problems.is_empty() || min > max {
            return None;
        }
        let mut provider = rustls::crypto::ring::default_provider();
        if !suites.is_empty() {
            let tls13_listed = suites.iter().any(|s| s.tls13().is_some());
            provider
                .cipher_suites
                .retain(|s| suites.iter().any(|l| l.suite() == s.suite()) || (s.tls13().is_some() && !tls13_listed));
        }
        if !groups.is_empty() {
            provider.kx_groups = groups;
        }
        let provider = Arc::new(provider);
        let versions: Vec<&'static rustls::SupportedProtocolVersion> =
            [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(v, _)| (min..=max).contains(v))
                .map(|(_, v)| v)
                .collect();
        let builder =
            match rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions) {
                Ok(b) => b,
                Err(e) => {
                    self.problem(
                        &join(&path, "cipher_suites"),
                        format!("no cipher suite left for TLS{min} to TLS{max}: {e}"),
                    );
                    return None;
                }
            };
        let verifier = match self.client_verifier(auth, roots, sans, &provider, &path) {
            Ok(v) => v,
            Err(()) => return None,
        };
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = match builder.with_single_cert(cert_chain, private_key) {
            Ok(c) => c,
            Err(e) => {
                self.problem(
                    &join(&path, key_key),
                    format!("the private key does not fit the certificate in {cert_key}: {e}"),
                );
                return None;
            }
        };
        config.ignore_client_order = prefer_server;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Arc::new(config))
    }

    fn client_verifier(
        &mut self,
        auth: ClientAuth,
        roots: Option<Arc<rustls::RootCertStore>>,
        sans: Option<Vec<San>>,
        provider: &Arc<CryptoProvider>,
        path: &[&str],
    ) -> Result<Option<Arc<dyn ClientCertVerifier>>, ()> {
        let chain = match (auth, roots) {
            (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, Some(roots)) => {
                let mut b = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                if auth == ClientAuth::VerifyClientCertIfGiven {
                    b = b.allow_unauthenticated();
                }
                match b.build() {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.problem(
                            &join(path, "client_ca_file"),
                            format!("cannot check client certificates: {e}"),
                        );
                        return Err(());
                    }
                }
            }
            _ => None,
        };
        let mandatory = matches!(
            auth,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        );
        Ok(match (auth, chain, sans) {
            (ClientAuth::NoClientCert, _, _) => None,
            (_, Some(chain), None) => Some(chain),
            (_, chain, sans) => Some(Arc::new(ClientCerts {
                chain,
                mandatory,
                sans: sans.unwrap_or_default(),
                algorithms: provider.signature_verification_algorithms,
            })),
        })
    }

    fn allowed_sans(&mut self, f: &Fields, path: &[&str], auth: Option<ClientAuth>) -> Option<Vec<San>> {
        let items = self.plain_list(f, "client_allowed_sans", path)?;
        if !matches!(
            auth,
            Some(ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert) | None
        ) {
            self.problem(
                &join(path, "client_allowed_sans"),
                "needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert (with the others a client may send no certificate)",
            );
        }
        let mut out = Vec::new();
        for (n, s) in items {
            let san = if let Ok(ip) = s.parse::<IpAddr>() {
                San::Ip(ip)
            } else if s.contains(':') {
                San::Uri(s)
            } else if s.contains('@') {
                let idx = format!("[{n}]");
                let mut p = join(path, "client_allowed_sans");
                p.push(&idx);
                self.problem(
                    &p,
                    "e-mail address SANs are not supported by pgsidecar (its certificate parser reads DNS, IP and URI names); allow a DNS, IP or URI SAN instead",
                );
                continue;
            } else {
                San::Dns(s)
            };
            out.push(san);
        }
        Some(out)
    }

    /// `TLS12` → 12, `TLS13` → 13.
    fn tls_version(&mut self, f: &Fields, key: &str, path: &[&str]) -> Option<u8> {
        let text = self.plain(f, key, path)?;
        match text.as_str() {
            "TLS12" => Some(12),
            "TLS13" => Some(13),
            "TLS10" | "TLS11" => {
                self.problem(
                    &join(path, key),
                    format!(
                        "{text} is not supported by pgsidecar: its TLS library (rustls) implements TLS 1.2 and 1.3 only; use TLS12 or TLS13"
                    ),
                );
                None
            }
            other => {
                self.problem(
                    &join(path, key),
                    format!(
                        "unknown TLS version {}: expected TLS10, TLS11, TLS12 or TLS13",
                        shown(other)
                    ),
                );
                None
            }
        }
    }

    /// `None` after a problem; empty when not given (every suite).
    fn cipher_suites(&mut self, f: &Fields, path: &[&str]) -> Option<Vec<SupportedCipherSuite>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (n, name) in self.plain_list(f, "cipher_suites", path).unwrap_or_default() {
            match cipher_suite_named(&name) {
                Some(s) => out.push(s),
                None => {
                    ok = false;
                    let idx = format!("[{n}]");
                    let mut p = join(path, "cipher_suites");
                    p.push(&idx);
                    self.problem(
                        &p,
                        format!(
                            "cipher suite {} is unknown or not supported by pgsidecar (its TLS library implements only AEAD suites, no CBC); supported: {}",
                            shown(&name),
                            CIPHER_SUITES.join(", ")
                        ),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    fn curves(&mut self, f: &Fields, path: &[&str]) -> Option<Vec<&'static dyn SupportedKxGroup>> {
        let mut out: Vec<&'static dyn SupportedKxGroup> = Vec::new();
        let mut ok = true;
        for (n, name) in self.plain_list(f, "curve_preferences", path).unwrap_or_default() {
            let group: Option<&'static dyn SupportedKxGroup> = match name.as_str() {
                "X25519" => Some(kx_group::X25519),
                "CurveP256" => Some(kx_group::SECP256R1),
                "CurveP384" => Some(kx_group::SECP384R1),
                _ => None,
            };
            match group {
                Some(g) => out.push(g),
                None => {
                    ok = false;
                    let idx = format!("[{n}]");
                    let mut p = join(path, "curve_preferences");
                    p.push(&idx);
                    let message = if name == "CurveP521" {
                        "CurveP521 is not supported by pgsidecar's TLS library; use CurveP256, CurveP384 or X25519"
                            .to_string()
                    } else {
                        format!(
                            "unknown curve {}: expected CurveP256, CurveP384, CurveP521 or X25519",
                            shown(&name)
                        )
                    };
                    self.problem(&p, message);
                }
            }
        }
        ok.then_some(out)
    }

    fn http_server_config(&mut self, v: &Value) -> (bool, Vec<(&'static str, String)>) {
        let path = ["http_server_config"];
        let f = self.mapping(v, &path, HTTP_KEYS);
        let http2 = self.boolean(&f, "http2", &path).unwrap_or(true);
        let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
        let hp = join(&path, "headers");
        let given = self.mapping_of(
            f.get("headers").copied().unwrap_or(&Value::Null),
            &hp,
            &names,
            "header (the toolkit allows these only)",
        );
        let mut headers = Vec::new();
        for (name, allowed) in HEADERS {
            let Some(value) = self.plain(&given, name, &hp) else {
                continue;
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                self.problem(
                    &join(&hp, name),
                    format!(
                        "invalid value {}: expected one of {}",
                        shown(&value),
                        allowed.join(", ")
                    ),
                );
            } else if value.chars().any(|c| c.is_control() || !c.is_ascii()) {
                self.problem(&join(&hp, name), "a header value must be printable ASCII");
            } else {
                headers.push((*name, value));
            }
        }
        (http2, headers)
    }

    fn basic_auth_users(&mut self, v: &Value) -> BTreeMap<String, String> {
        let path = ["basic_auth_users"];
        let mut out = BTreeMap::new();
        let map = match v {
            Value::Null => return out,
            Value::Mapping(m) => m,
            other => {
                self.problem(
                    &path,
                    format!("expected a mapping of user names to bcrypt hashes, got {}", kind(other)),
                );
                return out;
            }
        };
        for (user, hash) in map {
            let Some(user) = user.as_str() else {
                self.problem(&path, format!("user names must be strings, got {}", kind(user)));
                continue;
            };
            let p = join(&path, user);
            let Value::String(hash) = hash else {
                // Not `kind(hash)`: a password typed here by mistake is not echoed.
                self.problem(&p, "expected a bcrypt hash (a string)");
                continue;
            };
            self.secrets.push(hash.clone());
            if user.is_empty() || user.contains(':') {
                self.problem(
                    &p,
                    "a user name must not be empty or contain ':' (basic auth splits user and password there)",
                );
                continue;
            }
            match hash.parse::<bcrypt::HashParts>() {
                Ok(parts) if (4..=31).contains(&parts.get_cost()) => {
                    out.insert(user.to_string(), hash.clone());
                }
                Ok(_) => self.problem(&p, "the bcrypt cost must be between 4 and 31"),
                Err(_) => self.problem(
                    &p,
                    "is not a bcrypt hash (60 characters starting $2y$, $2b$ or $2a$ and the cost); make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'",
                ),
            }
        }
        out
    }

    fn rate_limit(&mut self, v: &Value) -> Option<RateLimit> {
        let path = ["rate_limit"];
        let f = self.mapping(v, &path, RATE_KEYS);
        let interval = match f.get("interval") {
            None | Some(Value::Null) => Duration::ZERO,
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Duration::ZERO,
            Some(Value::String(s)) if s == "0" => Duration::ZERO,
            Some(_) => self.duration(&f, "interval", &path)?,
        };
        let burst = match f.get("burst") {
            Some(_) => self.integer(&f, "burst", &path, 0, 1_000_000)? as u32,
            None => 0,
        };
        if interval.is_zero() {
            return None;
        }
        if burst == 0 {
            self.problem(
                &join(&path, "burst"),
                "must be at least 1 when interval is set: a bucket of 0 refuses every request",
            );
            return None;
        }
        Some(RateLimit { interval, burst })
    }
}

/// The TLS cipher suites pgsidecar implements, by the names Go (and so the
/// toolkit) gives them.
const CIPHER_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

fn cipher_suite_named(name: &str) -> Option<SupportedCipherSuite> {
    Some(match name {
        "TLS_AES_128_GCM_SHA256" => cipher_suite::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => cipher_suite::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// Client certificates that rustls's chain verifier alone does not cover:
/// requested or required without checking the chain (RequestClientCert,
/// RequireAnyClientCert), and `client_allowed_sans` on top of either kind.
#[derive(Debug)]
struct ClientCerts {
    /// Checks the chain against the client CAs, when the auth type verifies.
    chain: Option<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    /// Empty: any names.
    sans: Vec<San>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientCerts {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.as_ref().map_or(&[], |c| c.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_client_cert(end_entity, intermediates, now)?;
        }
        if self.sans.is_empty() {
            return Ok(ClientCertVerified::assertion());
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let allowed = self.sans.iter().any(|san| match san {
            San::Dns(name) => cert.valid_dns_names().any(|n| n == name),
            San::Uri(uri) => cert.valid_uri_names().any(|u| u == uri),
            San::Ip(ip) => cert
                .verify_is_valid_for_subject_name(&ServerName::IpAddress((*ip).into()))
                .is_ok(),
        });
        if allowed {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                rustls::OtherError(Arc::new(SanMismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the client certificate has none of the names in client_allowed_sans")]
struct SanMismatch;

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `yaml` as a web configuration file in a fresh directory and loads it.
    fn load_text(yaml: &str) -> Result<WebSecurity, Vec<Problem>> {
        let dir = std::env::temp_dir().join(format!(
            "pgsidecar-web-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("web.yml");
        std::fs::write(&file, yaml).unwrap();
        let out = load(&file);
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    fn problems(yaml: &str) -> String {
        match load_text(yaml) {
            Ok(s) => panic!("expected problems, got {s:?}"),
            Err(p) => p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"),
        }
    }

    const HASH: &str = "$2b$04$eEoigpxGd3Wz3eFdqlN63Oy2hnylAsWypme79aOU3Kp1fMiO0uhsi";

    #[test]
    fn users_headers_and_rate_limit_are_read() {
        let s = load_text(&format!(
            "basic_auth_users:\n  alice: {HASH}\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'self'\"\n    X-XSS-Protection: \"\"\nrate_limit:\n  interval: 1s\n  burst: 20\n"
        ))
        .unwrap();
        assert_eq!(s.users.get("alice").map(String::as_str), Some(HASH));
        assert!(s.tls.is_none());
        assert!(!s.http2);
        assert_eq!(
            s.headers,
            vec![
                ("Content-Security-Policy", "default-src 'self'".to_string()),
                ("X-Frame-Options", "deny".to_string())
            ]
        );
        assert_eq!(
            s.rate_limit,
            Some(RateLimit {
                interval: Duration::from_secs(1),
                burst: 20
            })
        );
        assert_eq!(s.files.len(), 1, "only the file itself: {:?}", s.files);
        assert!(!format!("{s:?}").contains(HASH), "Debug shows no hash");
    }

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        let s = load_text("").unwrap();
        assert!(s.tls.is_none() && s.users.is_empty() && s.headers.is_empty() && s.rate_limit.is_none());
        assert!(load_text("rate_limit:\n  interval: 0\n").unwrap().rate_limit.is_none());
    }

    #[test]
    fn a_bad_hash_is_refused_without_being_quoted() {
        let secret = "$2y$10$thisIsNotAHashButLooksSecret";
        let err = problems(&format!(
            "basic_auth_users:\n  alice: \"{secret}\"\n  \"a:b\": {HASH}\n  bob: 12345\n"
        ));
        assert!(
            err.contains("web.yml:2:3: basic_auth_users.alice: is not a bcrypt hash"),
            "{err}"
        );
        assert!(
            err.contains(
                "basic_auth_users.(a key of 3 characters, not shown): a user name must not be empty or contain ':'"
            ),
            "{err}"
        );
        assert!(err.contains("basic_auth_users.bob: expected a bcrypt hash"), "{err}");
        assert!(
            !err.contains(secret) && !err.contains("12345") && !err.contains(HASH),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_values_are_named() {
        let err = problems(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: Sometimes\n  min_version: TLS10\n  max_version: TLS14\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n  curve_preferences: [CurveP521, Curve25519]\n  prefer_server_cipher_suites: maybe\nhttp_server_config:\n  http2: yes please\n  headers:\n    X-Powered-By: pgsidecar\n    X-Frame-Options: allow\nrate_limit:\n  interval: 1.5s\n  burst: 0\nbasic_auth: {}\n",
        );
        for want in [
            "tls_server_config.client_auth_type: unknown client_auth_type \"Sometimes\"",
            "tls_server_config.min_version: TLS10 is not supported by pgsidecar",
            "tls_server_config.max_version: unknown TLS version \"TLS14\"",
            "tls_server_config.cipher_suites[0]: cipher suite \"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\" is unknown or not supported",
            "tls_server_config.curve_preferences[0]: CurveP521 is not supported",
            "tls_server_config.curve_preferences[1]: unknown curve \"Curve25519\"",
            "tls_server_config.prefer_server_cipher_suites: expected true or false",
            "http_server_config.http2: expected true or false",
            "http_server_config.headers.X-Powered-By: unknown header (the toolkit allows these only)",
            "http_server_config.headers.X-Frame-Options: invalid value \"allow\": expected one of deny, sameorigin",
            "rate_limit.interval: invalid duration \"1.5s\"",
            "basic_auth: unknown key",
            "tls_server_config.cert_file: cannot read",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }

    #[test]
    fn tls_keys_need_a_certificate_and_key() {
        let err = problems("tls_server_config:\n  min_version: TLS13\n");
        assert!(
            err.contains("tls_server_config.min_version: has no effect without a certificate and key"),
            "{err}"
        );
        let err = problems("tls_server_config:\n  cert_file: c.pem\n");
        assert!(
            err.contains("tls_server_config: TLS needs a private key: key_file (or key) is missing"),
            "{err}"
        );
        let err = problems("tls_server_config:\n  cert_file: c.pem\n  cert: inline\n  key_file: k.pem\n");
        assert!(
            err.contains("tls_server_config.cert: give cert_file or cert, not both"),
            "{err}"
        );
    }

    #[test]
    fn client_auth_combinations_are_checked() {
        let base = "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n";
        let err = problems(&format!("{base}  client_ca_file: ca.pem\n"));
        assert!(
            err.contains("a client CA is given but client_auth_type is NoClientCert"),
            "{err}"
        );
        let err = problems(&format!("{base}  client_auth_type: RequireAndVerifyClientCert\n"));
        assert!(
            err.contains("tls_server_config.client_ca_file: client_auth_type RequireAndVerifyClientCert needs the CA"),
            "{err}"
        );
        let err = problems(&format!(
            "{base}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n  client_allowed_sans: [a.example, ops@example.com]\n"
        ));
        assert!(
            err.contains("tls_server_config.client_allowed_sans: needs client_auth_type RequireAnyClientCert"),
            "{err}"
        );
        assert!(
            err.contains("tls_server_config.client_allowed_sans[1]: e-mail address SANs are not supported"),
            "{err}"
        );
        let err = problems(&format!("{base}  min_version: TLS13\n  max_version: TLS12\n"));
        assert!(err.contains("min_version TLS13 is above max_version TLS12"), "{err}");
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_directory() {
        let err = problems("tls_server_config:\n  cert_file: sub/c.pem\n  key_file: /abs/k.pem\n");
        let line = err.lines().find(|l| l.contains("cert_file: cannot read")).unwrap();
        assert!(line.contains("pgsidecar-web-") && line.contains("/sub/c.pem"), "{line}");
        assert!(err.contains("cannot read /abs/k.pem"), "{err}");
    }

    #[test]
    fn an_inline_key_is_never_quoted() {
        let key = "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFD\n-----END PRIVATE KEY-----\n";
        let yaml = format!(
            "tls_server_config:\n  cert: nothing\n  key: |\n{}",
            key.lines().map(|l| format!("    {l}\n")).collect::<String>()
        );
        let err = problems(&yaml);
        assert!(
            err.contains("tls_server_config.cert: holds no PEM certificate"),
            "{err}"
        );
        assert!(!err.contains("TUlJRXZR"), "{err}");
    }

    /// Mutated web configuration files (characters YAML treats specially,
    /// cut and repeated pieces) never panic, and no problem shows a hash or a
    /// line of an inline private key.
    #[test]
    fn no_mangled_file_panics_or_shows_a_secret() {
        const KEY_LINE: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDsecretKeyMaterial";
        let example = include_str!("../../examples/web-config.yml");
        let hash = example
            .lines()
            .find_map(|l| l.trim().strip_prefix("prometheus: "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string();
        let seeds = [
            example.to_string(),
            format!(
                "tls_server_config:\n  cert: c\n  key: |\n    -----BEGIN PRIVATE KEY-----\n    {KEY_LINE}\n    -----END PRIVATE KEY-----\nbasic_auth_users:\n  a: {hash}\n"
            ),
            format!("basic_auth_users: {{alice: \"{hash}\", bob: {HASH}}}\nrate_limit: {{interval: 1s, burst: 3}}\n"),
            // A hash or a key line where neither belongs.
            format!("basic_auth_users: {hash}\nrate_limit: {HASH}\n"),
            format!(
                "http_server_config:\n  headers:\n    X-Frame-Options: {hash}\ntls_server_config:\n  min_version: {KEY_LINE}\n"
            ),
        ];
        const SPECIAL: &[&str] = &[
            "\n",
            "\n  ",
            ":",
            " ",
            "- ",
            "[",
            "]",
            "{",
            "}",
            "\"",
            "'",
            "#",
            "&a",
            "*a",
            "!!",
            "|",
            ">",
            "-1",
            "0",
            "99999999999999999999",
            "~",
            "null",
            "$",
            "\u{0}",
        ];
        let mut x: u64 = 0x0005_eed0_f3eb;
        let mut next = |n: usize| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
        };
        let mut rejected = 0;
        for run in 0..3000 {
            let mut chars: Vec<char> = seeds[next(seeds.len())].chars().collect();
            for _ in 0..1 + next(3) {
                let at = next(chars.len() + 1);
                match next(3) {
                    0 => {
                        let piece = SPECIAL[next(SPECIAL.len())];
                        chars.splice(at..at, piece.chars());
                    }
                    1 => {
                        let end = (at + 1 + next(12)).min(chars.len());
                        chars.drain(at.min(end)..end);
                    }
                    _ => {
                        let at = at.min(chars.len().saturating_sub(1));
                        let end = (at + 1 + next(24)).min(chars.len());
                        let piece: Vec<char> = chars[at..end].to_vec();
                        chars.splice(at..at, piece);
                    }
                }
            }
            let input: String = chars.into_iter().collect();
            let outcome = std::panic::catch_unwind(|| from_text(&input, Path::new("/nonexistent/web.yml")));
            let Ok(outcome) = outcome else {
                panic!("run {run}: loading panicked on:\n{input:?}");
            };
            if let Err(problems) = outcome {
                rejected += 1;
                for p in problems {
                    let shown = format!("{p}");
                    for secret in [hash.as_str(), HASH, KEY_LINE, &KEY_LINE[10..40]] {
                        assert!(!shown.contains(secret), "run {run}: {shown}\ninput:\n{input:?}");
                    }
                }
            }
        }
        assert!(rejected > 300, "too few invalid inputs to mean anything: {rejected}");
    }

    #[test]
    fn a_syntax_error_has_its_location() {
        let err = problems("basic_auth_users:\n  alice: [\n");
        assert!(err.contains("web.yml:") && err.contains("invalid YAML"), "{err}");
        let missing = load(Path::new("/nonexistent/web.yml")).unwrap_err();
        assert_eq!(missing[0].source, "/nonexistent/web.yml");
        assert!(missing[0].message.contains("cannot read the web configuration file"));
    }
}
