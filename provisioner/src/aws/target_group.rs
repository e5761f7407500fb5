//! Blue and green target groups, health-checked on the gateway's status port,
//! and Grafana's.

use aws_sdk_elasticloadbalancingv2::types::{
    Matcher, ProtocolEnum, TargetGroup, TargetGroupAttribute, TargetTypeEnum,
};

use super::lb::elb_tags;
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::TargetGroupSpec;

pub const COLORS: [&str; 2] = ["blue", "green"];
/// Every target group of the environment: the gateway's colours and Grafana's.
const NAMES: [&str; 3] = ["blue", "green", "grafana"];

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn find(aws: &Aws) -> Result<Vec<(String, TargetGroup)>> {
    let items = aws
        .elb
        .describe_target_groups()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("elbv2:DescribeTargetGroups", e))?;
    Ok(items
        .iter()
        .filter_map(|t| {
            let name = t.target_group_name()?;
            NAMES
                .iter()
                .find(|c| name == format!("{}-{c}", aws.prefix))
                .map(|c| (c.to_string(), t.clone()))
        })
        .collect())
}

fn actual_of(color: &str, t: &TargetGroup) -> Actual {
    let spec = TargetGroupSpec {
        name: t.target_group_name().unwrap_or_default().to_string(),
        port: t.port().unwrap_or(0),
        protocol: t
            .protocol()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        vpc_id: t.vpc_id().unwrap_or_default().to_string(),
        target_type: t
            .target_type()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        health_check_path: t.health_check_path().unwrap_or_default().to_string(),
        health_check_port: t.health_check_port().unwrap_or_default().to_string(),
        health_check_interval: t.health_check_interval_seconds().unwrap_or(0),
        healthy_threshold: t.healthy_threshold_count().unwrap_or(0),
        unhealthy_threshold: t.unhealthy_threshold_count().unwrap_or(0),
        matcher: t
            .matcher()
            .and_then(|m| m.http_code())
            .unwrap_or_default()
            .to_string(),
    };
    let arn = t.target_group_arn().unwrap_or_default();
    Actual::new(Key::new(Kind::TargetGroup, color), arn, &spec)
        .output("arn", arn)
        .output("arn_suffix", arn.rsplit(':').next().unwrap_or_default())
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    Ok(find(aws)
        .await?
        .iter()
        .map(|(c, t)| actual_of(c, t))
        .collect())
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: TargetGroupSpec = d.spec()?;
    let out = aws
        .elb
        .create_target_group()
        .name(&spec.name)
        .protocol(ProtocolEnum::from(spec.protocol.as_str()))
        .port(spec.port)
        .vpc_id(&spec.vpc_id)
        .target_type(TargetTypeEnum::from(spec.target_type.as_str()))
        .health_check_enabled(true)
        .health_check_protocol(ProtocolEnum::Http)
        .health_check_path(&spec.health_check_path)
        .health_check_port(&spec.health_check_port)
        .health_check_interval_seconds(spec.health_check_interval)
        .healthy_threshold_count(spec.healthy_threshold)
        .unhealthy_threshold_count(spec.unhealthy_threshold)
        .matcher(Matcher::builder().http_code(&spec.matcher).build())
        .set_tags(Some(elb_tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:CreateTargetGroup", e))?;
    let t = out
        .target_groups()
        .first()
        .ok_or_else(|| Error::invalid("CreateTargetGroup returned nothing"))?;
    let arn = t.target_group_arn().unwrap_or_default();
    // Connection draining matches the tasks' stop timeout order of magnitude.
    aws.elb
        .modify_target_group_attributes()
        .target_group_arn(arn)
        .attributes(
            TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value("30")
                .build(),
        )
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:ModifyTargetGroupAttributes", e))?;
    Ok(actual_of(&d.key.name, t))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: TargetGroupSpec = d.spec()?;
    aws.elb
        .modify_target_group()
        .target_group_arn(&a.id)
        .health_check_protocol(ProtocolEnum::Http)
        .health_check_path(&spec.health_check_path)
        .health_check_port(&spec.health_check_port)
        .health_check_interval_seconds(spec.health_check_interval)
        .healthy_threshold_count(spec.healthy_threshold)
        .unhealthy_threshold_count(spec.unhealthy_threshold)
        .matcher(Matcher::builder().http_code(&spec.matcher).build())
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:ModifyTargetGroup", e))?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    super::retry_transient("delete target group", aws.wait_timeout, || async {
        aws.elb
            .delete_target_group()
            .target_group_arn(&a.id)
            .send()
            .await
            .map_err(|e| Error::aws("elbv2:DeleteTargetGroup", e))
    })
    .await?;
    Ok(())
}

/// `TargetGroup` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(TargetGroup, observe, create, update, delete);
