//! The ACM certificate's DNS validation CNAME in the env file's Route 53
//! hosted zone. Ours: a CNAME under `<dns.domain>` pointing into
//! `acm-validations.aws`.

use aws_sdk_route53::types::RrType;

use super::route53::{create, delete, update};
use super::{Aws, registry::Ops, route53};
use crate::error::Result;
use crate::model::{Actual, Key, Kind};

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let Some((zone, id)) = route53::zone(aws).await? else {
        return Ok(Vec::new());
    };
    let under = format!(".{}", route53::fqdn(&aws.domain));
    Ok(route53::records(aws, &id)
        .await?
        .iter()
        .filter(|r| r.r#type() == &RrType::Cname && route53::fqdn(r.name()).ends_with(&under))
        .filter(|r| {
            r.resource_records()
                .iter()
                .any(|v| route53::fqdn(v.value()).ends_with(".acm-validations.aws."))
        })
        .map(|r| {
            let spec = route53::spec_of(&zone, r);
            Actual::new(Key::new(Kind::ValidationRecord, "main"), &spec.name, &spec)
        })
        .collect())
}

/// `ValidationRecord` in the registry (`aws/registry.rs`); writes are the shared
/// record calls of `route53`.
pub const OPS: Ops = ops!(ValidationRecord, observe, create, update, delete);
