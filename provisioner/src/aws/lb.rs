//! The internet-facing Application Load Balancer.

use aws_sdk_elasticloadbalancingv2::types::{
    LoadBalancer, LoadBalancerAttribute, LoadBalancerSchemeEnum, LoadBalancerStateEnum,
    LoadBalancerTypeEnum, Tag,
};

use super::{Aws, registry::Ops, wait_for};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::LoadBalancerSpec;

pub fn elb_tags(aws: &Aws, key: &Key) -> Vec<Tag> {
    aws.tags(key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// `app/<name>/<id>`: the CloudWatch dimension of an ALB or target group ARN.
pub fn arn_suffix(arn: &str, marker: &str) -> String {
    arn.split_once(marker)
        .map(|(_, s)| s.to_string())
        .unwrap_or_default()
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
fn name(aws: &Aws) -> String {
    format!("{}-alb", aws.prefix)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
/// This environment's ALB, if it exists.
pub async fn find(aws: &Aws) -> Result<Option<LoadBalancer>> {
    let items = aws
        .elb
        .describe_load_balancers()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("elbv2:DescribeLoadBalancers", e))?;
    let n = name(aws);
    Ok(items
        .iter()
        .find(|l| l.load_balancer_name() == Some(n.as_str()))
        .cloned())
}

fn actual_of(l: &LoadBalancer) -> Actual {
    let mut subnets: Vec<String> = l
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id().map(str::to_string))
        .collect();
    subnets.sort();
    let mut sgs = l.security_groups().to_vec();
    sgs.sort();
    let spec = LoadBalancerSpec {
        name: l.load_balancer_name().unwrap_or_default().to_string(),
        scheme: l
            .scheme()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        subnets,
        security_groups: sgs,
    };
    let arn = l.load_balancer_arn().unwrap_or_default();
    Actual::new(Key::new(Kind::LoadBalancer, "main"), arn, &spec)
        .output("arn", arn)
        .output("arn_suffix", arn_suffix(arn, ":loadbalancer/"))
        .output("dns_name", l.dns_name().unwrap_or_default())
        .output("zone_id", l.canonical_hosted_zone_id().unwrap_or_default())
        .state(
            l.state()
                .and_then(|s| s.code())
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
        )
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    Ok(find(aws)
        .await?
        .map(|l| vec![actual_of(&l)])
        .unwrap_or_default())
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: LoadBalancerSpec = d.spec()?;
    aws.elb
        .create_load_balancer()
        .name(&spec.name)
        .r#type(LoadBalancerTypeEnum::Application)
        .scheme(LoadBalancerSchemeEnum::from(spec.scheme.as_str()))
        .set_subnets(Some(spec.subnets.clone()))
        .set_security_groups(Some(spec.security_groups.clone()))
        .set_tags(Some(elb_tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:CreateLoadBalancer", e))?;
    let lb = wait_for(
        "the load balancer to become active",
        aws.wait_timeout,
        || async {
            Ok(find(aws).await?.filter(|l| {
                l.state().and_then(|s| s.code()) == Some(&LoadBalancerStateEnum::Active)
            }))
        },
    )
    .await?;
    let arn = lb.load_balancer_arn().unwrap_or_default();
    aws.elb
        .modify_load_balancer_attributes()
        .load_balancer_arn(arn)
        .attributes(
            LoadBalancerAttribute::builder()
                .key("routing.http.drop_invalid_header_fields.enabled")
                .value("true")
                .build(),
        )
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:ModifyLoadBalancerAttributes", e))?;
    Ok(actual_of(&lb))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: LoadBalancerSpec = d.spec()?;
    aws.elb
        .set_security_groups()
        .load_balancer_arn(&a.id)
        .set_security_groups(Some(spec.security_groups.clone()))
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:SetSecurityGroups", e))?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.elb
        .delete_load_balancer()
        .load_balancer_arn(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:DeleteLoadBalancer", e))?;
    wait_for(
        "the load balancer to be deleted",
        aws.wait_timeout,
        || async { Ok(find(aws).await?.is_none().then_some(())) },
    )
    .await
}

/// `LoadBalancer` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(LoadBalancer, observe, create, update, delete);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_suffix_is_the_cloudwatch_dimension() {
        let arn =
            "arn:aws:elasticloadbalancing:us-east-1:123:loadbalancer/app/x-alb/50dc6c495c0c9188";
        assert_eq!(
            arn_suffix(arn, ":loadbalancer/"),
            "app/x-alb/50dc6c495c0c9188"
        );
        assert_eq!(arn_suffix("nope", ":loadbalancer/"), "");
    }
}
