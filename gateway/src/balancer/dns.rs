//! Upstream names re-resolved in the background, off the proxy threads: a target or a
//! service host given as a DNS name (an internal ALB, Cloud Map, ECS service discovery)
//! follows its address changes without a restart, and every address of a name is used.
//!
//! The system resolver (`getaddrinfo`, on tokio's blocking pool) exposes no TTL, so names
//! are resolved again every `interval` (the TTL cap; `--dns-refresh`) and at once after a
//! reload. A failed resolution keeps the last good addresses (stale beats none, as Kong's
//! `dns_stale_ttl`), counts `gateway_dns_resolution_failures_total{target}` and logs one
//! warning per failing streak; a name that never resolved keeps being tried, so a
//! service that appears after the gateway starts is picked up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{TargetRegistry, TargetState};

/// How long one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs forever on the background runtime.
pub async fn run(registry: TargetRegistry, interval: Duration) {
    let interval = interval.max(Duration::from_millis(100));
    loop {
        let targets: Vec<Arc<TargetState>> =
            registry.all().into_iter().filter(|t| t.is_name).collect();
        let mut lookups = tokio::task::JoinSet::new();
        for t in targets {
            lookups.spawn(async move {
                let found = lookup(&t.name).await;
                apply(&t, found);
            });
        }
        while lookups.join_next().await.is_some() {}
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = registry.refresh.notified() => {}
        }
    }
}

/// Why an upstream name did not resolve.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("no address")]
    NoAddress,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {}s", LOOKUP_TIMEOUT.as_secs())]
    Timeout,
}

async fn lookup(name: &str) -> Result<Vec<SocketAddr>, LookupError> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(name)).await {
        Ok(Ok(addrs)) => {
            let v: Vec<SocketAddr> = addrs.collect();
            if v.is_empty() {
                Err(LookupError::NoAddress)
            } else {
                Ok(v)
            }
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(LookupError::Timeout),
    }
}

/// Records one resolution's result on the target.
fn apply(t: &TargetState, found: Result<Vec<SocketAddr>, LookupError>) {
    match found {
        Ok(addrs) => {
            if t.resolve_failing.swap(false, Ordering::Relaxed) {
                tracing::info!(target_name = %t.name, "upstream name resolves again");
            }
            if t.set_addrs(addrs) {
                let now: Vec<String> = t.addrs().iter().map(|a| a.to_string()).collect();
                tracing::info!(target_name = %t.name, addresses = %now.join(","), "upstream name re-resolved to new addresses");
            }
        }
        Err(e) => {
            crate::metrics::Metrics::global().dns_failure(&t.name);
            if !t.resolve_failing.swap(true, Ordering::Relaxed) {
                let kept = t.addrs().len();
                tracing::warn!(target_name = %t.name, error = %e, kept_addresses = kept, "upstream name resolution failed; retrying in the background");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_last_addresses_and_changes_replace_them() {
        let t = TargetState::new("localhost:80".to_string());
        assert!(t.is_name);
        let a: SocketAddr = "127.0.0.9:80".parse().expect("addr");
        let b: SocketAddr = "127.0.0.10:80".parse().expect("addr");
        apply(&t, Ok(vec![a, b]));
        assert_eq!(t.addrs().as_ref(), &[a, b]);
        // Both addresses are used in turn.
        let picks: std::collections::HashSet<_> = (0..4).filter_map(|_| t.addr()).collect();
        assert_eq!(picks.len(), 2);
        apply(&t, Err(LookupError::NoAddress));
        assert!(t.resolve_failing.load(Ordering::Relaxed));
        assert_eq!(t.addrs().as_ref(), &[a, b]);
        apply(&t, Ok(vec![b]));
        assert!(!t.resolve_failing.load(Ordering::Relaxed));
        assert_eq!(t.addr(), Some(b));
        assert!(!TargetState::new("127.0.0.1:80".to_string()).is_name);
    }
}
