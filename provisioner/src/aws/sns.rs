//! The SNS topic alarms notify, with the PagerDuty HTTPS subscription.

use aws_sdk_sns::types::Tag;

use super::{Aws, registry::Ops};
use crate::consts::AMP_SERVICE_PRINCIPAL;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{SnsTopicSpec, redact_endpoint};

fn name(aws: &Aws) -> String {
    format!("{}-alarms", aws.prefix)
}

async fn subscriptions(aws: &Aws, arn: &str) -> Result<Vec<(String, String)>> {
    let items = aws
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(arn)
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("sns:ListSubscriptionsByTopic", e))?;
    Ok(items
        .iter()
        .filter(|s| s.protocol() == Some("https"))
        .filter_map(|s| Some((s.endpoint()?.to_string(), s.subscription_arn()?.to_string())))
        .collect())
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let items = aws
        .sns
        .list_topics()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("sns:ListTopics", e))?;
    let suffix = format!(":{}", name(aws));
    let mut res = Vec::new();
    for t in &items {
        let Some(arn) = t.topic_arn() else { continue };
        if !arn.ends_with(&suffix) {
            continue;
        }
        let mut subs: Vec<String> = subscriptions(aws, arn)
            .await?
            .into_iter()
            .map(|(e, _)| redact_endpoint(&e))
            .collect();
        subs.sort();
        let spec = SnsTopicSpec {
            name: name(aws),
            https_subscriptions: subs,
            service_publishers: service_publishers(aws, arn).await?,
        };
        res.push(Actual::new(Key::new(Kind::SnsTopic, "alarms"), arn, &spec).output("arn", arn));
    }
    Ok(res)
}

/// The real endpoints (the spec only holds their redacted form).
fn endpoints(d: &Desired) -> Vec<String> {
    d.inputs
        .get("https_subscriptions")
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

async fn sync_subscriptions(aws: &Aws, arn: &str, want: &[String]) -> Result<()> {
    let have = subscriptions(aws, arn).await?;
    for (endpoint, sub) in &have {
        // Pending confirmations cannot be unsubscribed; AWS expires them.
        if !want.contains(endpoint) && sub.starts_with("arn:") {
            aws.sns
                .unsubscribe()
                .subscription_arn(sub)
                .send()
                .await
                .map_err(|e| Error::aws("sns:Unsubscribe", e))?;
        }
    }
    for endpoint in want {
        if !have.iter().any(|(e, _)| e == endpoint) {
            aws.sns
                .subscribe()
                .topic_arn(arn)
                .protocol("https")
                .endpoint(endpoint)
                .send()
                .await
                .map_err(|e| Error::aws("sns:Subscribe", e))?;
        }
    }
    Ok(())
}

async fn set_policy(aws: &Aws, arn: &str) -> Result<()> {
    aws.sns
        .set_topic_attributes()
        .topic_arn(arn)
        .attribute_name("Policy")
        .attribute_value(policy(arn, &aws.account_id).to_string())
        .send()
        .await
        .map_err(|e| Error::aws("sns:SetTopicAttributes", e))?;
    Ok(())
}

/// The service principals the topic's policy lets in, sorted.
async fn service_publishers(aws: &Aws, arn: &str) -> Result<Vec<String>> {
    let out = aws
        .sns
        .get_topic_attributes()
        .topic_arn(arn)
        .send()
        .await
        .map_err(|e| Error::aws("sns:GetTopicAttributes", e))?;
    let doc: serde_json::Value = out
        .attributes()
        .and_then(|a| a.get("Policy"))
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    let mut found: Vec<String> = doc["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|st| st["Principal"]["Service"].as_str().map(str::to_string))
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

/// The topic's access policy: the account (CloudWatch alarms publish with
/// its rights), and Amazon Managed Prometheus's Alertmanager for this
/// account's workspaces only (`aws:SourceAccount`).
pub fn policy(arn: &str, account: &str) -> serde_json::Value {
    let partition = arn.split(':').nth(1).unwrap_or("aws");
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "account",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:{partition}:iam::{account}:root")},
                "Action": ["SNS:GetTopicAttributes", "SNS:SetTopicAttributes",
                           "SNS:Subscribe", "SNS:ListSubscriptionsByTopic",
                           "SNS:Publish", "SNS:DeleteTopic"],
                "Resource": arn,
            },
            {
                "Sid": "amp-alertmanager",
                "Effect": "Allow",
                "Principal": {"Service": AMP_SERVICE_PRINCIPAL},
                "Action": ["SNS:Publish", "SNS:GetTopicAttributes"],
                "Resource": arn,
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            },
        ],
    })
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: SnsTopicSpec = d.spec()?;
    let tags: Vec<Tag> = aws
        .tags(&d.key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let out = aws
        .sns
        .create_topic()
        .name(&spec.name)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| Error::aws("sns:CreateTopic", e))?;
    let arn = out
        .topic_arn()
        .ok_or_else(|| Error::invalid("CreateTopic returned no ARN"))?;
    set_policy(aws, arn).await?;
    sync_subscriptions(aws, arn, &endpoints(d)).await?;
    Ok(Actual::new(d.key.clone(), arn, &spec).output("arn", arn))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    set_policy(aws, &a.id).await?;
    sync_subscriptions(aws, &a.id, &endpoints(d)).await?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.sns
        .delete_topic()
        .topic_arn(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("sns:DeleteTopic", e))?;
    Ok(())
}

/// `SnsTopic` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(SnsTopic, observe, create, update, delete);
