//! VPC with DNS support and hostnames.

use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName};

use super::ec2util::{env_filters, key_of, tag_spec};
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::VpcSpec;

async fn attr(aws: &Aws, id: &str, name: VpcAttributeName) -> Result<bool> {
    let out = aws
        .ec2
        .describe_vpc_attribute()
        .vpc_id(id)
        .attribute(name.clone())
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeVpcAttribute", e))?;
    let v = match name {
        VpcAttributeName::EnableDnsHostnames => out.enable_dns_hostnames(),
        _ => out.enable_dns_support(),
    };
    Ok(v.and_then(AttributeBooleanValue::value).unwrap_or(false))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let out = aws
        .ec2
        .describe_vpcs()
        .set_filters(Some(env_filters(aws)))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeVpcs", e))?;
    let mut res = Vec::new();
    for v in out.vpcs() {
        let (Some(key), Some(id)) = (key_of(v.tags()), v.vpc_id()) else {
            continue;
        };
        if key.kind != Kind::Vpc {
            continue;
        }
        let spec = VpcSpec {
            cidr: v.cidr_block().unwrap_or_default().to_string(),
            dns_hostnames: attr(aws, id, VpcAttributeName::EnableDnsHostnames).await?,
            dns_support: attr(aws, id, VpcAttributeName::EnableDnsSupport).await?,
        };
        let state = v
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        res.push(Actual::new(key, id, &spec).state(state));
    }
    Ok(res)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
async fn set_attrs(aws: &Aws, id: &str, spec: &VpcSpec) -> Result<()> {
    // One attribute per call (an EC2 rule).
    aws.ec2
        .modify_vpc_attribute()
        .vpc_id(id)
        .enable_dns_support(
            AttributeBooleanValue::builder()
                .value(spec.dns_support)
                .build(),
        )
        .send()
        .await
        .map_err(|e| Error::aws("ec2:ModifyVpcAttribute", e))?;
    aws.ec2
        .modify_vpc_attribute()
        .vpc_id(id)
        .enable_dns_hostnames(
            AttributeBooleanValue::builder()
                .value(spec.dns_hostnames)
                .build(),
        )
        .send()
        .await
        .map_err(|e| Error::aws("ec2:ModifyVpcAttribute", e))?;
    Ok(())
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: VpcSpec = d.spec()?;
    let name = format!("{}-vpc", aws.prefix);
    let out = aws
        .ec2
        .create_vpc()
        .cidr_block(&spec.cidr)
        .tag_specifications(tag_spec(aws, &d.key, ResourceType::Vpc, &[("Name", &name)]))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:CreateVpc", e))?;
    let id = out
        .vpc()
        .and_then(|v| v.vpc_id())
        .ok_or_else(|| Error::invalid("CreateVpc returned no id"))?
        .to_string();
    set_attrs(aws, &id, &spec).await?;
    Ok(Actual::new(d.key.clone(), id, &spec))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: VpcSpec = d.spec()?;
    set_attrs(aws, &a.id, &spec).await?;
    Ok(Actual::new(d.key.clone(), a.id.clone(), &spec))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    super::retry_transient("delete VPC", aws.wait_timeout, || async {
        aws.ec2
            .delete_vpc()
            .vpc_id(&a.id)
            .send()
            .await
            .map_err(|e| Error::aws("ec2:DeleteVpc", e))
    })
    .await?;
    Ok(())
}

/// `Vpc` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(Vpc, observe, create, update, delete);
