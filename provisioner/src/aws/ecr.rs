//! ECR repositories (scan on push, immutable tags). They hold the images of
//! every environment (`<project>/gateway`, as the release workflow pushes
//! them), so they are tagged with the project only and kept by `down`.

use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability, Tag};

use super::{Aws, registry::Ops};
use crate::consts::ECR_REPOSITORIES;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::EcrRepositorySpec;

/// Project-level tags: no `env`, because every environment pulls from them.
fn shared_tags(aws: &Aws, key: &Key) -> Vec<(String, String)> {
    aws.tags(key)
        .into_iter()
        .filter(|(k, _)| k != super::TAG_ENV)
        .chain([("scope".to_string(), "shared".to_string())])
        .collect()
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let items = aws
        .ecr
        .describe_repositories()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("ecr:DescribeRepositories", e))?;
    let prefix = format!("{}/", aws.project);
    let mut res = Vec::new();
    for r in &items {
        let Some(name) = r.repository_name() else {
            continue;
        };
        let Some(logical) = name
            .strip_prefix(&prefix)
            .filter(|l| ECR_REPOSITORIES.contains(l))
        else {
            continue;
        };
        let spec = EcrRepositorySpec {
            name: name.to_string(),
            scan_on_push: r
                .image_scanning_configuration()
                .map(|c| c.scan_on_push())
                .unwrap_or(false),
            tag_mutability: r
                .image_tag_mutability()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
        };
        res.push(
            Actual::new(Key::new(Kind::EcrRepository, logical), name, &spec)
                .output("arn", r.repository_arn().unwrap_or_default())
                .output("uri", r.repository_uri().unwrap_or_default()),
        );
    }
    Ok(res)
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: EcrRepositorySpec = d.spec()?;
    let tags = shared_tags(aws, &d.key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let out = aws
        .ecr
        .create_repository()
        .repository_name(&spec.name)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(spec.scan_on_push)
                .build(),
        )
        .image_tag_mutability(ImageTagMutability::from(spec.tag_mutability.as_str()))
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| Error::aws("ecr:CreateRepository", e))?;
    let r = out.repository();
    Ok(Actual::new(d.key.clone(), &spec.name, &spec)
        .output(
            "arn",
            r.and_then(|r| r.repository_arn()).unwrap_or_default(),
        )
        .output(
            "uri",
            r.and_then(|r| r.repository_uri()).unwrap_or_default(),
        ))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: EcrRepositorySpec = d.spec()?;
    aws.ecr
        .put_image_scanning_configuration()
        .repository_name(&spec.name)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(spec.scan_on_push)
                .build(),
        )
        .send()
        .await
        .map_err(|e| Error::aws("ecr:PutImageScanningConfiguration", e))?;
    aws.ecr
        .put_image_tag_mutability()
        .repository_name(&spec.name)
        .image_tag_mutability(ImageTagMutability::from(spec.tag_mutability.as_str()))
        .send()
        .await
        .map_err(|e| Error::aws("ecr:PutImageTagMutability", e))?;
    let mut n = a.clone();
    n.props = d.props.clone();
    Ok(n)
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.ecr
        .delete_repository()
        .repository_name(&a.id)
        .force(true)
        .send()
        .await
        .map_err(|e| Error::aws("ecr:DeleteRepository", e))?;
    Ok(())
}

/// `EcrRepository` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(EcrRepository, observe, create, update, delete);
