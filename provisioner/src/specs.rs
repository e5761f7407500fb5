//! The diffable shape of every resource kind. The desired builder fills these
//! from the env file; each resource module reads AWS back into the same shape.
//! Fields are what the engine compares; `Desired::inputs` carries
//! create-only values that AWS never echoes (secret values, file contents).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpcSpec {
    pub cidr: String,
    pub dns_hostnames: bool,
    pub dns_support: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InternetGatewaySpec {
    pub vpc_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub vpc_id: String,
    pub cidr: String,
    pub az: String,
    pub tier: String,
    pub map_public_ip: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElasticIpSpec {
    pub domain: String,
}

// dup: typed structs of the original schema: alike in shape, each its own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NatGatewaySpec {
    pub subnet_id: String,
    pub allocation_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteTableSpec {
    pub vpc_id: String,
    /// Associated subnet ids, sorted.
    pub subnets: Vec<String>,
    /// Target of 0.0.0.0/0 (`igw-...` or `nat-...`); `None` for isolated tiers.
    pub default_route: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogGroupSpec {
    pub name: String,
    pub retention_days: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IamRoleSpec {
    pub name: String,
    /// Service principal allowed to assume the role.
    pub trusted_service: String,
    /// The trust policy's `aws:SourceAccount` condition: the service may
    /// assume the role only on behalf of this account (confused deputy).
    pub source_account: String,
    /// The single inline policy document (`<role>-policy`).
    pub policy: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowLogSpec {
    pub vpc_id: String,
    pub log_group: String,
    pub role_arn: String,
    pub traffic_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupSpec {
    pub name: String,
    pub vpc_id: String,
    pub description: String,
}

// dup: typed structs of the original schema: alike in shape, each its own fields.
/// One rule of a security group, normalised. `peer` is either a CIDR block or
/// a security group id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SgRule {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub peer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupRulesSpec {
    pub group_id: String,
    /// Sorted, deduplicated.
    pub ingress: Vec<SgRule>,
    pub egress: Vec<SgRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretSpec {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetGroupSpec {
    pub name: String,
    pub description: String,
    pub subnets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbInstanceSpec {
    pub identifier: String,
    pub engine: String,
    pub engine_version: String,
    pub instance_class: String,
    pub allocated_storage: i32,
    pub multi_az: bool,
    pub storage_encrypted: bool,
    pub backup_retention_days: i32,
    pub deletion_protection: bool,
    pub publicly_accessible: bool,
    pub subnet_group: String,
    pub security_groups: Vec<String>,
    pub master_username: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationGroupSpec {
    pub id: String,
    pub node_type: String,
    pub num_node_groups: i32,
    pub replicas_per_node_group: i32,
    pub cluster_mode: bool,
    pub transit_encryption: bool,
    pub at_rest_encryption: bool,
    pub auth_token_enabled: bool,
    pub multi_az: bool,
    pub automatic_failover: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateSpec {
    pub domain: String,
    pub validation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EcrRepositorySpec {
    pub name: String,
    pub scan_on_push: bool,
    pub tag_mutability: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancerSpec {
    pub name: String,
    pub scheme: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroupSpec {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub vpc_id: String,
    pub target_type: String,
    pub health_check_path: String,
    pub health_check_port: String,
    pub health_check_interval: i32,
    pub healthy_threshold: i32,
    pub unhealthy_threshold: i32,
    pub matcher: String,
}

/// What a listener does with requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum ListenerAction {
    Forward { target_group_arn: String },
    RedirectHttps,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerSpec {
    pub load_balancer_arn: String,
    pub port: i32,
    pub protocol: String,
    pub certificate_arn: Option<String>,
    pub ssl_policy: Option<String>,
    pub action: ListenerAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebAclSpec {
    pub name: String,
    /// `REGIONAL` (an ALB).
    pub scope: String,
    /// AWS managed rule groups (vendor `AWS`), in rule priority order.
    pub managed_rule_groups: Vec<String>,
    /// The rate-based rule's limit: requests per client IP per 5 minutes.
    pub rate_limit: i64,
    /// The resource the ACL is associated with (the ALB).
    pub load_balancer_arn: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnsTopicSpec {
    pub name: String,
    /// HTTPS endpoints subscribed (PagerDuty), sorted, as
    /// [`redact_endpoint`] shows them: the URL is a secret, so it is never
    /// diffed or printed; the real one travels in `inputs`.
    pub https_subscriptions: Vec<String>,
    /// AWS services the topic's policy lets publish (AMP's Alertmanager),
    /// sorted.
    #[serde(default)]
    pub service_publishers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmpWorkspaceSpec {
    pub alias: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmpRuleGroupsSpec {
    pub workspace_id: String,
    pub name: String,
    /// FNV-1a of the rules file; the file itself travels in `inputs.data`.
    pub data_hash: String,
}

/// The workspace's Alertmanager definition (`alertmanager::definition`);
/// the YAML itself travels in `inputs.data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmpAlertManagerSpec {
    pub workspace_id: String,
    /// FNV-1a of the definition.
    pub data_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EcsClusterSpec {
    pub name: String,
    pub container_insights: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinitionSpec {
    pub family: String,
    pub cpu: String,
    pub memory: String,
    pub execution_role_arn: String,
    pub task_role_arn: String,
    pub gateway_image: String,
    pub metrics_agent_image: String,
    pub log_group: String,
    pub stop_timeout: i32,
    /// Plain environment of the gateway container.
    pub gateway_environment: BTreeMap<String, String>,
    /// Plain environment of the metrics-agent container.
    pub agent_environment: BTreeMap<String, String>,
    /// Env var -> Secrets Manager ARN, injected into the gateway.
    pub gateway_secrets: BTreeMap<String, String>,
    /// Env var -> Secrets Manager ARN, injected into the metrics-agent.
    #[serde(default)]
    pub agent_secrets: BTreeMap<String, String>,
    /// Fingerprint (FNV-1a) of the declarative configuration the gateway
    /// receives as `GATEWAY_CONFIG_STRING`; the text itself travels in
    /// `Desired::inputs["gateway_config"]` (plans show the hash, not the file).
    /// Empty: none (the image's file).
    #[serde(default)]
    pub gateway_config_hash: String,
}

/// A Route 53 record set (an alias A record or a plain one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSpec {
    /// The hosted zone's name.
    pub zone: String,
    /// Fully qualified, lower case, with the final dot.
    pub name: String,
    pub record_type: String,
    /// The alias target's DNS name, or the record's single value.
    pub value: String,
    /// The alias target's hosted zone (the ALB's canonical zone).
    pub alias_zone_id: Option<String>,
    /// Plain records only.
    pub ttl: Option<i64>,
}

/// An ALB listener rule forwarding a host or paths to a target group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerRuleSpec {
    pub listener_arn: String,
    pub priority: i32,
    /// Host-header condition, when routed by host.
    pub host: Option<String>,
    /// Path-pattern condition values, when routed by path (sorted).
    pub paths: Vec<String>,
    pub target_group_arn: String,
}

/// Grafana's task definition (one container, the official image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrafanaTaskDefinitionSpec {
    pub family: String,
    pub cpu: String,
    pub memory: String,
    pub execution_role_arn: String,
    pub task_role_arn: String,
    pub image: String,
    pub log_group: String,
    pub environment: BTreeMap<String, String>,
    /// Env var -> Secrets Manager ARN (the admin password).
    pub secrets: BTreeMap<String, String>,
}

/// Grafana's ECS service (ECS rolling deployments, behind its target group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrafanaServiceSpec {
    pub name: String,
    pub cluster: String,
    pub task_definition: String,
    pub target_group_arn: String,
    pub desired_count: i32,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EcsServiceSpec {
    pub name: String,
    pub cluster: String,
    /// Task definition of the primary task set.
    pub task_definition: String,
    /// Target group the primary task set is registered with.
    pub target_group_arn: String,
    pub desired_count: i32,
    pub launch_type: String,
    pub deployment_controller: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingPolicySpec {
    /// `service/<cluster>/<service>`.
    pub resource_id: String,
    pub min_capacity: i32,
    pub max_capacity: i32,
    pub target_cpu_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmSpec {
    pub name: String,
    pub namespace: String,
    pub metric: String,
    pub dimensions: BTreeMap<String, String>,
    pub statistic: String,
    pub period: i32,
    pub evaluation_periods: i32,
    pub threshold: f64,
    pub comparison: String,
    pub treat_missing_data: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrafanaDashboardSpec {
    pub uid: String,
    pub title: String,
    pub content_hash: String,
}

/// 64-bit FNV-1a, hex: a stable content fingerprint (not for security).
/// What plan/status show for a secret HTTPS endpoint: scheme and host, and
/// a short fingerprint of the whole URL (so a changed URL still shows as a
/// change) instead of the path that holds the integration key.
pub fn redact_endpoint(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let print = fnv1a(url.as_bytes());
    format!("{scheme}://{host}/<redacted {}>", &print[..8])
}

pub fn fnv1a(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable_and_sensitive() {
        assert_eq!(fnv1a(b""), "cbf29ce484222325");
        assert_eq!(fnv1a(b"a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn endpoints_are_redacted_but_changes_stay_visible() {
        let url = "https://events.pagerduty.com/integration/0123456789abcdef/enqueue";
        let shown = redact_endpoint(url);
        assert!(
            shown.starts_with("https://events.pagerduty.com/<redacted "),
            "{shown}"
        );
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert_ne!(shown, redact_endpoint(&url.replace("0123", "9999")));
        assert_ne!(fnv1a(b"ab"), fnv1a(b"ba"));
    }

    #[test]
    fn listener_action_serialises_with_a_type_tag() {
        let a = ListenerAction::Forward {
            target_group_arn: "arn:tg".into(),
        };
        let v = serde_json::to_value(&a).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"type": "forward", "target_group_arn": "arn:tg"})
        );
        let r = serde_json::to_value(ListenerAction::RedirectHttps).expect("json");
        assert_eq!(r, serde_json::json!({"type": "redirect-https"}));
    }
}
