//! CPU cost of one `local` rate-limiting decision (the store's part of the access hook):
//! `cargo run --release -p gateway --example ratelimit_cost`.

use std::time::Instant;

use gateway::plugins::rate_limiting::LocalStore;
use gateway::plugins::rate_limiting::window::{Limit, Window};

fn main() {
    let store = LocalStore::new(500_000);
    let limits = [
        Limit {
            window: Window::Minute,
            limit: u64::MAX,
        },
        Limit {
            window: Window::Hour,
            limit: u64::MAX,
        },
    ];
    let now = 1_795_310_625_678u64;
    let n = 2_000_000u64;
    for (name, keys) in [("one hot key", 1u64), ("100,000 keys", 100_000)] {
        let t0 = Instant::now();
        let mut admitted = 0u64;
        for i in 0..n {
            let key = format!(
                "ratelimit:route:service:10.0.{}.{}",
                (i % keys) / 256,
                i % keys % 256
            );
            if store.decide(&key, &limits, now + i / 1000).admitted {
                admitted += 1;
            }
        }
        let ns = t0.elapsed().as_nanos() as f64 / n as f64;
        println!("{name}: {ns:.0} ns per decision (key formatting included), {admitted} admitted");
    }
}
