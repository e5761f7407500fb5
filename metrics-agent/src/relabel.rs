//! Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`, `write_relabel_configs`).

use crate::labels::Labels;
use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;

// dup: typed structs of the original schema: alike in shape, each its own fields.
/// A relabel rule as written in prometheus.yml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default)]
    pub separator: Option<String>,
    #[serde(default)]
    pub target_label: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub modulus: Option<u64>,
    #[serde(default)]
    pub replacement: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

/// A validated, compiled relabel rule.
#[derive(Debug, Clone)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    modulus: u64,
    replacement: String,
    action: Action,
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why a relabel rule is rejected; the text starts with the offending field.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuleError {
    #[error("action: unknown relabel action {0:?}")]
    UnknownAction(String),
    #[error("regex: invalid regular expression {raw:?}: {source}")]
    Regex {
        raw: String,
        #[source]
        source: regex::Error,
    },
    #[error("target_label: required for action {0:?}")]
    TargetRequired(Action),
    #[error("target_label: {0:?} is not a valid label name")]
    TargetName(String),
    #[error("modulus: required and non-zero for action hashmod")]
    Modulus,
    #[error("source_labels: not allowed with labeldrop/labelkeep")]
    SourceLabels,
    #[error("regex: not allowed with keepequal/dropequal")]
    RegexNotAllowed,
}

/// A rejected rule in a list: `field[index].` before the rule's error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}[{index}].{source}")]
pub struct RulesError {
    pub field: String,
    pub index: usize,
    #[source]
    pub source: RuleError,
}

