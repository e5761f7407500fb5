//! One upstream target: its address, in-flight count, latency estimate and health
//! state machine (Kong's counters: consecutive successes heal, consecutive failures of
//! one kind take the target out).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::config::model::{HealthyThresholds, UnhealthyThresholds};

/// What happened on one attempt, from an active probe or a proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
}

#[derive(Debug)]
pub struct TargetState {
    /// `host:port` as configured.
    /// Shared with each request's state (no copy per request).
    pub name: std::sync::Arc<str>,
    /// Every resolved address (a name may have several); empty when resolution failed.
    /// Replaced in the background when the name resolves differently (`dns.rs`).
    addrs: std::sync::RwLock<std::sync::Arc<[SocketAddr]>>,
    /// Rotates over `addrs`, one address per new connection.
    next: AtomicUsize,
    /// The target is a name (not an address literal): it is re-resolved.
    pub is_name: bool,
    /// The last background resolution failed (logged once per failing streak).
    pub(crate) resolve_failing: AtomicBool,
    healthy: AtomicBool,
    successes: AtomicU32,
    http_failures: AtomicU32,
    tcp_failures: AtomicU32,
    timeouts: AtomicU32,
    /// Requests in flight to this target (least-connections).
    pub active: AtomicUsize,
    /// Peak-EWMA of upstream latency in microseconds (latency algorithm).
    pub ewma_us: AtomicU64,
}

impl TargetState {
    pub fn new(name: String) -> TargetState {
        let is_name = literal(&name).is_none();
        // The first resolution at load (blocking, as a config load is); afterwards the
        // background refresher resolves asynchronously.
        let addrs = resolve_blocking(&name);
        TargetState {
            name: name.into(),
            addrs: std::sync::RwLock::new(addrs.into()),
            next: AtomicUsize::new(0),
            is_name,
            resolve_failing: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            http_failures: AtomicU32::new(0),
            tcp_failures: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
            active: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
        }
    }

    /// An address to connect to: the next of the resolved ones; None when the name does
    /// not resolve.
    pub fn addr(&self) -> Option<SocketAddr> {
        let addrs = self.addrs.read().ok()?;
        match addrs.len() {
            0 => None,
            1 => Some(addrs[0]),
            n => Some(addrs[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    /// Every resolved address.
    pub fn addrs(&self) -> std::sync::Arc<[SocketAddr]> {
        self.addrs
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|_| Vec::new().into())
    }

    /// Replaces the resolved addresses; true when they changed.
    pub fn set_addrs(&self, mut addrs: Vec<SocketAddr>) -> bool {
        addrs.sort();
        addrs.dedup();
        let Ok(mut w) = self.addrs.write() else {
            return false;
        };
        if w.as_ref() == addrs.as_slice() {
            return false;
        }
        *w = addrs.into();
        true
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, v: bool) {
        self.healthy.store(v, Ordering::Relaxed);
        self.successes.store(0, Ordering::Relaxed);
        self.http_failures.store(0, Ordering::Relaxed);
        self.tcp_failures.store(0, Ordering::Relaxed);
        self.timeouts.store(0, Ordering::Relaxed);
    }

    /// Applies one outcome under the given thresholds. Returns Some(new state) when the
    /// target changed state.
    pub fn record(
        &self,
        outcome: Outcome,
        healthy: &HealthyThresholds,
        unhealthy: &UnhealthyThresholds,
    ) -> Option<bool> {
        match outcome {
            Outcome::Success => {
                self.http_failures.store(0, Ordering::Relaxed);
                self.tcp_failures.store(0, Ordering::Relaxed);
                self.timeouts.store(0, Ordering::Relaxed);
                if healthy.successes == 0 || self.is_healthy() {
                    return None;
                }
                let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= healthy.successes {
                    self.set_healthy(true);
                    return Some(true);
                }
                None
            }
            failure => {
                self.successes.store(0, Ordering::Relaxed);
                let (counter, limit) = match failure {
                    Outcome::HttpFailure => (&self.http_failures, unhealthy.http_failures),
                    Outcome::TcpFailure => (&self.tcp_failures, unhealthy.tcp_failures),
                    _ => (&self.timeouts, unhealthy.timeouts),
                };
                if limit == 0 || !self.is_healthy() {
                    return None;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= limit {
                    self.set_healthy(false);
                    return Some(false);
                }
                None
            }
        }
    }

    /// Folds one latency observation into the EWMA (decay ~10 s at 100 req/s).
    pub fn observe_latency(&self, us: u64) {
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.ewma_us.store(new.max(1), Ordering::Relaxed);
    }
}

/// A target given as an address literal (`10.0.0.1:80`, `[::1]:80`).
fn literal(name: &str) -> Option<SocketAddr> {
    name.parse::<SocketAddr>().ok()
}

/// Every address of `host:port` (sorted, deduplicated), resolved by the system resolver.
fn resolve_blocking(name: &str) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Some(a) = literal(name) {
        return vec![a];
    }
    let mut v: Vec<SocketAddr> = name
        .to_socket_addrs()
        .map(|it| it.collect())
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(successes: u32, tcp: u32) -> (HealthyThresholds, UnhealthyThresholds) {
        (
            HealthyThresholds {
                interval: 0.0,
                http_statuses: Some(vec![200]),
                successes,
            },
            UnhealthyThresholds {
                interval: 0.0,
                http_statuses: Some(vec![500]),
                tcp_failures: tcp,
                timeouts: 0,
                http_failures: 0,
            },
        )
    }

    #[test]
    fn failures_take_out_and_successes_heal() {
        let t = TargetState::new("127.0.0.1:1".into());
        let (h, u) = th(2, 2);
        assert_eq!(t.record(Outcome::TcpFailure, &h, &u), None);
        assert_eq!(t.record(Outcome::TcpFailure, &h, &u), Some(false));
        assert!(!t.is_healthy());
        assert_eq!(t.record(Outcome::Success, &h, &u), None);
        assert_eq!(t.record(Outcome::Success, &h, &u), Some(true));
        assert!(t.is_healthy());
    }

    #[test]
    fn zero_thresholds_disable() {
        let t = TargetState::new("127.0.0.1:1".into());
        let (h, u) = th(0, 0);
        for _ in 0..10 {
            assert_eq!(t.record(Outcome::TcpFailure, &h, &u), None);
        }
        assert!(t.is_healthy());
    }
}
