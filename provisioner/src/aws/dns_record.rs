//! The ALB's alias A records in the env file's Route 53 hosted zone:
//! `<dns.domain>` (`dns-record/alb`) and Grafana's own host when it has one
//! (`dns-record/grafana`). Ours: A records whose alias target is this
//! environment's ALB; the one at the domain is `alb`, another is Grafana's.

use aws_sdk_route53::types::RrType;

use super::route53::{create, delete, update};
use super::{Aws, registry::Ops, route53};
use crate::consts::GRAFANA_SERVICE;
use crate::error::Result;
use crate::model::{Actual, Key, Kind};

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let Some((zone, id)) = route53::zone(aws).await? else {
        return Ok(Vec::new());
    };
    let domain = route53::fqdn(&aws.domain);
    let alb = format!("{}-alb-", aws.prefix.to_ascii_lowercase());
    Ok(route53::records(aws, &id)
        .await?
        .iter()
        .filter(|r| r.r#type() == &RrType::A)
        .filter(|r| {
            r.alias_target().is_some_and(|a| {
                let d = a.dns_name().to_ascii_lowercase();
                d.trim_start_matches("dualstack.").starts_with(&alb)
            })
        })
        .map(|r| {
            let spec = route53::spec_of(&zone, r);
            let key = if spec.name == domain {
                "alb"
            } else {
                GRAFANA_SERVICE
            };
            Actual::new(Key::new(Kind::DnsRecord, key), &spec.name, &spec)
        })
        .collect())
}

/// `DnsRecord` in the registry (`aws/registry.rs`); writes are the shared
/// record calls of `route53`.
pub const OPS: Ops = ops!(DnsRecord, observe, create, update, delete);
