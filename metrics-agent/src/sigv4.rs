//! SigV4 for remote_write to Amazon Managed Service for Prometheus (service `aps`): requests
//! are signed by `aws-sigv4`; credentials come from `aws-config` as Prometheus' `sigv4` block
//! describes them (see [`crate::aws`]: static keys, profile, the default chain with ECS
//! container credentials, web identity and instance metadata, `role_arn` assumed through
//! STS). They are cached and fetched again 5 minutes before they expire.

use crate::aws::AwsError;
use crate::config::AwsAuth;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime};
use tokio::sync::{Mutex, OnceCell};

/// The signing name of Amazon Managed Service for Prometheus.
pub const SERVICE: &str = "aps";
/// Credentials are replaced this long before their expiry (as the AWS SDKs do).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// After a failed refresh while the old credentials are still valid, wait this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Why a request could not be signed (no credential in the message).
#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    #[error(transparent)]
    Config(#[from] AwsError),
    #[error("could not get SigV4 credentials: {0}")]
    Credentials(String),
    #[error("SigV4 signing: {0}")]
    Sign(String),
}

/// Signs `method url` with `body` at `time`: returns the headers to add (`authorization`,
/// `x-amz-date`, and `x-amz-security-token` for temporary credentials); the signed headers
/// are `host` (from the URL) and those.
pub fn sign(
    method: &str,
    url: &str,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, SigV4Error> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SigV4Error::Sign(e.to_string()))?
        .into();
    let request = SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(body))
        .map_err(|e| SigV4Error::Sign(e.to_string()))?;
    let (instructions, _) = aws_sigv4::http_request::sign(request, &params)
        .map_err(|e| SigV4Error::Sign(e.to_string()))?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

struct Cached {
    creds: Credentials,
    /// The next use after this fetches again (None: never, for credentials without expiry).
    refresh_at: Option<SystemTime>,
}

/// The credentials of one `sigv4` block, cached.
pub struct Signer {
    auth: AwsAuth,
    /// The credentials provider and the region, resolved at the first use.
    provider: OnceCell<(SharedCredentialsProvider, String)>,
    cached: Mutex<Option<Cached>>,
}

impl Signer {
    /// Credentials and region as `auth` describes them (resolved at the first use).
    pub fn new(auth: AwsAuth) -> Signer {
        Signer {
            auth,
            provider: OnceCell::new(),
            cached: Mutex::new(None),
        }
    }

    /// Credentials from this provider.
    pub fn with_provider(region: String, provider: SharedCredentialsProvider) -> Signer {
        Signer {
            auth: AwsAuth::default(),
            provider: OnceCell::new_with(Some((provider, region))),
            cached: Mutex::new(None),
        }
    }

    async fn provider(&self) -> Result<&(SharedCredentialsProvider, String), SigV4Error> {
        self.provider
            .get_or_try_init(|| async {
                let conf = crate::aws::sdk_config(&self.auth, None).await?;
                let region = conf.region().map(|r| r.to_string()).unwrap_or_default();
                let p = conf
                    .credentials_provider()
                    .ok_or(SigV4Error::Config(AwsError::NoCredentials))?;
                Ok((p, region))
            })
            .await
    }

    /// Current credentials: cached, fetched again 5 minutes before they expire.
    pub async fn credentials(&self) -> Result<Credentials, SigV4Error> {
        self.credentials_at(SystemTime::now()).await
    }