impl RelabelConfig {
    /// Validates the rule; the error text names the offending field.
    pub fn compile(&self) -> Result<Rule, RuleError> {
        let action = match self.action.as_deref().unwrap_or("replace") {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            other => return Err(RuleError::UnknownAction(other.to_string())),
        };
        let raw = self.regex.as_deref().unwrap_or("(.*)");
        let regex = Regex::new(&format!("^(?s:{raw})$")).map_err(|source| RuleError::Regex {
            raw: raw.to_string(),
            source,
        })?;
        let target_label = self.target_label.clone().unwrap_or_default();
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && target_label.is_empty() {
            return Err(RuleError::TargetRequired(action));
        }
        if matches!(
            action,
            Action::Lowercase
                | Action::Uppercase
                | Action::HashMod
                | Action::KeepEqual
                | Action::DropEqual
        ) && !is_label_name(&target_label)
        {
            return Err(RuleError::TargetName(target_label));
        }
        if action == Action::Replace && !target_label.contains('$') && !is_label_name(&target_label)
        {
            return Err(RuleError::TargetName(target_label));
        }
        let modulus = self.modulus.unwrap_or(0);
        if action == Action::HashMod && modulus == 0 {
            return Err(RuleError::Modulus);
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (!self.source_labels.is_empty() || self.target_label.is_some())
        {
            return Err(RuleError::SourceLabels);
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual) && self.regex.is_some() {
            return Err(RuleError::RegexNotAllowed);
        }
        Ok(Rule {
            source_labels: self.source_labels.clone(),
            separator: self.separator.clone().unwrap_or_else(|| ";".into()),
            target_label,
            regex,
            modulus,
            replacement: self.replacement.clone().unwrap_or_else(|| "$1".into()),
            action,
        })
    }
}

/// Applies `rules` in order. Returns `None` if the label set is dropped.
pub fn apply(rules: &[Rule], mut labels: Labels) -> Option<Labels> {
    for r in rules {
        if !r.apply(&mut labels) {
            return None;
        }
        if labels.is_empty() {
            return None;
        }
    }
    Some(labels)
}

fn md5_sum64(val: &str) -> u64 {
    let digest = Md5::digest(val.as_bytes());
    let mut last = [0u8; 8];
    last.copy_from_slice(&digest[8..16]);
    u64::from_be_bytes(last)
}

impl Rule {
    /// Applies one rule; false means "drop this label set".
    fn apply(&self, labels: &mut Labels) -> bool {
        let value = self
            .source_labels
            .iter()
            .map(|n| labels.get(n).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(&self.separator);
        match self.action {
            Action::Keep => return self.regex.is_match(&value),
            Action::Drop => return !self.regex.is_match(&value),
            Action::KeepEqual => return labels.get(&self.target_label).unwrap_or("") == value,
            Action::DropEqual => return labels.get(&self.target_label).unwrap_or("") != value,
            Action::Replace => {
                let Some(caps) = self.regex.captures(&value) else {
                    return true;
                };
                let mut target = String::new();
                caps.expand(&self.target_label, &mut target);
                if !is_label_name(&target) {
                    return true;
                }
                let mut res = String::new();
                caps.expand(&self.replacement, &mut res);
                labels.set(target, res);
            }
            Action::Lowercase => labels.set(self.target_label.clone(), value.to_lowercase()),
            Action::Uppercase => labels.set(self.target_label.clone(), value.to_uppercase()),
            Action::HashMod => {
                let m = md5_sum64(&value) % self.modulus;
                labels.set(self.target_label.clone(), m.to_string());
            }
            Action::LabelMap => {
                let mut add = Vec::new();
                for (n, v) in labels.iter() {
                    if let Some(caps) = self.regex.captures(n) {
                        let mut res = String::new();
                        caps.expand(&self.replacement, &mut res);
                        add.push((res, v.to_string()));
                    }
                }
                for (n, v) in add {
                    labels.set(n, v);
                }
            }
            Action::LabelDrop => labels.retain(|n, _| !self.regex.is_match(n)),
            Action::LabelKeep => labels.retain(|n, _| self.regex.is_match(n)),
        }
        true
    }
}

/// Compiles a list of rules, prefixing errors with `field[index]`.
pub fn compile_all(field: &str, cfgs: &[RelabelConfig]) -> Result<Vec<Rule>, RulesError> {
    cfgs.iter()
        .enumerate()
        .map(|(index, c)| {
            c.compile().map_err(|source| RulesError {
                field: field.to_string(),
                index,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Rule {
        let c: RelabelConfig = serde_norway::from_str(yaml).expect("yaml");
        c.compile().expect("compile")
    }

    #[test]
    fn replace_with_captures() {
        let r = rule(
            "source_labels: [__address__]\nregex: '([^:]+):\\d+'\ntarget_label: host\nreplacement: 'h-$1'",
        );
        let l = apply(&[r], Labels::from_pairs([("__address__", "db1:5432")])).expect("kept");
        assert_eq!(l.get("host"), Some("h-db1"));
    }

    #[test]
    fn keep_and_drop_are_anchored() {
        let keep = rule("source_labels: [__name__]\nregex: 'http_.*'\naction: keep");
        assert!(
            apply(
                std::slice::from_ref(&keep),
                Labels::from_pairs([("__name__", "http_requests")])
            )
            .is_some()
        );
        assert!(
            apply(
                &[keep],
                Labels::from_pairs([("__name__", "xhttp_requests")])
            )
            .is_none()
        );
        let drop = rule("source_labels: [__name__]\nregex: 'go_.*'\naction: drop");
        assert!(apply(&[drop], Labels::from_pairs([("__name__", "go_gc")])).is_none());
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        let m = rule("regex: '__meta_(.+)'\naction: labelmap");
        let d = rule("regex: '__meta_.+'\naction: labeldrop");
        let l = apply(
            &[m, d],
            Labels::from_pairs([("__meta_zone", "a"), ("job", "j")]),
        )
        .expect("kept");
        assert_eq!(l.get("zone"), Some("a"));
        assert_eq!(l.get("__meta_zone"), None);
        let k = rule("regex: 'job'\naction: labelkeep");
        let l = apply(&[k], l).expect("kept");
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Prometheus: md5("foo") last 8 bytes big-endian mod 1000.
        let r = rule("source_labels: [a]\ntarget_label: shard\nmodulus: 1000\naction: hashmod");
        let l = apply(&[r], Labels::from_pairs([("a", "foo")])).expect("kept");
        let want = md5_sum64("foo") % 1000;
        assert_eq!(l.get("shard"), Some(want.to_string().as_str()));
        // md5("foo") = acbd18db4cc2f85cedef654fccc4a4d8 -> last 8 bytes 0xedef654fccc4a4d8
        assert_eq!(md5_sum64("foo"), 0xedef_654f_ccc4_a4d8);
    }

    #[test]
    fn lowercase_keepequal() {
        let lc = rule("source_labels: [A]\ntarget_label: a\naction: lowercase");
        let ke = rule("source_labels: [a]\ntarget_label: b\naction: keepequal");
        assert!(
            apply(
                &[lc.clone(), ke.clone()],
                Labels::from_pairs([("A", "X"), ("b", "x")])
            )
            .is_some()
        );
        assert!(apply(&[lc, ke], Labels::from_pairs([("A", "X"), ("b", "y")])).is_none());
    }

    #[test]
    fn invalid_rules_name_the_field() {
        let c: RelabelConfig =
            serde_norway::from_str("action: hashmod\ntarget_label: x").expect("yaml");
        assert!(
            c.compile()
                .expect_err("must be rejected")
                .to_string()
                .starts_with("modulus")
        );
        let c: RelabelConfig = serde_norway::from_str("action: frobnicate").expect("yaml");
        assert!(
            c.compile()
                .expect_err("must be rejected")
                .to_string()
                .starts_with("action")
        );
        let c: RelabelConfig = serde_norway::from_str("regex: '('\ntarget_label: x").expect("yaml");
        assert!(
            c.compile()
                .expect_err("must be rejected")
                .to_string()
                .starts_with("regex")
        );
    }
}
