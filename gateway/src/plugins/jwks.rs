//! JWKS key sets for the `jwt` plugin (beyond Kong OSS): fetched in the background,
//! refreshed on schedule and on an unknown `kid` (at most once per
//! `min_refresh_interval`), keys selected by `kid`. A failed fetch keeps the last good
//! keys, so tokens keep validating while the endpoint is down.

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

#[derive(Clone)]
pub struct JwkKey {
    pub alg: Algorithm,
    pub key: Arc<DecodingKey>,
}

pub struct Jwks {
    uri: String,
    client: reqwest::Client,
    keys: ArcSwap<HashMap<String, JwkKey>>,
    last_attempt: Mutex<Option<Instant>>,
    refresh_lock: tokio::sync::Mutex<()>,
    min_interval: Duration,
    pub interval: Duration,
}

/// Why a key set could not be fetched or used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{0}")]
    Fetch(#[source] reqwest::Error),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("JWKS larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("invalid JWKS: {0}")]
    Json(#[source] serde_json::Error),
    #[error("JWKS has no usable keys")]
    NoKeys,
}

impl Jwks {
    pub fn new(
        uri: String,
        interval: Duration,
        min_interval: Duration,
    ) -> Result<Arc<Jwks>, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(JwksError::Client)?;
        Ok(Arc::new(Jwks {
            uri,
            client,
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_attempt: Mutex::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            min_interval,
            interval,
        }))
    }

    /// Keeps the set fresh until the plugin that owns it is dropped (after a reload).
    pub fn spawn_refresher(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let weak: Weak<Jwks> = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                let Some(j) = weak.upgrade() else { return };
                let wait = if j.keys.load().is_empty() {
                    Duration::from_secs(1).min(j.interval)
                } else {
                    j.interval
                };
                if let Err(e) = j.refresh().await {
                    tracing::warn!(uri = %j.uri, error = %e, "JWKS refresh failed; keeping the last good keys");
                }
                drop(j);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Fetches and swaps in the key set. Errors leave the current keys in place.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _guard = self.refresh_lock.lock().await;
        if let Ok(mut t) = self.last_attempt.lock() {
            *t = Some(Instant::now());
        }
        let resp = self
            .client
            .get(&self.uri)
            .send()
            .await
            .map_err(JwksError::Fetch)?;
        if !resp.status().is_success() {
            return Err(JwksError::Status(resp.status()));
        }
        // A key set is a few KiB: anything over MAX_JWKS_BYTES is refused, read chunk by
        // chunk so an endless or huge answer never sits in memory.
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksError::TooLarge);
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(JwksError::Fetch)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body)?;
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(n)
    }

    /// The key for `kid`; an unknown kid triggers one refresh (rate-limited).
    pub async fn key(&self, kid: &str) -> Option<JwkKey> {
        if let Some(k) = self.keys.load().get(kid) {
            return Some(k.clone());
        }
        let may_refresh = self
            .last_attempt
            .lock()
            .map(|t| t.is_none_or(|at| at.elapsed() >= self.min_interval))
            .unwrap_or(false);
        if may_refresh && let Err(e) = self.refresh().await {
            tracing::warn!(uri = %self.uri, error = %e, "JWKS refresh on unknown kid failed");
        }
        self.keys.load().get(kid).cloned()
    }
}

/// Parses a JWKS document into its usable keys by `kid` (keys without a `kid`, without a
/// known algorithm or that cannot be decoded are skipped). An error for invalid JSON or a
/// set without any usable key.
pub fn parse_jwks(body: &[u8]) -> Result<HashMap<String, JwkKey>, JwksError> {
    let set: JwkSet = serde_json::from_slice(body).map_err(JwksError::Json)?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let Some(alg) = key_algorithm(jwk) else {
            continue;
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(k) => {
                keys.insert(
                    kid,
                    JwkKey {
                        alg,
                        key: Arc::new(k),
                    },
                );
            }
            Err(e) => tracing::warn!(kid = %kid, error = %e, "skipping unusable JWK"),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoKeys);
    }
    Ok(keys)
}

/// The algorithm a key is for: its `alg` member, else implied by its type and curve.
/// The token header never decides it.
fn key_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(a) = jwk.common.key_algorithm {
        return match a {
            KeyAlgorithm::HS256 => Some(Algorithm::HS256),
            KeyAlgorithm::HS384 => Some(Algorithm::HS384),
            KeyAlgorithm::HS512 => Some(Algorithm::HS512),
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}