    async fn credentials_at(&self, now: SystemTime) -> Result<Credentials, SigV4Error> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.refresh_at.is_none_or(|at| now < at)
        {
            return Ok(c.creds.clone());
        }
        let fetched = match self.provider().await {
            Ok((p, _)) => p.provide_credentials().await.map_err(|e| {
                SigV4Error::Credentials(aws_sdk_ec2::error::DisplayErrorContext(&e).to_string())
            }),
            Err(e) => Err(e),
        };
        match fetched {
            Ok(creds) => {
                let refresh_at = creds.expiry().map(|exp| {
                    exp.checked_sub(REFRESH_BEFORE_EXPIRY)
                        .unwrap_or(exp)
                        .max(now)
                });
                *cached = Some(Cached {
                    creds: creds.clone(),
                    refresh_at,
                });
                Ok(creds)
            }
            Err(e) => match cached.as_mut() {
                // The old credentials are still valid: keep using them and try again soon.
                Some(c) if c.creds.expiry().is_some_and(|exp| now < exp) => {
                    tracing::warn!("{e}; using the current credentials until they expire");
                    c.refresh_at = Some(now + RETRY_AFTER_FAILURE);
                    Ok(c.creds.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Forgets the credentials so that the next use fetches them again (after the store
    /// refused them).
    pub async fn invalidate(&self) {
        if let Some(c) = self.cached.lock().await.as_mut() {
            c.refresh_at = Some(SystemTime::UNIX_EPOCH);
        }
    }

    /// The SigV4 headers for a remote-write POST of `body` to `url`, signed now.
    pub async fn sign_post(
        &self,
        url: &str,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>, SigV4Error> {
        let creds = self.credentials().await?;
        let (_, region) = self.provider().await?;
        sign(
            "POST",
            url,
            body,
            &creds,
            region,
            SERVICE,
            SystemTime::now(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// 2015-08-30T12:36:00Z, the time of AWS' SigV4 test suite.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn creds(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_string),
            None,
            "test",
        )
    }

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> &'a str {
        h.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    #[test]
    fn aws_test_suite_get_vanilla() {
        // AWS SigV4 test suite, "get-vanilla".
        let h = sign(
            "GET",
            "https://example.amazonaws.com/",
            b"",
            &creds(None),
            "us-east-1",
            "service",
            suite_time(),
        )
        .expect("sign");
        assert_eq!(
            header(&h, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(header(&h, "x-amz-date"), "20150830T123600Z");
    }

    #[test]
    fn aws_test_suite_post_vanilla() {
        let h = sign(
            "POST",
            "https://example.amazonaws.com/",
            b"",
            &creds(None),
            "us-east-1",
            "service",
            suite_time(),
        )
        .expect("sign");
        assert!(
            header(&h, "authorization").ends_with(
                "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            ),
            "{h:?}"
        );
    }

    #[test]
    fn session_token_is_signed_and_sent() {
        let h = sign(
            "POST",
            "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write",
            b"x",
            &creds(Some("tok")),
            "us-east-1",
            "aps",
            suite_time(),
        )
        .expect("sign");
        assert!(
            header(&h, "authorization")
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token"),
            "{h:?}"
        );
        assert_eq!(header(&h, "x-amz-security-token"), "tok");
    }

    /// A provider handing out `AKID<n>` expiring at `expiry`, counting its calls.
    fn counting_provider(expiry: SystemTime) -> (SharedCredentialsProvider, Arc<AtomicU64>) {
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let provider = aws_credential_types::credential_fn::provide_credentials_fn(move || {
            let n = h.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                Ok(Credentials::new(
                    format!("AKID{n}"),
                    "s",
                    Some("t".into()),
                    Some(expiry),
                    "test",
                ))
            }
        });
        (SharedCredentialsProvider::new(provider), hits)
    }

    #[tokio::test]
    async fn credentials_are_refreshed_before_their_expiry() {
        let exp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        let (p, hits) = counting_provider(exp);
        let s = Signer::with_provider("us-east-1".into(), p);
        let key = |c: Credentials| c.access_key_id().to_string();
        // Fetched 8 minutes before expiry: still used 2 minutes later...
        let t0 = exp - Duration::from_secs(480);
        assert_eq!(key(s.credentials_at(t0).await.expect("get")), "AKID1");
        assert_eq!(
            key(s
                .credentials_at(t0 + Duration::from_secs(120))
                .await
                .expect("get")),
            "AKID1"
        );
        // ...and within 5 minutes of the expiry fetched again, before the old ones expire.
        assert_eq!(
            key(s
                .credentials_at(exp - Duration::from_secs(299))
                .await
                .expect("get")),
            "AKID2"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn long_lived_credentials_are_not_fetched_on_a_fixed_clock() {
        let exp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        let (p, hits) = counting_provider(exp);
        let s = Signer::with_provider("us-east-1".into(), p);
        let t0 = exp - Duration::from_secs(6 * 3600);
        for dt in [0, 600, 3600, 5 * 3600] {
            let c = s
                .credentials_at(t0 + Duration::from_secs(dt))
                .await
                .expect("get");
            assert_eq!(c.access_key_id(), "AKID1");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // A refusal by the store forces a fetch on the next use.
        s.invalidate().await;
        let c = s
            .credentials_at(t0 + Duration::from_secs(5 * 3600))
            .await
            .expect("get");
        assert_eq!(c.access_key_id(), "AKID2");
    }

    #[tokio::test]
    async fn static_keys_sign_without_fetching() {
        let s = Signer::new(AwsAuth {
            region: Some("eu-west-1".into()),
            access_key: Some("AKIDSTATIC".into()),
            secret_key: Some("secret".into()),
            ..AwsAuth::default()
        });
        let h = s
            .sign_post(
                "https://aps-workspaces.eu-west-1.amazonaws.com/w/api/v1/remote_write",
                b"b",
            )
            .await
            .expect("sign");
        let auth = header(&h, "authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDSTATIC/")
                && auth.contains("/eu-west-1/aps/aws4_request"),
            "{auth}"
        );
        assert!(!auth.contains("secret"));
    }
}
