//! AWS SDK configuration shared by `ec2_sd_configs` and remote_write's `sigv4` block, built
//! the way Prometheus builds it: the region given (else the SDK's region chain), static keys
//! when both are given (else the SDK's default credentials chain: environment, shared
//! profile, web identity, ECS container credentials, instance metadata), a named `profile`,
//! and `role_arn` assumed through STS with those credentials (`external_id` passed along).

use crate::config::AwsAuth;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls;

/// The session name of assumed roles (visible in CloudTrail).
pub const SESSION_NAME: &str = "metrics-agent";

/// Why an AWS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "could not determine AWS region: set `region`, AWS_REGION, or a region in the AWS profile"
    )]
    NoRegion,
    #[error("no AWS credentials provider is configured")]
    NoCredentials,
    #[error("tls_config.ca: {0}")]
    Tls(String),
}

/// An HTTPS client for the AWS SDK that trusts only the CA certificates in `ca_pem`.
pub fn https_client_with_ca(
    ca_pem: &[u8],
) -> Result<aws_sdk_ec2::config::SharedHttpClient, AwsError> {
    let trust = tls::TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(ca_pem.to_vec());
    let ctx = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| AwsError::Tls(e.to_string()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(ctx)
        .build_https())
}

/// The SDK configuration for one `sigv4` / `ec2_sd_configs` block; `ca_pem` replaces the
/// trusted roots of every AWS call it makes (STS included).
pub async fn sdk_config(auth: &AwsAuth, ca_pem: Option<&[u8]>) -> Result<SdkConfig, AwsError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(pem) = ca_pem {
        loader = loader.http_client(https_client_with_ca(pem)?);
    }
    if let Some(r) = &auth.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &auth.profile {
        loader = loader.profile_name(p);
    }
    if auth.use_fips_sts_endpoint {
        loader = loader.use_fips(true);
    }
    if let (Some(a), Some(s)) = (&auth.access_key, &auth.secret_key) {
        loader = loader.credentials_provider(Credentials::new(
            a.clone(),
            s.clone(),
            None,
            None,
            "prometheus.yml",
        ));
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        return Err(AwsError::NoRegion);
    }
    let Some(role) = &auth.role_arn else {
        return Ok(conf);
    };
    if conf.credentials_provider().is_none() {
        return Err(AwsError::NoCredentials);
    }
    let mut b = aws_config::sts::AssumeRoleProvider::builder(role.clone())
        .session_name(SESSION_NAME)
        .configure(&conf);
    if let Some(id) = &auth.external_id {
        b = b.external_id(id.clone());
    }
    let assumed = b.build().await;
    Ok(conf
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(assumed))
        .build())
}
