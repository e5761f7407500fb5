//! Elastic IPs for the NAT gateways.

use aws_sdk_ec2::types::{DomainType, ResourceType};

use super::ec2util::{env_filters, key_of, tag_spec};
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::ElasticIpSpec;

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let out = aws
        .ec2
        .describe_addresses()
        .set_filters(Some(env_filters(aws)))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeAddresses", e))?;
    let mut res = Vec::new();
    for e in out.addresses() {
        let (Some(key), Some(id)) = (key_of(e.tags()), e.allocation_id()) else {
            continue;
        };
        if key.kind != Kind::ElasticIp {
            continue;
        }
        let spec = ElasticIpSpec {
            domain: e
                .domain()
                .map(|d| d.as_str().to_string())
                .unwrap_or_default(),
        };
        res.push(
            Actual::new(key, id, &spec).output("public_ip", e.public_ip().unwrap_or_default()),
        );
    }
    Ok(res)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: ElasticIpSpec = d.spec()?;
    let name = format!("{}-{}", aws.prefix, d.key.name);
    let out = aws
        .ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(tag_spec(
            aws,
            &d.key,
            ResourceType::ElasticIp,
            &[("Name", &name)],
        ))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:AllocateAddress", e))?;
    let id = out
        .allocation_id()
        .ok_or_else(|| Error::invalid("AllocateAddress returned no allocation id"))?;
    Ok(Actual::new(d.key.clone(), id, &spec)
        .output("public_ip", out.public_ip().unwrap_or_default()))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    super::retry_transient("release elastic IP", aws.wait_timeout, || async {
        aws.ec2
            .release_address()
            .allocation_id(&a.id)
            .send()
            .await
            .map_err(|e| Error::aws("ec2:ReleaseAddress", e))
    })
    .await?;
    Ok(())
}

/// `ElasticIp` in the registry (`aws/registry.rs`) (no in-place update).
pub const OPS: Ops = ops!(ElasticIp, observe, create, none, delete);
