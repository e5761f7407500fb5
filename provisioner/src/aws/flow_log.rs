//! VPC flow logs to CloudWatch Logs.

use aws_sdk_ec2::types::{FlowLogsResourceType, LogDestinationType, ResourceType, TrafficType};

use super::ec2util::{env_filters, key_of, tag_spec};
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::FlowLogSpec;

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let out = aws
        .ec2
        .describe_flow_logs()
        .set_filter(Some(env_filters(aws)))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeFlowLogs", e))?;
    let mut res = Vec::new();
    for f in out.flow_logs() {
        let (Some(key), Some(id)) = (key_of(f.tags()), f.flow_log_id()) else {
            continue;
        };
        if key.kind != Kind::FlowLog {
            continue;
        }
        let spec = FlowLogSpec {
            vpc_id: f.resource_id().unwrap_or_default().to_string(),
            log_group: f.log_group_name().unwrap_or_default().to_string(),
            role_arn: f
                .deliver_logs_permission_arn()
                .unwrap_or_default()
                .to_string(),
            traffic_type: f
                .traffic_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
        };
        let state = f.flow_log_status().unwrap_or_default().to_string();
        res.push(Actual::new(key, id, &spec).state(state));
    }
    Ok(res)
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: FlowLogSpec = d.spec()?;
    // A freshly created role takes a few seconds to become assumable.
    let out = super::retry_transient("create flow log", aws.wait_timeout, || async {
        let out = aws
            .ec2
            .create_flow_logs()
            .resource_ids(&spec.vpc_id)
            .resource_type(FlowLogsResourceType::Vpc)
            .traffic_type(TrafficType::from(spec.traffic_type.as_str()))
            .log_destination_type(LogDestinationType::CloudWatchLogs)
            .log_group_name(&spec.log_group)
            .deliver_logs_permission_arn(&spec.role_arn)
            .tag_specifications(tag_spec(aws, &d.key, ResourceType::VpcFlowLog, &[]))
            .send()
            .await
            .map_err(|e| Error::aws("ec2:CreateFlowLogs", e))?;
        if let Some(u) = out.unsuccessful().first() {
            let msg = u
                .error()
                .and_then(|e| e.message())
                .unwrap_or("unknown error");
            return Err(Error::Aws {
                op: "ec2:CreateFlowLogs",
                message: msg.to_string(),
            });
        }
        Ok(out)
    })
    .await?;
    let id = out
        .flow_log_ids()
        .first()
        .ok_or_else(|| Error::invalid("CreateFlowLogs returned no id"))?;
    Ok(Actual::new(d.key.clone(), id, &spec))
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.ec2
        .delete_flow_logs()
        .flow_log_ids(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DeleteFlowLogs", e))?;
    Ok(())
}

/// `FlowLog` in the registry (`aws/registry.rs`) (no in-place update).
pub const OPS: Ops = ops!(FlowLog, observe, create, none, delete);
