//! IAM roles with one inline policy each (flow logs, task execution, task).

use aws_sdk_iam::types::Tag;
use serde_json::{Value, json};

use super::{Aws, registry::Ops};
use crate::consts::IAM_ROLES;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::IamRoleSpec;

/// IAM returns policy documents URL-encoded; moto sometimes does not.
pub fn decode_policy(doc: &str) -> Value {
    if let Ok(v) = serde_json::from_str(doc) {
        return v;
    }
    let bytes = doc.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    serde_json::from_slice(&out).unwrap_or(Value::Null)
}

/// The trust policy: `service` may assume the role, only on behalf of
/// `account` (`aws:SourceAccount`, against the confused-deputy problem).
fn trust(service: &str, account: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        }]
    })
    .to_string()
}

fn trusted_service(doc: &Value) -> String {
    doc["Statement"][0]["Principal"]["Service"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn source_account(doc: &Value) -> String {
    doc["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn policy_name(role: &str) -> String {
    format!("{role}-policy")
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let mut res = Vec::new();
    for logical in IAM_ROLES {
        let name = format!("{}-{logical}", aws.prefix);
        let role = match aws.iam.get_role().role_name(&name).send().await {
            Ok(o) => o.role,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                None
            }
            Err(e) => return Err(Error::aws("iam:GetRole", e)),
        };
        let Some(role) = role else { continue };
        let trust = decode_policy(role.assume_role_policy_document().unwrap_or_default());
        let policy = match aws
            .iam
            .get_role_policy()
            .role_name(&name)
            .policy_name(policy_name(&name))
            .send()
            .await
        {
            Ok(p) => decode_policy(p.policy_document()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Value::Null
            }
            Err(e) => return Err(Error::aws("iam:GetRolePolicy", e)),
        };
        let spec = IamRoleSpec {
            name: name.clone(),
            trusted_service: trusted_service(&trust),
            source_account: source_account(&trust),
            policy,
        };
        res.push(
            Actual::new(Key::new(Kind::IamRole, logical), &name, &spec).output("arn", role.arn()),
        );
    }
    Ok(res)
}

async fn put_policy(aws: &Aws, spec: &IamRoleSpec) -> Result<()> {
    aws.iam
        .put_role_policy()
        .role_name(&spec.name)
        .policy_name(policy_name(&spec.name))
        .policy_document(spec.policy.to_string())
        .send()
        .await
        .map_err(|e| Error::aws("iam:PutRolePolicy", e))?;
    Ok(())
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: IamRoleSpec = d.spec()?;
    let tags = aws
        .tags(&d.key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let out = aws
        .iam
        .create_role()
        .role_name(&spec.name)
        .assume_role_policy_document(trust(&spec.trusted_service, &spec.source_account))
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| Error::aws("iam:CreateRole", e))?;
    let arn = out.role().map(|r| r.arn().to_string()).unwrap_or_default();
    put_policy(aws, &spec).await?;
    Ok(Actual::new(d.key.clone(), &spec.name, &spec).output("arn", arn))
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: IamRoleSpec = d.spec()?;
    aws.iam
        .update_assume_role_policy()
        .role_name(&spec.name)
        .policy_document(trust(&spec.trusted_service, &spec.source_account))
        .send()
        .await
        .map_err(|e| Error::aws("iam:UpdateAssumeRolePolicy", e))?;
    put_policy(aws, &spec).await?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    match aws
        .iam
        .delete_role_policy()
        .role_name(&a.id)
        .policy_name(policy_name(&a.id))
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) => {}
        Err(e) => return Err(Error::aws("iam:DeleteRolePolicy", e)),
    }
    aws.iam
        .delete_role()
        .role_name(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("iam:DeleteRole", e))?;
    Ok(())
}

/// `IamRole` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(IamRole, observe, create, update, delete);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decode_plain_and_url_encoded() {
        let doc = json!({"Statement": [{"Principal": {"Service": "ecs-tasks.amazonaws.com"}}]});
        assert_eq!(decode_policy(&doc.to_string()), doc);
        let enc = "%7B%22a%22%3A%20%22b%20c%22%7D";
        assert_eq!(decode_policy(enc), json!({"a": "b c"}));
        assert_eq!(trusted_service(&doc), "ecs-tasks.amazonaws.com");
        assert_eq!(decode_policy("%zz"), Value::Null);
    }

    #[test]
    fn trust_is_limited_to_the_source_account() {
        let doc = decode_policy(&trust("ecs-tasks.amazonaws.com", "123456789012"));
        assert_eq!(trusted_service(&doc), "ecs-tasks.amazonaws.com");
        assert_eq!(source_account(&doc), "123456789012");
        assert_eq!(doc["Statement"][0]["Action"], "sts:AssumeRole");
    }
}
