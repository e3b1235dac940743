//! `scripts/demo`, as a newcomer runs it: it starts, and Ctrl-C (SIGINT)
//! stops every process it started and removes its temp dir. Regression: its
//! workload loops kept running after Ctrl-C, so PostgreSQL stayed up and the
//! temp dir stayed behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{WAIT, root};

/// Processes whose command line names `dir`.
fn processes_in(dir: &str) -> Vec<String> {
    let out = Command::new("pgrep").args(["-af", dir]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(String::from)
        .collect()
}

/// Kills what a failed run left behind, so one failure does not leave a
/// cluster running for the rest of the tests.
struct Leftovers(Option<String>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = Command::new("pkill").args(["-9", "-f", dir]).status();
            let _ = std::fs::remove_dir_all(dir);
            // The demo's pgsidecar: its command line does not name the dir.
            let demo = format!("{} --config.file examples/mluvme.yaml", env!("CARGO_BIN_EXE_pgsidecar"));
            let _ = Command::new("pkill").args(["-9", "-f", &demo]).status();
        }
    }
}

#[test]
fn ctrl_c_stops_everything_the_demo_started() {
    // As from a terminal, SIGINT is not ignored: a shell that starts with
    // it ignored (a background job of a non-interactive shell, and so
    // everything it starts) cannot trap it, and `env` execs bash with its
    // default action restored.
    let mut demo = Command::new("env")
        .arg("--default-signal=INT")
        .arg("bash")
        .arg(root().join("scripts/demo"))
        .current_dir(root())
        .env("PGSIDECAR_BIN", env!("CARGO_BIN_EXE_pgsidecar"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/demo");
    // Both streams into one channel of lines.
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        Box::new(demo.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(demo.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let mut seen = Vec::new();
    let mut dir = None;
    let deadline = Instant::now() + 4 * WAIT;
    while !seen.iter().any(|l: &String| l.contains("Ctrl-C stops everything")) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo did not come up:\n{}", seen.join("\n")));
        if dir.is_none()
            && let Some(at) = line.find("/tmp/pgsidecar-demo.")
        {
            dir = line[at..]
                .split_whitespace()
                .next()
                .map(|d| d.trim_end_matches('\u{1b}').to_string());
        }
        seen.push(line);
    }
    let dir = dir.unwrap_or_else(|| panic!("the demo did not say its dir:\n{}", seen.join("\n")));
    let dir = dir.split('\u{1b}').next().unwrap().to_string();
    let _leftovers = Leftovers(Some(dir.clone()));
    let running = processes_in(&dir);
    assert!(
        running.iter().any(|p| p.contains("postgres")) && running.iter().any(|p| p.contains("prometheus")),
        "the demo's servers are not running in {dir}: {running:#?}"
    );

    let status = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    loop {
        if demo.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            stopped.elapsed() < WAIT,
            "the demo still runs {:?} after SIGINT; processes: {:#?}",
            stopped.elapsed(),
            processes_in(&dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = processes_in(&dir);
    assert!(left.is_empty(), "left running after Ctrl-C: {left:#?}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} was not removed");
    // The workload's psql sessions and pgsidecar do not name the dir: find
    // them by the ports the demo printed.
    let port_after = |marker: &str| {
        seen.iter()
            .find_map(|l| l.split(marker).nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .map(String::from)
            .unwrap_or_else(|| panic!("no {marker} in the demo's output:\n{}", seen.join("\n")))
    };
    let pg_port = port_after("psql -h 127.0.0.1 -p ");
    let px_port = port_after("pgsidecar metrics     http://127.0.0.1:");
    for pattern in [
        format!("psql .*-p {pg_port}"),
        format!("pgsidecar .*127.0.0.1:{px_port}"),
    ] {
        let out = Command::new("pgrep").args(["-af", &pattern]).output().unwrap();
        let alive: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("pgrep"))
            .map(String::from)
            .collect();
        assert!(alive.is_empty(), "outlived the demo ({pattern}): {alive:#?}");
    }
}
