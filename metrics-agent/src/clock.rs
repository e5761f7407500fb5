//! The wall clock, in the units the agent uses: milliseconds for sample timestamps and the
//! WAL's age bound, seconds for SigV4 and credential expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the clock is before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Current Unix time in milliseconds (sample timestamps).
pub fn now_ms() -> i64 {
    since_epoch().as_millis() as i64
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}
