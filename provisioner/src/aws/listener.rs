//! ALB listeners: HTTPS 443 (live colour), HTTP 80 (redirect to HTTPS) and
//! the blue-green test listener (idle colour).

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, Listener, ProtocolEnum, RedirectActionConfig,
    RedirectActionStatusCodeEnum,
};

use super::{Aws, lb, registry::Ops};
use crate::consts::TEST_LISTENER_PORT;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{ListenerAction, ListenerSpec};

fn logical(port: i32) -> Option<&'static str> {
    match port {
        443 => Some("https"),
        80 => Some("http"),
        TEST_LISTENER_PORT => Some("test"),
        _ => None,
    }
}

fn forward_target(l: &Listener) -> Option<String> {
    let a = l.default_actions().first()?;
    if let Some(t) = a.target_group_arn() {
        return Some(t.to_string());
    }
    a.forward_config()?
        .target_groups()
        .first()?
        .target_group_arn()
        .map(str::to_string)
}

fn actual_of(name: &str, l: &Listener) -> Actual {
    let action = match l.default_actions().first().and_then(|a| a.r#type()) {
        Some(ActionTypeEnum::Redirect) => ListenerAction::RedirectHttps,
        _ => ListenerAction::Forward {
            target_group_arn: forward_target(l).unwrap_or_default(),
        },
    };
    let spec = ListenerSpec {
        load_balancer_arn: l.load_balancer_arn().unwrap_or_default().to_string(),
        port: l.port().unwrap_or(0),
        protocol: l
            .protocol()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        certificate_arn: l
            .certificates()
            .first()
            .and_then(|c| c.certificate_arn())
            .map(str::to_string),
        // Only HTTPS listeners have a policy (moto reports a default on HTTP).
        ssl_policy: l
            .ssl_policy()
            .filter(|_| l.protocol() == Some(&ProtocolEnum::Https))
            .map(str::to_string),
        action,
    };
    let arn = l.listener_arn().unwrap_or_default();
    let mut a = Actual::new(Key::new(Kind::Listener, name), arn, &spec).output("arn", arn);
    if let Some(tg) = forward_target(l) {
        a = a.output("target_group_arn", tg);
    }
    a
}

/// The listeners of this environment's ALB, by logical name.
pub async fn find(aws: &Aws) -> Result<Vec<(String, Listener)>> {
    let Some(lb) = lb::find(aws).await? else {
        return Ok(Vec::new());
    };
    let out = aws
        .elb
        .describe_listeners()
        .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:DescribeListeners", e))?;
    Ok(out
        .listeners()
        .iter()
        .filter_map(|l| logical(l.port()?).map(|n| (n.to_string(), l.clone())))
        .collect())
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    Ok(find(aws)
        .await?
        .iter()
        .map(|(n, l)| actual_of(n, l))
        .collect())
}

fn action(a: &ListenerAction) -> Action {
    match a {
        ListenerAction::Forward { target_group_arn } => Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(target_group_arn)
            .build(),
        ListenerAction::RedirectHttps => Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol("HTTPS")
                    .port("443")
                    .status_code(RedirectActionStatusCodeEnum::Http301)
                    .build(),
            )
            .build(),
    }
}

fn certs(spec: &ListenerSpec) -> Option<Vec<Certificate>> {
    spec.certificate_arn
        .as_ref()
        .map(|c| vec![Certificate::builder().certificate_arn(c).build()])
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: ListenerSpec = d.spec()?;
    let out = aws
        .elb
        .create_listener()
        .load_balancer_arn(&spec.load_balancer_arn)
        .port(spec.port)
        .protocol(ProtocolEnum::from(spec.protocol.as_str()))
        .set_certificates(certs(&spec))
        .set_ssl_policy(spec.ssl_policy.clone())
        .default_actions(action(&spec.action))
        .set_tags(Some(lb::elb_tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:CreateListener", e))?;
    let l = out
        .listeners()
        .first()
        .ok_or_else(|| Error::invalid("CreateListener returned nothing"))?;
    Ok(actual_of(&d.key.name, l))
}

/// Points the listener `arn` at a target group (used by `deploy` too).
pub async fn forward_to(aws: &Aws, arn: &str, target_group_arn: &str) -> Result<()> {
    aws.elb
        .modify_listener()
        .listener_arn(arn)
        .default_actions(action(&ListenerAction::Forward {
            target_group_arn: target_group_arn.to_string(),
        }))
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:ModifyListener", e))?;
    Ok(())
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: ListenerSpec = d.spec()?;
    let out = aws
        .elb
        .modify_listener()
        .listener_arn(&a.id)
        .protocol(ProtocolEnum::from(spec.protocol.as_str()))
        .set_certificates(certs(&spec))
        .set_ssl_policy(spec.ssl_policy.clone())
        .default_actions(action(&spec.action))
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:ModifyListener", e))?;
    let l = out
        .listeners()
        .first()
        .ok_or_else(|| Error::invalid("ModifyListener returned nothing"))?;
    Ok(actual_of(&d.key.name, l))
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.elb
        .delete_listener()
        .listener_arn(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("elbv2:DeleteListener", e))?;
    Ok(())
}

/// `Listener` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(Listener, observe, create, update, delete);
