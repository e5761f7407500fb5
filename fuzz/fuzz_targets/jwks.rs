//! JWKS documents as the jwt plugin reads them (`gateway::plugins::jwks::parse_jwks`:
//! JSON, key types, curves, algorithms, RSA/EC/OKP/oct key material), then each usable key
//! used once to check a signature, as a request with that `kid` would. Any document is a
//! key set or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MESSAGE: &[u8] = b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJmdXp6In0";
const SIGNATURE: &str = "c2lnbmF0dXJlLWJ5dGVzLXRoYXQtYXJlLW5vdC12YWxpZA";

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = gateway::plugins::jwks::parse_jwks(data) {
        assert!(!keys.is_empty(), "an Ok key set has at least one key");
        for k in keys.values() {
            // A forged signature never verifies; the check itself must not panic.
            let ok = jsonwebtoken::crypto::verify(SIGNATURE, MESSAGE, &k.key, k.alg);
            assert!(!matches!(ok, Ok(true)), "forged signature accepted");
        }
    }
});
