//! The container image, as far as it can be tested without a container
//! engine: the Dockerfile's user, port and config path agree with the
//! manifests, and the binary runs as an unprivileged user with a read-only
//! working directory and no home.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::pg;
use crate::support::process::Proc;
use crate::support::scrape::{get, until_pg_up};
use crate::support::{WAIT, eventually};

fn read(rel: &str) -> String {
    std::fs::read_to_string(crate::support::root().join(rel)).unwrap()
}

/// The value after `key` on the Dockerfile line that starts with it.
fn instruction<'a>(dockerfile: &'a str, key: &str) -> &'a str {
    dockerfile
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("Dockerfile has no {key}"))
        .trim()
}

#[test]
fn dockerfile_agrees_with_the_manifests() {
    let dockerfile = read("Dockerfile");
    let user = instruction(&dockerfile, "USER ");
    let port = instruction(&dockerfile, "EXPOSE ");
    let cmd = instruction(&dockerfile, "CMD ");
    let uid = user.split(':').next().unwrap();
    assert_eq!(
        port,
        pgsidecar::config::DEFAULT_PORT.to_string(),
        "EXPOSE is the default port"
    );
    let config_arg = cmd.trim_matches(|c| c == '[' || c == ']' || c == '"');
    let config_path = config_arg
        .strip_prefix("--config.file=")
        .expect("CMD passes --config.file=");
    let config_dir = Path::new(config_path).parent().unwrap().to_str().unwrap();
    for manifest in ["k8s/sidecar/deployment.yaml", "k8s/standalone/deployment.yaml"] {
        let m = read(manifest);
        assert!(m.contains(&format!("runAsUser: {uid}")), "{manifest} runs as {uid}");
        assert!(
            m.contains(&format!("containerPort: {port}")),
            "{manifest} exposes {port}"
        );
        assert!(m.contains(config_arg), "{manifest} passes {config_arg}");
        assert!(
            m.contains(&format!("mountPath: {config_dir}")),
            "{manifest} mounts {config_dir}"
        );
        assert!(m.contains("readOnlyRootFilesystem: true"), "{manifest}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_unprivileged_with_nothing_writable() {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    // A copy of the binary and a config in a directory the unprivileged user
    // can read but not write; the process's working directory is that too.
    let dir = std::env::temp_dir().join(format!("pgsidecar-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("pgsidecar");
    std::fs::copy(env!("CARGO_BIN_EXE_pgsidecar"), &bin).unwrap();
    let config = dir.join("pgsidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "datasource:\n  dsn: \"{}\"\ncollection:\n  interval: 1s\n",
            pg::shared().dsn("postgres")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();

    // setpriv execs the binary itself, so the SIGTERM below reaches pgsidecar.
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    // The log is written through the file this process opened, outside the
    // read-only directory.
    let log = std::env::temp_dir().join(format!("pgsidecar-image-{}.log", std::process::id()));
    let (child, addr) = Proc::pgsidecar(
        cmd.args(["--config.file", config.to_str().unwrap()])
            .current_dir(&dir)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/nonexistent"),
        "pgsidecar",
        &log,
    )
    .await;
    if root {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "runs as nobody: {uid}"
        );
    }
    until_pg_up(addr, WAIT, 1.0).await;
    eventually(WAIT, "ready", async || match get(addr, "/readyz").await {
        r if r.status == 200 => Ok(()),
        r => Err(format!("status {}", r.status)),
    })
    .await;
    let status = child.terminate();
    let logs = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert!(status.success(), "exit {status}: {logs}");
    assert!(!logs.contains("level=error"), "{logs}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
