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
    /// Resolved address; None when name resolution failed.
    addr: std::sync::RwLock<Option<SocketAddr>>,
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
        let addr = resolve(&name);
        TargetState {
            name: name.into(),
            addr: std::sync::RwLock::new(addr),
            healthy: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            http_failures: AtomicU32::new(0),
            tcp_failures: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
            active: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
        }
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.read().ok().and_then(|a| *a)
    }

    /// Resolves the name again (targets given as DNS names, e.g. Cloud Map).
    pub fn re_resolve(&self) {
        if let Some(a) = resolve(&self.name)
            && let Ok(mut w) = self.addr.write()
        {
            *w = Some(a);
        }
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

fn resolve(name: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = name.parse::<SocketAddr>() {
        return Some(a);
    }
    name.to_socket_addrs().ok().and_then(|mut it| it.next())
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
