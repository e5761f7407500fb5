//! The `local` policy's store: exact fixed-window counters in process memory.
//!
//! One entry per counter key (`route:service:identifier`) holds a (period start, count)
//! pair per window. A decision locks the key's shard once, checks every configured window
//! and increments all of them only when each has room, so concurrent requests can never
//! overshoot and rejected requests never consume quota. Memory is bounded: entries whose
//! periods have all ended are swept, and a full shard evicts before it grows.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::window::{Decision, Limit, Usage};

const SHARDS: usize = 64;
/// Default bound on live keys (about 200 bytes each): ~100 MB at the cap.
pub const DEFAULT_MAX_KEYS: usize = 500_000;
/// How often a shard drops entries whose periods have all ended.
const SWEEP_EVERY_MS: u64 = 5_000;

#[derive(Default, Clone, Copy)]
struct Slot {
    start_ms: u64,
    count: u64,
}

struct Entry {
    slots: [Slot; 6],
    /// When every counted period of this entry has ended.
    expires_ms: u64,
    /// Last decision on this key (eviction is least recently used first).
    used_ms: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Entry>,
    next_sweep_ms: u64,
}

pub struct LocalStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    evicted: AtomicU64,
}

impl LocalStore {
    pub fn new(max_keys: usize) -> LocalStore {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_keys / SHARDS).max(1),
            hasher: Default::default(),
            evicted: AtomicU64::new(0),
        }
    }

    /// The process-wide store shared by every `local` plugin instance (and the Redis
    /// fallback), so counters survive configuration reloads as Kong's shm does.
    pub fn global() -> &'static LocalStore {
        static STORE: OnceLock<LocalStore> = OnceLock::new();
        STORE.get_or_init(|| LocalStore::new(DEFAULT_MAX_KEYS))
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Checks every window and, when all have room, counts the request in each.
    pub fn decide(&self, key: &str, limits: &[Limit], now_ms: u64) -> Decision {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now_ms >= shard.next_sweep_ms {
            shard.map.retain(|_, e| e.expires_ms > now_ms);
            shard.next_sweep_ms = now_ms + SWEEP_EVERY_MS;
        }
        if !shard.map.contains_key(key) && shard.map.len() >= self.per_shard {
            self.make_room(&mut shard, now_ms);
        }
        let entry = shard.map.entry(key.into()).or_insert_with(|| Entry {
            slots: [Slot::default(); 6],
            expires_ms: 0,
            used_ms: 0,
        });
        entry.used_ms = now_ms;
        let mut admitted = true;
        let mut usage = Vec::with_capacity(limits.len());
        for l in limits {
            let start = l.window.start_ms(now_ms);
            let slot = &mut entry.slots[l.window.index()];
            if slot.start_ms != start {
                *slot = Slot {
                    start_ms: start,
                    count: 0,
                };
            }
            if slot.count + 1 > l.limit {
                admitted = false;
            }
            usage.push(Usage {
                window: l.window,
                limit: l.limit,
                used: slot.count,
            });
        }
        if admitted {
            for (l, u) in limits.iter().zip(usage.iter_mut()) {
                let slot = &mut entry.slots[l.window.index()];
                slot.count += 1;
                u.used = slot.count;
                entry.expires_ms = entry.expires_ms.max(l.window.end_ms(now_ms));
            }
        } else {
            entry.expires_ms = entry.expires_ms.max(
                limits
                    .iter()
                    .map(|l| l.window.end_ms(now_ms))
                    .min()
                    .unwrap_or(now_ms),
            );
        }
        Decision { admitted, usage }
    }

    /// The counts of `windows` in their current periods, without counting anything
    /// (response-ratelimiting reads usage before the response says what to count).
    pub fn counts(&self, key: &str, windows: &[super::window::Window], now_ms: u64) -> Vec<u64> {
        let shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        windows
            .iter()
            .map(|w| match shard.map.get(key) {
                Some(e) if e.slots[w.index()].start_ms == w.start_ms(now_ms) => {
                    e.slots[w.index()].count
                }
                _ => 0,
            })
            .collect()
    }

    /// Adds `n` to the counts of `windows` in their current periods, unconditionally.
    pub fn add(&self, key: &str, windows: &[super::window::Window], n: u64, now_ms: u64) {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !shard.map.contains_key(key) && shard.map.len() >= self.per_shard {
            self.make_room(&mut shard, now_ms);
        }
        let entry = shard.map.entry(key.into()).or_insert_with(|| Entry {
            slots: [Slot::default(); 6],
            expires_ms: 0,
            used_ms: 0,
        });
        entry.used_ms = now_ms;
        for w in windows {
            let start = w.start_ms(now_ms);
            let slot = &mut entry.slots[w.index()];
            if slot.start_ms != start {
                *slot = Slot {
                    start_ms: start,
                    count: 0,
                };
            }
            slot.count = slot.count.saturating_add(n);
            entry.expires_ms = entry.expires_ms.max(w.end_ms(now_ms));
        }
    }

    /// Frees a tenth of a full shard: expired entries first, then the least recently
    /// used (as Kong's shared dict), so busy keys keep exact counts under churn.
    fn make_room(&self, shard: &mut Shard, now_ms: u64) {
        shard.map.retain(|_, e| e.expires_ms > now_ms);
        let target = self.per_shard - self.per_shard / 10 - 1;
        if shard.map.len() <= target {
            return;
        }
        let mut used: Vec<u64> = shard.map.values().map(|e| e.used_ms).collect();
        let cut = shard.map.len() - target;
        used.select_nth_unstable(cut - 1);
        let threshold = used[cut - 1];
        let before = shard.map.len();
        let mut budget = cut;
        shard.map.retain(|_, e| {
            if budget > 0 && e.used_ms <= threshold {
                budget -= 1;
                false
            } else {
                true
            }
        });
        let n = (before - shard.map.len()) as u64;
        let total = self.evicted.fetch_add(n, Ordering::Relaxed) + n;
        tracing::warn!(
            evicted = n,
            total,
            "rate-limiting local store full: evicted live counters"
        );
    }

    /// Live keys (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry whose periods have all ended.
    pub fn sweep(&self, now_ms: u64) {
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.map.retain(|_, e| e.expires_ms > now_ms);
            s.next_sweep_ms = now_ms + SWEEP_EVERY_MS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::rate_limiting::window::Window;
    use std::sync::Arc;

    const NOW: u64 = 1_795_310_625_678;

    fn limit(window: Window, limit: u64) -> Limit {
        Limit { window, limit }
    }

    #[test]
    fn counts_only_admitted_and_checks_all_windows() {
        let s = LocalStore::new(1000);
        let l = [limit(Window::Second, 2), limit(Window::Minute, 3)];
        assert!(s.decide("k", &l, NOW).admitted);
        assert!(s.decide("k", &l, NOW).admitted);
        let d = s.decide("k", &l, NOW);
        assert!(!d.admitted);
        assert_eq!(d.usage[0].used, 2);
        assert_eq!(d.usage[1].used, 2, "a rejected request is not counted");
        // Next second: the minute window has one left.
        let d = s.decide("k", &l, NOW + 1000);
        assert!(d.admitted);
        assert_eq!((d.usage[0].used, d.usage[1].used), (1, 3));
        assert!(!s.decide("k", &l, NOW + 1000).admitted);
        // Next minute: fresh.
        let d = s.decide("k", &l, NOW + 60_000);
        assert!(d.admitted);
        assert_eq!((d.usage[0].used, d.usage[1].used), (1, 1));
    }

    #[test]
    fn concurrent_burst_admits_exactly_the_limit() {
        let s = Arc::new(LocalStore::new(1000));
        let l = [limit(Window::Minute, 1000)];
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (s, a) = (s.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if s.decide("burst", &l, NOW).admitted {
                            a.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn memory_is_bounded() {
        let s = LocalStore::new(6400);
        let l = [limit(Window::Minute, 10)];
        for i in 0..100_000 {
            s.decide(&format!("client-{i}"), &l, NOW);
        }
        assert!(s.len() <= 6400, "{} keys", s.len());
        // Once their minute has passed, old keys are dropped.
        s.sweep(NOW + 120_000);
        assert!(s.is_empty(), "{} keys", s.len());
        // A shard also sweeps itself on use after SWEEP_EVERY_MS.
        s.decide("a", &l, NOW + 120_000);
        assert_eq!(s.len(), 1);
        s.decide("a", &l, NOW + 240_000);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_million_distinct_keys_stay_bounded_and_a_hot_key_stays_exact() {
        let s = LocalStore::new(64_000);
        let l = [limit(Window::Second, 5)];
        let mut now = NOW;
        let mut hot_admitted = 0;
        let mut seconds = std::collections::HashSet::new();
        for i in 0..1_000_000u64 {
            // 1,000 new clients every simulated 10 ms: far more live keys than the cap.
            if i % 1000 == 0 {
                now += 10;
                seconds.insert(now / 1000);
                if s.decide("hot", &l, now).admitted {
                    hot_admitted += 1;
                }
            }
            s.decide(&format!("c{i}"), &l, now);
        }
        assert!(s.len() <= 64_000, "{} keys", s.len());
        // The hot key got exactly 5 per second (each second saw 30+ tries), whatever the churn.
        assert_eq!(hot_admitted, 5 * seconds.len());
    }
}
