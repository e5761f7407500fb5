//! Diffing desired against actual resources, and rendering the result for
//! people (`+ ~ -` tree) and machines (JSON).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{Actual, Desired, Key, PENDING};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    /// An immutable field changed; the engine will not do this on its own.
    Replace,
    Delete,
    #[serde(rename = "no-op")]
    NoOp,
}

impl Action {
    pub fn marker(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::NoOp => " ",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub key: Key,
    pub action: Action,
    /// Physical id, when the resource exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For updates/replacements: the fields that differ. For creates: every
    /// desired field (from = null).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// Field-level differences: every field the desired spec sets and the actual
/// resource does not have with an equal value.
pub fn diff_props(desired: &Map<String, Value>, actual: &Map<String, Value>) -> Vec<FieldChange> {
    desired
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| FieldChange {
            field: k.clone(),
            from: actual.get(k).cloned(),
            to: Some(v.clone()),
        })
        .collect()
}

/// What has to happen to bring `actual` to `desired`.
pub fn decide(desired: Option<&Desired>, actual: Option<&Actual>) -> Option<Change> {
    match (desired, actual) {
        (None, None) => None,
        (Some(d), None) => Some(Change {
            key: d.key.clone(),
            action: Action::Create,
            id: None,
            fields: d
                .props
                .iter()
                .map(|(k, v)| FieldChange {
                    field: k.clone(),
                    from: None,
                    to: Some(v.clone()),
                })
                .collect(),
        }),
        (None, Some(a)) => Some(Change {
            key: a.key.clone(),
            action: Action::Delete,
            id: Some(a.id.clone()),
            fields: Vec::new(),
        }),
        (Some(d), Some(a)) => {
            let fields = diff_props(&d.props, &a.props);
            let immutable = d.key.kind.immutable_fields();
            let action = if fields.is_empty() {
                Action::NoOp
            } else if fields.iter().any(|f| {
                immutable.contains(&f.field.as_str())
                    // A reference that is only pending because its target is
                    // being created is not a real change of an immutable field.
                    && f.to.as_ref().and_then(Value::as_str) != Some(PENDING)
            }) {
                Action::Replace
            } else {
                Action::Update
            };
            Some(Change {
                key: d.key.clone(),
                action,
                id: Some(a.id.clone()),
                fields,
            })
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl Summary {
    pub fn of(changes: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::NoOp => s.unchanged += 1,
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.replace + self.delete > 0
    }
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "(none)".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            let s = other.to_string();
            if s.len() > 120 {
                format!("{}…", &s[..s.floor_char_boundary(117)])
            } else {
                s
            }
        }
    }
}

/// Fields that identify a resource at a glance in a create line.
const HEADLINE: [&str; 16] = [
    "name",
    "identifier",
    "id",
    "family",
    "alias",
    "domain",
    "cidr",
    "az",
    "port",
    "instance_class",
    "node_type",
    "desired_count",
    "gateway_image",
    "min_capacity",
    "max_capacity",
    "threshold",
];

fn headline(c: &Change) -> String {
    HEADLINE
        .iter()
        .filter_map(|h| c.fields.iter().find(|f| f.field == *h))
        .filter(|f| f.to.as_ref().and_then(Value::as_str) != Some(PENDING))
        .take(3)
        .map(|f| format!("{}={}", f.field, short(&f.to)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The human form of a plan: one line per resource with its marker, field
/// details under updates, unchanged resources only counted.
pub fn render_text(title: &str, changes: &[Change], verbose: bool) -> String {
    let s = Summary::of(changes);
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let width = changes
        .iter()
        .filter(|c| verbose || c.action != Action::NoOp)
        .map(|c| c.key.to_string().len())
        .max()
        .unwrap_or(0);
    for c in changes {
        if c.action == Action::NoOp && !verbose {
            continue;
        }
        let key = c.key.to_string();
        let note = match c.action {
            Action::Create => format!("create  {}", headline(c)).trim_end().to_string(),
            Action::Delete => format!("delete {}", c.id.as_deref().unwrap_or("")),
            Action::Update => format!("update {}", c.id.as_deref().unwrap_or("")),
            Action::Replace => {
                "REPLACE (immutable field changed; not done automatically)".to_string()
            }
            Action::NoOp => "unchanged".to_string(),
        };
        let _ = writeln!(out, "  {:<3} {key:<width$}  {note}", c.action.marker());
        if matches!(c.action, Action::Update | Action::Replace) {
            for f in &c.fields {
                let _ = writeln!(
                    out,
                    "        {}: {} -> {}",
                    f.field,
                    short(&f.from),
                    short(&f.to)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{} to create, {} to update, {} to replace, {} to delete, {} unchanged.",
        s.create, s.update, s.replace, s.delete, s.unchanged
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use serde_json::json;

    fn desired(kind: Kind, v: Value) -> Desired {
        Desired::new(Key::new(kind, "x"), &v, vec![])
    }
    fn actual(kind: Kind, v: Value) -> Actual {
        Actual::new(Key::new(kind, "x"), "id-1", &v)
    }

    #[test]
    fn equal_props_are_no_op_and_extra_actual_fields_are_ignored() {
        let d = desired(Kind::Vpc, json!({"cidr": "10.0.0.0/16"}));
        let a = actual(Kind::Vpc, json!({"cidr": "10.0.0.0/16", "extra": 1}));
        let c = decide(Some(&d), Some(&a)).expect("change");
        assert_eq!(c.action, Action::NoOp);
        assert!(c.fields.is_empty());
    }

    #[test]
    fn mutable_difference_is_an_update_with_field_details() {
        let d = desired(
            Kind::EcsService,
            json!({"desired_count": 3, "cluster": "c"}),
        );
        let a = actual(
            Kind::EcsService,
            json!({"desired_count": 2, "cluster": "c"}),
        );
        let c = decide(Some(&d), Some(&a)).expect("change");
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.fields,
            vec![FieldChange {
                field: "desired_count".into(),
                from: Some(json!(2)),
                to: Some(json!(3))
            }]
        );
    }

    #[test]
    fn immutable_difference_is_a_replace() {
        let d = desired(Kind::Vpc, json!({"cidr": "10.1.0.0/16"}));
        let a = actual(Kind::Vpc, json!({"cidr": "10.0.0.0/16"}));
        assert_eq!(
            decide(Some(&d), Some(&a)).map(|c| c.action),
            Some(Action::Replace)
        );
    }

    #[test]
    fn pending_reference_in_immutable_field_is_not_a_replace() {
        let d = desired(Kind::Subnet, json!({"vpc_id": PENDING}));
        let a = actual(Kind::Subnet, json!({"vpc_id": "vpc-1"}));
        assert_eq!(
            decide(Some(&d), Some(&a)).map(|c| c.action),
            Some(Action::Update)
        );
    }

    #[test]
    fn missing_sides_are_create_and_delete() {
        let d = desired(Kind::Vpc, json!({"cidr": "10.1.0.0/16"}));
        let a = actual(Kind::Vpc, json!({}));
        assert_eq!(
            decide(Some(&d), None).map(|c| c.action),
            Some(Action::Create)
        );
        assert_eq!(
            decide(None, Some(&a)).map(|c| c.action),
            Some(Action::Delete)
        );
        assert!(decide(None, None).is_none());
    }

    #[test]
    fn text_rendering_shows_markers_and_summary() {
        let d = desired(Kind::Vpc, json!({"cidr": "10.1.0.0/16"}));
        let d2 = Desired::new(
            Key::new(Kind::EcsService, "gw"),
            &json!({"desired_count": 3}),
            vec![],
        );
        let a2 = Actual::new(
            Key::new(Kind::EcsService, "gw"),
            "arn:svc",
            &json!({"desired_count": 2}),
        );
        let a3 = Actual::new(Key::new(Kind::Subnet, "old"), "subnet-9", &json!({}));
        let changes: Vec<Change> = [
            decide(Some(&d), None),
            decide(Some(&d2), Some(&a2)),
            decide(None, Some(&a3)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let text = render_text("Plan", &changes, false);
        assert!(text.contains("  +   vpc/x"), "{text}");
        assert!(text.contains("create  cidr=10.1.0.0/16"), "{text}");
        assert!(text.contains("  ~   ecs-service/gw"), "{text}");
        assert!(text.contains("desired_count: 2 -> 3"), "{text}");
        assert!(text.contains("  -   subnet/old"), "{text}");
        assert!(text.contains("1 to create, 1 to update, 0 to replace, 1 to delete, 0 unchanged."));
        let s = Summary::of(&changes);
        assert!(s.has_changes());
    }
}
