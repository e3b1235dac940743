//! A throwaway PgBouncer (Debian's `pgbouncer` package) in front of a test
//! cluster: its own ini file in a temp dir, listening on 127.0.0.1, the
//! admin console open to `postgres` (`admin_users`) and `stats`
//! (`stats_users`), one database `postgres` whose pools hold at most
//! `POOL_SIZE` server connections, in transaction mode. As root it runs as
//! the `postgres` system user (`-u`), since PgBouncer refuses root.
//!
//! PgBouncer cannot listen on port 0, so it takes a port as the clusters do
//! (`pg::next_port`). If another program holds it ("Address already in
//! use" in its log), the first start tries the next one; later starts
//! (`restart`) keep the port, which the tests already use.
//!
//! It is stopped and its directory removed when dropped; a detached watchdog
//! does the same if the test process dies first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::pg::{Cluster, is_root, next_port};
use super::{WAIT, blocking, eventually};

/// Most server connections of a pool.
pub const POOL_SIZE: u32 = 2;

/// How clients of the admin console log in.
pub enum Auth {
    /// `auth_type = trust`: any password.
    Trust,
    /// `auth_type = md5`: the user `stats` has this password.
    Md5(&'static str),
}

pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl PgBouncer {
    /// Writes the ini file and starts PgBouncer in front of `cluster`.
    pub async fn start(cluster: &Cluster, auth: Auth) -> PgBouncer {
        let dir = std::env::temp_dir().join(format!(
            "pgsidecar-pgbouncer-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (auth_type, stats_password) = match auth {
            Auth::Trust => ("trust", ""),
            Auth::Md5(p) => ("md5", p),
        };
        std::fs::write(
            dir.join("userlist.txt"),
            format!("\"postgres\" \"\"\n\"stats\" \"{stats_password}\"\n"),
        )
        .unwrap();
        let mut b = PgBouncer {
            dir,
            port: 0,
            child: Mutex::new(None),
        };
        for attempt in 1..=20 {
            b.port = next_port();
            b.write_ini(cluster, auth_type);
            match b.spawn().await {
                Ok(()) => {
                    b.spawn_watchdog();
                    return b;
                }
                Err(log) if log.contains("Address already in use") && attempt < 20 => continue,
                Err(log) => panic!("pgbouncer did not start on port {}:\n{log}", b.port),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn write_ini(&self, cluster: &Cluster, auth_type: &str) {
        let d = self.dir.display();
        let ini = format!(
            "[databases]\npostgres = host=127.0.0.1 port={pg} dbname=postgres user=postgres\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = {auth_type}\nauth_file = {d}/userlist.txt\n\
             admin_users = postgres\nstats_users = stats\n\
             pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nmax_client_conn = 50\n\
             stats_period = 1\npidfile = {d}/pgbouncer.pid\nlogfile =\n",
            pg = cluster.port(),
            port = self.port,
        );
        std::fs::write(self.dir.join("pgbouncer.ini"), ini).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&self.dir)
                .status()
                .map(|s| s.success());
            assert_eq!(ok.ok(), Some(true), "chown {} to postgres", self.dir.display());
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }

    /// Everything PgBouncer has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process and waits until it listens; `Err` with its log if
    /// it ends first.
    async fn spawn(&self) -> Result<(), String> {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = Command::new("pgbouncer");
        if is_root() {
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(self.dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start pgbouncer (Debian package pgbouncer; scripts/test installs it): {e}"));
        *self.child.lock().unwrap() = Some(child);
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        let mut ended = None;
        eventually(WAIT, "pgbouncer listens", async || {
            if let Some(status) = self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().unwrap()) {
                ended = Some(format!("ended ({status}):\n{}", self.log()));
                return Ok(());
            }
            if self.log().contains(&listening) {
                Ok(())
            } else {
                Err(format!("no {listening:?} in its log yet:\n{}", self.log()))
            }
        })
        .await;
        match ended {
            Some(log) => {
                self.child.lock().unwrap().take();
                Err(log)
            }
            None => Ok(()),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin console's DSN for `user`, without a password.
    pub fn admin_dsn(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=pgbouncer sslmode=disable",
            self.port
        )
    }

    /// A client session through PgBouncer to the cluster's `postgres` database.
    pub async fn connect(&self, application_name: &str) -> tokio_postgres::Client {
        let dsn = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable application_name={application_name}",
            self.port
        );
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect through pgbouncer on port {}: {e}", self.port));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// SIGTERM (PgBouncer's immediate shutdown), and waits until it ended.
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM pgbouncer");
        blocking(|| child.wait()).unwrap();
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the process: a stopped PgBouncer
    /// keeps its sockets open and answers nothing.
    pub fn signal(&self, signal: &str) {
        let guard = self.child.lock().unwrap();
        let child = guard.as_ref().expect("pgbouncer is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} pgbouncer");
    }

    /// Starts it again on the same port (after `stop`).
    pub async fn restart(&self) {
        for _ in 0..20 {
            match self.spawn().await {
                Ok(()) => return,
                // The old socket may linger for a moment.
                Err(log) if log.contains("Address already in use") => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(log) => panic!("pgbouncer did not start again:\n{log}"),
            }
        }
        panic!("pgbouncer's port {} stayed taken:\n{}", self.port, self.log());
    }

    /// Stops PgBouncer (by its pid file) and removes the directory when
    /// this process exits, however it exits.
    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -TERM $(cat '{dir}/pgbouncer.pid') 2>/dev/null; sleep 1; rm -rf '{dir}'",
            parent = std::process::id(),
            dir = self.dir.display()
        );
        let status = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn pgbouncer watchdog (setsid sh)");
        assert!(status.success(), "setsid -f sh: {status}");
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = blocking(|| child.wait());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
