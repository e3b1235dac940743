//! `promtool check rules` on rule groups built by a test, which the
//! dashboard and manifest tests share.

use std::process::Command;

/// `promtool check rules` on a rule file made of `groups` (a YAML or JSON
/// value holding the `groups:` list); promtool's report if it fails.
pub fn check_rules(groups: &impl serde::Serialize, what: &str) -> Result<(), String> {
    let text = serde_yaml::to_string(&serde_json::json!({ "groups": groups })).expect("encode the rule file");
    let path = std::env::temp_dir().join(format!("pgsidecar-{what}-{}.rules.yml", std::process::id()));
    std::fs::write(&path, text).expect("write the rule file");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run promtool (Debian package prometheus; scripts/test installs it): {e}"));
    let _ = std::fs::remove_file(&path);
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
