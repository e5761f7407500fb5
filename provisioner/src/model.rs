//! The vocabulary of the reconcile engine: resource kinds, keys, desired and
//! actual resources. Nothing here talks to AWS.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Placeholder for an attribute that only exists once a dependency is created.
pub const PENDING: &str = "(known after apply)";

/// Declares [`Kind`] from one list: the variant, its `kind/name` key word
/// (also its serde name), and [`Kind::ALL`] in the same order.
macro_rules! kinds {
    ($($variant:ident = $name:literal,)*) => {
        /// Every kind of resource the provisioner manages, in creation order: a
        /// kind only ever depends on kinds declared before it, so sorting by
        /// [`Kind::rank`] is a valid topological order (deletes walk it
        /// backwards).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Kind {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Kind {
            pub const ALL: [Kind; [$($name),*].len()] = [$(Kind::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }
        }
    };
}

// Adding a kind: one line here, at its place in the creation order.
kinds! {
    Vpc = "vpc",
    InternetGateway = "internet-gateway",
    Subnet = "subnet",
    ElasticIp = "elastic-ip",
    NatGateway = "nat-gateway",
    RouteTable = "route-table",
    LogGroup = "log-group",
    SecurityGroup = "security-group",
    SecurityGroupRules = "security-group-rules",
    Secret = "secret",
    DbSubnetGroup = "db-subnet-group",
    DbInstance = "db-instance",
    CacheSubnetGroup = "cache-subnet-group",
    ReplicationGroup = "replication-group",
    ConnectionSecret = "connection-secret",
    Certificate = "certificate",
    ValidationRecord = "validation-record",
    EcrRepository = "ecr-repository",
    LoadBalancer = "load-balancer",
    DnsRecord = "dns-record",
    TargetGroup = "target-group",
    Listener = "listener",
    WebAcl = "web-acl",
    ListenerRule = "listener-rule",
    SnsTopic = "sns-topic",
    AmpWorkspace = "amp-workspace",
    AmpRuleGroups = "amp-rule-groups",
    AmpAlertManager = "amp-alertmanager",
    IamRole = "iam-role",
    FlowLog = "flow-log",
    EcsCluster = "ecs-cluster",
    TaskDefinition = "task-definition",
    GrafanaTaskDefinition = "grafana-task-definition",
    EcsService = "ecs-service",
    GrafanaService = "grafana-service",
    ScalingPolicy = "scaling-policy",
    Alarm = "alarm",
    GrafanaDashboard = "grafana-dashboard",
}

