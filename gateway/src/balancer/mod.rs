//! Load balancing over an upstream's targets: Kong's four algorithms, passive and active
//! health checks, and failover (the caller excludes targets already tried).

pub mod active;
pub mod dns;
pub mod target;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::UpstreamDef;
use crate::config::model::Healthchecks;
pub use target::{Outcome, TargetState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConnections,
    ConsistentHashing,
    Latency,
}

/// What a consistent-hashing upstream hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    None,
    Header(String),
    Ip,
    Consumer,
    Path,
    Cookie(String),
    QueryArg(String),
    UriCapture(String),
}

/// The values a request offers as hash input.
pub struct HashInputs<'a> {
    pub header: &'a (dyn Fn(&str) -> Option<String> + Sync),
    pub ip: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: Option<&'a str>,
    /// The matched route's regex captures (numbered and named).
    pub captures: &'a [(String, String)],
    /// `hash_on: cookie` without the cookie in the request: the value the gateway issues
    /// (Kong sends it back in Set-Cookie).
    pub new_cookie: Option<&'a str>,
}

#[derive(Debug)]
pub struct Balancer {
    pub name: String,
    pub algorithm: Algorithm,
    pub targets: Vec<Arc<TargetState>>,
    pub weights: Vec<u32>,
    pub healthchecks: Healthchecks,
    pub host_header: Option<String>,
    pub hash_on: HashOn,
    pub hash_fallback: HashOn,
    /// `hash_on_cookie_path`: the Path of the cookie issued for `hash_on: cookie`.
    pub hash_cookie_path: String,
    /// Weighted wheel of target indexes (round-robin), reduced by the GCD and shuffled.
    wheel: Vec<usize>,
    cursor: AtomicUsize,
    /// Consistent-hashing continuum: (point, target index), sorted by point.
    ring: Vec<(u64, usize)>,
    /// Set when a newer configuration replaced this balancer: its probes stop.
    pub retired: AtomicBool,
}

/// Target states survive reloads: the same upstream and target keep their health.
/// Target states by (upstream name, target).
type TargetMap = HashMap<(String, String), Arc<TargetState>>;

#[derive(Debug, Default, Clone)]
pub struct TargetRegistry {
    map: Arc<Mutex<TargetMap>>,
    /// Wakes the DNS refresher (a reload re-resolves every name at once).
    refresh: Arc<tokio::sync::Notify>,
}

impl TargetRegistry {
    pub fn get(&self, upstream: &str, target: &str) -> Arc<TargetState> {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry((upstream.to_string(), target.to_string()))
            .or_insert_with(|| Arc::new(TargetState::new(target.to_string())))
            .clone()
    }

    /// Every target state, for the background refresher.
    pub fn all(&self) -> Vec<Arc<TargetState>> {
        match self.map.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        }
    }

    /// Asks the DNS refresher to resolve every name now (after a reload).
    pub fn refresh_now(&self) {
        self.refresh.notify_one();
    }

    /// Drops states no balancer of the current configuration uses.
    pub fn retain(&self, keep: &[(String, String)]) {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|k, _| keep.contains(k));
    }
}

/// The upstream's `hash_on` (or, with `fallback`, `hash_fallback`) with its field.
fn parse_hash(u: &crate::config::model::Upstream, fallback: bool) -> HashOn {
    let (kind, header, query_arg, capture) = if fallback {
        (
            &u.hash_fallback,
            &u.hash_fallback_header,
            &u.hash_fallback_query_arg,
            &u.hash_fallback_uri_capture,
        )
    } else {
        (
            &u.hash_on,
            &u.hash_on_header,
            &u.hash_on_query_arg,
            &u.hash_on_uri_capture,
        )
    };
    match kind.as_str() {
        "header" => header
            .clone()
            .map(|h| HashOn::Header(h.to_ascii_lowercase()))
            .unwrap_or(HashOn::None),
        "ip" => HashOn::Ip,
        "consumer" => HashOn::Consumer,
        "path" => HashOn::Path,
        // Kong: the cookie is a hash_on only (never a fallback).
        "cookie" if !fallback => u
            .hash_on_cookie
            .clone()
            .map(HashOn::Cookie)
            .unwrap_or(HashOn::None),
        "query_arg" => query_arg
            .clone()
            .map(HashOn::QueryArg)
            .unwrap_or(HashOn::None),
        "uri_capture" => capture
            .clone()
            .map(HashOn::UriCapture)
            .unwrap_or(HashOn::None),
        _ => HashOn::None,
    }
}

