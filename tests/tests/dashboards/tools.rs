//! promtool and amtool on the rule and Alertmanager files; the Alertmanager entrypoint.

use std::process::Command;

use crate::support::*;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_check_rules() {
    let Some(promtool) = tool("promtool", "PROMTOOL") else {
        return;
    };
    let rules = dashboards_dir().join("prometheus").join("alerts.yml");
    let (ok, text) = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules));
    assert!(ok, "promtool check rules failed:\n{text}");
    let n = load_rules().len();
    assert!(
        text.contains(&format!("SUCCESS: {n} rules found")),
        "promtool found a different number of rules than alerts.yml has ({n}):\n{text}"
    );
}

#[test]
fn promtool_rule_unit_tests() {
    let Some(promtool) = tool("promtool", "PROMTOOL") else {
        return;
    };
    let tests = dashboards_dir().join("prometheus").join("alerts_test.yml");
    let (ok, text) = run(Command::new(&promtool)
        .current_dir(dashboards_dir().join("prometheus"))
        .arg("test")
        .arg("rules")
        .arg(&tests));
    assert!(ok, "promtool test rules failed:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn amtool_check_config_and_routes() {
    let Some(amtool) = tool("amtool", "AMTOOL") else {
        return;
    };
    let cfg = dashboards_dir()
        .join("alertmanager")
        .join("alertmanager.yml");
    let (ok, text) = run(Command::new(&amtool).arg("check-config").arg(&cfg));
    assert!(ok, "amtool check-config failed:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    // Critical alerts page through PagerDuty, everything else stays in the default receiver.
    let route = |labels: &[&str]| -> String {
        let (ok, text) = run(Command::new(&amtool)
            .arg("config")
            .arg("routes")
            .arg("test")
            .arg(format!("--config.file={}", cfg.display()))
            .args(labels));
        assert!(ok, "amtool config routes test {labels:?}:\n{text}");
        text.lines()
            .find(|l| !l.starts_with("Warning:") && !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    for r in load_rules() {
        let sev = r.value["labels"]["severity"].as_str().unwrap_or("");
        let got = route(&[&format!("alertname={}", r.name), &format!("severity={sev}")]);
        let want = if sev == "critical" {
            "pagerduty"
        } else {
            "default"
        };
        assert_eq!(got, want, "alert {} ({sev}) routes to {got}", r.name);
    }

    // The PagerDuty receiver reads the key from a file, never from the config itself.
    let text = std::fs::read_to_string(&cfg).expect("read alertmanager.yml");
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
    let pd = doc["receivers"]
        .as_sequence()
        .expect("receivers")
        .iter()
        .find(|r| r["name"].as_str() == Some("pagerduty"))
        .expect("pagerduty receiver");
    let pc = &pd["pagerduty_configs"][0];
    assert!(
        pc["routing_key_file"].as_str().is_some(),
        "routing_key_file"
    );
    assert!(pc["routing_key"].is_null() && pc["service_key"].is_null());
}

#[test]
fn alertmanager_entrypoint_writes_the_key_file() {
    let script = dashboards_dir().join("alertmanager").join("entrypoint.sh");
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("secrets").join("pd_key");
    // `cat <key file>` stands in for Alertmanager: the exec'd program sees the file.
    let (ok, text) = run(Command::new("sh")
        .arg(&script)
        .arg(&key_file)
        .env("PAGERDUTY_ROUTING_KEY", "R0UT1NGKEY")
        .env("PAGERDUTY_KEY_FILE", &key_file)
        .env("ALERTMANAGER_BIN", "cat"));
    assert!(ok, "entrypoint failed:\n{text}");
    assert_eq!(text, "R0UT1NGKEY");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
    }
    // Without the key the entrypoint refuses to start.
    let (ok, text) = run(Command::new("sh")
        .arg(&script)
        .env_remove("PAGERDUTY_ROUTING_KEY")
        .env("PAGERDUTY_KEY_FILE", &key_file)
        .env("ALERTMANAGER_BIN", "true"));
    assert!(
        !ok,
        "entrypoint started without PAGERDUTY_ROUTING_KEY:\n{text}"
    );
    assert!(text.contains("PAGERDUTY_ROUTING_KEY"), "{text}");
}
