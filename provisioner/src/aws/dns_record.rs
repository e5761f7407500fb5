//! The ALB's alias A record (`<dns.domain>` -> the load balancer) in the
//! env file's Route 53 hosted zone. Ours: the A record at the domain whose
//! alias target is this environment's ALB.

use aws_sdk_route53::types::RrType;

use super::route53::{create, delete, update};
use super::{Aws, registry::Ops, route53};
use crate::error::Result;
use crate::model::{Actual, Key, Kind};

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let Some((zone, id)) = route53::zone(aws).await? else {
        return Ok(Vec::new());
    };
    let name = route53::fqdn(&aws.domain);
    let alb = format!("{}-alb-", aws.prefix.to_ascii_lowercase());
    Ok(route53::records(aws, &id)
        .await?
        .iter()
        .filter(|r| r.r#type() == &RrType::A && route53::fqdn(r.name()) == name)
        .filter(|r| {
            r.alias_target().is_some_and(|a| {
                let d = a.dns_name().to_ascii_lowercase();
                d.trim_start_matches("dualstack.").starts_with(&alb)
            })
        })
        .map(|r| {
            Actual::new(
                Key::new(Kind::DnsRecord, "alb"),
                &name,
                &route53::spec_of(&zone, r),
            )
        })
        .collect())
}

/// `DnsRecord` in the registry (`aws/registry.rs`); writes are the shared
/// record calls of `route53`.
pub const OPS: Ops = ops!(DnsRecord, observe, create, update, delete);
