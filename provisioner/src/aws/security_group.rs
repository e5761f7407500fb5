//! Security groups (the groups only; their rules are `sg_rules`).

use aws_sdk_ec2::types::{ResourceType, SecurityGroup};

use super::ec2util::{env_filters, key_of, tag_spec};
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::SecurityGroupSpec;

/// This environment's security groups with their logical names.
pub async fn describe(aws: &Aws) -> Result<Vec<(String, SecurityGroup)>> {
    let out = aws
        .ec2
        .describe_security_groups()
        .set_filters(Some(env_filters(aws)))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeSecurityGroups", e))?;
    Ok(out
        .security_groups()
        .iter()
        .filter_map(|g| {
            let key = key_of(g.tags())?;
            (key.kind == Kind::SecurityGroup).then(|| (key.name, g.clone()))
        })
        .collect())
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let mut res = Vec::new();
    for (name, g) in describe(aws).await? {
        let Some(id) = g.group_id() else { continue };
        let spec = SecurityGroupSpec {
            name: g.group_name().unwrap_or_default().to_string(),
            vpc_id: g.vpc_id().unwrap_or_default().to_string(),
            description: g.description().unwrap_or_default().to_string(),
        };
        res.push(Actual::new(
            crate::model::Key::new(Kind::SecurityGroup, name),
            id,
            &spec,
        ));
    }
    Ok(res)
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: SecurityGroupSpec = d.spec()?;
    let out = aws
        .ec2
        .create_security_group()
        .group_name(&spec.name)
        .description(&spec.description)
        .vpc_id(&spec.vpc_id)
        .tag_specifications(tag_spec(
            aws,
            &d.key,
            ResourceType::SecurityGroup,
            &[("Name", &spec.name)],
        ))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:CreateSecurityGroup", e))?;
    let id = out
        .group_id()
        .ok_or_else(|| Error::invalid("CreateSecurityGroup returned no id"))?;
    Ok(Actual::new(d.key.clone(), id, &spec))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    super::retry_transient("delete security group", aws.wait_timeout, || async {
        aws.ec2
            .delete_security_group()
            .group_id(&a.id)
            .send()
            .await
            .map_err(|e| Error::aws("ec2:DeleteSecurityGroup", e))
    })
    .await?;
    Ok(())
}

/// `SecurityGroup` in the registry (`aws/registry.rs`) (no in-place update).
pub const OPS: Ops = ops!(SecurityGroup, observe, create, none, delete);
