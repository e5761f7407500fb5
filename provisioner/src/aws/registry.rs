//! One entry per resource kind: its module's `observe`, `create`, `update`
//! and `delete`. [`super::AwsProvider`] only looks kinds up here, so a new
//! kind is its module (with its `Ops` const) plus one line in [`REGISTRY`].

use std::future::Future;
use std::pin::Pin;

use super::{
    Aws, alarm, amp, amp_alertmanager, autoscaling, certificate, connection_secret, dns_record,
    ecr, ecs_cluster, ecs_service, eip, elasticache, flow_log, grafana_service,
    grafana_task_definition, iam, igw, lb, listener, listener_rule, log_group, nat, rds,
    route_table, secret, security_group, sg_rules, sns, subnet, target_group, task_definition,
    validation_record, vpc, web_acl,
};
use crate::error::Result;
use crate::model::{Actual, Desired, Kind};

/// A boxed provider call borrowing its arguments.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + 'a>>;

/// The calls of one kind.
pub struct Ops {
    pub kind: Kind,
    pub observe: for<'a> fn(&'a Aws) -> Call<'a, Vec<Actual>>,
    pub create: for<'a> fn(&'a Aws, &'a Desired) -> Call<'a, Actual>,
    /// `None`: the kind cannot change in place (the engine only calls it
    /// for mutable fields, so this is reported as an error).
    #[allow(clippy::type_complexity)]
    pub update:
        Option<for<'a> fn(&'a Aws, &'a Actual, &'a Desired, &'a [String]) -> Call<'a, Actual>>,
    pub delete: for<'a> fn(&'a Aws, &'a Actual) -> Call<'a, ()>,
}

/// Every AWS kind (Grafana dashboards are served by `grafana.rs`).
pub const REGISTRY: &[&Ops] = &[
    &vpc::OPS,
    &igw::OPS,
    &subnet::OPS,
    &eip::OPS,
    &nat::OPS,
    &route_table::OPS,
    &log_group::OPS,
    &security_group::OPS,
    &sg_rules::OPS,
    &secret::OPS,
    &rds::SUBNET_GROUP_OPS,
    &rds::OPS,
    &elasticache::SUBNET_GROUP_OPS,
    &elasticache::OPS,
    &connection_secret::OPS,
    &certificate::OPS,
    &validation_record::OPS,
    &ecr::OPS,
    &lb::OPS,
    &dns_record::OPS,
    &target_group::OPS,
    &listener::OPS,
    &web_acl::OPS,
    &listener_rule::OPS,
    &sns::OPS,
    &amp::OPS,
    &amp::RULE_GROUPS_OPS,
    &amp_alertmanager::OPS,
    &iam::OPS,
    &flow_log::OPS,
    &ecs_cluster::OPS,
    &task_definition::OPS,
    &grafana_task_definition::OPS,
    &ecs_service::OPS,
    &grafana_service::OPS,
    &autoscaling::OPS,
    &alarm::OPS,
];

/// The calls of `kind`, if AWS serves it.
pub fn ops(kind: Kind) -> Option<&'static Ops> {
    REGISTRY.iter().copied().find(|o| o.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_aws_kind_is_registered_once() {
        for kind in Kind::ALL {
            let n = REGISTRY.iter().filter(|o| o.kind == kind).count();
            let want = usize::from(kind != Kind::GrafanaDashboard);
            assert_eq!(n, want, "{kind}");
        }
    }
}
