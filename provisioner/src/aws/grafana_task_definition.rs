//! Grafana's task definition: one container, the official image
//! (`consts::GRAFANA_IMAGE`), the admin password from Secrets Manager, logs
//! to its own group. Every change registers a new revision.

use aws_sdk_ecs::types::{ContainerDefinition, TaskDefinition};

use super::task_definition::{
    FargateTask, delete_family, describe, env_map, family_revisions, kv, logs, port,
    register_fargate, secret_map, secrets,
};
use super::{Aws, registry::Ops};
use crate::consts::{GRAFANA_PORT, GRAFANA_SERVICE};
use crate::error::Result;
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::GrafanaTaskDefinitionSpec;

pub fn family(aws: &Aws) -> String {
    format!("{}-{GRAFANA_SERVICE}", aws.prefix)
}

/// Reads a registered revision back into the spec shape.
pub fn spec_of(td: &TaskDefinition) -> GrafanaTaskDefinitionSpec {
    let c = td
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some(GRAFANA_SERVICE));
    GrafanaTaskDefinitionSpec {
        family: td.family().unwrap_or_default().to_string(),
        cpu: td.cpu().unwrap_or_default().to_string(),
        memory: td.memory().unwrap_or_default().to_string(),
        execution_role_arn: td.execution_role_arn().unwrap_or_default().to_string(),
        task_role_arn: td.task_role_arn().unwrap_or_default().to_string(),
        image: c.and_then(|c| c.image()).unwrap_or_default().to_string(),
        log_group: c
            .and_then(|c| c.log_configuration())
            .and_then(|l| l.options())
            .and_then(|o| o.get("awslogs-group"))
            .cloned()
            .unwrap_or_default(),
        environment: c.map(env_map).unwrap_or_default(),
        secrets: c.map(secret_map).unwrap_or_default(),
    }
}

fn actual_of(td: &TaskDefinition) -> Actual {
    let arn = td.task_definition_arn().unwrap_or_default();
    Actual::new(
        Key::new(Kind::GrafanaTaskDefinition, GRAFANA_SERVICE),
        arn,
        &spec_of(td),
    )
    .output("arn", arn)
    .output("revision", td.revision().to_string())
    .state(
        td.status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
    )
}

/// The newest ACTIVE revision is what the environment "has".
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let Some(latest) = family_revisions(aws, &family(aws))
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Vec::new());
    };
    Ok(vec![actual_of(&describe(aws, &latest).await?)])
}

/// The container definition (public for unit tests).
pub fn container(spec: &GrafanaTaskDefinitionSpec, region: &str) -> Result<ContainerDefinition> {
    Ok(ContainerDefinition::builder()
        .name(GRAFANA_SERVICE)
        .image(&spec.image)
        .essential(true)
        .port_mappings(port(GRAFANA_PORT))
        .set_environment(Some(kv(&spec.environment)))
        .set_secrets(Some(secrets(&spec.secrets)?))
        .log_configuration(logs(&spec.log_group, region, GRAFANA_SERVICE)?)
        .stop_timeout(30)
        .build())
}

/// Registers a new revision (create and update are the same thing).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: GrafanaTaskDefinitionSpec = d.spec()?;
    let task = FargateTask {
        family: &spec.family,
        cpu: &spec.cpu,
        memory: &spec.memory,
        execution_role_arn: &spec.execution_role_arn,
        task_role_arn: &spec.task_role_arn,
    };
    let td = register_fargate(aws, &d.key, &task, vec![container(&spec, &aws.region)?]).await?;
    Ok(actual_of(&td))
}

pub async fn delete(aws: &Aws, _a: &Actual) -> Result<()> {
    delete_family(aws, &family(aws)).await
}

/// `GrafanaTaskDefinition` in the registry (`aws/registry.rs`) (an update
/// registers a new revision).
pub const OPS: Ops = ops!(
    GrafanaTaskDefinition,
    observe,
    create,
    (recreate create),
    delete
);
