//! Shared EC2 helpers: tag specifications and tag filters.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use super::Aws;
use crate::model::Key;

/// Tags for a `Create*` call's `TagSpecifications`.
pub fn tag_spec(
    aws: &Aws,
    key: &Key,
    rt: ResourceType,
    extra: &[(&str, &str)],
) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(rt);
    for (k, v) in aws.tags(key) {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    for (k, v) in extra {
        b = b.tags(Tag::builder().key(*k).value(*v).build());
    }
    b.build()
}

/// Filters matching this environment's tags.
pub fn env_filters(aws: &Aws) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{}", super::TAG_PROJECT))
            .values(&aws.project)
            .build(),
        Filter::builder()
            .name(format!("tag:{}", super::TAG_ENV))
            .values(&aws.env)
            .build(),
    ]
}

pub fn pairs(tags: &[Tag]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter()
        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
}

pub fn key_of(tags: &[Tag]) -> Option<Key> {
    super::key_from_tags(pairs(tags))
}

pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}
