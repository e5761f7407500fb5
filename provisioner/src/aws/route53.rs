//! Route 53 helpers shared by the record kinds (`dns_record`,
//! `validation_record`): the env file's hosted zone, its record sets, and
//! UPSERT/DELETE of one record set in the shape of [`RecordSpec`].

use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use super::Aws;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired};
use crate::specs::RecordSpec;

fn build_err(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Route 53 request: {e}"))
}

/// A DNS name as Route 53 returns it: lower case, with the final dot.
pub fn fqdn(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    if n.ends_with('.') { n } else { format!("{n}.") }
}

/// The id (without `/hostedzone/`) of the zone named `zone`.
pub async fn zone_id(aws: &Aws, zone: &str) -> Result<Option<String>> {
    let out = aws
        .route53
        .list_hosted_zones_by_name()
        .dns_name(zone)
        .send()
        .await
        .map_err(|e| Error::aws("route53:ListHostedZonesByName", e))?;
    Ok(out
        .hosted_zones()
        .iter()
        .find(|z| fqdn(z.name()) == fqdn(zone))
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_string()))
}

/// The env file's zone and its id, when it names one and the zone exists.
pub async fn zone(aws: &Aws) -> Result<Option<(String, String)>> {
    let Some(zone) = &aws.hosted_zone else {
        return Ok(None);
    };
    Ok(zone_id(aws, zone).await?.map(|id| (zone.clone(), id)))
}

/// Every record set of the zone.
pub async fn records(aws: &Aws, zone_id: &str) -> Result<Vec<ResourceRecordSet>> {
    let mut all = Vec::new();
    let mut next: Option<(String, RrType)> = None;
    loop {
        let mut req = aws
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(zone_id);
        if let Some((name, t)) = next.take() {
            req = req.start_record_name(name).start_record_type(t);
        }
        let out = req
            .send()
            .await
            .map_err(|e| Error::aws("route53:ListResourceRecordSets", e))?;
        all.extend(out.resource_record_sets().iter().cloned());
        match (
            out.is_truncated(),
            out.next_record_name(),
            out.next_record_type(),
        ) {
            (true, Some(n), Some(t)) => next = Some((n.to_string(), t.clone())),
            _ => return Ok(all),
        }
    }
}

/// A record set read back into the spec shape.
pub fn spec_of(zone: &str, r: &ResourceRecordSet) -> RecordSpec {
    let alias = r.alias_target();
    RecordSpec {
        zone: zone.to_string(),
        name: fqdn(r.name()),
        record_type: r.r#type().as_str().to_string(),
        value: match alias {
            Some(a) => fqdn(a.dns_name()),
            None => r
                .resource_records()
                .first()
                .map(|v| fqdn(v.value()))
                .unwrap_or_default(),
        },
        alias_zone_id: alias.map(|a| a.hosted_zone_id().to_string()),
        ttl: r.ttl(),
    }
}

fn record_set(spec: &RecordSpec) -> Result<ResourceRecordSet> {
    let mut b = ResourceRecordSet::builder()
        .name(&spec.name)
        .r#type(RrType::from(spec.record_type.as_str()));
    b = match &spec.alias_zone_id {
        Some(zone) => b.alias_target(
            AliasTarget::builder()
                .hosted_zone_id(zone)
                .dns_name(&spec.value)
                .evaluate_target_health(false)
                .build()
                .map_err(build_err)?,
        ),
        None => b.set_ttl(spec.ttl).resource_records(
            ResourceRecord::builder()
                .value(&spec.value)
                .build()
                .map_err(build_err)?,
        ),
    };
    b.build().map_err(build_err)
}

/// One change to the spec's zone.
pub async fn change(aws: &Aws, action: ChangeAction, spec: &RecordSpec) -> Result<()> {
    let id = zone_id(aws, &spec.zone)
        .await?
        .ok_or_else(|| Error::invalid(format!("hosted zone {} not found", spec.zone)))?;
    let batch = ChangeBatch::builder()
        .changes(
            Change::builder()
                .action(action)
                .resource_record_set(record_set(spec)?)
                .build()
                .map_err(build_err)?,
        )
        .build()
        .map_err(build_err)?;
    aws.route53
        .change_resource_record_sets()
        .hosted_zone_id(id)
        .change_batch(batch)
        .send()
        .await
        .map_err(|e| Error::aws("route53:ChangeResourceRecordSets", e))?;
    Ok(())
}

/// UPSERT (create and update are the same call; a renamed record's old
/// name is deleted first).
pub async fn upsert(aws: &Aws, old: Option<&RecordSpec>, spec: &RecordSpec) -> Result<()> {
    if let Some(o) = old
        && (o.name != spec.name || o.record_type != spec.record_type)
    {
        change(aws, ChangeAction::Delete, o).await?;
    }
    change(aws, ChangeAction::Upsert, spec).await
}

/// `create` of the record kinds.
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: RecordSpec = d.spec()?;
    upsert(aws, None, &spec).await?;
    Ok(Actual::new(d.key.clone(), &spec.name, &spec))
}

fn props(a: &Actual) -> Result<RecordSpec> {
    Ok(serde_json::from_value(serde_json::Value::Object(
        a.props.clone(),
    ))?)
}

/// `update` of the record kinds.
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: RecordSpec = d.spec()?;
    upsert(aws, Some(&props(a)?), &spec).await?;
    Ok(Actual::new(d.key.clone(), &spec.name, &spec))
}

/// `delete` of the record kinds (Route 53 wants the record set as it is).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    change(aws, ChangeAction::Delete, &props(a)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_with_the_final_dot() {
        assert_eq!(fqdn("API.Example.com"), "api.example.com.");
        assert_eq!(fqdn("x.example.com."), "x.example.com.");
    }
}
