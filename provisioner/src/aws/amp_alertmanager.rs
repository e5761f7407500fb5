//! The AMP workspace's Alertmanager definition (`crate::alertmanager`):
//! critical alerts to the SNS topic `alarms`. Emulators may not serve this
//! API (moto answers 404): against an endpoint URL that is a one-line note
//! and the definition counts as applied, never a failure of `up` or `down`.

use aws_sdk_amp::error::ProvideErrorMetadata;
use aws_sdk_amp::primitives::Blob;

use super::{Aws, amp, registry::Ops, sns};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{AmpAlertManagerSpec, fnv1a};

/// An emulator without the Alertmanager API (anything but AWS's own "no
/// definition" answer, which means just that).
fn not_served(aws: &Aws, e: &impl ProvideErrorMetadata) -> bool {
    aws.emulator && e.code() != Some("ResourceNotFoundException")
}

fn note(op: &str) {
    crate::progress::note(&format!(
        "note: amp-alertmanager/main: the endpoint does not serve aps:{op} (an emulator); \
         the definition is rendered and validated, not applied"
    ));
}

/// As if applied, on an endpoint without the API: the definition this
/// environment renders for its topic, so plans stay quiet.
async fn stand_in(aws: &Aws, ws: &str) -> Result<Vec<Actual>> {
    let topics = sns::observe(aws).await?;
    let Some(topic) = topics.first() else {
        return Ok(Vec::new());
    };
    let data = crate::alertmanager::definition(&topic.id, &aws.region);
    let spec = AmpAlertManagerSpec {
        workspace_id: ws.to_string(),
        data_hash: fnv1a(data.as_bytes()),
    };
    Ok(vec![
        Actual::new(Key::new(Kind::AmpAlertManager, "main"), ws, &spec)
            .state("not served by the endpoint"),
    ])
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let Some((ws, _, _)) = amp::find(aws).await? else {
        return Ok(Vec::new());
    };
    match aws
        .amp
        .describe_alert_manager_definition()
        .workspace_id(&ws)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .alert_manager_definition()
            .map(|d| {
                let spec = AmpAlertManagerSpec {
                    workspace_id: ws.clone(),
                    data_hash: fnv1a(d.data().as_ref()),
                };
                let state = d
                    .status()
                    .map(|s| s.status_code().as_str().to_string())
                    .unwrap_or_default();
                Actual::new(Key::new(Kind::AmpAlertManager, "main"), &ws, &spec).state(state)
            })
            .into_iter()
            .collect()),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(Vec::new()),
        Err(e) if not_served(aws, &e) => stand_in(aws, &ws).await,
        Err(e) => Err(Error::aws("aps:DescribeAlertManagerDefinition", e)),
    }
}

fn data(d: &Desired) -> Blob {
    Blob::new(d.inputs.get("data").cloned().unwrap_or_default())
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: AmpAlertManagerSpec = d.spec()?;
    match aws
        .amp
        .create_alert_manager_definition()
        .workspace_id(&spec.workspace_id)
        .data(data(d))
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if not_served(aws, &e) => note("CreateAlertManagerDefinition"),
        Err(e) => return Err(Error::aws("aps:CreateAlertManagerDefinition", e)),
    }
    Ok(Actual::new(d.key.clone(), &spec.workspace_id, &spec))
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: AmpAlertManagerSpec = d.spec()?;
    match aws
        .amp
        .put_alert_manager_definition()
        .workspace_id(&spec.workspace_id)
        .data(data(d))
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if not_served(aws, &e) => note("PutAlertManagerDefinition"),
        Err(e) => return Err(Error::aws("aps:PutAlertManagerDefinition", e)),
    }
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    match aws
        .amp
        .delete_alert_manager_definition()
        .workspace_id(&a.id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
        Err(e) if not_served(aws, &e) => {
            note("DeleteAlertManagerDefinition");
            Ok(())
        }
        Err(e) => Err(Error::aws("aps:DeleteAlertManagerDefinition", e)),
    }
}

/// `AmpAlertManager` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(AmpAlertManager, observe, create, update, delete);
