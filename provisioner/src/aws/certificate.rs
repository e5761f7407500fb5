//! ACM certificate for the HTTPS listeners (DNS validation).

use aws_sdk_acm::types::{Tag, ValidationMethod};

use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::CertificateSpec;

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let items = aws
        .acm
        .list_certificates()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("acm:ListCertificates", e))?;
    let mut res = Vec::new();
    for c in &items {
        let Some(arn) = c.certificate_arn() else {
            continue;
        };
        let tags = aws
            .acm
            .list_tags_for_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .map_err(|e| Error::aws("acm:ListTagsForCertificate", e))?;
        let pairs: Vec<(&str, &str)> = tags
            .tags()
            .iter()
            .map(|t| (t.key(), t.value().unwrap_or_default()))
            .collect();
        if !aws.owns(pairs.iter().copied()) {
            continue;
        }
        let Some(key) = super::key_from_tags(pairs.iter().copied()) else {
            continue;
        };
        if key.kind != Kind::Certificate {
            continue;
        }
        let spec = CertificateSpec {
            domain: c.domain_name().unwrap_or_default().to_string(),
            validation: "DNS".into(),
        };
        let state = c
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        let mut actual = Actual::new(key, arn, &spec).output("arn", arn).state(state);
        if let Some(record) = validation_record(aws, arn).await? {
            actual = actual.output("validation_record", record);
        }
        res.push(actual);
    }
    Ok(res)
}

/// The DNS record that validates the certificate, as `NAME CNAME VALUE`.
async fn validation_record(aws: &Aws, arn: &str) -> Result<Option<String>> {
    let out = aws
        .acm
        .describe_certificate()
        .certificate_arn(arn)
        .send()
        .await
        .map_err(|e| Error::aws("acm:DescribeCertificate", e))?;
    Ok(out
        .certificate()
        .and_then(|c| c.domain_validation_options().first())
        .and_then(|d| d.resource_record())
        .map(|r| format!("{} {} {}", r.name(), r.r#type().as_str(), r.value())))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: CertificateSpec = d.spec()?;
    let tags = aws
        .tags(&d.key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let out = aws
        .acm
        .request_certificate()
        .domain_name(&spec.domain)
        .validation_method(ValidationMethod::Dns)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| Error::aws("acm:RequestCertificate", e))?;
    let arn = out
        .certificate_arn()
        .ok_or_else(|| Error::invalid("RequestCertificate returned no ARN"))?;
    crate::progress::note(&format!(
        "  certificate for {} requested: add its DNS validation record (see `status`)",
        spec.domain
    ));
    // ACM fills in the validation record a few seconds after the request;
    // the Route 53 record (when a hosted zone is named) is made from it.
    let wait = aws.wait_timeout.min(std::time::Duration::from_secs(120));
    let record = super::wait_for("the certificate's DNS validation record", wait, || async {
        validation_record(aws, arn).await
    })
    .await?;
    Ok(Actual::new(d.key.clone(), arn, &spec)
        .output("arn", arn)
        .output("validation_record", record)
        .state("PENDING_VALIDATION"))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    // In use until the deleted listeners are fully gone.
    super::retry_transient("delete certificate", aws.wait_timeout, || async {
        aws.acm
            .delete_certificate()
            .certificate_arn(&a.id)
            .send()
            .await
            .map_err(|e| Error::aws("acm:DeleteCertificate", e))
    })
    .await?;
    Ok(())
}

/// `Certificate` in the registry (`aws/registry.rs`) (no in-place update).
pub const OPS: Ops = ops!(Certificate, observe, create, none, delete);
