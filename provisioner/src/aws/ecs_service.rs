//! The gateway ECS service. It uses the EXTERNAL deployment controller:
//! tasks run in task sets, each registered with one target group, so that
//! `deploy` can run blue-green without CodeDeploy.

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentController, DeploymentControllerType,
    LaunchType, LoadBalancer, NetworkConfiguration, PropagateTags, Scale, ScaleUnit, Service,
    TaskSet,
};

use super::ecs_cluster::ecs_tags;
use super::{Aws, registry::Ops};
use crate::consts::PROXY_PORT;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::EcsServiceSpec;

pub const SERVICE: &str = "gateway";

/// awsvpc networking in private subnets (no public IP), for the services' tasks.
pub(super) fn private_network(
    subnets: &[String],
    security_groups: &[String],
) -> Result<NetworkConfiguration> {
    Ok(NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .set_subnets(Some(subnets.to_vec()))
                .set_security_groups(Some(security_groups.to_vec()))
                .assign_public_ip(AssignPublicIp::Disabled)
                .build()
                .map_err(|e| Error::invalid(e.to_string()))?,
        )
        .build())
}

pub async fn describe(aws: &Aws, cluster: &str) -> Result<Option<Service>> {
    describe_named(aws, cluster, SERVICE).await
}

/// The ACTIVE service `name` of `cluster`, if any (none without the cluster).
pub async fn describe_named(aws: &Aws, cluster: &str, name: &str) -> Result<Option<Service>> {
    let out = match aws
        .ecs
        .describe_services()
        .cluster(cluster)
        .services(name)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_cluster_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::aws("ecs:DescribeServices", e)),
    };
    Ok(out
        .services()
        .iter()
        .find(|s| s.status() == Some("ACTIVE"))
        .cloned())
}

pub async fn task_sets(aws: &Aws, cluster: &str) -> Result<Vec<TaskSet>> {
    let out = aws
        .ecs
        .describe_task_sets()
        .cluster(cluster)
        .service(SERVICE)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:DescribeTaskSets", e))?;
    Ok(out.task_sets().to_vec())
}

pub fn primary(sets: &[TaskSet]) -> Option<&TaskSet> {
    sets.iter().find(|t| t.status() == Some("PRIMARY"))
}

