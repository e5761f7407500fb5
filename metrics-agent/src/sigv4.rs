//! AWS Signature Version 4 for remote_write to Amazon Managed Service for Prometheus (`aps`),
//! and credentials from static config, the environment, or the ECS container credentials
//! endpoint.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::Mutex;

type HmacSha256 = hmac::Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The derived signing key for a date (`YYYYMMDD`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn amz_date(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !encode_slash)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Headers to add to a request.
pub struct Signed {
    pub headers: Vec<(String, String)>,
}

/// Signs a request. `headers` are extra headers to sign (lowercase names), besides `host`
/// and `x-amz-date`. `query` is the raw query string (without `?`).
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    unix: u64,
) -> Signed {
    let date_time = amz_date(unix);
    let date = &date_time[..8];
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    hs.push(("host".into(), host.to_string()));
    hs.push(("x-amz-date".into(), date_time.clone()));
    if let Some(t) = &creds.session_token {
        hs.push(("x-amz-security-token".into(), t.clone()));
    }
    hs.sort();
    let canonical_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut q: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k, true), uri_encode(v, true))
        })
        .collect();
    q.sort();
    let canonical_query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let path = if path.is_empty() { "/" } else { path };
    // Non-S3 services: each path segment is URI-encoded twice.
    let canonical_path = uri_encode(&uri_encode(path, false), false);
    let payload_hash = hex::encode(Sha256::digest(body));
    let canonical_request = format!(
        "{method}\n{canonical_path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = signing_key(&creds.secret_key, date, region, service);
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    let mut out = vec![
        ("x-amz-date".to_string(), date_time),
        (
            "authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                creds.access_key
            ),
        ),
    ];
    if let Some(t) = &creds.session_token {
        out.push(("x-amz-security-token".into(), t.clone()));
    }
    Signed { headers: out }
}

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no AWS credentials: set sigv4 access_key/secret_key, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an ECS task role"
    )]
    NoSource,
    #[error("ECS credentials {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("ECS credentials: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ECS credentials: missing {0}")]
    Missing(&'static str),
}

/// Where credentials come from.
pub struct CredentialSource {
    fixed: Option<Credentials>,
    client: reqwest::Client,
    /// The container credentials endpoint and authorization token, when given explicitly
    /// rather than by the `AWS_CONTAINER_*` variables.
    endpoint: Option<(String, Option<String>)>,
    cached: Mutex<Option<Cached>>,
}

/// Credentials from the container endpoint and when to fetch new ones.
#[derive(Debug, Clone)]
struct Cached {
    creds: Credentials,
    /// Unix seconds after which the next use fetches again.
    refresh_at: u64,
    /// Unix seconds of the credentials' `Expiration`, when the endpoint gave one.
    expires_at: Option<u64>,
}

/// Credentials are replaced this long before their `Expiration` (as the AWS SDKs do).
const REFRESH_BEFORE_EXPIRY: u64 = 300;
/// Refresh interval when the endpoint gives no (readable) `Expiration`.
const REFRESH_WITHOUT_EXPIRY: u64 = 600;
/// After a failed refresh while the old credentials are still valid, wait this long.
const RETRY_AFTER_FAILURE: u64 = 10;

/// When credentials fetched at `now` that expire at `expires_at` must be fetched again.
fn refresh_time(now: u64, expires_at: Option<u64>) -> u64 {
    match expires_at {
        Some(exp) => exp.saturating_sub(REFRESH_BEFORE_EXPIRY).max(now),
        None => now + REFRESH_WITHOUT_EXPIRY,
    }
}

impl CredentialSource {
    pub fn new(
        access_key: Option<String>,
        secret_key: Option<String>,
        client: reqwest::Client,
    ) -> Self {
        let fixed = match (access_key, secret_key) {
            (Some(a), Some(s)) => Some(Credentials {
                access_key: a,
                secret_key: s,
                session_token: None,
            }),
            _ => None,
        };
        CredentialSource {
            fixed,
            client,
            endpoint: None,
            cached: Mutex::new(None),
        }
    }

    /// Uses this container credentials endpoint (and token) instead of the environment's.
    pub fn with_container_endpoint(mut self, url: String, token: Option<String>) -> Self {
        self.endpoint = Some((url, token));
        self
    }

