//! Amazon Managed Prometheus: the workspace and one rule-groups namespace per
//! alert-rules file.

use std::collections::HashMap;

use aws_sdk_amp::primitives::Blob;
use aws_sdk_amp::types::WorkspaceStatusCode;

use super::{Aws, registry::Ops, wait_for};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{AmpRuleGroupsSpec, AmpWorkspaceSpec, fnv1a};

fn alias(aws: &Aws) -> String {
    format!("{}-metrics", aws.prefix)
}

fn tags(aws: &Aws, key: &Key) -> HashMap<String, String> {
    aws.tags(key).into_iter().collect()
}

/// (workspace id, arn, status) of this environment's workspace.
pub(super) async fn find(aws: &Aws) -> Result<Option<(String, String, WorkspaceStatusCode)>> {
    let out = aws
        .amp
        .list_workspaces()
        .alias(alias(aws))
        .send()
        .await
        .map_err(|e| Error::aws("aps:ListWorkspaces", e))?;
    Ok(out
        .workspaces()
        .iter()
        .filter(|w| w.alias() == Some(alias(aws).as_str()))
        .map(|w| {
            let status = w
                .status()
                .map(|s| s.status_code().clone())
                .unwrap_or(WorkspaceStatusCode::Active);
            (w.workspace_id().to_string(), w.arn().to_string(), status)
        })
        .find(|(_, _, s)| !matches!(s, WorkspaceStatusCode::Deleting)))
}

async fn actual(aws: &Aws, id: &str, arn: &str, status: &WorkspaceStatusCode) -> Result<Actual> {
    let out = aws
        .amp
        .describe_workspace()
        .workspace_id(id)
        .send()
        .await
        .map_err(|e| Error::aws("aps:DescribeWorkspace", e))?;
    let mut endpoint = out
        .workspace()
        .and_then(|w| w.prometheus_endpoint())
        .unwrap_or_default()
        .to_string();
    if !endpoint.is_empty() && !endpoint.ends_with('/') {
        endpoint.push('/');
    }
    Ok(Actual::new(
        Key::new(Kind::AmpWorkspace, "main"),
        id,
        &AmpWorkspaceSpec { alias: alias(aws) },
    )
    .output("arn", arn)
    .output("endpoint", endpoint)
    .state(status.as_str()))
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    match find(aws).await? {
        Some((id, arn, status)) => Ok(vec![actual(aws, &id, &arn, &status).await?]),
        None => Ok(Vec::new()),
    }
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: AmpWorkspaceSpec = d.spec()?;
    aws.amp
        .create_workspace()
        .alias(&spec.alias)
        .set_tags(Some(tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("aps:CreateWorkspace", e))?;
    let (id, arn, status) = wait_for(
        "the AMP workspace to become active",
        aws.wait_timeout,
        || async {
            Ok(find(aws)
                .await?
                .filter(|(_, _, s)| matches!(s, WorkspaceStatusCode::Active)))
        },
    )
    .await?;
    actual(aws, &id, &arn, &status).await
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.amp
        .delete_workspace()
        .workspace_id(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("aps:DeleteWorkspace", e))?;
    Ok(())
}

pub async fn observe_rule_groups(aws: &Aws) -> Result<Vec<Actual>> {
    let Some((ws, _, _)) = find(aws).await? else {
        return Ok(Vec::new());
    };
    let out = aws
        .amp
        .list_rule_groups_namespaces()
        .workspace_id(&ws)
        .send()
        .await
        .map_err(|e| Error::aws("aps:ListRuleGroupsNamespaces", e))?;
    let mut res = Vec::new();
    for ns in out.rule_groups_namespaces() {
        let name = ns.name();
        let desc = aws
            .amp
            .describe_rule_groups_namespace()
            .workspace_id(&ws)
            .name(name)
            .send()
            .await
            .map_err(|e| Error::aws("aps:DescribeRuleGroupsNamespace", e))?;
        let data = desc
            .rule_groups_namespace()
            .map(|n| n.data().as_ref().to_vec())
            .unwrap_or_default();
        let spec = AmpRuleGroupsSpec {
            workspace_id: ws.clone(),
            name: name.to_string(),
            data_hash: fnv1a(&data),
        };
        res.push(
            Actual::new(Key::new(Kind::AmpRuleGroups, name), name, &spec).output("arn", ns.arn()),
        );
    }
    Ok(res)
}

pub async fn create_rule_groups(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: AmpRuleGroupsSpec = d.spec()?;
    let data = d.inputs.get("data").cloned().unwrap_or_default();
    aws.amp
        .create_rule_groups_namespace()
        .workspace_id(&spec.workspace_id)
        .name(&spec.name)
        .data(Blob::new(data.into_bytes()))
        .set_tags(Some(tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("aps:CreateRuleGroupsNamespace", e))?;
    Ok(Actual::new(d.key.clone(), &spec.name, &spec))
}

pub async fn update_rule_groups(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: AmpRuleGroupsSpec = d.spec()?;
    let data = d.inputs.get("data").cloned().unwrap_or_default();
    aws.amp
        .put_rule_groups_namespace()
        .workspace_id(&spec.workspace_id)
        .name(&spec.name)
        .data(Blob::new(data.into_bytes()))
        .send()
        .await
        .map_err(|e| Error::aws("aps:PutRuleGroupsNamespace", e))?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

pub async fn delete_rule_groups(aws: &Aws, a: &Actual) -> Result<()> {
    let ws = a.prop_str("workspace_id").to_string();
    aws.amp
        .delete_rule_groups_namespace()
        .workspace_id(ws)
        .name(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("aps:DeleteRuleGroupsNamespace", e))?;
    Ok(())
}

/// `AmpWorkspace` in the registry (`aws/registry.rs`) (no in-place update).
pub const OPS: Ops = ops!(AmpWorkspace, observe, create, none, delete);

/// `AmpRuleGroups` in the registry (`aws/registry.rs`).
pub const RULE_GROUPS_OPS: Ops = ops!(
    AmpRuleGroups,
    observe_rule_groups,
    create_rule_groups,
    update_rule_groups,
    delete_rule_groups
);
