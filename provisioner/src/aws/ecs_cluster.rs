//! The ECS Fargate cluster with Container Insights.

use aws_sdk_ecs::types::{ClusterField, ClusterSetting, ClusterSettingName, Tag};

use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::EcsClusterSpec;

pub fn name(aws: &Aws) -> String {
    format!("{}-cluster", aws.prefix)
}

pub fn ecs_tags(aws: &Aws, key: &Key) -> Vec<Tag> {
    aws.tags(key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn insights(on: bool) -> ClusterSetting {
    ClusterSetting::builder()
        .name(ClusterSettingName::ContainerInsights)
        .value(if on { "enabled" } else { "disabled" })
        .build()
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let out = aws
        .ecs
        .describe_clusters()
        .clusters(name(aws))
        .include(ClusterField::Settings)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:DescribeClusters", e))?;
    Ok(out
        .clusters()
        .iter()
        .filter(|c| c.status() == Some("ACTIVE"))
        .map(|c| {
            let on = c.settings().iter().any(|s| {
                s.name() == Some(&ClusterSettingName::ContainerInsights)
                    && matches!(s.value(), Some("enabled" | "enhanced"))
            });
            let spec = EcsClusterSpec {
                name: c.cluster_name().unwrap_or_default().to_string(),
                container_insights: on,
            };
            let arn = c.cluster_arn().unwrap_or_default();
            Actual::new(Key::new(Kind::EcsCluster, "main"), arn, &spec)
                .output("arn", arn)
                .output("name", spec.name.clone())
                .state(c.status().unwrap_or_default())
        })
        .collect())
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: EcsClusterSpec = d.spec()?;
    let out = aws
        .ecs
        .create_cluster()
        .cluster_name(&spec.name)
        .settings(insights(spec.container_insights))
        .capacity_providers("FARGATE")
        .capacity_providers("FARGATE_SPOT")
        .set_tags(Some(ecs_tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("ecs:CreateCluster", e))?;
    let arn = out
        .cluster()
        .and_then(|c| c.cluster_arn())
        .unwrap_or_default();
    Ok(Actual::new(d.key.clone(), arn, &spec)
        .output("arn", arn)
        .output("name", spec.name.clone()))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: EcsClusterSpec = d.spec()?;
    aws.ecs
        .update_cluster()
        .cluster(&spec.name)
        .settings(insights(spec.container_insights))
        .send()
        .await
        .map_err(|e| Error::aws("ecs:UpdateCluster", e))?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    // Fails while the deleted service is still draining its tasks.
    super::retry_transient("delete ECS cluster", aws.wait_timeout, || async {
        aws.ecs
            .delete_cluster()
            .cluster(&a.id)
            .send()
            .await
            .map_err(|e| Error::aws("ecs:DeleteCluster", e))
    })
    .await?;
    Ok(())
}

/// `EcsCluster` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(EcsCluster, observe, create, update, delete);
