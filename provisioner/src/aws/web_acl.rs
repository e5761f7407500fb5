//! The WAFv2 web ACL in front of the ALB: AWS managed rule groups plus a
//! per-client-IP rate-based rule, associated with the load balancer.
//! WAF ACLs are not in the tagging API: found by name, owned by their tags
//! (`ListTagsForResource`); the association is read back with
//! `GetWebACLForResource` (moto serves neither `ListResourcesForWebACL` nor
//! `CheckCapacity`).

use aws_sdk_wafv2::types::{
    DefaultAction, ManagedRuleGroupStatement, NoneAction, OverrideAction, RateBasedStatement,
    RateBasedStatementAggregateKeyType, Rule, RuleAction, Scope, Statement, Tag, VisibilityConfig,
    WebAcl,
};

use super::{Aws, lb, registry::Ops};
use crate::consts::WAF_RATE_RULE;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind, PENDING};
use crate::specs::WebAclSpec;

fn name(aws: &Aws) -> String {
    format!("{}-waf", aws.prefix)
}

fn build_err(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("WAF request: {e}"))
}

fn visibility(metric: &str) -> Result<VisibilityConfig> {
    VisibilityConfig::builder()
        .sampled_requests_enabled(true)
        .cloud_watch_metrics_enabled(true)
        .metric_name(metric)
        .build()
        .map_err(build_err)
}

/// The ACL's rules: the managed groups first (their own actions), then the
/// rate-based rule (block).
fn rules(spec: &WebAclSpec) -> Result<Vec<Rule>> {
    let mut out = Vec::new();
    for (i, group) in spec.managed_rule_groups.iter().enumerate() {
        let stmt = ManagedRuleGroupStatement::builder()
            .vendor_name("AWS")
            .name(group)
            .build()
            .map_err(build_err)?;
        out.push(
            Rule::builder()
                .name(group)
                .priority(i as i32)
                .statement(
                    Statement::builder()
                        .managed_rule_group_statement(stmt)
                        .build(),
                )
                .override_action(
                    OverrideAction::builder()
                        .none(NoneAction::builder().build())
                        .build(),
                )
                .visibility_config(visibility(group)?)
                .build()
                .map_err(build_err)?,
        );
    }
    let rate = RateBasedStatement::builder()
        .limit(spec.rate_limit)
        .aggregate_key_type(RateBasedStatementAggregateKeyType::Ip)
        .build()
        .map_err(build_err)?;
    out.push(
        Rule::builder()
            .name(WAF_RATE_RULE)
            .priority(spec.managed_rule_groups.len() as i32)
            .statement(Statement::builder().rate_based_statement(rate).build())
            .action(
                RuleAction::builder()
                    .block(aws_sdk_wafv2::types::BlockAction::builder().build())
                    .build(),
            )
            .visibility_config(visibility(WAF_RATE_RULE)?)
            .build()
            .map_err(build_err)?,
    );
    Ok(out)
}

/// The ACL's spec as AWS holds it (the association read separately).
fn spec_of(acl: &WebAcl, load_balancer_arn: String) -> WebAclSpec {
    let mut rules: Vec<&Rule> = acl.rules().iter().collect();
    rules.sort_by_key(|r| r.priority());
    let statements = || rules.iter().filter_map(|r| r.statement());
    WebAclSpec {
        name: acl.name().to_string(),
        scope: "REGIONAL".into(),
        managed_rule_groups: statements()
            .filter_map(|s| s.managed_rule_group_statement())
            .map(|m| m.name().to_string())
            .collect(),
        rate_limit: statements()
            .find_map(|s| s.rate_based_statement())
            .map(|r| r.limit())
            .unwrap_or(0),
        load_balancer_arn,
    }
}

/// `(name, id, arn)` of the ACLs named like this environment's.
async fn list(aws: &Aws) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = aws
            .wafv2
            .list_web_acls()
            .scope(Scope::Regional)
            .limit(100)
            .set_next_marker(marker.take())
            .send()
            .await
            .map_err(|e| Error::aws("wafv2:ListWebACLs", e))?;
        for s in page.web_acls() {
            if let (Some(n), Some(id), Some(arn)) = (s.name(), s.id(), s.arn())
                && n == name(aws)
            {
                out.push((n.to_string(), id.to_string(), arn.to_string()));
            }
        }
        match page.next_marker() {
            Some(m) if !m.is_empty() && !page.web_acls().is_empty() => marker = Some(m.to_string()),
            _ => return Ok(out),
        }
    }
}

/// The ACL and the lock token any change needs.
async fn get(aws: &Aws, name: &str, id: &str) -> Result<(WebAcl, String)> {
    let out = aws
        .wafv2
        .get_web_acl()
        .name(name)
        .id(id)
        .scope(Scope::Regional)
        .send()
        .await
        .map_err(|e| Error::aws("wafv2:GetWebACL", e))?;
    let acl = out
        .web_acl()
        .cloned()
        .ok_or_else(|| Error::invalid("GetWebACL returned no web ACL"))?;
    Ok((acl, out.lock_token().unwrap_or_default().to_string()))
}

