//! The jwt plugin's token handling on arbitrary text: bearer extraction
//! (`gateway::plugins::jwt::bearer`) and the whole offline check as a request runs it
//! (`Jwt::verify_offline`: Kong's decode of the three segments, base64 and JSON, the
//! algorithm, the credential lookup by `iss`, the signature and the claims). Any input is
//! an error or a verified token, never a panic.
#![no_main]

use std::sync::OnceLock;

use gateway::plugins::BuildContext;
use gateway::plugins::jwt::{Config, Jwt};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = "_format_version: \"3.0\"\nconsumers:\n- username: fuzz\n  jwt_secrets:\n  - key: fuzz-hs256\n    secret: fuzz-secret-0123456789abcdef0123456789\n  - key: fuzz-hs512\n    algorithm: HS512\n    secret: fuzz-secret-0123456789abcdef0123456789\n";

fn plugins() -> &'static [Jwt] {
    static P: OnceLock<Vec<Jwt>> = OnceLock::new();
    P.get_or_init(|| {
        let decl =
            gateway::config::load_str(CONFIG, "fuzz", &gateway::plugins::load_options(Vec::new()))
                .expect("jwt fuzz config");
        [
            "{}",
            "{claims_to_verify: [exp, nbf], maximum_expiration: 3600, leeway: 30}",
            "{key_claim_name: kid, issuers: [a, b], audiences: [x]}",
        ]
        .iter()
        .map(|c| {
            let conf: Config = serde_norway::from_str(c).expect("jwt plugin config");
            Jwt::new(
                conf,
                &BuildContext {
                    decl: &decl,
                    bg: None,
                    scope: &Default::default(),
                    cache: &Default::default(),
                },
            )
            .expect("jwt plugin")
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // An Authorization header value, or the token itself (query string, cookie).
    let token = gateway::plugins::jwt::bearer(&text).unwrap_or(&text);
    for jwt in plugins() {
        let _ = jwt.verify_offline(token);
    }
});
