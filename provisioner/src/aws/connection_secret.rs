//! Secrets Manager secrets composed from a data store's endpoint and its
//! generated password: the metrics-agent sidecar's PostgreSQL DSN and Redis
//! address (`METRICS_AGENT_POSTGRES_DSN`, `METRICS_AGENT_REDIS_ADDR`, ECS
//! secrets). The value is written on create and on every update (a changed
//! endpoint changes the description, which the plan compares); it is never
//! read back, diffed or printed.

use super::{Aws, registry::Ops, secret};
use crate::consts::CONNECTION_SECRETS;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::SecretSpec;

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    secret::observe_named(aws, Kind::ConnectionSecret, &CONNECTION_SECRETS).await
}

/// The secret's value: `inputs.template` with `{password}` replaced by the
/// value of the secret `inputs.password_secret`.
async fn compose(aws: &Aws, d: &Desired) -> Result<String> {
    let input = |k: &str| {
        d.inputs
            .get(k)
            .ok_or_else(|| Error::invalid(format!("{}: no {k} input", d.key)))
    };
    let password = secret::value(aws, input("password_secret")?).await?;
    Ok(compose_value(input("template")?, &password))
}

/// `{password}` in `template` replaced by `password`.
pub fn compose_value(template: &str, password: &str) -> String {
    template.replace("{password}", password)
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: SecretSpec = d.spec()?;
    let value = compose(aws, d).await?;
    let arn = match secret::create_tagged(aws, d, &spec, &value).await {
        Ok(arn) => arn,
        Err(e) => {
            // Left in its recovery window by an earlier `down`: restore it
            // and write the value of today's endpoint.
            let arn = secret::restore_if_scheduled(aws, &spec.name)
                .await?
                .ok_or(e)?;
            write(aws, &arn, &spec, &value).await?;
            arn
        }
    };
    Ok(Actual::new(d.key.clone(), &arn, &spec).output("arn", &arn))
}

async fn write(aws: &Aws, id: &str, spec: &SecretSpec, value: &str) -> Result<()> {
    aws.secrets
        .update_secret()
        .secret_id(id)
        .description(&spec.description)
        .secret_string(value)
        .send()
        .await
        .map_err(|e| Error::aws("secretsmanager:UpdateSecret", e))?;
    Ok(())
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: SecretSpec = d.spec()?;
    let value = compose(aws, d).await?;
    write(aws, &a.id, &spec, &value).await?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

/// `ConnectionSecret` in the registry (`aws/registry.rs`); deleted like the
/// generated secrets.
pub const OPS: Ops = ops!(ConnectionSecret, observe, create, update, secret::delete);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_into_the_template() {
        assert_eq!(
            compose_value("postgres://gateway:{password}@db:5432/postgres", "s3cr3t"),
            "postgres://gateway:s3cr3t@db:5432/postgres"
        );
    }
}
