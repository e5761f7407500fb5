//! Label sets: sorted, de-duplicated `(name, value)` pairs, as remote_write requires.

use std::hash::{DefaultHasher, Hash, Hasher};

/// The NaN bit pattern Prometheus uses as a staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True when `v` is exactly the staleness marker.
#[cfg(test)]
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A label set. Kept sorted by name; names are unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(String, String)>);

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl Labels {
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Builds a label set from pairs; later pairs win on duplicate names.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut l = Labels::new();
        for (k, v) in pairs {
            l.set(k.into(), v.into());
        }
        l
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Sets `name` to `value`; an empty value removes the label (Prometheus semantics).
    pub fn set(&mut self, name: String, value: String) {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => {
                if value.is_empty() {
                    self.0.remove(i);
                } else {
                    self.0[i].1 = value;
                }
            }
            Err(i) => {
                if !value.is_empty() {
                    self.0.insert(i, (name, value));
                }
            }
        }
    }

    pub fn retain<F: FnMut(&str, &str) -> bool>(&mut self, mut f: F) {
        self.0.retain(|(n, v)| f(n, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A stable 64-bit hash of the label set (used for staleness tracking and sharding).
    pub fn hash64(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.0.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_sorted_and_unique() {
        let mut l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", "3"), ("a", "x")]);
        let names: Vec<_> = l.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(l.get("a"), Some("x"));
        l.set("b".into(), String::new());
        assert_eq!(l.get("b"), None);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn stale_marker_is_distinct_from_plain_nan() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
    }
}
