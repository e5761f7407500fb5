//! Micro-benchmark: the jwt plugin's whole per-request check of an HS256 token (decode,
//! credential lookup, signature, `exp`), as `verify_offline` runs it.
//!
//!     cargo bench -p gateway --bench jwt_verify
//!
//! Prints nanoseconds per verification (median of 7 runs of 100,000).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gateway::config::load_str;
use gateway::plugins::BuildContext;
use gateway::plugins::jwt::{Config, Jwt};

const SECRET: &str = "bench-peers-hs256-test-secret-0123456789abcdef";

fn main() {
    let cfg = format!(
        "_format_version: \"3.0\"\nconsumers:\n- username: bench\n  jwt_secrets:\n  - key: bench-peers\n    secret: {SECRET}\n"
    );
    let decl =
        load_str(&cfg, "bench", &gateway::plugins::load_options(Vec::new())).expect("config");
    let conf: Config = serde_norway::from_str("claims_to_verify: [exp]").expect("jwt config");
    let jwt = Jwt::new(
        conf,
        &BuildContext {
            decl: &decl,
            bg: None,
            scope: &Default::default(),
            cache: &Default::default(),
        },
    )
    .expect("plugin");
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "bench-user-1", "iss": "bench-peers", "iat": 1_700_000_000u64, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token");
    jwt.verify_offline(&token).expect("valid token");

    const N: u32 = 100_000;
    let mut runs = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(jwt.verify_offline(std::hint::black_box(&token)).is_ok());
        }
        runs.push(t.elapsed().as_nanos() as f64 / f64::from(N));
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "jwt HS256 verify (decode + lookup + signature + exp): median {:.0} ns/op, min {:.0}, max {:.0} ({} runs x {N})",
        runs[3],
        runs[0],
        runs[6],
        runs.len()
    );
}
