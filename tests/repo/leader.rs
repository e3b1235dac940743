//! Coordination: three pgsidecar processes on one cluster elect exactly one
//! leader through an advisory lock; leadership moves when the leader is
//! killed, loses its lock session or is cut off from the server, never to
//! two at once; the server-wide
//! queries run once per interval whatever the number of sidecars; `all` and
//! `none` need no lock. Each test owns its cluster and its processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::link::Link;
use crate::support::pg::Cluster;
use crate::support::process::Proc;
use crate::support::scrape::{Metrics, get, scrape, until, until_pg_up};
use crate::support::{WAIT, eventually};

/// How soon another sidecar leads once the leader is killed: two check
/// intervals (500 ms) plus the time a slow machine may need. A bound the test
/// asserts, not how long it waits (that is `WAIT`).
const TAKEOVER: Duration = Duration::from_secs(8);

const LEADER_ELECTION: &str = "coordination:\n  mode: leader-election\n  check_interval: 500ms\n";

/// pgsidecar processes, killed when dropped (also when a test fails). Also
/// used by `dashboards_move`.
pub(crate) struct Fleet {
    dir: PathBuf,
    procs: Vec<Option<(Proc, SocketAddr)>>,
}

impl Fleet {
    pub(crate) fn new() -> Fleet {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgsidecar-leader-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Fleet { dir, procs: Vec::new() }
    }

    /// A directory of this fleet's, removed when it is dropped.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Starts a pgsidecar with `coordination` YAML; returns its index.
    async fn spawn(&mut self, cluster: &Cluster, coordination: &str) -> usize {
        self.spawn_dsn(&cluster.dsn("postgres"), coordination).await
    }

    /// As `spawn`, with the datasource `dsn`.
    async fn spawn_dsn(&mut self, dsn: &str, coordination: &str) -> usize {
        let yaml = format!(
            "collection:\n  interval: 1s\n{coordination}checks:\n  pools:\n    - name: app\n      application_name: it-app\n      size: 5\n"
        );
        self.spawn_config(&yaml, &[("DATA_SOURCE_NAME", dsn)]).await
    }

    /// Starts a pgsidecar with this whole config file and environment;
    /// returns its index once it listens.
    pub(crate) async fn spawn_config(&mut self, yaml: &str, env: &[(&str, &str)]) -> usize {
        let n = self.procs.len();
        let config = self.dir.join(format!("config-{n}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let (p, addr) = Proc::pgsidecar(
            Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
                .arg("--config.file")
                .arg(&config)
                .envs(env.iter().copied()),
            &format!("pgsidecar {n}"),
            &self.dir.join(format!("log-{n}.txt")),
        )
        .await;
        self.procs.push(Some((p, addr)));
        n
    }

    pub(crate) fn addr(&self, n: usize) -> SocketAddr {
        self.procs[n].as_ref().map(|(_, a)| *a).expect("a live pgsidecar")
    }

    fn log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("log-{n}.txt"))).unwrap_or_default()
    }

    /// SIGTERM; returns the exit code once the process has ended.
    fn terminate(&mut self, n: usize) -> Option<i32> {
        let (p, _) = self.procs[n].take()?;
        p.terminate().code()
    }

    /// SIGKILL (dropping a `Proc` kills it).
    pub(crate) fn kill(&mut self, n: usize) {
        self.procs[n].take();
    }

    /// One scrape of every live process: (index, leader gauge, metrics).
    async fn sample(&self) -> Vec<(usize, f64, Metrics)> {
        let mut out = Vec::new();
        for (n, p) in self.procs.iter().enumerate() {
            if let Some((_, addr)) = p {
                let m = scrape(*addr).await;
                let leader = m.get("pgsidecar_leader", &[]).expect("pgsidecar_leader");
                out.push((n, leader, m));
            }
        }
        out
    }

    /// Samples every 100 ms until exactly one process is leader and `more`
    /// holds; panics if two are ever leader at once, or after `within`.
    pub(crate) async fn one_leader(&self, within: Duration, what: &str, more: impl Fn(usize) -> bool) -> usize {
        eventually(within, what, async || {
            let sample = self.sample().await;
            let leaders: Vec<usize> = sample.iter().filter(|s| s.1 == 1.0).map(|s| s.0).collect();
            if leaders.len() > 1 {
                // Not proof of an overlap: sample again, within the deadline.
                self.overlap(&sample).await;
            }
            match leaders[..] {
                [one] if more(one) => Ok(one),
                _ => Err(format!("leaders {leaders:?}")),
            }
        })
        .await
    }
}

