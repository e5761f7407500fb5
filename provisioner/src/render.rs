//! `provisioner render <env>`: the gateway task definition `up` would
//! register, computed offline (no AWS call) by the same code `up` and
//! `deploy` use (`desired::build`, `task_definition::containers`). What only
//! AWS knows (endpoints, ARNs) stays `(known after apply)`; secrets appear as
//! references, never as values. The production-parity test
//! (`tests/e2e/parity_test.py`) runs these containers as local processes.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::ContainerDefinition;
use serde_json::{Value, json};

use crate::config::Env;
use crate::desired::{self, Ctx};
use crate::model::{Ids, Key, Kind};
use crate::specs::TaskDefinitionSpec;

/// The region `render` assumes when `AWS_REGION` is not set.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The context `up` would discover, with stand-ins for what needs AWS
/// (account, zones, the PagerDuty secret).
pub fn offline_ctx(
    env: &Env,
    region: &str,
    gateway_config: crate::gateway_config::Rendered,
) -> anyhow::Result<Ctx> {
    let dir = env.dashboards_dir();
    Ok(Ctx {
        region: region.to_string(),
        account_id: "000000000000".to_string(),
        azs: (0..env.cfg.network.az_count.max(1))
            .map(|i| format!("{region}{}", (b'a' + (i % 26) as u8) as char))
            .collect(),
        dashboards: crate::grafana::load_dashboards(&dir)?,
        rule_files: crate::grafana::load_rule_files(&dir)?,
        pagerduty_endpoint: None,
        grafana_enabled: false,
        gateway_config: Some(gateway_config),
    })
}

/// The task definition in the shape of `aws ecs register-task-definition
/// --cli-input-json` (the parts `up` sets), plus `secretTemplates`: how the
/// composed connection secrets are built (`{password}` is the generated
/// password; no value is ever read).
pub fn task_definition(env: &Env, ctx: &Ctx) -> anyhow::Result<Value> {
    let all = desired::build(&env.cfg, ctx, &Ids::default());
    let td = all
        .iter()
        .find(|d| d.key == Key::new(Kind::TaskDefinition, "gateway"))
        .ok_or_else(|| anyhow::anyhow!("no gateway task definition in the desired state"))?;
    let spec: TaskDefinitionSpec = td.spec()?;
    let config = td.inputs.get("gateway_config").map(String::as_str);
    let containers = crate::aws::task_definition::containers(&spec, config, &ctx.region)?;
    // Secret env var -> the template of the connection secret it references.
    let mut templates = BTreeMap::new();
    for (var, secret) in desired::AGENT_SECRETS {
        let template = all
            .iter()
            .find(|d| d.key == Key::new(Kind::ConnectionSecret, secret))
            .and_then(|d| d.inputs.get("template"));
        if let Some(t) = template {
            templates.insert(var.to_string(), t.clone());
        }
    }
    Ok(json!({
        "family": spec.family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": spec.cpu,
        "memory": spec.memory,
        "executionRoleArn": spec.execution_role_arn,
        "taskRoleArn": spec.task_role_arn,
        "containerDefinitions": containers.iter().map(container_json).collect::<Vec<_>>(),
        "secretTemplates": templates,
        "gatewayConfigHash": spec.gateway_config_hash,
    }))
}

fn container_json(c: &ContainerDefinition) -> Value {
    let env: Vec<Value> = c
        .environment()
        .iter()
        .map(|kv| json!({"name": kv.name(), "value": kv.value()}))
        .collect();
    let secrets: Vec<Value> = c
        .secrets()
        .iter()
        .map(|s| json!({"name": s.name(), "valueFrom": s.value_from()}))
        .collect();
    let ports: Vec<Value> = c
        .port_mappings()
        .iter()
        .map(|p| json!({"containerPort": p.container_port(), "protocol": "tcp"}))
        .collect();
    let health = c.health_check().map(|h| {
        json!({
            "command": h.command(),
            "interval": h.interval(),
            "timeout": h.timeout(),
            "retries": h.retries(),
            "startPeriod": h.start_period(),
        })
    });
    let logs = c.log_configuration().map(|l| {
        json!({
            "logDriver": l.log_driver().as_str(),
            "options": l.options().cloned().unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>(),
        })
    });
    json!({
        "name": c.name(),
        "image": c.image(),
        "essential": c.essential(),
        "cpu": c.cpu(),
        "memory": c.memory(),
        "entryPoint": c.entry_point(),
        "command": c.command(),
        "portMappings": ports,
        "environment": env,
        "secrets": secrets,
        "healthCheck": health,
        "logConfiguration": logs,
        "stopTimeout": c.stop_timeout(),
        "readonlyRootFilesystem": c.readonly_root_filesystem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn staging() -> Env {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("envs");
        Env::load(&Env::resolve("staging", &dir)).expect("staging.toml")
    }

    #[test]
    fn staging_renders_offline_with_the_configuration_in_the_environment() {
        let env = staging();
        let rendered = crate::gateway_config::load(&env.gateway_config_path(), &env.cfg)
            .expect("staging kong.yml renders");
        let ctx = offline_ctx(&env, DEFAULT_REGION, rendered.clone()).expect("ctx");
        let td = task_definition(&env, &ctx).expect("task definition");
        let cs = td["containerDefinitions"].as_array().expect("containers");
        assert_eq!(cs.len(), 2);
        let gw = &cs[0];
        assert_eq!(gw["name"], "gateway");
        assert_eq!(gw["command"], json!(["run"]));
        let env_of = |c: &Value, n: &str| {
            c["environment"]
                .as_array()
                .and_then(|a| a.iter().find(|kv| kv["name"] == n))
                .map(|kv| kv["value"].clone())
        };
        assert_eq!(
            env_of(gw, "GATEWAY_CONFIG_STRING"),
            Some(json!(rendered.text))
        );
        assert_eq!(
            env_of(gw, "GATEWAY_REAL_IP_HEADER"),
            Some(json!("X-Forwarded-For"))
        );
        let secrets: Vec<&str> = cs[1]["secrets"]
            .as_array()
            .expect("agent secrets")
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(
            secrets,
            ["METRICS_AGENT_POSTGRES_DSN", "METRICS_AGENT_REDIS_ADDR"]
        );
        let dsn = td["secretTemplates"]["METRICS_AGENT_POSTGRES_DSN"]
            .as_str()
            .expect("dsn template");
        assert!(dsn.starts_with("postgres://gateway:{password}@"), "{dsn}");
        assert!(
            td["secretTemplates"]["METRICS_AGENT_REDIS_ADDR"]
                .as_str()
                .is_some_and(|t| t.starts_with("rediss://:{password}@"))
        );
    }
}