/// A query argument as Kong hashes it: decoded; several values sorted and joined with
/// `,`; an argument without `=` is `true`.
fn query_arg(query: &str, name: &str) -> Option<String> {
    let mut values: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = match kv.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (kv, None),
            };
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k) == name).then(|| v.map(decode).unwrap_or_else(|| "true".to_string()))
        })
        .collect();
    match values.len() {
        0 => None,
        1 => values.pop(),
        _ => {
            values.sort();
            Some(values.join(","))
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A position on the consistent-hashing ring: FNV-1a mixed by MurmurHash3's 64-bit
/// finaliser. FNV alone leaves short keys that differ in their last byte (`user1`,
/// `user2`) next to each other in the high bits, so they would all land on one arc of
/// the ring; the finaliser spreads them. Stable across processes and releases.
fn ring_hash(data: &[u8]) -> u64 {
    let mut h = fnv1a(data);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// FNV-1a, 64 bit: stable across processes so every gateway instance hashes alike.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Balancer {
    pub fn from_upstream(def: &UpstreamDef, registry: &TargetRegistry) -> Balancer {
        let u = &def.def;
        let hash_on = parse_hash(u, false);
        let algorithm = if hash_on != HashOn::None {
            Algorithm::ConsistentHashing
        } else {
            match u.algorithm.as_str() {
                "least-connections" => Algorithm::LeastConnections,
                "consistent-hashing" => Algorithm::ConsistentHashing,
                "latency" => Algorithm::Latency,
                _ => Algorithm::RoundRobin,
            }
        };
        let targets: Vec<_> = def
            .targets
            .iter()
            .map(|t| registry.get(&u.name, &t.target))
            .collect();
        let weights: Vec<u32> = def.targets.iter().map(|t| t.weight).collect();
        let mut b = Balancer::build(
            u.name.clone(),
            algorithm,
            targets,
            weights,
            u.healthchecks.clone(),
            u.host_header.clone(),
            hash_on,
            parse_hash(u, true),
        );
        b.hash_cookie_path = u.hash_on_cookie_path.clone();
        b
    }

    /// A balancer for a service that points at a host directly (no upstream entity).
    pub fn direct(host: &str, port: u16, registry: &TargetRegistry) -> Balancer {
        let name = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let t = registry.get("", &name);
        Balancer::build(
            name,
            Algorithm::RoundRobin,
            vec![t],
            vec![100],
            Healthchecks::default(),
            None,
            HashOn::None,
            HashOn::None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        name: String,
        algorithm: Algorithm,
        targets: Vec<Arc<TargetState>>,
        weights: Vec<u32>,
        healthchecks: Healthchecks,
        host_header: Option<String>,
        hash_on: HashOn,
        hash_fallback: HashOn,
    ) -> Balancer {
        let g = weights
            .iter()
            .copied()
            .filter(|w| *w > 0)
            .fold(0, gcd)
            .max(1);
        let mut wheel = Vec::new();
        for (i, w) in weights.iter().enumerate() {
            for _ in 0..(w / g) {
                wheel.push(i);
            }
        }
        // Interleave rather than shuffle randomly: deterministic and evenly spread.
        wheel.sort_by_key(|i| *i);
        let wheel = interleave(&wheel, weights.len());
        let mut ring = Vec::new();
        let max_w = weights.iter().copied().max().unwrap_or(1).max(1);
        for (i, t) in targets.iter().enumerate() {
            let points =
                ((u64::from(weights[i]) * 160) / u64::from(max_w)).max(u64::from(weights[i] > 0));
            for p in 0..points {
                ring.push((ring_hash(format!("{}-{p}", t.name).as_bytes()), i));
            }
        }
        ring.sort_unstable();
        Balancer {
            name,
            algorithm,
            targets,
            weights,
            healthchecks,
            host_header,
            hash_on,
            hash_fallback,
            hash_cookie_path: "/".to_string(),
            wheel,
            cursor: AtomicUsize::new(rand::random::<u32>() as usize),
            ring,
            retired: AtomicBool::new(false),
        }
    }

    fn usable(&self, i: usize, exclude: &[usize]) -> bool {
        self.weights[i] > 0
            && self.targets[i].is_healthy()
            && self.targets[i].addr().is_some()
            && !exclude.contains(&i)
    }

    /// True when at least one target can take traffic.
    pub fn has_healthy_target(&self) -> bool {
        (0..self.targets.len()).any(|i| self.usable(i, &[]))
    }

    /// Picks a target, skipping unhealthy ones and those in `exclude` (already tried).
    pub fn select(&self, inputs: &HashInputs<'_>, exclude: &[usize]) -> Option<usize> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        match self.algorithm {
            Algorithm::RoundRobin => {
                let len = self.wheel.len();
                for _ in 0..len {
                    let c = self.cursor.fetch_add(1, Ordering::Relaxed);
                    let i = self.wheel[c % len];
                    if self.usable(i, exclude) {
                        return Some(i);
                    }
                }
                None
            }
            Algorithm::LeastConnections => {
                (0..n).filter(|i| self.usable(*i, exclude)).min_by(|a, b| {
                    let sa = (self.targets[*a].active.load(Ordering::Relaxed) + 1) as f64
                        / f64::from(self.weights[*a]);
                    let sb = (self.targets[*b].active.load(Ordering::Relaxed) + 1) as f64
                        / f64::from(self.weights[*b]);
                    sa.total_cmp(&sb)
                })
            }
            Algorithm::Latency => {
                let usable: Vec<usize> = (0..n).filter(|i| self.usable(*i, exclude)).collect();
                match usable.len() {
                    0 => None,
                    1 => Some(usable[0]),
                    len => {
                        let a = usable[rand::random_range(0..len)];
                        let mut b = usable[rand::random_range(0..len)];
                        if a == b {
                            b = usable
                                [(usable.iter().position(|x| *x == a).unwrap_or(0) + 1) % len];
                        }
                        let score = |i: usize| {
                            let t = &self.targets[i];
                            let e = t.ewma_us.load(Ordering::Relaxed) as f64;
                            (e * (t.active.load(Ordering::Relaxed) + 1) as f64)
                                / f64::from(self.weights[i])
                        };
                        Some(if score(a) <= score(b) { a } else { b })
                    }
                }
            }
            Algorithm::ConsistentHashing => {
                let key = self
                    .hash_key(&self.hash_on, inputs)
                    .or_else(|| self.hash_key(&self.hash_fallback, inputs));
                let key = match key {
                    Some(k) => k,
                    // consistent-hashing with hash_on none: round-robin over the ring.
                    None if self.hash_on == HashOn::None => {
                        let c = self.cursor.fetch_add(1, Ordering::Relaxed);
                        return (0..n)
                            .map(|k| (c + k) % n)
                            .find(|i| self.usable(*i, exclude));
                    }
                    // Kong hashes the empty value when no input is there: one stable
                    // target for all such requests.
                    None => String::new(),
                };
                if self.ring.is_empty() {
                    return None;
                }
                let h = ring_hash(key.as_bytes());
                let start = self.ring.partition_point(|(p, _)| *p < h);
                (0..self.ring.len())
                    .map(|k| self.ring[(start + k) % self.ring.len()].1)
                    .find(|i| self.usable(*i, exclude))
            }
        }
    }

    fn hash_key(&self, on: &HashOn, inputs: &HashInputs<'_>) -> Option<String> {
        match on {
            HashOn::None => None,
            HashOn::Header(h) => (inputs.header)(h),
            HashOn::Ip => inputs.ip.map(str::to_string),
            HashOn::Consumer => inputs.consumer.map(str::to_string),
            HashOn::Path => Some(inputs.path.to_string()),
            HashOn::Cookie(name) => (inputs.header)("cookie")
                .and_then(|c| {
                    c.split(';').find_map(|kv| {
                        let (k, v) = kv.trim().split_once('=')?;
                        (k == name).then(|| v.to_string())
                    })
                })
                .or_else(|| inputs.new_cookie.map(str::to_string)),
            HashOn::QueryArg(name) => inputs.query.and_then(|q| query_arg(q, name)),
            HashOn::UriCapture(name) => inputs
                .captures
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone()),
        }
    }

    /// Records a proxied request's outcome for passive health checks.
    pub fn passive(&self, i: usize, outcome: Outcome) -> Option<bool> {
        let p = &self.healthchecks.passive;
        let changed = self
            .targets
            .get(i)?
            .record(outcome, &p.healthy, &p.unhealthy);
        if let Some(state) = changed {
            tracing::warn!(upstream = %self.name, target = %self.targets[i].name, healthy = state, "target health changed (passive)");
        }
        changed
    }

    /// Classifies an upstream status for passive checks.
    pub fn passive_status(&self, i: usize, status: u16) {
        let p = &self.healthchecks.passive;
        if p.unhealthy.statuses().contains(&status) {
            self.passive(i, Outcome::HttpFailure);
        } else if p.healthy.statuses().contains(&status) {
            self.passive(i, Outcome::Success);
        }
    }
}

/// Spreads repeated indexes over the wheel (a a a b -> a b a a) so consecutive picks alternate.
fn interleave(sorted: &[usize], n: usize) -> Vec<usize> {
    let mut counts = vec![0usize; n];
    for i in sorted {
        counts[*i] += 1;
    }
    let total = sorted.len();
    let mut out = Vec::with_capacity(total);
    let mut credit = vec![0i64; n];
    for _ in 0..total {
        for (i, c) in counts.iter().enumerate() {
            credit[i] += *c as i64;
        }
        let (best, _) = credit
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .unwrap_or((0, &0));
        credit[best] -= total as i64;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetDef;
    use crate::config::model::Upstream;

    fn upstream(alg: &str, weights: &[u32]) -> UpstreamDef {
        let def: Upstream =
            serde_norway::from_str(&format!("name: u\nalgorithm: {alg}\n")).expect("upstream");
        UpstreamDef {
            def,
            targets: weights
                .iter()
                .enumerate()
                .map(|(i, w)| TargetDef {
                    target: format!("127.0.0.1:{}", 10000 + i),
                    weight: *w,
                })
                .collect(),
        }
    }

    fn inputs() -> HashInputs<'static> {
        HashInputs {
            header: &|_| None,
            ip: Some("10.0.0.1"),
            consumer: None,
            path: "/",
            query: None,
            captures: &[],
            new_cookie: None,
        }
    }

    #[test]
    fn similar_short_keys_spread_over_the_ring() {
        let reg = TargetRegistry::default();
        let mut u = upstream("consistent-hashing", &[100, 100, 100, 100]);
        u.def.hash_on = "header".into();
        u.def.hash_on_header = Some("x-user".into());
        let b = Balancer::from_upstream(&u, &reg);
        let mut seen = std::collections::HashSet::new();
        for i in 0..40 {
            let v = format!("v{i}");
            let header = move |_: &str| Some(v.clone());
            let inputs = HashInputs {
                header: &header,
                ..inputs()
            };
            seen.insert(b.select(&inputs, &[]).expect("target"));
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
    }

    #[test]
    fn query_args_hash_as_kong_normalises_them() {
        assert_eq!(super::query_arg("a=1&b=2", "b").as_deref(), Some("2"));
        assert_eq!(super::query_arg("b=z&a=1&b=y", "b").as_deref(), Some("y,z"));
        assert_eq!(
            super::query_arg("flag&x=1", "flag").as_deref(),
            Some("true")
        );
        assert_eq!(
            super::query_arg("n%61me=v%20w", "name").as_deref(),
            Some("v w")
        );
        assert_eq!(super::query_arg("a=1", "b"), None);
    }

    #[test]
    fn weighted_round_robin() {
        let reg = TargetRegistry::default();
        let b = Balancer::from_upstream(&upstream("round-robin", &[300, 100]), &reg);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[b.select(&inputs(), &[]).expect("target")] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn skips_unhealthy_and_excluded() {
        let reg = TargetRegistry::default();
        let b = Balancer::from_upstream(&upstream("round-robin", &[100, 100, 100]), &reg);
        b.targets[0].set_healthy(false);
        for _ in 0..10 {
            let i = b.select(&inputs(), &[1]).expect("target");
            assert_eq!(i, 2);
        }
        b.targets[2].set_healthy(false);
        assert_eq!(b.select(&inputs(), &[1]), None);
    }

    #[test]
    fn least_connections_prefers_idle() {
        let reg = TargetRegistry::default();
        let b = Balancer::from_upstream(&upstream("least-connections", &[100, 100]), &reg);
        b.targets[0].active.store(5, Ordering::Relaxed);
        assert_eq!(b.select(&inputs(), &[]), Some(1));
    }

    #[test]
    fn consistent_hash_is_sticky() {
        let reg = TargetRegistry::default();
        let mut def = upstream("consistent-hashing", &[100, 100, 100]);
        def.def.hash_on = "ip".into();
        let b = Balancer::from_upstream(&def, &reg);
        let first = b.select(&inputs(), &[]);
        for _ in 0..20 {
            assert_eq!(b.select(&inputs(), &[]), first);
        }
    }
}
