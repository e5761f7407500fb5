//! Subnets of the three tiers (public / private / database).

use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};

use super::ec2util::{env_filters, key_of, tag_spec, tag_value};
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::SubnetSpec;

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let out = aws
        .ec2
        .describe_subnets()
        .set_filters(Some(env_filters(aws)))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeSubnets", e))?;
    let mut res = Vec::new();
    for s in out.subnets() {
        let (Some(key), Some(id)) = (key_of(s.tags()), s.subnet_id()) else {
            continue;
        };
        if key.kind != Kind::Subnet {
            continue;
        }
        let spec = SubnetSpec {
            vpc_id: s.vpc_id().unwrap_or_default().to_string(),
            cidr: s.cidr_block().unwrap_or_default().to_string(),
            az: s.availability_zone().unwrap_or_default().to_string(),
            tier: tag_value(s.tags(), "tier").unwrap_or_default().to_string(),
            map_public_ip: s.map_public_ip_on_launch().unwrap_or(false),
        };
        let state = s
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        res.push(Actual::new(key, id, &spec).state(state));
    }
    Ok(res)
}

async fn set_public_ip(aws: &Aws, id: &str, on: bool) -> Result<()> {
    aws.ec2
        .modify_subnet_attribute()
        .subnet_id(id)
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(on).build())
        .send()
        .await
        .map_err(|e| Error::aws("ec2:ModifySubnetAttribute", e))?;
    Ok(())
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: SubnetSpec = d.spec()?;
    let name = format!("{}-{}", aws.prefix, d.key.name);
    let out = aws
        .ec2
        .create_subnet()
        .vpc_id(&spec.vpc_id)
        .cidr_block(&spec.cidr)
        .availability_zone(&spec.az)
        .tag_specifications(tag_spec(
            aws,
            &d.key,
            ResourceType::Subnet,
            &[("Name", &name), ("tier", &spec.tier)],
        ))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:CreateSubnet", e))?;
    let id = out
        .subnet()
        .and_then(|s| s.subnet_id())
        .ok_or_else(|| Error::invalid("CreateSubnet returned no id"))?
        .to_string();
    if spec.map_public_ip {
        set_public_ip(aws, &id, true).await?;
    }
    Ok(Actual::new(d.key.clone(), id, &spec))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: SubnetSpec = d.spec()?;
    set_public_ip(aws, &a.id, spec.map_public_ip).await?;
    Ok(Actual::new(d.key.clone(), a.id.clone(), &spec))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    super::retry_transient("delete subnet", aws.wait_timeout, || async {
        aws.ec2
            .delete_subnet()
            .subnet_id(&a.id)
            .send()
            .await
            .map_err(|e| Error::aws("ec2:DeleteSubnet", e))
    })
    .await?;
    Ok(())
}

/// `Subnet` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(Subnet, observe, create, update, delete);
