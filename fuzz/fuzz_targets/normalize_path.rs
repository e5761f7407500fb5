//! The router's path normalisation (`gateway::net::path::normalize_path`) on arbitrary
//! text. Invariants: the result starts with `/`, has no empty, `.` or `..` segment (a
//! trailing `/` aside), and normalising it again changes nothing. Also Kong's migration
//! of `_format_version` 1.1/2.1 route paths (`migrate_legacy_path`).
#![no_main]

use gateway::net::path::{migrate_legacy_path, normalize_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let out = normalize_path(&raw);
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}: not absolute");
    let body = &out[1..];
    let body = body.strip_suffix('/').unwrap_or(body);
    if !body.is_empty() {
        for seg in body.split('/') {
            assert!(
                !matches!(seg, "" | "." | ".."),
                "{raw:?} -> {out:?}: segment {seg:?} left"
            );
        }
    }
    let again = normalize_path(&out);
    assert_eq!(again, out, "{raw:?}: normalising twice changed the path");
    let _ = migrate_legacy_path(&raw);
});
