//! CloudWatch Logs groups (VPC flow logs, ECS task logs) with retention.

use std::collections::HashMap;

use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::LogGroupSpec;

/// The groups this environment owns: (logical name, group name).
pub fn names(aws: &Aws) -> [(&'static str, String); 3] {
    [
        (
            "flow-logs",
            format!("/{}/{}/vpc-flow-logs", aws.project, aws.env),
        ),
        ("gateway", format!("/ecs/{}/gateway", aws.prefix)),
        ("grafana", format!("/ecs/{}/grafana", aws.prefix)),
    ]
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let mut res = Vec::new();
    for (logical, name) in names(aws) {
        let out = aws
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&name)
            .send()
            .await
            .map_err(|e| Error::aws("logs:DescribeLogGroups", e))?;
        for g in out.log_groups() {
            if g.log_group_name() != Some(name.as_str()) {
                continue;
            }
            let arn = g.arn().unwrap_or_default();
            let arn = arn.strip_suffix(":*").unwrap_or(arn).to_string();
            let spec = LogGroupSpec {
                name: name.clone(),
                retention_days: g.retention_in_days().unwrap_or(0),
            };
            res.push(
                Actual::new(Key::new(Kind::LogGroup, logical), &name, &spec).output("arn", arn),
            );
        }
    }
    Ok(res)
}

async fn set_retention(aws: &Aws, name: &str, days: i32) -> Result<()> {
    aws.logs
        .put_retention_policy()
        .log_group_name(name)
        .retention_in_days(days)
        .send()
        .await
        .map_err(|e| Error::aws("logs:PutRetentionPolicy", e))?;
    Ok(())
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: LogGroupSpec = d.spec()?;
    let tags: HashMap<String, String> = aws.tags(&d.key).into_iter().collect();
    aws.logs
        .create_log_group()
        .log_group_name(&spec.name)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| Error::aws("logs:CreateLogGroup", e))?;
    set_retention(aws, &spec.name, spec.retention_days).await?;
    observe(aws)
        .await?
        .into_iter()
        .find(|a| a.key == d.key)
        .ok_or_else(|| Error::invalid(format!("log group {} not found after create", spec.name)))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: LogGroupSpec = d.spec()?;
    set_retention(aws, &spec.name, spec.retention_days).await?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.logs
        .delete_log_group()
        .log_group_name(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("logs:DeleteLogGroup", e))?;
    Ok(())
}

/// `LogGroup` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(LogGroup, observe, create, update, delete);