impl Kind {
    /// Position in the creation order.
    pub fn rank(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Fields that cannot be changed in place; a change to one of them means
    /// the resource has to be replaced, which the engine refuses to do on its
    /// own (it would destroy data or break dependents).
    pub fn immutable_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Vpc => &["cidr"],
            Kind::Subnet => &["cidr", "az", "vpc_id"],
            Kind::NatGateway => &["subnet_id", "allocation_id"],
            Kind::SecurityGroup => &["vpc_id", "description"],
            Kind::DbInstance => &[
                "engine",
                "storage_encrypted",
                "subnet_group",
                "master_username",
            ],
            Kind::ReplicationGroup => &[
                "transit_encryption",
                "at_rest_encryption",
                "cluster_mode",
                "num_node_groups",
            ],
            Kind::LoadBalancer => &["scheme", "subnets"],
            Kind::TargetGroup => &["port", "protocol", "vpc_id", "target_type"],
            Kind::Listener => &["port"],
            Kind::Certificate => &["domain"],
            Kind::EcsService => &["cluster", "deployment_controller"],
            Kind::GrafanaService => &["cluster", "name"],
            Kind::ListenerRule => &["listener_arn"],
            Kind::FlowLog => &["vpc_id", "log_group", "traffic_type"],
            _ => &[],
        }
    }

    /// Kinds shared by all environments of the project: created by `up`,
    /// never deleted by `down` (ECR repositories hold every environment's
    /// images).
    pub fn shared(self) -> bool {
        matches!(self, Kind::EcrRepository)
    }

    /// Kinds whose identity (id/ARN) changes on every update, so dependents
    /// cannot know the new value at plan time (ECS task definition revisions).
    pub fn id_changes_on_update(self) -> bool {
        matches!(self, Kind::TaskDefinition | Kind::GrafanaTaskDefinition)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Logical identity of a resource inside one environment: `kind/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: Kind,
    pub name: String,
}

impl Key {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Key {
            kind,
            name: name.into(),
        }
    }

    /// Parses the `kind/name` form written into the `provisioner:key` tag.
    pub fn parse(s: &str) -> Option<Key> {
        let (kind, name) = s.split_once('/')?;
        Some(Key::new(Kind::parse(kind)?, name))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A resource as the env file says it should be. `props` is the JSON form of
/// the kind's typed spec; references to other resources are already resolved
/// to ids, or to [`PENDING`] when the referenced resource does not exist yet.
#[derive(Debug, Clone)]
pub struct Desired {
    pub key: Key,
    pub props: Map<String, Value>,
    pub deps: Vec<Key>,
    /// Create-time inputs that AWS never echoes back (secret names, file
    /// contents): passed to the provider, never diffed.
    pub inputs: BTreeMap<String, String>,
}

impl Desired {
    pub fn new<T: Serialize>(key: Key, spec: &T, deps: Vec<Key>) -> Self {
        let props = match serde_json::to_value(spec) {
            Ok(Value::Object(m)) => m,
            // Specs are plain structs; anything else is a programming error
            // that shows up as an empty spec in unit tests.
            _ => Map::new(),
        };
        Desired {
            key,
            props,
            deps,
            inputs: BTreeMap::new(),
        }
    }

    pub fn input(mut self, name: &str, value: impl Into<String>) -> Self {
        self.inputs.insert(name.to_string(), value.into());
        self
    }

    /// The props as the kind's typed spec.
    pub fn spec<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Object(self.props.clone()))
    }

    /// Whether any property still waits for a dependency to be created.
    pub fn has_pending(&self) -> bool {
        fn pending(v: &Value) -> bool {
            match v {
                Value::String(s) => s == PENDING,
                Value::Array(a) => a.iter().any(pending),
                Value::Object(o) => o.values().any(pending),
                _ => false,
            }
        }
        self.props.values().any(pending)
    }
}

/// A resource as found in the account.
#[derive(Debug, Clone, Serialize)]
pub struct Actual {
    pub key: Key,
    /// The physical id (VPC id, ARN, name ...).
    pub id: String,
    /// Observed properties in the same shape as the desired spec.
    pub props: Map<String, Value>,
    /// Attributes dependents refer to (`arn`, `dns_name`, ...). `id` is
    /// always available through [`Ids::get`].
    pub outputs: BTreeMap<String, String>,
    /// Life-cycle state as reported by AWS, for `status`.
    pub state: String,
}

impl Actual {
    pub fn new<T: Serialize>(key: Key, id: impl Into<String>, spec: &T) -> Self {
        let props = match serde_json::to_value(spec) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Actual {
            key,
            id: id.into(),
            props,
            outputs: BTreeMap::new(),
            state: "available".to_string(),
        }
    }

    /// A string property as observed (empty when absent or not a string).
    pub fn prop_str(&self, name: &str) -> &str {
        self.props
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }

    pub fn output(mut self, name: &str, value: impl Into<String>) -> Self {
        self.outputs.insert(name.to_string(), value.into());
        self
    }

    pub fn state(mut self, state: impl Into<String>) -> Self {
        self.state = state.into();
        self
    }
}

/// Known ids and outputs of resources, used to resolve references.
#[derive(Debug, Default, Clone)]
pub struct Ids {
    map: BTreeMap<Key, BTreeMap<String, String>>,
}

impl Ids {
    pub fn record(&mut self, actual: &Actual) {
        let mut outs = actual.outputs.clone();
        outs.insert("id".to_string(), actual.id.clone());
        self.map.insert(actual.key.clone(), outs);
    }

    /// Forget a resource: references to it resolve to [`PENDING`].
    pub fn forget(&mut self, key: &Key) {
        self.map.remove(key);
    }

    /// The named output of `kind/name`, or [`PENDING`].
    pub fn get(&self, kind: Kind, name: &str, output: &str) -> String {
        self.map
            .get(&Key::new(kind, name))
            .and_then(|o| o.get(output))
            .cloned()
            .unwrap_or_else(|| PENDING.to_string())
    }

    pub fn id(&self, kind: Kind, name: &str) -> String {
        self.get(kind, name, "id")
    }

    pub fn known(&self, key: &Key) -> bool {
        self.map.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_rank_follows_declaration() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.rank(), i);
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
            assert_eq!(serde_json::to_value(k).ok(), Some(k.as_str().into()));
        }
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn key_parses_its_display_form() {
        let k = Key::new(Kind::Subnet, "public-a");
        assert_eq!(k.to_string(), "subnet/public-a");
        assert_eq!(Key::parse("subnet/public-a"), Some(k));
        assert_eq!(Key::parse("subnet"), None);
        assert_eq!(Key::parse("bogus/x"), None);
    }

    #[test]
    fn ids_resolve_to_pending_until_recorded() {
        let mut ids = Ids::default();
        assert_eq!(ids.id(Kind::Vpc, "main"), PENDING);
        let a = Actual::new(Key::new(Kind::Vpc, "main"), "vpc-1", &serde_json::json!({}))
            .output("arn", "arn:vpc");
        ids.record(&a);
        assert_eq!(ids.id(Kind::Vpc, "main"), "vpc-1");
        assert_eq!(ids.get(Kind::Vpc, "main", "arn"), "arn:vpc");
        ids.forget(&a.key);
        assert_eq!(ids.id(Kind::Vpc, "main"), PENDING);
    }

    #[test]
    fn pending_detection_looks_into_nested_values() {
        let d = Desired::new(
            Key::new(Kind::Subnet, "a"),
            &serde_json::json!({"x": [{"y": PENDING}]}),
            vec![],
        );
        assert!(d.has_pending());
        let d = Desired::new(
            Key::new(Kind::Subnet, "a"),
            &serde_json::json!({"x": 1}),
            vec![],
        );
        assert!(!d.has_pending());
    }
}