fn actual_of(s: &Service, cluster: &str, sets: &[TaskSet]) -> Actual {
    let p = primary(sets);
    let vpc = p
        .and_then(|t| t.network_configuration())
        .and_then(|n| n.awsvpc_configuration());
    let mut subnets = vpc.map(|v| v.subnets().to_vec()).unwrap_or_default();
    subnets.sort();
    let mut sgs = vpc
        .map(|v| v.security_groups().to_vec())
        .unwrap_or_default();
    sgs.sort();
    let spec = EcsServiceSpec {
        name: s.service_name().unwrap_or_default().to_string(),
        cluster: cluster.to_string(),
        task_definition: p
            .and_then(|t| t.task_definition())
            .or(s.task_definition())
            .unwrap_or_default()
            .to_string(),
        target_group_arn: p
            .and_then(|t| t.load_balancers().first())
            .and_then(|l| l.target_group_arn())
            .unwrap_or_default()
            .to_string(),
        desired_count: s.desired_count(),
        launch_type: p
            .and_then(|t| t.launch_type())
            .map(|l| l.as_str().to_string())
            .unwrap_or_default(),
        deployment_controller: s
            .deployment_controller()
            .map(|d| d.r#type().as_str().to_string())
            .unwrap_or_default(),
        subnets,
        security_groups: sgs,
    };
    let arn = s.service_arn().unwrap_or_default();
    Actual::new(Key::new(Kind::EcsService, SERVICE), arn, &spec)
        .output("arn", arn)
        .output(
            "primary_task_set",
            p.and_then(|t| t.task_set_arn()).unwrap_or_default(),
        )
        .output("running", s.running_count().to_string())
        .state(s.status().unwrap_or_default())
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let cluster = super::ecs_cluster::name(aws);
    let Some(s) = describe(aws, &cluster).await? else {
        return Ok(Vec::new());
    };
    let sets = task_sets(aws, &cluster).await?;
    Ok(vec![actual_of(&s, &cluster, &sets)])
}

/// Starts a task set for `task_definition` registered with `target_group`;
/// returns its ARN.
pub async fn create_task_set(
    aws: &Aws,
    spec: &EcsServiceSpec,
    task_definition: &str,
    target_group: &str,
) -> Result<String> {
    let net = private_network(&spec.subnets, &spec.security_groups)?;
    let out = aws
        .ecs
        .create_task_set()
        .cluster(&spec.cluster)
        .service(&spec.name)
        .task_definition(task_definition)
        .launch_type(LaunchType::from(spec.launch_type.as_str()))
        .network_configuration(net)
        .load_balancers(
            LoadBalancer::builder()
                .target_group_arn(target_group)
                .container_name(super::task_definition::GATEWAY)
                .container_port(PROXY_PORT)
                .build(),
        )
        .scale(
            Scale::builder()
                .unit(ScaleUnit::Percent)
                .value(100.0)
                .build(),
        )
        .set_tags(Some(ecs_tags(aws, &Key::new(Kind::EcsService, SERVICE))))
        .send()
        .await
        .map_err(|e| Error::aws("ecs:CreateTaskSet", e))?;
    out.task_set()
        .and_then(|t| t.task_set_arn())
        .map(str::to_string)
        .ok_or_else(|| Error::invalid("CreateTaskSet returned no ARN"))
}

pub async fn make_primary(aws: &Aws, cluster: &str, task_set: &str) -> Result<()> {
    aws.ecs
        .update_service_primary_task_set()
        .cluster(cluster)
        .service(SERVICE)
        .primary_task_set(task_set)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:UpdateServicePrimaryTaskSet", e))?;
    Ok(())
}

pub async fn delete_task_set(aws: &Aws, cluster: &str, task_set: &str) -> Result<()> {
    aws.ecs
        .delete_task_set()
        .cluster(cluster)
        .service(SERVICE)
        .task_set(task_set)
        .force(true)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:DeleteTaskSet", e))?;
    Ok(())
}

/// Replaces the running task sets with one matching `spec` (an in-place
/// roll; `deploy` does the health-gated blue-green version).
async fn roll(aws: &Aws, spec: &EcsServiceSpec) -> Result<()> {
    let old: Vec<String> = task_sets(aws, &spec.cluster)
        .await?
        .iter()
        .filter_map(|t| t.task_set_arn().map(str::to_string))
        .collect();
    let new = create_task_set(aws, spec, &spec.task_definition, &spec.target_group_arn).await?;
    make_primary(aws, &spec.cluster, &new).await?;
    for id in old {
        delete_task_set(aws, &spec.cluster, &id).await?;
    }
    Ok(())
}

async fn reobserve(aws: &Aws) -> Result<Actual> {
    observe(aws)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid("ECS service not found after change"))
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: EcsServiceSpec = d.spec()?;
    aws.ecs
        .create_service()
        .cluster(&spec.cluster)
        .service_name(&spec.name)
        .desired_count(spec.desired_count)
        .deployment_controller(
            DeploymentController::builder()
                .r#type(DeploymentControllerType::from(
                    spec.deployment_controller.as_str(),
                ))
                .build()
                .map_err(|e| Error::invalid(e.to_string()))?,
        )
        .propagate_tags(PropagateTags::Service)
        .set_tags(Some(ecs_tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("ecs:CreateService", e))?;
    roll(aws, &spec).await?;
    reobserve(aws).await
}

pub async fn update(aws: &Aws, _a: &Actual, d: &Desired, changed: &[String]) -> Result<Actual> {
    let spec: EcsServiceSpec = d.spec()?;
    if changed.iter().any(|f| f == "desired_count") {
        aws.ecs
            .update_service()
            .cluster(&spec.cluster)
            .service(&spec.name)
            .desired_count(spec.desired_count)
            .send()
            .await
            .map_err(|e| Error::aws("ecs:UpdateService", e))?;
    }
    let rolls = [
        "task_definition",
        "target_group_arn",
        "subnets",
        "security_groups",
    ];
    if changed.iter().any(|f| rolls.contains(&f.as_str())) {
        roll(aws, &spec).await?;
    }
    reobserve(aws).await
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    let cluster = a.prop_str("cluster").to_string();
    aws.ecs
        .update_service()
        .cluster(&cluster)
        .service(SERVICE)
        .desired_count(0)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:UpdateService", e))?;
    for t in task_sets(aws, &cluster).await? {
        if let Some(arn) = t.task_set_arn() {
            delete_task_set(aws, &cluster, arn).await?;
        }
    }
    // Tasks of deleted task sets drain on their own in AWS; stopping what is
    // left makes teardown deterministic (and moto never stops them).
    let tasks = aws
        .ecs
        .list_tasks()
        .cluster(&cluster)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:ListTasks", e))?;
    for t in tasks.task_arns() {
        aws.ecs
            .stop_task()
            .cluster(&cluster)
            .task(t)
            .reason("provisioner down")
            .send()
            .await
            .map_err(|e| Error::aws("ecs:StopTask", e))?;
    }
    aws.ecs
        .delete_service()
        .cluster(&cluster)
        .service(SERVICE)
        .force(true)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:DeleteService", e))?;
    Ok(())
}

/// `EcsService` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(EcsService, observe, create, (changed update), delete);
