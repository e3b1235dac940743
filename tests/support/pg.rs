//! A throwaway PostgreSQL cluster: initdb in a temp dir, listening on
//! 127.0.0.1, `pg_stat_statements` preloaded. Works as root (the server runs
//! as the `postgres` system user through `runuser`) and as a normal user.
//!
//! PostgreSQL cannot listen on port 0, so a cluster picks its port (see
//! `next_port`). If the server then cannot bind it ("could not bind" in its
//! log), the first start tries the next one, unless the port has already
//! been handed out (`Cluster::port`): a collision is detected and retried,
//! never silent.
//!
//! Binaries come from `PG_BIN`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`. Every cluster is stopped and removed when
//! dropped; a detached watchdog does the same if the test process dies first
//! (or never drops it, as with the shared cluster in a `static`).
//!
//! Replication: [`Cluster::primary`] starts a cluster of its own ready to
//! replicate (`wal_level = logical`, replication connections allowed, WAL
//! archived with `cp` into [`Cluster::archive`]), and [`Cluster::standby`]
//! makes a streaming standby of it with `pg_basebackup -R -S <slot> -C -X
//! stream`, started on its own port and removed like any cluster. The
//! server packages of the matrix have no `pg_basebackup`: it comes from
//! `PG_CLIENT_BIN`, else the server's bin directory, else
//! `scripts/fetch-postgres-client` (PostgreSQL 18's, which backs up 13–18).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::time::Duration;

use super::blocking;

pub struct Cluster {
    /// The port the server listens on, or will try first.
    port: AtomicU16,
    /// Whether `port()` has told anyone the port: from then on it stays.
    handed_out: AtomicBool,
    dir: PathBuf,
    bin: PathBuf,
    run_as_postgres: bool,
}

/// What [`Cluster::primary`] appends to `postgresql.conf`, besides the
/// archive command: enough senders and slots for the tests, a cap on what a
/// slot may retain (so `safe_wal_size` is reported), and autovacuum that
/// wakes every second.
const PRIMARY_CONF: &str = "wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
     archive_mode = on\nmax_slot_wal_keep_size = '1GB'\nautovacuum_naptime = 1s\nwal_receiver_status_interval = 1s\n";

/// The cluster shared by the tests of this binary that do not stop or lock it.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    blocking(|| {
        SHARED.get_or_init(|| {
            let c = Cluster::init();
            c.start();
            c.create_extension_in_postgres_db();
            c
        })
    })
}

/// A primary and its streaming standby (slot and application name
/// `standby1`), shared by the tests of this binary that only read them. The
/// primary's `postgres` database has `pg_stat_statements`, `pg_buffercache`
/// (PostgreSQL 16+, where its summary exists) and a table `t`, created
/// before the standby is made, so the standby has them too.
pub fn replicated() -> &'static (Cluster, Cluster) {
    static PAIR: OnceLock<(Cluster, Cluster)> = OnceLock::new();
    blocking(|| {
        PAIR.get_or_init(|| {
            let primary = Cluster::primary();
            primary.create_extension_in_postgres_db();
            primary.sql_in_postgres_db(
                "DO $$ BEGIN IF current_setting('server_version_num')::int >= 160000 THEN \
                 CREATE EXTENSION IF NOT EXISTS pg_buffercache; END IF; END $$; \
                 CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text); \
                 INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g ON CONFLICT DO NOTHING",
            );
            let standby = primary.standby("standby1");
            (primary, standby)
        })
    })
}

