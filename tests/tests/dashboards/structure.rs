//! Static checks of the dashboard JSON, the provisioning files and the alert rules: what
//! Grafana 10+ needs to import them and what the other tools rely on.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::support::*;

const EXPECTED_UIDS: &[(&str, &str)] = &[
    ("gateway-overview", "edge-gateway-overview"),
    ("ecs-tasks", "edge-ecs-tasks"),
    ("database", "edge-database"),
    ("redis", "edge-redis"),
];

/// Core panel plugins of Grafana 10 and 11 that the dashboards use.
const PANEL_TYPES: &[&str] = &["row", "timeseries", "stat", "table", "heatmap"];

/// Grafana unit ids (public/app/.../valueFormats/categories.ts) the dashboards use.
const UNITS: &[&str] = &[
    "short",
    "none",
    "percent",
    "percentunit",
    "ms",
    "s",
    "bytes",
    "Bps",
    "pps",
    "ops",
    "reqps",
];

#[test]
fn dashboards_import_into_grafana_10() {
    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let mut uids = BTreeSet::new();
    for (name, uid) in EXPECTED_UIDS {
        let d = load_dashboard(name);
        let ctx = format!("dashboards/grafana/{name}.json");
        let schema = d["schemaVersion"].as_u64().unwrap_or(0);
        assert!(schema >= 38, "{ctx}: schemaVersion {schema} < 38");
        assert_eq!(d["uid"].as_str(), Some(*uid), "{ctx}: uid must stay stable");
        assert!(uids.insert(uid.to_string()), "{ctx}: duplicate uid");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{ctx}: title"
        );
        assert!(
            d["id"].is_null(),
            "{ctx}: id must be null so Grafana assigns one"
        );
        assert!(
            d["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("edge-suite"))),
            "{ctx}: tag edge-suite (dashboard links use it)"
        );

        // Template variables: a datasource variable, and query variables that use it.
        let vars = variables(&d);
        let dsvar = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{ctx}: no `datasource` variable"));
        assert_eq!(
            dsvar["type"], "datasource",
            "{ctx}: datasource variable type"
        );
        assert_eq!(
            dsvar["query"], "prometheus",
            "{ctx}: datasource variable query"
        );
        let mut var_names = BTreeSet::new();
        for v in &vars {
            let vname = v["name"].as_str().expect("variable name");
            assert!(var_names.insert(vname), "{ctx}: variable {vname} twice");
            if v["type"] == "query" {
                assert_eq!(v["datasource"], ds, "{ctx}: variable {vname} datasource");
                assert!(
                    variable_query(v).is_some_and(|q| q.starts_with("label_values(")),
                    "{ctx}: variable {vname} query"
                );
            }
        }
        // ECS tasks share `instance` (the task metadata endpoint): they are told apart by
        // ecs_task_id.
        let per_target = if *name == "ecs-tasks" {
            "task"
        } else {
            "instance"
        };
        for wanted in ["job", per_target] {
            assert!(var_names.contains(wanted), "{ctx}: no `{wanted}` variable");
        }

        // Panels: unique ids, a grid position, the datasource variable everywhere.
        let mut ids = BTreeSet::new();
        let all = panels(&d);
        assert!(all.len() >= 10, "{ctx}: only {} panels", all.len());
        for p in all {
            let title = p["title"].as_str().unwrap_or("?");
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{ctx}: panel {title}: id"));
            assert!(ids.insert(id), "{ctx}: panel id {id} twice");
            for k in ["h", "w", "x", "y"] {
                assert!(
                    p["gridPos"][k].is_u64(),
                    "{ctx}: panel {title}: gridPos.{k}"
                );
            }
            let x = p["gridPos"]["x"].as_u64().unwrap_or(0);
            let w = p["gridPos"]["w"].as_u64().unwrap_or(0);
            assert!(x + w <= 24, "{ctx}: panel {title} wider than the grid");
            let kind = p["type"].as_str().unwrap_or("");
            assert!(
                PANEL_TYPES.contains(&kind),
                "{ctx}: panel {title}: type `{kind}` is not a core Grafana 10 panel"
            );
            if kind == "row" {
                continue;
            }
            if let Some(unit) = p["fieldConfig"]["defaults"]["unit"].as_str() {
                assert!(
                    UNITS.contains(&unit),
                    "{ctx}: panel {title}: unit `{unit}` is not a Grafana unit id"
                );
            }
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{ctx}: panel {title}: description"
            );
            assert_eq!(p["datasource"], ds, "{ctx}: panel {title}: datasource");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{ctx}: panel {title}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert_eq!(
                    t["datasource"], ds,
                    "{ctx}: panel {title}: target datasource"
                );
                let r = t["refId"].as_str().expect("refId");
                assert!(refs.insert(r), "{ctx}: panel {title}: refId {r} twice");
                let expr = t["expr"].as_str().expect("expr");
                // Windows follow the dashboard's time range and scrape interval.
                for w in ["[1m]", "[5m]", "[2m]", "[30s]", "[1h]"] {
                    assert!(
                        !expr.contains(w),
                        "{ctx}: panel {title}: hard-coded window {w}; use $__rate_interval"
                    );
                }
            }
        }
    }
}

