//! Internet gateway and its VPC attachment.

use aws_sdk_ec2::types::ResourceType;

use super::ec2util::{env_filters, key_of, tag_spec};
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::InternetGatewaySpec;

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let out = aws
        .ec2
        .describe_internet_gateways()
        .set_filters(Some(env_filters(aws)))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeInternetGateways", e))?;
    let mut res = Vec::new();
    for g in out.internet_gateways() {
        let (Some(key), Some(id)) = (key_of(g.tags()), g.internet_gateway_id()) else {
            continue;
        };
        if key.kind != Kind::InternetGateway {
            continue;
        }
        let vpc_id = g
            .attachments()
            .iter()
            .find_map(|a| a.vpc_id())
            .unwrap_or_default()
            .to_string();
        res.push(Actual::new(key, id, &InternetGatewaySpec { vpc_id }));
    }
    Ok(res)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: InternetGatewaySpec = d.spec()?;
    let name = format!("{}-igw", aws.prefix);
    let out = aws
        .ec2
        .create_internet_gateway()
        .tag_specifications(tag_spec(
            aws,
            &d.key,
            ResourceType::InternetGateway,
            &[("Name", &name)],
        ))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:CreateInternetGateway", e))?;
    let id = out
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .ok_or_else(|| Error::invalid("CreateInternetGateway returned no id"))?
        .to_string();
    attach(aws, &id, &spec.vpc_id).await?;
    Ok(Actual::new(d.key.clone(), id, &spec))
}

async fn attach(aws: &Aws, id: &str, vpc: &str) -> Result<()> {
    aws.ec2
        .attach_internet_gateway()
        .internet_gateway_id(id)
        .vpc_id(vpc)
        .send()
        .await
        .map_err(|e| Error::aws("ec2:AttachInternetGateway", e))?;
    Ok(())
}

async fn detach(aws: &Aws, id: &str, vpc: &str) -> Result<()> {
    // Fails with DependencyViolation while public IPs are still mapped.
    super::retry_transient("detach internet gateway", aws.wait_timeout, || async {
        aws.ec2
            .detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(|e| Error::aws("ec2:DetachInternetGateway", e))
    })
    .await?;
    Ok(())
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: InternetGatewaySpec = d.spec()?;
    let old: InternetGatewaySpec =
        serde_json::from_value(serde_json::Value::Object(a.props.clone()))?;
    if !old.vpc_id.is_empty() {
        detach(aws, &a.id, &old.vpc_id).await?;
    }
    attach(aws, &a.id, &spec.vpc_id).await?;
    Ok(Actual::new(d.key.clone(), a.id.clone(), &spec))
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    let old: InternetGatewaySpec =
        serde_json::from_value(serde_json::Value::Object(a.props.clone()))?;
    if !old.vpc_id.is_empty() {
        detach(aws, &a.id, &old.vpc_id).await?;
    }
    aws.ec2
        .delete_internet_gateway()
        .internet_gateway_id(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DeleteInternetGateway", e))?;
    Ok(())
}

/// `InternetGateway` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(InternetGateway, observe, create, update, delete);
