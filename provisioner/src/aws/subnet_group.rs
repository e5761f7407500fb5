//! What the RDS and ElastiCache subnet groups share: one spec, read back
//! the same way from two SDKs, and tags in each SDK's own type.

use super::Aws;
use crate::model::{Actual, Key, Kind};
use crate::specs::SubnetGroupSpec;

/// A subnet group as found (`kind/main`), its subnets sorted.
pub fn actual<'a>(
    kind: Kind,
    name: &str,
    description: Option<&str>,
    subnets: impl IntoIterator<Item = Option<&'a str>>,
) -> Actual {
    let mut subnets: Vec<String> = subnets.into_iter().flatten().map(str::to_string).collect();
    subnets.sort();
    let spec = SubnetGroupSpec {
        name: name.to_string(),
        description: description.unwrap_or_default().to_string(),
        subnets,
    };
    Actual::new(Key::new(kind, "main"), name, &spec)
}

/// The resource's tags, built into an SDK's tag type.
pub fn tags<T>(aws: &Aws, key: &Key, tag: impl Fn(String, String) -> T) -> Vec<T> {
    aws.tags(key).into_iter().map(|(k, v)| tag(k, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_sorted_and_missing_ids_skipped() {
        let a = actual(
            Kind::CacheSubnetGroup,
            "p-redis",
            None,
            [Some("subnet-b"), None, Some("subnet-a")],
        );
        assert_eq!(a.id, "p-redis");
        assert_eq!(
            a.props["subnets"],
            serde_json::json!(["subnet-a", "subnet-b"])
        );
        assert_eq!(a.props["description"], "");
    }
}
