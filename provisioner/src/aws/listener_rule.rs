//! Rules of the HTTPS listener besides its default action (the gateway):
//! Grafana's, by host header or by path. A rule is known by its priority
//! (`consts::GRAFANA_RULE_PRIORITY`), a deterministic name on its listener.

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, PathPatternConditionConfig, Rule, RuleCondition,
};

use super::lb::elb_tags;
use super::{Aws, listener, registry::Ops};
use crate::consts::GRAFANA_RULE_PRIORITY;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::ListenerRuleSpec;

fn logical(priority: &str) -> Option<&'static str> {
    (priority == GRAFANA_RULE_PRIORITY.to_string()).then_some("grafana")
}

fn values(c: &RuleCondition) -> Vec<String> {
    let mut v = c.values().to_vec();
    if v.is_empty() {
        v = c
            .host_header_config()
            .map(|h| h.values().to_vec())
            .or_else(|| c.path_pattern_config().map(|p| p.values().to_vec()))
            .unwrap_or_default();
    }
    v
}

fn spec_of(listener_arn: &str, r: &Rule) -> ListenerRuleSpec {
    let field = |f: &str| r.conditions().iter().find(|c| c.field() == Some(f));
    let mut paths = field("path-pattern").map(values).unwrap_or_default();
    paths.sort();
    ListenerRuleSpec {
        listener_arn: listener_arn.to_string(),
        priority: r.priority().and_then(|p| p.parse().ok()).unwrap_or(0),
        host: field("host-header").and_then(|c| values(c).into_iter().next()),
        paths,
        target_group_arn: r
            .actions()
            .first()
            .and_then(|a| a.target_group_arn())
            .unwrap_or_default()
            .to_string(),
    }
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let Some((_, https)) = listener::find(aws)
        .await?
        .into_iter()
        .find(|(n, _)| n == "https")
    else {
        return Ok(Vec::new());
    };
    let arn = https.listener_arn().unwrap_or_default();
    let out = aws
        .elb
        .describe_rules()
        .listener_arn(arn)
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:DescribeRules", e))?;
    Ok(out
        .rules()
        .iter()
        .filter(|r| r.is_default() != Some(true))
        .filter_map(|r| {
            let name = logical(r.priority()?)?;
            let rule_arn = r.rule_arn()?;
            Some(
                Actual::new(
                    Key::new(Kind::ListenerRule, name),
                    rule_arn,
                    &spec_of(arn, r),
                )
                .output("arn", rule_arn),
            )
        })
        .collect())
}

fn conditions(spec: &ListenerRuleSpec) -> Vec<RuleCondition> {
    match &spec.host {
        Some(h) => vec![
            RuleCondition::builder()
                .field("host-header")
                .values(h)
                .build(),
        ],
        // `Values` holds one pattern; the config form takes several.
        None => vec![
            RuleCondition::builder()
                .field("path-pattern")
                .path_pattern_config(
                    PathPatternConditionConfig::builder()
                        .set_values(Some(spec.paths.clone()))
                        .build(),
                )
                .build(),
        ],
    }
}

fn forward(spec: &ListenerRuleSpec) -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(&spec.target_group_arn)
        .build()
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: ListenerRuleSpec = d.spec()?;
    let out = aws
        .elb
        .create_rule()
        .listener_arn(&spec.listener_arn)
        .priority(spec.priority)
        .set_conditions(Some(conditions(&spec)))
        .actions(forward(&spec))
        .set_tags(Some(elb_tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:CreateRule", e))?;
    let arn = out
        .rules()
        .first()
        .and_then(|r| r.rule_arn())
        .ok_or_else(|| Error::invalid("CreateRule returned no rule"))?;
    Ok(Actual::new(d.key.clone(), arn, &spec).output("arn", arn))
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: ListenerRuleSpec = d.spec()?;
    aws.elb
        .modify_rule()
        .rule_arn(&a.id)
        .set_conditions(Some(conditions(&spec)))
        .actions(forward(&spec))
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:ModifyRule", e))?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.elb
        .delete_rule()
        .rule_arn(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:DeleteRule", e))?;
    Ok(())
}

/// `ListenerRule` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(ListenerRule, observe, create, update, delete);