    /// Static config, then `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`,
    /// then the ECS container credentials endpoint, fetched again 5 minutes before the
    /// `Expiration` it gives (every 10 minutes when it gives none).
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        self.get_at(crate::clock::unix_now()).await
    }

    /// Forgets container credentials so that the next use fetches them again (after the
    /// store refused them).
    pub async fn invalidate(&self) {
        if let Some(c) = self.cached.lock().await.as_mut() {
            c.refresh_at = 0;
        }
    }

    async fn get_at(&self, now: u64) -> Result<Credentials, CredentialsError> {
        if let Some(c) = &self.fixed {
            return Ok(c.clone());
        }
        let endpoint = match &self.endpoint {
            Some(e) => e.clone(),
            None => {
                if let (Ok(a), Ok(s)) = (
                    std::env::var("AWS_ACCESS_KEY_ID"),
                    std::env::var("AWS_SECRET_ACCESS_KEY"),
                ) {
                    return Ok(Credentials {
                        access_key: a,
                        secret_key: s,
                        session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
                    });
                }
                container_endpoint_from_env()?
            }
        };
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && now < c.refresh_at
        {
            return Ok(c.creds.clone());
        }
        match self.fetch(&endpoint.0, endpoint.1).await {
            Ok((creds, expires_at)) => {
                *cached = Some(Cached {
                    creds: creds.clone(),
                    refresh_at: refresh_time(now, expires_at),
                    expires_at,
                });
                Ok(creds)
            }
            Err(e) => match cached.as_mut() {
                // The old credentials are still valid: keep using them and try again soon.
                Some(c) if c.expires_at.is_some_and(|exp| now < exp) => {
                    tracing::warn!("{e}; using the current credentials until they expire");
                    c.refresh_at = now + RETRY_AFTER_FAILURE;
                    Ok(c.creds.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Fetches credentials and their expiry from the container credentials endpoint.
    async fn fetch(
        &self,
        url: &str,
        token: Option<String>,
    ) -> Result<(Credentials, Option<u64>), CredentialsError> {
        let mut req = self.client.get(url).timeout(Duration::from_secs(5));
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let fetch_err = |source| CredentialsError::Fetch {
            url: url.to_string(),
            source,
        };
        let body = req
            .send()
            .await
            .map_err(fetch_err)?
            .text()
            .await
            .map_err(fetch_err)?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let c = Credentials {
            access_key: field("AccessKeyId").ok_or(CredentialsError::Missing("AccessKeyId"))?,
            secret_key: field("SecretAccessKey")
                .ok_or(CredentialsError::Missing("SecretAccessKey"))?,
            session_token: field("Token"),
        };
        let expires_at = field("Expiration").and_then(|e| crate::clock::parse_rfc3339_secs(&e));
        Ok((c, expires_at))
    }
}

/// The container credentials endpoint and token from the `AWS_CONTAINER_*` variables.
fn container_endpoint_from_env() -> Result<(String, Option<String>), CredentialsError> {
    let url = if let Ok(rel) = std::env::var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        format!("http://169.254.170.2{rel}")
    } else if let Ok(full) = std::env::var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        full
    } else {
        return Err(CredentialsError::NoSource);
    };
    let token = match std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Ok(f) => std::fs::read_to_string(&f)
            .ok()
            .map(|s| s.trim().to_string()),
        Err(_) => std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN").ok(),
    };
    Ok((url, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_key_matches_aws_documentation() {
        // From the AWS "Deriving the signing key" documentation example.
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(k),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn amz_date_formats() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
    }

    fn creds() -> Credentials {
        Credentials {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    #[test]
    fn aws_test_suite_get_vanilla() {
        // AWS SigV4 test suite, "get-vanilla".
        let s = sign(
            "GET",
            "example.amazonaws.com",
            "/",
            "",
            &[],
            b"",
            &creds(),
            "us-east-1",
            "service",
            1_440_938_160,
        );
        let auth = &s.headers[1].1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn aws_test_suite_post_vanilla() {
        let s = sign(
            "POST",
            "example.amazonaws.com",
            "/",
            "",
            &[],
            b"",
            &creds(),
            "us-east-1",
            "service",
            1_440_938_160,
        );
        assert!(
            s.headers[1].1.ends_with(
                "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            ),
            "{}",
            s.headers[1].1
        );
    }

    #[test]
    fn session_token_is_signed_and_sent() {
        let mut c = creds();
        c.session_token = Some("tok".into());
        let s = sign(
            "POST",
            "aps-workspaces.us-east-1.amazonaws.com",
            "/workspaces/ws-1/api/v1/remote_write",
            "",
            &[],
            b"x",
            &c,
            "us-east-1",
            "aps",
            1_440_938_160,
        );
        assert!(
            s.headers[1]
                .1
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token")
        );
        assert_eq!(s.headers[2], ("x-amz-security-token".into(), "tok".into()));
    }

    /// A container credentials endpoint that hands out `AKID<n>` expiring at `expiry`.
    async fn credentials_server(
        expiry: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/creds", l.local_addr().expect("addr"));
        let hits = std::sync::Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let body = format!(
                    r#"{{"AccessKeyId":"AKID{n}","SecretAccessKey":"s","Token":"t","Expiration":"{expiry}"}}"#
                );
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn container_credentials_are_refreshed_before_their_expiry() {
        let expiry = "2030-01-01T00:00:00Z";
        let exp = crate::clock::parse_rfc3339_secs(expiry).expect("expiry");
        let (url, hits) = credentials_server(expiry).await;
        let src = CredentialSource::new(None, None, reqwest::Client::new())
            .with_container_endpoint(url, None);
        let key = |c: Credentials| c.access_key;
        // Fetched 8 minutes before expiry: a fixed 10-minute clock would still sign with
        // these credentials 2 minutes after they expired.
        let t0 = exp - 480;
        assert_eq!(key(src.get_at(t0).await.expect("get")), "AKID1");
        assert_eq!(key(src.get_at(t0 + 120).await.expect("get")), "AKID1");
        // Within 5 minutes of the expiry: fetched again, before the old ones expire.
        assert_eq!(key(src.get_at(exp - 299).await.expect("get")), "AKID2");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn long_lived_credentials_are_not_fetched_on_a_fixed_clock() {
        let expiry = "2030-01-01T00:00:00Z";
        let exp = crate::clock::parse_rfc3339_secs(expiry).expect("expiry");
        let (url, hits) = credentials_server(expiry).await;
        let src = CredentialSource::new(None, None, reqwest::Client::new())
            .with_container_endpoint(url, None);
        let t0 = exp - 6 * 3600;
        for dt in [0, 600, 3600, 5 * 3600] {
            assert_eq!(src.get_at(t0 + dt).await.expect("get").access_key, "AKID1");
        }
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A refusal by the store forces a fetch on the next use.
        src.invalidate().await;
        assert_eq!(
            src.get_at(t0 + 5 * 3600).await.expect("get").access_key,
            "AKID2"
        );
    }
}