/// The ARN of the ACL associated with `resource`, if any.
pub async fn associated(aws: &Aws, resource: &str) -> Result<Option<String>> {
    let out = aws
        .wafv2
        .get_web_acl_for_resource()
        .resource_arn(resource)
        .send()
        .await
        .map_err(|e| Error::aws("wafv2:GetWebACLForResource", e))?;
    Ok(out.web_acl().map(|a| a.arn().to_string()))
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let found = list(aws).await?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let lb_arn = lb::find(aws)
        .await?
        .and_then(|l| l.load_balancer_arn().map(str::to_string));
    let mut res = Vec::new();
    for (n, id, arn) in found {
        let tags = aws
            .wafv2
            .list_tags_for_resource()
            .resource_arn(&arn)
            .send()
            .await
            .map_err(|e| Error::aws("wafv2:ListTagsForResource", e))?;
        let pairs: Vec<(&str, &str)> = tags
            .tag_info_for_resource()
            .map(|t| t.tag_list())
            .unwrap_or_default()
            .iter()
            .map(|t| (t.key(), t.value()))
            .collect();
        if !aws.owns(pairs.iter().copied()) {
            continue;
        }
        let Some(key) = super::key_from_tags(pairs.iter().copied()) else {
            continue;
        };
        if key.kind != Kind::WebAcl {
            continue;
        }
        let (acl, _) = get(aws, &n, &id).await?;
        let assoc = match &lb_arn {
            Some(l) if associated(aws, l).await?.as_deref() == Some(arn.as_str()) => l.clone(),
            _ => String::new(),
        };
        res.push(
            Actual::new(key, &arn, &spec_of(&acl, assoc))
                .output("arn", &arn)
                .output("acl_id", &id),
        );
    }
    Ok(res)
}

async fn associate(aws: &Aws, acl_arn: &str, spec: &WebAclSpec) -> Result<()> {
    if spec.load_balancer_arn.is_empty() || spec.load_balancer_arn == PENDING {
        return Ok(());
    }
    // A load balancer that just became active may not be visible to WAF yet.
    super::retry_transient("associate the web ACL", aws.wait_timeout, || async {
        aws.wafv2
            .associate_web_acl()
            .web_acl_arn(acl_arn)
            .resource_arn(&spec.load_balancer_arn)
            .send()
            .await
            .map_err(|e| Error::aws("wafv2:AssociateWebACL", e))
    })
    .await?;
    Ok(())
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: WebAclSpec = d.spec()?;
    let tags = aws
        .tags(&d.key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(build_err))
        .collect::<Result<Vec<_>>>()?;
    let out = aws
        .wafv2
        .create_web_acl()
        .name(&spec.name)
        .scope(Scope::Regional)
        .default_action(
            DefaultAction::builder()
                .allow(aws_sdk_wafv2::types::AllowAction::builder().build())
                .build(),
        )
        .description("edge-suite: AWS managed common rules + per-IP rate limit")
        .set_rules(Some(rules(&spec)?))
        .visibility_config(visibility(&spec.name)?)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| Error::aws("wafv2:CreateWebACL", e))?;
    let summary = out
        .summary()
        .ok_or_else(|| Error::invalid("CreateWebACL returned no summary"))?;
    let arn = summary.arn().unwrap_or_default().to_string();
    let id = summary.id().unwrap_or_default().to_string();
    associate(aws, &arn, &spec).await?;
    Ok(Actual::new(d.key.clone(), &arn, &spec)
        .output("arn", &arn)
        .output("acl_id", id))
}

/// Rules through `UpdateWebACL` (with the current lock token), then the
/// association.
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: WebAclSpec = d.spec()?;
    let id = a.outputs.get("acl_id").cloned().unwrap_or_default();
    let (_, token) = get(aws, &spec.name, &id).await?;
    aws.wafv2
        .update_web_acl()
        .name(&spec.name)
        .id(&id)
        .scope(Scope::Regional)
        .lock_token(token)
        .default_action(
            DefaultAction::builder()
                .allow(aws_sdk_wafv2::types::AllowAction::builder().build())
                .build(),
        )
        .set_rules(Some(rules(&spec)?))
        .visibility_config(visibility(&spec.name)?)
        .send()
        .await
        .map_err(|e| Error::aws("wafv2:UpdateWebACL", e))?;
    associate(aws, &a.id, &spec).await?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

/// Disassociated from the ALB first (WAF refuses to delete an ACL in use),
/// then deleted with its lock token.
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    let spec: WebAclSpec = serde_json::from_value(serde_json::Value::Object(a.props.clone()))?;
    if !spec.load_balancer_arn.is_empty() {
        aws.wafv2
            .disassociate_web_acl()
            .resource_arn(&spec.load_balancer_arn)
            .send()
            .await
            .map_err(|e| Error::aws("wafv2:DisassociateWebACL", e))?;
    }
    let id = a.outputs.get("acl_id").cloned().unwrap_or_default();
    let (_, token) = get(aws, &spec.name, &id).await?;
    aws.wafv2
        .delete_web_acl()
        .name(&spec.name)
        .id(&id)
        .scope(Scope::Regional)
        .lock_token(token)
        .send()
        .await
        .map_err(|e| Error::aws("wafv2:DeleteWebACL", e))?;
    Ok(())
}

/// `WebAcl` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(WebAcl, observe, create, update, delete);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_the_managed_groups_then_the_rate_rule() {
        let spec = WebAclSpec {
            name: "p-waf".into(),
            scope: "REGIONAL".into(),
            managed_rule_groups: vec!["AWSManagedRulesCommonRuleSet".into()],
            rate_limit: 1500,
            load_balancer_arn: String::new(),
        };
        let r = rules(&spec).expect("rules");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].priority(), 0);
        assert!(r[0].override_action().and_then(|o| o.none()).is_some());
        let rate = r[1]
            .statement()
            .and_then(|s| s.rate_based_statement())
            .expect("rate rule");
        assert_eq!(rate.limit(), 1500);
        assert_eq!(
            rate.aggregate_key_type(),
            &RateBasedStatementAggregateKeyType::Ip
        );
        assert!(r[1].action().and_then(|a| a.block()).is_some());
        let acl = WebAcl::builder()
            .name("p-waf")
            .id("1")
            .arn("arn:waf")
            .set_rules(Some(r))
            .build()
            .expect("acl");
        assert_eq!(spec_of(&acl, String::new()), spec);
    }
}