impl Fleet {
    /// A sample showing several leaders: scrapes are sequential, so a leader
    /// scraped early may have stepped down before a later one took over.
    /// Panics on proof of a real overlap: one scraped again after the last
    /// leader that still leads, with no change of leadership in between.
    async fn overlap(&self, sample: &[(usize, f64, Metrics)]) {
        let leaders: Vec<&(usize, f64, Metrics)> = sample.iter().filter(|s| s.1 == 1.0).collect();
        let (last, earlier) = leaders.split_last().expect("several leaders");
        for (n, _, before) in earlier {
            let changes = |m: &Metrics| m.get("pgsidecar_leader_changes_total", &[]).expect("leader changes");
            let again = scrape(self.addr(*n)).await;
            let still = again.get("pgsidecar_leader", &[]) == Some(1.0) && changes(&again) == changes(before);
            assert!(!still, "two leaders at once: {n} led throughout while {} led", last.0);
        }
    }

    /// Every process's log is free of panics.
    pub(crate) fn assert_no_panics(&self) {
        for n in 0..self.procs.len() {
            let log = self.log(n);
            assert!(!log.contains("panicked"), "pgsidecar {n} panicked:\n{log}");
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for n in 0..self.procs.len() {
            self.kill(n);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn stat_database_calls(admin: &tokio_postgres::Client) -> f64 {
    admin
        .query_one(
            "SELECT COALESCE(sum(calls), 0)::float8 FROM pg_stat_statements \
             WHERE query LIKE '%FROM pg_stat_database WHERE datname IS NOT NULL%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_runs_the_server_queries_and_a_killed_one_is_replaced() {
    let cluster = Cluster::init();
    cluster.start();
    let admin = cluster.connect("postgres", "it-admin").await;
    admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    let mut fleet = Fleet::new();
    for _ in 0..3 {
        fleet.spawn(&cluster, LEADER_ELECTION).await;
    }

    // Exactly one leader; only it serves server-wide series; all serve the pools.
    let leader = fleet.one_leader(WAIT, "one leader", |_| true).await;
    until(fleet.addr(leader), WAIT, "the leader's stat_database", |m| {
        m.has("pg_stat_database_xact_commit").then_some(())
    })
    .await;
    // Every sidecar has finished its first per-pod run (they start at different moments).
    for n in 0..3 {
        until(fleet.addr(n), WAIT, "the pools collector's first run", |m| {
            m.has("pgsidecar_pool_capacity").then_some(())
        })
        .await;
    }
    for (n, is_leader, m) in fleet.sample().await {
        assert_eq!(is_leader == 1.0, n == leader, "{}", m.text);
        assert_eq!(m.has("pg_stat_database_xact_commit"), n == leader, "{n}:\n{}", m.text);
        assert_eq!(
            m.get("pgsidecar_pool_capacity", &[("pool", "app")]),
            Some(5.0),
            "{}",
            m.text
        );
        assert_eq!(
            m.get("pgsidecar_coordination_mode", &[("mode", "leader-election")]),
            Some(1.0)
        );
        assert_eq!(m.get("pg_up", &[]), Some(1.0), "{n}:\n{}", m.text);
        // Ready once each of its active collectors has run once; with the
        // server-health collectors the leader has some 25 on a pool of 3.
        let addr = fleet.addr(n);
        eventually(WAIT, &format!("sidecar {n} ready"), async || {
            match get(addr, "/readyz").await.status {
                200 => Ok(()),
                other => Err(format!("/readyz {other}")),
            }
        })
        .await;
    }
    assert!(
        fleet.log(leader).contains("msg=\"became leader\""),
        "{}",
        fleet.log(leader)
    );

    // The server-wide queries run once per interval, not once per sidecar.
    admin.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
    let started = Instant::now();
    // Lets time pass on purpose: the period in which the calls are counted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = stat_database_calls(&admin).await;
    let secs = started.elapsed().as_secs_f64();
    assert!(calls >= 1.0, "stat_database did not run: {calls} calls");
    assert!(
        calls <= 1.5 * secs + 2.0,
        "{calls} stat_database queries in {secs:.1}s from three sidecars"
    );

    // SIGKILL the leader: another takes over in time, never two at once.
    fleet.kill(leader);
    let killed = Instant::now();
    let next = fleet.one_leader(WAIT, "a new leader", |n| n != leader).await;
    assert!(
        killed.elapsed() < TAKEOVER,
        "a new leader {:?} after the kill",
        killed.elapsed()
    );
    until(fleet.addr(next), WAIT, "the new leader's stat_database", |m| {
        m.has("pg_stat_database_xact_commit").then_some(())
    })
    .await;
    // Stable afterwards: still exactly that one, sampled over a second.
    for _ in 0..10 {
        assert_eq!(fleet.one_leader(WAIT, "still one leader", |_| true).await, next);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.assert_no_panics();

    // SIGTERM releases the lock: the last one takes over.
    assert_eq!(fleet.terminate(next), Some(0), "{}", fleet.log(next));
    assert!(
        fleet.log(next).contains("msg=\"released leadership: shutting down\""),
        "{}",
        fleet.log(next)
    );
    let last = 3 - leader - next;
    fleet.one_leader(WAIT, "the last one leads", |n| n == last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_when_the_lock_session_is_terminated() {
    let cluster = Cluster::init();
    cluster.start();
    let admin = cluster.connect("postgres", "it-admin").await;
    let mut fleet = Fleet::new();
    for _ in 0..3 {
        fleet.spawn(&cluster, LEADER_ELECTION).await;
    }
    let leader = fleet.one_leader(WAIT, "one leader", |_| true).await;

    let terminated: bool = admin
        .query_one(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated);
    // Sample throughout: never two leaders; the old one steps down and logs it.
    eventually(WAIT, "the old leader logs its step-down", async || {
        fleet.one_leader(WAIT, "a leader after the termination", |_| true).await;
        let log = fleet.log(leader);
        if log.contains("msg=\"lost leadership\"") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    // Exactly one leader holds exactly one lock afterwards (possibly the old
    // one again, if it won fairly).
    let now = eventually(WAIT, "one leader holding one advisory lock", async || {
        let now = fleet
            .one_leader(WAIT, "one leader after the termination", |_| true)
            .await;
        let locks: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if locks == 1 {
            Ok(now)
        } else {
            Err(format!("{locks} advisory locks held"))
        }
    })
    .await;
    until(fleet.addr(now), WAIT, "the leader's stat_database", |m| {
        m.has("pg_stat_database_xact_commit").then_some(())
    })
    .await;
    // The old leader reconnected and still contends: alone, it leads again.
    for n in 0..3 {
        if n != leader {
            fleet.kill(n);
        }
    }
    fleet
        .one_leader(WAIT, "the old leader, alone, leads again", |n| n == leader)
        .await;
    fleet.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_all_runs_everything_and_mode_none_only_the_pods_collectors() {
    let cluster = Cluster::init();
    cluster.start();
    let mut fleet = Fleet::new();
    let all = fleet.spawn(&cluster, "").await;
    let none = fleet.spawn(&cluster, "coordination:\n  mode: none\n").await;

    let m = until(fleet.addr(all), WAIT, "mode all runs everything", |m| {
        (m.has("pg_stat_database_xact_commit")
            && m.all("pg_scrape_collector_success", &[]).len() == crate::support::default_collectors())
        .then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pgsidecar_leader", &[]), Some(1.0));
    assert_eq!(m.get("pgsidecar_coordination_mode", &[("mode", "all")]), Some(1.0));

    let m = until(fleet.addr(none), WAIT, "mode none runs the pools", |m| {
        (m.get("pg_scrape_collector_success", &[("collector", "pools")]) == Some(1.0)).then(|| m.clone())
    })
    .await;
    assert_eq!(m.get("pgsidecar_leader", &[]), Some(0.0));
    assert_eq!(m.get("pgsidecar_coordination_mode", &[("mode", "none")]), Some(1.0));
    assert_eq!(m.get("pg_up", &[]), Some(1.0), "{}", m.text);
    assert_eq!(m.get("pgsidecar_pool_capacity", &[("pool", "app")]), Some(5.0));
    let collectors: Vec<_> = m
        .all("pg_scrape_collector_success", &[])
        .iter()
        .map(|s| s.labels["collector"].clone())
        .collect();
    assert_eq!(collectors, ["pools"], "{}", m.text);
    assert!(!m.has("pg_stat_database_xact_commit"), "{}", m.text);
    assert_eq!(get(fleet.addr(none), "/readyz").await.status, 200);
    // No lock session in either mode.
    let admin = cluster.connect("postgres", "it-admin").await;
    let locks: i64 = admin
        .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0);
    fleet.assert_no_panics();
}

/// What the server's TCP stack takes to give up on the silent lock session
/// of a sidecar with `check_interval: 500ms`: the session asks for
/// `tcp_user_timeout` 3 s (see `leader.rs`). The link models it.
const SERVER_GIVES_UP: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_server_steps_down_before_its_lock_is_freed() {
    let cluster = Cluster::init();
    cluster.start();
    let link = Link::new(format!("127.0.0.1:{}", cluster.port()).parse().unwrap()).await;
    // A short connect timeout: the sessions of timed-out collections are
    // checked (and, being silent, closed) within it.
    let behind_link = cluster.dsn("postgres").replace(
        &format!("port={}", cluster.port()),
        &format!("port={} connect_timeout=1", link.port),
    );
    let mut fleet = Fleet::new();
    let cut_off = fleet.spawn_dsn(&behind_link, LEADER_ELECTION).await;
    fleet
        .one_leader(WAIT, "the sidecar behind the link leads", |n| n == cut_off)
        .await;
    for _ in 0..2 {
        fleet.spawn(&cluster, LEADER_ELECTION).await;
    }
    for n in 0..3 {
        until_pg_up(fleet.addr(n), WAIT, 1.0).await;
    }

    // The network drops: the leader hears nothing, and neither does the
    // server, which still holds the lock for the silent session.
    link.cut();
    let cut_at = Instant::now();
    let mut stepped_down = None;
    // Samples throughout the period on purpose, not to wait for anything.
    while cut_at.elapsed() < SERVER_GIVES_UP {
        for (n, leader, _) in fleet.sample().await {
            assert!(
                n == cut_off || leader == 0.0,
                "sidecar {n} leads while the server still holds the lock"
            );
            if n == cut_off && leader == 0.0 {
                stepped_down.get_or_insert(cut_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stepped_down = stepped_down.unwrap_or_else(|| {
        panic!(
            "the cut-off leader still claimed leadership when the server gave up on it:\n{}",
            fleet.log(cut_off)
        )
    });
    assert!(
        fleet.log(cut_off).contains("msg=\"lost leadership\""),
        "{}",
        fleet.log(cut_off)
    );

    // The server ends the session and frees the lock: a follower takes over.
    link.sever();
    let next = fleet.one_leader(WAIT, "a follower takes over", |n| n != cut_off).await;
    // Behind the cut, the old leader cannot reach Postgres and never leads.
    until_pg_up(fleet.addr(cut_off), WAIT, 0.0).await;
    let watch = Instant::now();
    // Samples throughout two seconds on purpose.
    while watch.elapsed() < Duration::from_secs(2) {
        fleet
            .one_leader(WAIT, "the follower keeps leading", |n| n == next)
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The network returns: the old leader reconnects as a follower.
    link.restore();
    until_pg_up(fleet.addr(cut_off), WAIT, 1.0).await;
    fleet
        .one_leader(WAIT, "the new leader keeps leading", |n| n == next)
        .await;
    fleet.assert_no_panics();
    eprintln!("the cut-off leader stepped down {stepped_down:?} after the cut");
}