fn bin_dir() -> PathBuf {
    if let Ok(b) = std::env::var("PG_BIN") {
        return PathBuf::from(b);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    found.sort();
    match found.pop() {
        Some((_, p)) => p,
        None => panic!(
            "no PostgreSQL server binaries: set PG_BIN, put pg_config on PATH, or install Debian's postgresql package (scripts/test does)"
        ),
    }
}

/// Where `pg_basebackup` is: `PG_CLIENT_BIN`, else beside the server if it
/// is there and not older than the server, else PostgreSQL 18's from
/// `scripts/fetch-postgres-client` (cached after the first call).
fn client_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(b) = std::env::var("PG_CLIENT_BIN") {
            return PathBuf::from(b);
        }
        let server = bin_dir();
        let major = |exe: &Path| -> Option<u32> {
            let out = Command::new(exe).arg("--version").output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace().last()?.split('.').next()?.parse().ok()
        };
        let beside = server.join("pg_basebackup");
        if beside.exists() && major(&beside) >= major(&server.join("postgres")) {
            return server;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-postgres-client");
        let out = Command::new(&script)
            .output()
            .expect("run scripts/fetch-postgres-client");
        assert!(
            out.status.success(),
            "scripts/fetch-postgres-client failed (PG_CLIENT_BIN names a directory with pg_basebackup instead):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The next port for a cluster to try. Ports come from the 10,000 just below
/// the kernel's ephemeral range (`ip_local_port_range`), where no bind to
/// port 0 and no outgoing connection lands, so a port stays free while its
/// cluster is stopped and started again. The clusters of this process take
/// them in turn, from an offset that differs between processes.
pub fn next_port() -> u16 {
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let ephemeral: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let first = ephemeral.saturating_sub(10_000).max(1024);
    let (first, span) = if ephemeral > first {
        (first, ephemeral - first)
    } else {
        (20_000, 10_000)
    };
    let n = TAKEN
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id().wrapping_mul(7919));
    (first + n % span) as u16
}

impl Cluster {
    /// Creates (initdb) a cluster without starting it.
    pub fn init() -> Cluster {
        blocking(Cluster::init_blocking)
    }

    fn init_blocking() -> Cluster {
        let bin = bin_dir();
        let run_as_postgres = is_root();
        let base = std::env::temp_dir().join(format!(
            "pgsidecar-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&base).expect("create cluster dir");
        if run_as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:", base.to_str().unwrap()])
                .status();
            assert!(
                ok.map(|s| s.success()).unwrap_or(false),
                "chown {} to postgres",
                base.display()
            );
        }
        let c = Cluster {
            port: AtomicU16::new(next_port()),
            handed_out: AtomicBool::new(false),
            dir: base,
            bin,
            run_as_postgres,
        };
        c.spawn_watchdog();
        let data = c.data();
        c.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             shared_preload_libraries = 'pg_stat_statements'\nfsync = off\nfull_page_writes = off\n\
             synchronous_commit = off\nmax_connections = 60\npassword_encryption = 'scram-sha-256'\n\
             track_io_timing = on\nlogging_collector = off\n",
            dir = c.dir.display()
        );
        append(&Path::new(&data).join("postgresql.conf"), &conf);
        std::fs::write(
            Path::new(&data).join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        c
    }

    /// A cluster of its own, started, ready to replicate and archiving its
    /// WAL into [`Cluster::archive`] with `cp`. Replication connections
    /// from 127.0.0.1 are trusted for `postgres`.
    pub fn primary() -> Cluster {
        blocking(|| {
            let c = Cluster::init_blocking();
            let archive = c.archive();
            std::fs::create_dir_all(&archive).expect("create archive dir");
            c.chown(&archive);
            append(
                &Path::new(&c.data()).join("postgresql.conf"),
                &format!("{PRIMARY_CONF}archive_command = 'cp %p {}/%f'\n", archive.display()),
            );
            append(
                &Path::new(&c.data()).join("pg_hba.conf"),
                "host replication postgres 127.0.0.1/32 trust\n",
            );
            c.start_blocking();
            c
        })
    }

    /// Where a [`Cluster::primary`] archives its WAL.
    pub fn archive(&self) -> PathBuf {
        self.dir.join("archive")
    }

    /// The command that archives WAL into [`Cluster::archive`], as
    /// configured; `ALTER SYSTEM SET archive_command` to another (such as
    /// `false`) and `pg_reload_conf()` switch it at run time.
    pub fn archive_command(&self) -> String {
        format!("cp %p {}/%f", self.archive().display())
    }

    /// A streaming standby of this primary, started: `pg_basebackup -R`
    /// through a new physical slot `slot` (created by `-C`), which is also
    /// its `application_name` on the primary.
    pub fn standby(&self, slot: &str) -> Cluster {
        blocking(|| {
            let s = Cluster::empty();
            let exe = client_bin().join("pg_basebackup");
            let port = self.port().to_string();
            let data = s.data();
            let args = [
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-C",
                "-S",
                slot,
                "-X",
                "stream",
                "--no-sync",
            ];
            let out = s.command_at(&exe, &args).output().expect("run pg_basebackup");
            assert!(
                out.status.success(),
                "pg_basebackup {args:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // -R writes every option of its own (newer) libpq into
            // primary_conninfo, which an older server's walreceiver refuses
            // ("invalid connection option"): these few, later in the file, win.
            append(
                &Path::new(&data).join("postgresql.auto.conf"),
                &format!("primary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name={slot}'\n"),
            );
            append(
                &Path::new(&data).join("postgresql.conf"),
                &format!("unix_socket_directories = '{}'\n", s.dir.display()),
            );
            s.start_blocking();
            s
        })
    }

    /// A cluster directory with a watchdog but no data yet (a standby's,
    /// before `pg_basebackup` fills it).
    fn empty() -> Cluster {
        let base = std::env::temp_dir().join(format!(
            "pgsidecar-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&base).expect("create cluster dir");
        let c = Cluster {
            port: AtomicU16::new(next_port()),
            handed_out: AtomicBool::new(false),
            dir: base,
            bin: bin_dir(),
            run_as_postgres: is_root(),
        };
        c.chown(&c.dir);
        c.spawn_watchdog();
        c
    }

    fn chown(&self, path: &Path) {
        if self.run_as_postgres {
            let ok = Command::new("chown").arg("postgres:").arg(path).status();
            assert!(
                ok.map(|s| s.success()).unwrap_or(false),
                "chown {} to postgres",
                path.display()
            );
        }
    }

    /// Turns on TLS with this certificate and key (PEM) before the first start.
    pub fn enable_tls(&self, cert_pem: &Path, key_pem: &Path) {
        let data = Path::new(&self.dir).join("data");
        std::fs::copy(cert_pem, data.join("server.crt")).expect("copy server.crt");
        std::fs::copy(key_pem, data.join("server.key")).expect("copy server.key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        if self.run_as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:"])
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .status();
            assert!(ok.map(|s| s.success()).unwrap_or(false), "chown server key");
        }
        append(
            &data.join("postgresql.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        );
    }

    /// The server's port on 127.0.0.1. Once asked for, it stays the cluster's
    /// port: a start never moves it to another.
    pub fn port(&self) -> u16 {
        self.handed_out.store(true, Ordering::SeqCst);
        self.port.load(Ordering::SeqCst)
    }

    /// The cluster's directory (for test fixtures).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs a server binary (as `postgres` when we are root).
    fn command(&self, tool: &str, args: &[&str]) -> Command {
        self.command_at(&self.bin.join(tool), args)
    }

    /// Runs `exe` (as `postgres` when we are root).
    fn command_at(&self, exe: &Path, args: &[&str]) -> Command {
        let exe = exe.to_path_buf();
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool, args).output().expect("run postgres tool");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        blocking(|| self.start_blocking())
    }

    fn start_blocking(&self) {
        let log = self.dir.join("server.log");
        for attempt in 1..=20 {
            let logged = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
            let port = self.port.load(Ordering::SeqCst);
            let out = self
                .command(
                    "pg_ctl",
                    &[
                        "-D",
                        &self.data(),
                        "-l",
                        &log.display().to_string(),
                        "-o",
                        &format!("-p {port}"),
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                )
                .output()
                .expect("run pg_ctl");
            if out.status.success() {
                return;
            }
            let server_log = std::fs::read(&log).unwrap_or_default();
            let this_start = String::from_utf8_lossy(server_log.get(logged..).unwrap_or_default());
            let taken = this_start.contains("could not bind") || this_start.contains("Address already in use");
            if attempt == 20 {
                panic!(
                    "pg_ctl start failed on port {port}{}: {}\n{this_start}",
                    if taken { " (taken by another program)" } else { "" },
                    String::from_utf8_lossy(&out.stderr),
                );
            }
            if taken && !self.handed_out.load(Ordering::SeqCst) {
                // Nobody knows this port yet: take the next one.
                self.port.store(next_port(), Ordering::SeqCst);
                continue;
            }
            // After a SIGKILL the old backends may hold shared memory for a
            // moment; a port the tests already use may be free again soon.
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn stop(&self) {
        blocking(|| self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]));
    }

    /// SIGKILL to the postmaster, as an OOM killer would.
    pub fn kill(&self) {
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("read postmaster.pid");
        let pid = pid_file.lines().next().expect("pid line").trim().to_string();
        let status = Command::new("kill").args(["-9", &pid]).status().expect("kill");
        assert!(status.success(), "kill -9 {pid}");
    }

    /// `pg_stat_statements` in the `postgres` database (not in template1, so
    /// new databases start without it). On a thread of its own: the caller
    /// may be inside a tokio runtime.
    pub fn create_extension_in_postgres_db(&self) {
        self.sql_in_postgres_db("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    }

    /// Runs `sql` in the `postgres` database, on a thread of its own (the
    /// caller may be inside a tokio runtime).
    fn sql_in_postgres_db(&self, sql: &str) {
        let dsn = self.dsn("postgres");
        let sql = sql.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client.batch_execute(&sql).await.unwrap();
            })
        })
        .join()
        .expect("run SQL in the postgres database");
    }

    /// A DSN for the superuser (trusted on 127.0.0.1).
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname} sslmode=disable",
            self.port()
        )
    }

    /// A DSN for `user` over the cluster's Unix socket, which it trusts: no
    /// password, so no SCRAM exchange (slow in a debug build on a busy
    /// machine) for tests about something else.
    pub fn socket_dsn(&self, user: &str, dbname: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={dbname} sslmode=disable",
            self.dir.display(),
            self.port()
        )
    }

    pub async fn connect(&self, dbname: &str, application_name: &str) -> tokio_postgres::Client {
        let dsn = format!("{} application_name={application_name}", self.dsn(dbname));
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to test cluster on port {}: {e}", self.port()));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Waits until the server no longer accepts connections (after a kill).
    pub async fn wait_down(&self) {
        let port = self.port();
        super::eventually(super::WAIT, &format!("server on port {port} down"), async || {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => Err("it still accepts connections".into()),
                Err(_) => Ok(()),
            }
        })
        .await
    }

    /// Stops the server and removes the directory when this process exits,
    /// however it exits.
    fn spawn_watchdog(&self) {
        let pg_ctl = self.command("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
        let mut stop: Vec<String> = vec![pg_ctl.get_program().to_string_lossy().into_owned()];
        stop.extend(pg_ctl.get_args().map(|a| format!("'{}'", a.to_string_lossy())));
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            parent = std::process::id(),
            stop = stop.join(" "),
            dir = self.dir.display()
        );
        // `setsid -f` forks the watchdog into its own session and returns at once.
        let status = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn cluster watchdog (setsid sh)");
        assert!(status.success(), "setsid -f sh: {status}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        blocking(|| {
            let _ = self
                .command("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"])
                .output();
            let _ = std::fs::remove_dir_all(&self.dir);
        })
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open postgresql.conf");
    f.write_all(text.as_bytes()).expect("append postgresql.conf");
}
