//! Grafana's ECS service: Fargate, private subnets, ECS rolling deployments
//! (one task), registered with its own target group.

use aws_sdk_ecs::types::{
    DeploymentController, DeploymentControllerType, LaunchType, LoadBalancer, PropagateTags,
    Service,
};

use super::ecs_cluster::ecs_tags;
use super::{Aws, registry::Ops};
use crate::consts::{GRAFANA_PORT, GRAFANA_SERVICE};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::GrafanaServiceSpec;

/// The ACTIVE service, if any.
pub async fn describe(aws: &Aws) -> Result<Option<Service>> {
    super::ecs_service::describe_named(aws, &super::ecs_cluster::name(aws), GRAFANA_SERVICE).await
}

fn actual_of(s: &Service, cluster: &str) -> Actual {
    let vpc = s
        .network_configuration()
        .and_then(|n| n.awsvpc_configuration());
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let spec = GrafanaServiceSpec {
        name: s.service_name().unwrap_or_default().to_string(),
        cluster: cluster.to_string(),
        task_definition: s.task_definition().unwrap_or_default().to_string(),
        target_group_arn: s
            .load_balancers()
            .first()
            .and_then(|l| l.target_group_arn())
            .unwrap_or_default()
            .to_string(),
        desired_count: s.desired_count(),
        subnets: sorted(vpc.map(|v| v.subnets().to_vec()).unwrap_or_default()),
        security_groups: sorted(
            vpc.map(|v| v.security_groups().to_vec())
                .unwrap_or_default(),
        ),
    };
    let arn = s.service_arn().unwrap_or_default();
    Actual::new(Key::new(Kind::GrafanaService, GRAFANA_SERVICE), arn, &spec)
        .output("arn", arn)
        .output("running", s.running_count().to_string())
        .state(s.status().unwrap_or_default())
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    Ok(describe(aws)
        .await?
        .map(|s| vec![actual_of(&s, &super::ecs_cluster::name(aws))])
        .unwrap_or_default())
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: GrafanaServiceSpec = d.spec()?;
    // The task role may still be propagating in IAM.
    let out = super::retry_transient("create the Grafana service", aws.wait_timeout, || async {
        aws.ecs
            .create_service()
            .cluster(&spec.cluster)
            .service_name(&spec.name)
            .task_definition(&spec.task_definition)
            .desired_count(spec.desired_count)
            .launch_type(LaunchType::Fargate)
            .deployment_controller(
                DeploymentController::builder()
                    .r#type(DeploymentControllerType::Ecs)
                    .build()
                    .map_err(|e| Error::invalid(e.to_string()))?,
            )
            .network_configuration(super::ecs_service::private_network(
                &spec.subnets,
                &spec.security_groups,
            )?)
            .load_balancers(
                LoadBalancer::builder()
                    .target_group_arn(&spec.target_group_arn)
                    .container_name(GRAFANA_SERVICE)
                    .container_port(GRAFANA_PORT)
                    .build(),
            )
            // Grafana migrates its database on first start.
            .health_check_grace_period_seconds(120)
            .propagate_tags(PropagateTags::Service)
            .set_tags(Some(ecs_tags(aws, &d.key)))
            .send()
            .await
            .map_err(|e| Error::aws("ecs:CreateService", e))
    })
    .await?;
    let s = out
        .service()
        .ok_or_else(|| Error::invalid("CreateService returned no service"))?;
    Ok(actual_of(s, &spec.cluster))
}

/// Task definition, count and network in place (ECS rolls the task); the
/// target group is fixed at creation, so a new one replaces the service.
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: GrafanaServiceSpec = d.spec()?;
    let old: GrafanaServiceSpec =
        serde_json::from_value(serde_json::Value::Object(a.props.clone()))?;
    if old.target_group_arn != spec.target_group_arn {
        delete(aws, a).await?;
        return create(aws, d).await;
    }
    let out = aws
        .ecs
        .update_service()
        .cluster(&spec.cluster)
        .service(&spec.name)
        .task_definition(&spec.task_definition)
        .desired_count(spec.desired_count)
        .network_configuration(super::ecs_service::private_network(
            &spec.subnets,
            &spec.security_groups,
        )?)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:UpdateService", e))?;
    let s = out
        .service()
        .ok_or_else(|| Error::invalid("UpdateService returned no service"))?;
    let mut n = actual_of(s, &spec.cluster);
    n.props = d.props.clone();
    Ok(n)
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    let cluster = a.prop_str("cluster").to_string();
    aws.ecs
        .delete_service()
        .cluster(&cluster)
        .service(GRAFANA_SERVICE)
        .force(true)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:DeleteService", e))?;
    Ok(())
}

/// `GrafanaService` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(GrafanaService, observe, create, update, delete);
