//! The Kubernetes manifests under `k8s/`: every kustomization renders with
//! `kubectl kustomize`, and the output passes `kubernetes-validate --strict`
//! (the prometheus-operator kinds, which have no schema there, are left out
//! of that step and any other kind without a schema fails). The pgsidecar
//! container has its probes, downward-API `POD_IP` and locked-down security
//! context, and the generated ConfigMap's pgsidecar.yaml is a configuration
//! pgsidecar accepts. The Service, ServiceMonitor and PodMonitor reach the
//! `metrics` port. The PrometheusRule and dashboard ConfigMaps that
//! `scripts/gen-k8s` writes into `k8s/monitoring/base` still hold
//! `alerts/pgsidecar.rules.yml` (which `promtool check rules` accepts) and
//! `dashboards/*.json`. The tools (kubectl, kubernetes-validate, promtool)
//! are required: a missing one fails the test, naming it.

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
/// prometheus-operator's kinds: kubernetes-validate has no schema for them.
const CRD_KINDS: [&str; 3] = ["PodMonitor", "ServiceMonitor", "PrometheusRule"];
/// The directories a prometheus-operator user applies.
const MONITORING: [&str; 2] = ["monitoring/sidecar", "monitoring/standalone"];
/// What to do when a drift test fails.
const REGENERATE: &str = "run scripts/gen-k8s and commit k8s/monitoring/base";

use crate::support::root;

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
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: rendered YAML does not parse: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect();
    assert!(!docs.is_empty(), "{path} renders nothing");

    // Everything but the prometheus-operator kinds, written back as YAML.
    let mut built_in = String::new();
    for doc in &docs {
        if CRD_KINDS.contains(&str_at(doc, &["kind"])) {
            assert_eq!(
                str_at(doc, &["apiVersion"]),
                "monitoring.coreos.com/v1",
                "{path}: apiVersion"
            );
        } else {
            built_in.push_str("---\n");
            built_in.push_str(&serde_yaml::to_string(doc).unwrap());
        }
    }
    if !built_in.is_empty() {
        let out = run(
            "kubernetes-validate",
            "install it with `python3 -m pip install kubernetes-validate` (scripts/test does it)",
            &["--strict", "--quiet", "-k", K8S_VERSION, "-"],
            Some(&built_in),
        );
        let report = report(&out);
        assert!(
            out.status.success() && !report.contains("Couldn't find schema"),
            "kubernetes-validate --strict -k {K8S_VERSION} rejects the output of kubectl kustomize {path}\n{report}"
        );
    }

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
        "32Mi",
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
    pgsidecar::config_from_yaml(text, "k8s", &Flags::default(), env)
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

