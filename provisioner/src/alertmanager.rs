//! The Amazon Managed Prometheus Alertmanager definition: a pure rendering of
//! the Alertmanager configuration that sends critical alerts (the rules in
//! `dashboards/prometheus/`) to the SNS topic `alarms`, whose HTTPS
//! subscription is PagerDuty. It follows the dev stack's
//! `dashboards/alertmanager/alertmanager.yml` (same grouping, same inhibit
//! rules); only the receiver differs: SNS with SigV4, as AMP requires,
//! instead of PagerDuty directly (AMP's Alertmanager only sends to SNS).

use serde_json::json;

/// The Alertmanager configuration (what `amtool check-config` validates).
/// `topic_arn` and `region` are the SNS topic's; nothing secret is in it
/// (the PagerDuty URL lives in the topic's subscription).
pub fn config(topic_arn: &str, region: &str) -> String {
    let sns = json!({
        "topic_arn": topic_arn,
        "sigv4": {"region": region},
        "send_resolved": true,
        "subject": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
        "message": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n{{ end }}",
        "attributes": {"severity": "{{ .CommonLabels.severity }}"},
    });
    let doc = json!({
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "job", "service", "upstream", "instance"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [{
                "receiver": "sns-alarms",
                "matchers": ["severity=\"critical\""],
                "group_wait": "10s",
                "repeat_interval": "1h",
            }],
        },
        "inhibit_rules": [
            {
                "source_matchers": ["alertname=\"GatewayNoHealthyTargets\""],
                "target_matchers": ["alertname=\"GatewayTargetUnhealthy\""],
                "equal": ["job", "instance", "upstream"],
            },
            {
                "source_matchers": ["alertname=~\"RedisDown|GatewayRedisUnreachable\""],
                "target_matchers": ["alertname=\"GatewayRateLimitFallback\""],
                "equal": ["job"],
            },
            {
                "source_matchers": ["alertname=\"ScrapeTargetDown\""],
                "target_matchers": ["severity=\"warning\"", "alertname!=\"ScrapeTargetDown\""],
                "equal": ["job", "instance"],
            },
        ],
        // Warnings stay visible in Alertmanager without paging anyone.
        "receivers": [
            {"name": "default"},
            {"name": "sns-alarms", "sns_configs": [sns]},
        ],
    });
    serde_norway::to_string(&doc).unwrap_or_default()
}

/// The definition AMP takes (`CreateAlertManagerDefinition` / `Put...`):
/// the configuration under `alertmanager_config`.
pub fn definition(topic_arn: &str, region: &str) -> String {
    let doc = json!({"alertmanager_config": config(topic_arn, region)});
    serde_norway::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:sns:us-east-1:123456789012:edge-suite-staging-alarms";

    /// amtool: `$AMTOOL`, or on PATH (Debian `prometheus-alertmanager`;
    /// `.ci/deps/provisioner.sh` installs it).
    fn amtool() -> std::path::PathBuf {
        if let Some(p) = std::env::var_os("AMTOOL") {
            return p.into();
        }
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("amtool"))
                    .find(|p| p.exists())
            })
            .expect("amtool not found: run .ci/deps/provisioner.sh or set AMTOOL")
    }

    #[test]
    fn the_definition_passes_amtool_and_routes_critical_alerts_to_sns() {
        let dir = std::env::temp_dir().join(format!("prov-am-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let file = dir.join("alertmanager.yml");
        // What AMP gets, unwrapped as AMP does.
        let def: serde_json::Value =
            serde_norway::from_str(&definition(ARN, "us-east-1")).expect("definition is YAML");
        let cfg = def["alertmanager_config"]
            .as_str()
            .expect("alertmanager_config");
        assert_eq!(cfg, config(ARN, "us-east-1"));
        std::fs::write(&file, cfg).expect("write");
        let out = std::process::Command::new(amtool())
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run amtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "amtool check-config:\n{text}\n{cfg}");
        assert!(text.contains("SUCCESS"), "{text}");
        let route = |labels: &[&str]| {
            let out = std::process::Command::new(amtool())
                .args(["config", "routes", "test", "--config.file"])
                .arg(&file)
                .args(labels)
                .output()
                .expect("run amtool");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(route(&["severity=critical", "alertname=X"]), "sns-alarms");
        assert_eq!(route(&["severity=warning", "alertname=X"]), "default");
        let parsed: serde_json::Value = serde_norway::from_str(cfg).expect("yaml");
        let sns = &parsed["receivers"][1]["sns_configs"][0];
        assert_eq!(sns["topic_arn"], ARN);
        assert_eq!(sns["sigv4"]["region"], "us-east-1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
