//! Processes the tests start (pgsidecar's binary, Prometheus, Alertmanager):
//! their output goes to a log file, they listen on 127.0.0.1:0, and the
//! address they report in that log is where the tests reach them. A `Proc`
//! is killed when dropped, also when a test fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use super::{WAIT, blocking, eventually};

pub struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in the file `log`.
    pub fn spawn(cmd: &mut Command, what: &str, log: &Path) -> Proc {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = cmd
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} (scripts/test installs it): {e}"));
        Proc {
            child,
            what: what.to_string(),
            log: log.to_path_buf(),
        }
    }

    /// Starts pgsidecar's binary as `cmd` with `--web.listen-address
    /// 127.0.0.1:0` added; returns it and the address it listens on, from
    /// its start-up line.
    pub async fn pgsidecar(cmd: &mut Command, what: &str, log: &Path) -> (Proc, SocketAddr) {
        let mut p = Proc::spawn(cmd.args(["--web.listen-address", "127.0.0.1:0"]), what, log);
        let addr = p.address("pgsidecar started", "listen").await;
        (p, addr)
    }

    /// Waits for the log line that contains `marker` and returns the address
    /// in its field `key`: `key=ADDR` (logfmt, as pgsidecar, Prometheus and
    /// Alertmanager write it) or `"key":"ADDR"` (JSON). Panics with the log if
    /// the process ends first.
    pub async fn address(&mut self, marker: &str, key: &str) -> SocketAddr {
        let what = format!("{} reports its address", self.what);
        eventually(WAIT, &what, async || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} ended ({status}) before it listened:\n{}", self.what, self.log());
            }
            let log = self.log();
            let line = log.lines().find(|l| l.contains(marker));
            match line.and_then(|l| field(l, key)) {
                Some(addr) => addr
                    .parse()
                    .map_err(|e| format!("{key}={addr} in {:?}: {e}", line.unwrap_or_default())),
                None => Err(format!("no {marker:?} line with {key} yet:\n{log}")),
            }
        })
        .await
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then its exit status once it has ended.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        blocking(|| self.child.wait()).unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = blocking(|| self.child.wait());
    }
}

/// The value of `key` in a logfmt (`key=value`, `key="value"`) or JSON
/// (`"key":"value"`) log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let json = format!("\"{key}\":\"");
    if let Some((_, rest)) = line.split_once(&json) {
        return rest.split('"').next();
    }
    let logfmt = format!("{key}=");
    line.split(' ')
        .find_map(|w| w.strip_prefix(&logfmt))
        .map(|v| v.trim_matches('"'))
}
