//! The wall clock, in the units the agent uses: milliseconds for sample timestamps and the
//! WAL's age bound, nanoseconds for ECS stats' read times.

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

/// Parses an RFC 3339 timestamp (`2025-04-28T03:30:22.5Z`, any offset) into whole seconds
/// since the epoch and the fraction of a second.
fn parse_rfc3339(s: &str) -> Option<(i64, f64)> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut frac = 0f64;
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let st = i + 1;
        i = st;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac = format!("0.{}", &s[st..i]).parse().ok()?;
    }
    let offset_s = match b.get(i) {
        Some(b'Z') | Some(b'z') => 0,
        Some(c @ (b'+' | b'-')) => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let sign = if *c == b'+' { 1 } else { -1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + mi * 60 + se - offset_s, frac))
}

/// An RFC 3339 timestamp (as Docker writes `read`) in nanoseconds since the epoch.
pub fn parse_rfc3339_ns(s: &str) -> Option<f64> {
    let (secs, frac) = parse_rfc3339(s)?;
    Some(secs as f64 * 1e9 + frac * 1e9)
}

/// An RFC 3339 timestamp in whole Unix seconds.
pub fn parse_rfc3339_secs(s: &str) -> Option<u64> {
    u64::try_from(parse_rfc3339(s)?.0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:01Z"), Some(1e9));
        assert_eq!(
            parse_rfc3339_ns("2025-04-28T03:30:22.5Z"),
            Some(1_745_811_022.5e9)
        );
        assert_eq!(
            parse_rfc3339_ns("2025-04-28T05:30:22+02:00"),
            Some(1_745_811_022e9)
        );
        assert_eq!(parse_rfc3339_ns("garbage"), None);
    }

    #[test]
    fn rfc3339_whole_seconds() {
        assert_eq!(
            parse_rfc3339_secs("2015-08-30T12:36:00Z"),
            Some(1_440_938_160)
        );
        assert_eq!(
            parse_rfc3339_secs("2000-02-29T00:00:00.123Z"),
            Some(951_782_400)
        );
        assert_eq!(
            parse_rfc3339_secs("2000-02-29T02:00:00+02:00"),
            Some(951_782_400)
        );
        assert_eq!(parse_rfc3339_secs("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339_secs("2015-08-30 12:36:00"), None);
    }
}