/// Every directory under `k8s/` that holds a kustomization.yaml, relative to
/// `k8s/`, sorted.
fn kustomizations() -> Vec<String> {
    let k8s = root().join("k8s");
    let mut found = Vec::new();
    let mut todo = vec![k8s.clone()];
    while let Some(dir) = todo.pop() {
        if dir.join("kustomization.yaml").is_file() {
            found.push(dir.strip_prefix(&k8s).unwrap().to_string_lossy().into_owned());
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    found.sort();
    found
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The number of a container's port named `name`.
fn container_port(container: &Value, name: &str) -> Option<u64> {
    container
        .get("ports")?
        .as_sequence()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
        .get("containerPort")?
        .as_u64()
}

fn pod_labels(deployment: &Value) -> &Value {
    at(deployment, &["spec", "template", "metadata", "labels"])
}

/// Whether the label map `selector` selects an object with `labels`. An
/// empty selector would select everything, which no manifest here wants, so
/// it counts as no match.
fn matches_labels(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_mapping().expect("a label map");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a ServiceMonitor's or PodMonitor's `spec.selector` selects an
/// object with `labels`.
fn monitor_selects(monitor: &Value, labels: &Value) -> bool {
    let selector = at(monitor, &["spec", "selector"]);
    assert!(
        selector.get("matchExpressions").is_none(),
        "this test reads matchLabels only: extend monitor_selects for matchExpressions"
    );
    matches_labels(at(selector, &["matchLabels"]), labels)
}

/// The Service pgsidecar: its port "metrics" is 9188 and leads to the
/// pgsidecar container's 9188 in the pods it selects, the Deployment's.
fn check_service<'a>(dir: &str, docs: &'a [Value], deployment: &Value) -> &'a Value {
    let service = one(docs, "Service");
    assert_eq!(
        str_at(service, &["metadata", "name"]),
        "pgsidecar",
        "{dir}: Service name"
    );
    let port = seq(service, &["spec", "ports"])
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("metrics"))
        .unwrap_or_else(|| panic!("{dir}: the Service has no port named metrics"));
    assert_eq!(at(port, &["port"]).as_u64(), Some(9188), "{dir}: Service port");
    let target = match at(port, &["targetPort"]) {
        Value::String(name) => container_port(pgsidecar_container(deployment), name),
        other => other.as_u64(),
    };
    assert_eq!(
        target,
        Some(9188),
        "{dir}: the Service's targetPort is the pgsidecar container's port 9188"
    );
    assert!(
        matches_labels(at(service, &["spec", "selector"]), pod_labels(deployment)),
        "{dir}: the Service selects the Deployment's pods"
    );
    service
}

/// A file that scripts/gen-k8s writes says so on its first line.
fn check_generated(file: &str) {
    let path = format!("k8s/monitoring/base/{file}");
    assert!(
        read(&path).starts_with("# Generated by scripts/gen-k8s from "),
        "{path} lacks its \"Generated by scripts/gen-k8s\" header; {REGENERATE}"
    );
}

/// The `*.json` files of `dashboards/`: file name to content.
fn dashboard_files() -> BTreeMap<String, String> {
    let dir = root().join("dashboards");
    let files: BTreeMap<String, String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    assert!(!files.is_empty(), "no dashboards/*.json");
    files
}

#[test]
fn every_kustomization_renders_and_validates() {
    let dirs = kustomizations();
    for dir in [
        "base",
        "sidecar",
        "standalone",
        "monitoring/base",
        "monitoring/sidecar",
        "monitoring/standalone",
    ] {
        assert!(
            dirs.iter().any(|d| d == dir),
            "no k8s/{dir}/kustomization.yaml among {dirs:?}"
        );
    }
    for dir in &dirs {
        render_and_validate(dir);
    }
}

#[test]
fn sidecar_renders_validates_and_carries_a_valid_config() {
    let docs = render_and_validate("sidecar");
    let deployment = one(&docs, "Deployment");
    assert_eq!(str_at(deployment, &["metadata", "name"]), "mluvme-api");
    assert_eq!(at(deployment, &["spec", "replicas"]).as_u64(), Some(3));
    let env = check_container("sidecar", deployment);
    let text = config_text("sidecar", &docs, deployment);

    // Headless: one DNS address per replica, since each reports its own pool.
    let service = check_service("sidecar", &docs, deployment);
    assert_eq!(
        str_at(service, &["spec", "clusterIP"]),
        "None",
        "sidecar: headless Service"
    );

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
    check_service("standalone", &docs, deployment);

    let text = config_text("standalone", &docs, deployment);
    let config = load("standalone", text, &base_env());
    assert_eq!(config.coordination.mode.as_str(), "all");
    assert!(config.checks.pools.is_empty(), "no per-pod pools check when standalone");
    check_datasource("standalone", text, &env);
}

#[test]
fn the_servicemonitor_scrapes_the_standalone_service() {
    let docs = render_and_validate("monitoring/standalone");
    assert!(
        of_kind(&docs, "PodMonitor").is_empty(),
        "the standalone pod is scraped through its Service only"
    );
    let monitor = one(&docs, "ServiceMonitor");
    let standalone = render_and_validate("standalone");
    let service = check_service("standalone", &standalone, one(&standalone, "Deployment"));
    let sidecar = render_and_validate("sidecar");
    assert!(
        monitor_selects(monitor, at(service, &["metadata", "labels"])),
        "the ServiceMonitor selects the Service of k8s/standalone"
    );
    assert!(
        !monitor_selects(monitor, at(one(&sidecar, "Service"), &["metadata", "labels"])),
        "the ServiceMonitor must not select the Service of k8s/sidecar: the PodMonitor scrapes those pods"
    );
    let ports: Vec<&str> = seq(service, &["spec", "ports"])
        .iter()
        .map(|p| str_at(p, &["name"]))
        .collect();
    let endpoints = seq(monitor, &["spec", "endpoints"]);
    assert!(!endpoints.is_empty(), "the ServiceMonitor has no endpoints");
    for endpoint in endpoints {
        let port = str_at(endpoint, &["port"]);
        assert!(
            ports.contains(&port),
            "ServiceMonitor port {port} is not one of the Service's {ports:?}"
        );
        assert_eq!(str_at(endpoint, &["path"]), "/metrics");
    }
}

#[test]
fn the_podmonitor_scrapes_the_sidecar_pods() {
    let docs = render_and_validate("monitoring/sidecar");
    assert!(
        of_kind(&docs, "ServiceMonitor").is_empty(),
        "the sidecar pods are scraped by the PodMonitor only"
    );
    let monitor = one(&docs, "PodMonitor");
    let sidecar = render_and_validate("sidecar");
    let deployment = one(&sidecar, "Deployment");
    let standalone = render_and_validate("standalone");
    assert!(
        monitor_selects(monitor, pod_labels(deployment)),
        "the PodMonitor selects the pods of k8s/sidecar"
    );
    assert!(
        !monitor_selects(monitor, pod_labels(one(&standalone, "Deployment"))),
        "the PodMonitor must not select the pod of k8s/standalone: the ServiceMonitor scrapes it"
    );
    let endpoints = seq(monitor, &["spec", "podMetricsEndpoints"]);
    assert!(!endpoints.is_empty(), "the PodMonitor has no podMetricsEndpoints");
    for endpoint in endpoints {
        let port = str_at(endpoint, &["port"]);
        assert_eq!(
            container_port(pgsidecar_container(deployment), port),
            Some(9188),
            "PodMonitor port {port} is the pgsidecar container's port 9188"
        );
        assert_eq!(str_at(endpoint, &["path"]), "/metrics");
    }
}

#[test]
fn the_prometheusrule_holds_the_alert_rules() {
    check_generated("prometheusrule.yaml");
    let rules: Value = serde_yaml::from_str(&read("alerts/pgsidecar.rules.yml")).unwrap();
    let want = seq(&rules, &["groups"]);
    for dir in MONITORING {
        let docs = render_and_validate(dir);
        let got = seq(one(&docs, "PrometheusRule"), &["spec", "groups"]);
        let first_difference = want
            .iter()
            .zip(got)
            .find(|(w, g)| w != g)
            .map_or("the number of groups".to_string(), |(w, _)| {
                format!("group {}", str_at(w, &["name"]))
            });
        assert!(
            got == want,
            "k8s/{dir}: the PrometheusRule's groups are not those of alerts/pgsidecar.rules.yml (first difference: {first_difference}); {REGENERATE}"
        );
    }
}

#[test]
fn promtool_accepts_the_prometheusrule_groups() {
    let docs = render_and_validate("monitoring/base");
    let groups = at(one(&docs, "PrometheusRule"), &["spec", "groups"]);
    if let Err(report) = crate::support::promtool::check_rules(groups, "k8s") {
        panic!("promtool check rules rejects the groups of the PrometheusRule in k8s/monitoring/base\n{report}");
    }
}

#[test]
fn the_dashboard_configmaps_hold_the_dashboards() {
    check_generated("dashboards.yaml");
    let want = dashboard_files();
    for (file, text) in &want {
        // kubectl apply (client-side) copies the object into an annotation,
        // and annotations are limited to 256 KiB in all.
        assert!(
            text.len() < 200_000,
            "dashboards/{file} is too large for a ConfigMap that kubectl apply can apply"
        );
    }
    for dir in MONITORING {
        let docs = render_and_validate(dir);
        let mut got = BTreeMap::new();
        for cm in of_kind(&docs, "ConfigMap") {
            let name = str_at(cm, &["metadata", "name"]);
            let label = cm
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| l.get("grafana_dashboard"));
            assert_eq!(
                label.and_then(Value::as_str),
                Some("1"),
                "k8s/{dir}: ConfigMap {name} lacks the label grafana_dashboard: \"1\""
            );
            let data = at(cm, &["data"]).as_mapping().unwrap();
            assert_eq!(data.len(), 1, "k8s/{dir}: ConfigMap {name} holds one dashboard");
            for (key, text) in data {
                let key = key.as_str().unwrap().to_string();
                let dup = got.insert(key.clone(), text.as_str().unwrap().to_string());
                assert!(dup.is_none(), "k8s/{dir}: two ConfigMaps hold {key}");
            }
        }
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "k8s/{dir}: the dashboard ConfigMaps do not hold the files of dashboards/; {REGENERATE}"
        );
        for (file, text) in &want {
            assert!(
                got[file] == *text,
                "k8s/{dir}: the ConfigMap key {file} is not dashboards/{file} byte for byte; {REGENERATE}"
            );
        }
    }
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
