//! Secrets Manager secrets with generated values (JWT, DB password, Redis token).

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};

use super::{Aws, registry::Ops};
use crate::consts::SECRETS;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::SecretSpec;

fn prefix(aws: &Aws) -> String {
    format!("{}/{}/", aws.project, aws.env)
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let names: Vec<(&str, &str)> = SECRETS.iter().map(|(l, s, _)| (*l, *s)).collect();
    observe_named(aws, Kind::Secret, &names).await
}

/// This environment's live secrets (not scheduled for deletion) named
/// `<project>/<env>/<suffix>` for one of `names` (logical name, suffix), as
/// resources of `kind`. Shared by the generated and the composed secrets.
pub(super) async fn observe_named(
    aws: &Aws,
    kind: Kind,
    names: &[(&str, &str)],
) -> Result<Vec<Actual>> {
    let out = aws
        .secrets
        .list_secrets()
        .filters(
            Filter::builder()
                .key(FilterNameStringType::Name)
                .values(prefix(aws))
                .build(),
        )
        .send()
        .await
        .map_err(|e| Error::aws("secretsmanager:ListSecrets", e))?;
    let mut res = Vec::new();
    for s in out.secret_list() {
        let Some(name) = s.name() else { continue };
        if s.deleted_date().is_some() {
            continue;
        }
        let Some((logical, _)) = names
            .iter()
            .find(|(_, suffix)| name == format!("{}{suffix}", prefix(aws)))
        else {
            continue;
        };
        let spec = SecretSpec {
            name: name.to_string(),
            description: s.description().unwrap_or_default().to_string(),
        };
        let arn = s.arn().unwrap_or_default();
        res.push(Actual::new(Key::new(kind, *logical), arn, &spec).output("arn", arn));
    }
    Ok(res)
}

/// A random value without punctuation (valid as a Redis AUTH token and a
/// PostgreSQL password).
pub async fn random_value(aws: &Aws) -> Result<String> {
    let out = aws
        .secrets
        .get_random_password()
        .password_length(48)
        .exclude_punctuation(true)
        .send()
        .await
        .map_err(|e| Error::aws("secretsmanager:GetRandomPassword", e))?;
    out.random_password
        .ok_or_else(|| Error::invalid("GetRandomPassword returned nothing"))
}

pub async fn value(aws: &Aws, id: &str) -> Result<String> {
    let out = aws
        .secrets
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| Error::aws("secretsmanager:GetSecretValue", e))?;
    out.secret_string
        .ok_or_else(|| Error::invalid(format!("secret {id} has no string value")))
}

/// The value of a secret that may not exist.
pub async fn optional_value(aws: &Aws, id: &str) -> Result<Option<String>> {
    match aws.secrets.get_secret_value().secret_id(id).send().await {
        Ok(o) => Ok(o.secret_string),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::aws("secretsmanager:GetSecretValue", e)),
    }
}

/// CreateSecret with `d`'s tags: the new secret's ARN, or AWS's answer (the caller
/// decides whether a secret in its recovery window is restored).
pub(crate) async fn create_tagged(
    aws: &Aws,
    d: &Desired,
    spec: &SecretSpec,
    value: &str,
) -> std::result::Result<String, Error> {
    let tags: Vec<Tag> = aws
        .tags(&d.key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    aws.secrets
        .create_secret()
        .name(&spec.name)
        .description(&spec.description)
        .secret_string(value)
        .set_tags(Some(tags))
        .send()
        .await
        .map(|out| out.arn().unwrap_or_default().to_string())
        .map_err(|e| Error::aws("secretsmanager:CreateSecret", e))
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: SecretSpec = d.spec()?;
    let value = random_value(aws).await?;
    let arn = match create_tagged(aws, d, &spec, &value).await {
        Ok(arn) => arn,
        Err(e) => restore_if_scheduled(aws, &spec.name).await?.ok_or(e)?,
    };
    Ok(Actual::new(d.key.clone(), &arn, &spec).output("arn", &arn))
}

/// A `down` of a non-disposable environment left the secret in its recovery
/// window (AWS answers CreateSecret with "scheduled for deletion", moto with
/// "already exists"): bring it back, with its value, and return its ARN.
/// `None` when there is no such secret.
pub(crate) async fn restore_if_scheduled(aws: &Aws, name: &str) -> Result<Option<String>> {
    let scheduled = match aws.secrets.describe_secret().secret_id(name).send().await {
        Ok(s) => s.deleted_date().is_some(),
        Err(_) => false,
    };
    if !scheduled {
        return Ok(None);
    }
    crate::progress::note(&format!(
        "  restoring secret {name} (scheduled for deletion by an earlier down)"
    ));
    let out = aws
        .secrets
        .restore_secret()
        .secret_id(name)
        .send()
        .await
        .map_err(|e| Error::aws("secretsmanager:RestoreSecret", e))?;
    Ok(Some(out.arn().unwrap_or_default().to_string()))
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: SecretSpec = d.spec()?;
    aws.secrets
        .update_secret()
        .secret_id(&a.id)
        .description(&spec.description)
        .send()
        .await
        .map_err(|e| Error::aws("secretsmanager:UpdateSecret", e))?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

/// Days a deleted secret of a non-disposable environment can be restored.
pub const RECOVERY_WINDOW_DAYS: i64 = 7;

/// A disposable environment deletes at once, so that `up` after `down`
/// can reuse the names; any other keeps a recovery window (`create`
/// restores a secret still in it).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    let req = aws.secrets.delete_secret().secret_id(&a.id);
    let req = if aws.disposable {
        req.force_delete_without_recovery(true)
    } else {
        req.recovery_window_in_days(RECOVERY_WINDOW_DAYS)
    };
    req.send()
        .await
        .map_err(|e| Error::aws("secretsmanager:DeleteSecret", e))?;
    Ok(())
}

/// `Secret` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(Secret, observe, create, update, delete);
