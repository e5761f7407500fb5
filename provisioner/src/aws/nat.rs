//! NAT gateways (one shared, or one per AZ).

use aws_sdk_ec2::types::{NatGatewayState, ResourceType};

use super::ec2util::{env_filters, key_of, tag_spec};
use super::{Aws, registry::Ops, wait_for};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::NatGatewaySpec;

async fn state(aws: &Aws, id: &str) -> Result<Option<NatGatewayState>> {
    let out = aws
        .ec2
        .describe_nat_gateways()
        .nat_gateway_ids(id)
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeNatGateways", e))?;
    Ok(out.nat_gateways().first().and_then(|n| n.state().cloned()))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let out = aws
        .ec2
        .describe_nat_gateways()
        .set_filter(Some(env_filters(aws)))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeNatGateways", e))?;
    let mut res = Vec::new();
    for n in out.nat_gateways() {
        let (Some(key), Some(id)) = (key_of(n.tags()), n.nat_gateway_id()) else {
            continue;
        };
        // Deleted gateways stay listed for a while (moto keeps them forever).
        if key.kind != Kind::NatGateway
            || matches!(
                n.state(),
                Some(NatGatewayState::Deleted | NatGatewayState::Deleting)
            )
        {
            continue;
        }
        let spec = NatGatewaySpec {
            subnet_id: n.subnet_id().unwrap_or_default().to_string(),
            allocation_id: n
                .nat_gateway_addresses()
                .iter()
                .find_map(|a| a.allocation_id())
                .unwrap_or_default()
                .to_string(),
        };
        let st = n
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        res.push(Actual::new(key, id, &spec).state(st));
    }
    Ok(res)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: NatGatewaySpec = d.spec()?;
    let name = format!("{}-nat-{}", aws.prefix, d.key.name);
    let out = aws
        .ec2
        .create_nat_gateway()
        .subnet_id(&spec.subnet_id)
        .allocation_id(&spec.allocation_id)
        .tag_specifications(tag_spec(
            aws,
            &d.key,
            ResourceType::Natgateway,
            &[("Name", &name)],
        ))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:CreateNatGateway", e))?;
    let id = out
        .nat_gateway()
        .and_then(|n| n.nat_gateway_id())
        .ok_or_else(|| Error::invalid("CreateNatGateway returned no id"))?
        .to_string();
    wait_for(
        &format!("NAT gateway {id} to become available"),
        aws.wait_timeout,
        || async {
            match state(aws, &id).await? {
                Some(NatGatewayState::Available) => Ok(Some(())),
                Some(NatGatewayState::Failed) => {
                    Err(Error::invalid(format!("NAT gateway {id} failed")))
                }
                _ => Ok(None),
            }
        },
    )
    .await?;
    Ok(Actual::new(d.key.clone(), id, &spec))
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.ec2
        .delete_nat_gateway()
        .nat_gateway_id(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DeleteNatGateway", e))?;
    // The EIP and the IGW can only go once the gateway is gone.
    wait_for(
        &format!("NAT gateway {} to be deleted", a.id),
        aws.wait_timeout,
        || async {
            match state(aws, &a.id).await? {
                None | Some(NatGatewayState::Deleted) => Ok(Some(())),
                _ => Ok(None),
            }
        },
    )
    .await
}

/// `NatGateway` in the registry (`aws/registry.rs`) (no in-place update).
pub const OPS: Ops = ops!(NatGateway, observe, create, none, delete);