#[test]
fn dashboard_exprs_use_only_known_variables() {
    for name in DASHBOARDS {
        let d = load_dashboard(name);
        let names: Vec<String> = variables(&d)
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        for e in panel_exprs(name, &d) {
            substitute(&e.expr, &names);
        }
    }
}

#[test]
fn provisioning_files() {
    let dir = dashboards_dir().join("grafana").join("provisioning");
    let read = |f: &str| -> serde_norway::Value {
        let text = std::fs::read_to_string(dir.join(f)).expect("read provisioning file");
        serde_norway::from_str(&text).expect("provisioning YAML")
    };
    let d = read("dashboards.yml");
    assert_eq!(d["apiVersion"].as_u64(), Some(1));
    let p = &d["providers"][0];
    assert_eq!(p["type"].as_str(), Some("file"));
    assert!(p["options"]["path"].as_str().is_some());

    let s = read("datasources.yml");
    assert_eq!(s["apiVersion"].as_u64(), Some(1));
    let ds = &s["datasources"][0];
    assert_eq!(ds["type"].as_str(), Some("prometheus"));
    assert_eq!(ds["url"].as_str(), Some("${PROMETHEUS_URL}"));
}

/// The alerts the issue asks for, with their severity.
const REQUIRED_ALERTS: &[(&str, &str)] = &[
    ("GatewayHigh5xxRate", "critical"),
    ("GatewayHighP99Latency", "critical"),
    ("GatewayNoHealthyTargets", "critical"),
    ("RedisDown", "critical"),
    ("GatewayRedisUnreachable", "critical"),
    ("EcsTaskHighCpu", "warning"),
    ("EcsTaskHighMemory", "warning"),
    ("PostgresConnectionsHigh", "warning"),
];

#[test]
fn alert_rules_are_labelled_and_documented() {
    let rules = load_rules();
    let docs = std::fs::read_to_string(repo_root().join("docs").join("dashboards.md"))
        .expect("docs/dashboards.md");
    let mut seen = BTreeMap::new();
    for r in &rules {
        let v = &r.value;
        assert!(
            seen.insert(
                r.name.clone(),
                v["labels"]["severity"].as_str().map(str::to_string)
            )
            .is_none(),
            "alert {} defined twice",
            r.name
        );
        let sev = v["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            sev == "critical" || sev == "warning",
            "{}: severity `{sev}`",
            r.name
        );
        for a in ["summary", "description", "runbook_url"] {
            assert!(
                v["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                "{}: annotation {a}",
                r.name
            );
        }
        let anchor = r.name.to_lowercase();
        assert_eq!(
            v["annotations"]["runbook_url"].as_str(),
            Some(format!("docs/operations.md#{anchor}").as_str()),
            "{}: runbook_url",
            r.name
        );
        assert!(
            docs.lines()
                .any(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == r.name),
            "docs/dashboards.md has no heading `{}` (the runbook anchor)",
            r.name
        );
    }
    for (name, sev) in REQUIRED_ALERTS {
        assert_eq!(
            seen.get(*name),
            Some(&Some(sev.to_string())),
            "required alert {name} with severity {sev}"
        );
    }
    // Thresholds the issue names.
    let expr = |n: &str| {
        rules
            .iter()
            .find(|r| r.name == n)
            .map(|r| r.expr.clone())
            .unwrap_or_default()
    };
    assert!(expr("GatewayHighP99Latency").contains("> 500"));
    assert!(expr("EcsTaskHighCpu").contains("> 80"));
    assert!(expr("EcsTaskHighMemory").contains("> 85"));
    assert!(expr("PostgresConnectionsHigh").contains("> 80"));
    assert!(expr("GatewayHigh5xxRate").contains("code=~\"5..\""));
}
