//! The Kubernetes manifests under `k8s/`: every directory renders with
//! `kubectl kustomize`, the output passes `kubernetes-validate --strict`
//! (custom resources such as the PodMonitor have no schema there and are only
//! warned about), the pgsidecar container has its probes, downward-API
//! `POD_IP` and locked-down security context, and the generated ConfigMap's
//! pgsidecar.yaml is a configuration pgsidecar accepts. Both tools are
//! required: a missing one fails the test, naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pgsidecar::config::{Config, Flags};
use serde::Deserialize;
use serde_yaml::Value;

/// A Kubernetes version kubernetes-validate ships schemas for (offline).
const K8S_VERSION: &str = "1.30.0";
const POD_IP: &str = "10.1.2.3";
const DB_HOST: &str = "db.test.svc";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Runs `tool args…` with `stdin`, failing with a clear message when the tool
/// is not installed.
fn run(tool: &str, install: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(root())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("`{tool}` is required for the k8s tests but cannot be run ({e}); {install}"));
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn report(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubectl kustomize k8s/<dir>`, then `kubernetes-validate --strict` on the
/// result; returns the rendered documents.
fn render_and_validate(dir: &str) -> Vec<Value> {
    let path = format!("k8s/{dir}");
    let out = run(
        "kubectl",
        "install kubectl (Debian: apt-get install kubernetes-client; scripts/test does it)",
        &["kustomize", &path],
        None,
    );
    assert!(
        out.status.success(),
        "kubectl kustomize {path} failed\n{}",
        report(&out)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();

    let out = run(
        "kubernetes-validate",
        "install it with `python3 -m pip install kubernetes-validate` (scripts/test does it)",
        &["--strict", "--quiet", "-k", K8S_VERSION, "-"],
        Some(&yaml),
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict -k {K8S_VERSION} rejects the output of kubectl kustomize {path}\n{}\n--- rendered ---\n{yaml}",
        report(&out)
    );

    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: rendered YAML does not parse: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect();
    assert!(!docs.is_empty(), "{path} renders nothing");
    for doc in &docs {
        let kind = str_at(doc, &["kind"]);
        assert!(
            !matches!(
                kind,
                "Secret" | "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" | "ServiceAccount"
            ),
            "{path} must not ship a {kind}: secrets are the user's, and leader election needs no RBAC"
        );
    }
    docs
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("missing {} in\n{}", path.join("."), serde_yaml::to_string(v).unwrap()));
    }
    cur
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{} is not a list", path.join(".")))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| str_at(d, &["kind"]) == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// The Deployment's pod spec and its container named pgsidecar.
fn pgsidecar_container(deployment: &Value) -> &Value {
    seq(deployment, &["spec", "template", "spec", "containers"])
        .iter()
        .find(|c| str_at(c, &["name"]) == "pgsidecar")
        .expect("a container named pgsidecar")
}

/// Checks what every pgsidecar container must have; returns its env list.
fn check_container(dir: &str, deployment: &Value) -> Vec<Value> {
    let c = pgsidecar_container(deployment);
    assert_eq!(
        str_at(c, &["image"]),
        "ghcr.io/pgsidecar/pgsidecar:0.1.0",
        "{dir}: image"
    );
    assert_eq!(
        seq(c, &["args"]),
        &[Value::from("--config.file=/etc/pgsidecar/pgsidecar.yaml")],
        "{dir}: args"
    );

    // A probe's port is a number or the name of a containerPort.
    let port_of = |v: &Value| -> u64 {
        match v {
            Value::Number(n) => n.as_u64().unwrap(),
            Value::String(name) => seq(c, &["ports"])
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
                .unwrap_or_else(|| panic!("{dir}: probe port {name:?} is not a container port")),
            other => panic!("{dir}: bad probe port {other:?}"),
        }
    };
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(str_at(c, &[probe, "httpGet", "path"]), path, "{dir}: {probe} path");
        assert_eq!(port_of(at(c, &[probe, "httpGet", "port"])), 9188, "{dir}: {probe} port");
    }
    assert!(
        seq(c, &["ports"])
            .iter()
            .any(|p| str_at(p, &["name"]) == "metrics" && p.get("containerPort").and_then(Value::as_u64) == Some(9188)),
        "{dir}: port metrics 9188"
    );

    let env = seq(c, &["env"]).to_vec();
    let pod_ip = env
        .iter()
        .find(|e| str_at(e, &["name"]) == "POD_IP")
        .unwrap_or_else(|| panic!("{dir}: no POD_IP env"));
    assert_eq!(
        str_at(pod_ip, &["valueFrom", "fieldRef", "fieldPath"]),
        "status.podIP",
        "{dir}: POD_IP"
    );

    let sc = at(c, &["securityContext"]);
    for (key, want) in [
        ("runAsNonRoot", true),
        ("readOnlyRootFilesystem", true),
        ("allowPrivilegeEscalation", false),
    ] {
        assert_eq!(at(sc, &[key]).as_bool(), Some(want), "{dir}: securityContext.{key}");
    }
    assert_eq!(at(sc, &["runAsUser"]).as_u64(), Some(65532), "{dir}: runAsUser");
    assert_eq!(
        seq(sc, &["capabilities", "drop"]),
        &[Value::from("ALL")],
        "{dir}: capabilities"
    );
    assert_eq!(
        str_at(sc, &["seccompProfile", "type"]),
        "RuntimeDefault",
        "{dir}: seccompProfile"
    );

    assert_eq!(
        str_at(c, &["resources", "requests", "cpu"]),
        "10m",
        "{dir}: cpu request"
    );
    assert_eq!(
        str_at(c, &["resources", "requests", "memory"]),
        "16Mi",
        "{dir}: memory request"
    );
    assert_eq!(
        str_at(c, &["resources", "limits", "memory"]),
        "64Mi",
        "{dir}: memory limit"
    );

    let annotations = at(deployment, &["spec", "template", "metadata", "annotations"]);
    assert_eq!(
        str_at(annotations, &["prometheus.io/scrape"]),
        "true",
        "{dir}: scrape annotation"
    );
    assert_eq!(
        str_at(annotations, &["prometheus.io/port"]),
        "9188",
        "{dir}: port annotation"
    );

    // The config volume is the generated ConfigMap, the password the Secret.
    let volumes = seq(deployment, &["spec", "template", "spec", "volumes"]);
    assert!(
        volumes
            .iter()
            .any(|v| v.get("secret").is_some() && str_at(v, &["secret", "secretName"]) == "pgsidecar-db"),
        "{dir}: the Secret pgsidecar-db is mounted"
    );
    env
}

/// The generated ConfigMap's pgsidecar.yaml, checked against the Deployment's
/// config volume.
fn config_text<'a>(dir: &str, docs: &'a [Value], deployment: &Value) -> &'a str {
    let cm = one(docs, "ConfigMap");
    let name = str_at(cm, &["metadata", "name"]);
    assert!(name.starts_with("pgsidecar-config-"), "{dir}: ConfigMap name {name}");
    let volumes = seq(deployment, &["spec", "template", "spec", "volumes"]);
    assert!(
        volumes
            .iter()
            .any(|v| v.get("configMap").is_some() && str_at(v, &["configMap", "name"]) == name),
        "{dir}: the Deployment mounts ConfigMap {name}"
    );
    str_at(cm, &["data", "pgsidecar.yaml"])
}

fn load(dir: &str, text: &str, env: &BTreeMap<String, String>) -> Config {
    Config::from_yaml(text, "k8s", &Flags::default(), env)
        .unwrap_or_else(|e| panic!("k8s/{dir}: the ConfigMap's pgsidecar.yaml is not a valid config: {e}\n{text}"))
}

/// The minimal environment the config file itself refers to.
fn base_env() -> BTreeMap<String, String> {
    [("POD_IP", POD_IP), ("DB_HOST", DB_HOST)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The container's own environment as Kubernetes would give it: plain values
/// with `$(VAR)` references expanded, POD_IP from the downward API, and the
/// password file replaced by a temporary one.
fn container_env(dir: &str, env: &[Value], password_file: &Path) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for e in env {
        let name = str_at(e, &["name"]).to_string();
        let value = if name == "POD_IP" {
            POD_IP.to_string()
        } else if name.ends_with("_FILE") {
            password_file.display().to_string()
        } else {
            let mut v = str_at(e, &["value"]).to_string();
            for (k, val) in &out {
                v = v.replace(&format!("$({k})"), val);
            }
            assert!(!v.contains("$("), "{dir}: {name} refers to an undefined variable: {v}");
            v
        };
        out.insert(name, value);
    }
    out
}

fn password_file(dir: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pgsidecar-k8s-{}-{dir}", std::process::id()));
    std::fs::write(&p, "s3cret\n").unwrap();
    p
}

/// Checks the datasource the container's environment produces.
fn check_datasource(dir: &str, text: &str, env: &[Value]) {
    let file = password_file(dir);
    let env = container_env(dir, env, &file);
    let config = load(dir, text, &env);
    std::fs::remove_file(&file).ok();
    let pg = &config.datasource.pg;
    assert_eq!(pg.get_user(), Some("pgsidecar"), "k8s/{dir}: user");
    assert_eq!(pg.get_dbname(), Some("mluvme"), "k8s/{dir}: database");
    assert_eq!(
        format!("{:?}", pg.get_hosts()),
        format!("{:?}", [tokio_postgres::config::Host::Tcp(env["DB_HOST"].clone())]),
        "k8s/{dir}: host"
    );
    assert_eq!(
        config.datasource.password().as_deref(),
        Some("s3cret"),
        "k8s/{dir}: password"
    );
}

#[test]
fn sidecar_renders_validates_and_carries_a_valid_config() {
    let docs = render_and_validate("sidecar");
    let deployment = one(&docs, "Deployment");
    assert_eq!(str_at(deployment, &["metadata", "name"]), "mluvme-api");
    assert_eq!(at(deployment, &["spec", "replicas"]).as_u64(), Some(3));
    let env = check_container("sidecar", deployment);
    let text = config_text("sidecar", &docs, deployment);

    let config = load("sidecar", text, &base_env());
    assert_eq!(config.coordination.mode.as_str(), "leader-election");
    let pools = &config.checks.pools;
    assert_eq!(pools.len(), 1, "the api pool");
    let addr = pools[0].client_addr.as_ref().expect("the pool matches client_addr");
    assert_eq!(addr.addr.to_string(), POD_IP, "client_addr is ${{POD_IP}}");

    // The checks are those of examples/mluvme.yaml.
    let example = std::fs::read_to_string(root().join("examples/mluvme.yaml")).unwrap();
    let example = load("sidecar", &example, &base_env());
    assert_eq!(format!("{:?}", config.checks), format!("{:?}", example.checks));

    check_datasource("sidecar", text, &env);
}

#[test]
fn standalone_renders_validates_and_carries_a_valid_config() {
    let docs = render_and_validate("standalone");
    let deployment = one(&docs, "Deployment");
    assert_eq!(str_at(deployment, &["metadata", "name"]), "pgsidecar");
    assert_eq!(at(deployment, &["spec", "replicas"]).as_u64(), Some(1));
    let containers = seq(deployment, &["spec", "template", "spec", "containers"]);
    assert_eq!(containers.len(), 1, "pgsidecar alone");
    let env = check_container("standalone", deployment);

    let service = one(&docs, "Service");
    assert_eq!(str_at(service, &["metadata", "name"]), "pgsidecar");
    let port = &seq(service, &["spec", "ports"])[0];
    assert_eq!(at(port, &["port"]).as_u64(), Some(9188));

    let text = config_text("standalone", &docs, deployment);
    let config = load("standalone", text, &base_env());
    assert_eq!(config.coordination.mode.as_str(), "all");
    assert!(config.checks.pools.is_empty(), "no per-pod pools check when standalone");
    check_datasource("standalone", text, &env);
}

#[test]
fn monitoring_renders_and_validates() {
    let docs = render_and_validate("monitoring");
    let pm = one(&docs, "PodMonitor");
    assert_eq!(str_at(pm, &["apiVersion"]), "monitoring.coreos.com/v1");
    let endpoint = &seq(pm, &["spec", "podMetricsEndpoints"])[0];
    assert_eq!(str_at(endpoint, &["port"]), "metrics");
    assert_eq!(str_at(endpoint, &["path"]), "/metrics");
}

#[test]
fn the_example_secret_is_not_applied() {
    let dir = root().join("k8s/sidecar");
    assert!(dir.join("secret.example.yaml").is_file());
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let k: Value = serde_yaml::from_str(&kustomization).unwrap();
    for list in ["resources", "bases"] {
        if let Some(items) = k.get(list).and_then(Value::as_sequence) {
            assert!(
                items.iter().all(|i| !i.as_str().unwrap_or("").contains("secret")),
                "secret.example.yaml must stay out of {list}"
            );
        }
    }
}
