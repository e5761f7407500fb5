//! Kong's fixed windows: names, lengths, period starts (UTC, as `kong.tools.timestamp`)
//! and the decision shape shared by every store.

/// One of Kong's six periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

impl Window {
    pub const ALL: [Window; 6] = [
        Window::Second,
        Window::Minute,
        Window::Hour,
        Window::Day,
        Window::Month,
        Window::Year,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
            Window::Year => "year",
        }
    }

    /// Kong's `expiration.lua`: month and year are fixed lengths for the reset header.
    pub fn len_secs(self) -> u64 {
        match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86_400,
            Window::Month => 2_592_000,
            Window::Year => 31_536_000,
        }
    }

    pub fn limit_header(self) -> &'static str {
        match self {
            Window::Second => "X-RateLimit-Limit-Second",
            Window::Minute => "X-RateLimit-Limit-Minute",
            Window::Hour => "X-RateLimit-Limit-Hour",
            Window::Day => "X-RateLimit-Limit-Day",
            Window::Month => "X-RateLimit-Limit-Month",
            Window::Year => "X-RateLimit-Limit-Year",
        }
    }

    pub fn remaining_header(self) -> &'static str {
        match self {
            Window::Second => "X-RateLimit-Remaining-Second",
            Window::Minute => "X-RateLimit-Remaining-Minute",
            Window::Hour => "X-RateLimit-Remaining-Hour",
            Window::Day => "X-RateLimit-Remaining-Day",
            Window::Month => "X-RateLimit-Remaining-Month",
            Window::Year => "X-RateLimit-Remaining-Year",
        }
    }

    /// Start of the period containing `now_ms` (ms since the epoch, UTC). Month and year
    /// start on calendar boundaries, as Kong's keys do.
    pub fn start_ms(self, now_ms: u64) -> u64 {
        let secs = now_ms / 1000;
        let start = match self {
            Window::Second => secs,
            Window::Minute => secs - secs % 60,
            Window::Hour => secs - secs % 3600,
            Window::Day => secs - secs % 86_400,
            Window::Month => {
                let (y, m, _) = civil_from_days((secs / 86_400) as i64);
                days_from_civil(y, m, 1) as u64 * 86_400
            }
            Window::Year => {
                let (y, _, _) = civil_from_days((secs / 86_400) as i64);
                days_from_civil(y, 1, 1) as u64 * 86_400
            }
        };
        start * 1000
    }

    /// End of the period containing `now_ms` (the next calendar boundary for month/year):
    /// when its counter may be forgotten.
    pub fn end_ms(self, now_ms: u64) -> u64 {
        let start = self.start_ms(now_ms);
        match self {
            Window::Month => {
                let (y, m, _) = civil_from_days((start / 86_400_000) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(ny, nm, 1) as u64 * 86_400_000
            }
            Window::Year => {
                let (y, _, _) = civil_from_days((start / 86_400_000) as i64);
                days_from_civil(y + 1, 1, 1) as u64 * 86_400_000
            }
            w => start + w.len_secs() * 1000,
        }
    }

    /// Kong's `RateLimit-Reset`: `max(1, window - floor((now - period_start) / 1000))`.
    pub fn reset_secs(self, now_ms: u64) -> u64 {
        let elapsed = (now_ms - self.start_ms(now_ms)) / 1000;
        self.len_secs().saturating_sub(elapsed).max(1)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A limit on one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub window: Window,
    pub limit: u64,
}

/// Usage of one window after a decision: `used` counts the admitted requests of the
/// current period, including this one when it was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub window: Window,
    pub limit: u64,
    pub used: u64,
}

impl Usage {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

/// One atomic decision over every configured window: either every window had room and
/// all were incremented, or none was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    pub usage: Vec<Usage>,
}

impl Decision {
    /// The most constrained window (lowest remaining; ties go to the longer window), as
    /// Kong picks it for `RateLimit-*` and `Retry-After`.
    pub fn most_constrained(&self) -> Option<&Usage> {
        self.usage.iter().min_by(|a, b| {
            a.remaining()
                .cmp(&b.remaining())
                .then(b.window.cmp(&a.window))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_starts_match_kong() {
        // 2026-11-22T01:23:45.678Z
        let now = 1_795_310_625_678u64;
        assert_eq!(Window::Second.start_ms(now), 1_795_310_625_000);
        assert_eq!(Window::Minute.start_ms(now), 1_795_310_580_000);
        assert_eq!(Window::Hour.start_ms(now), 1_795_309_200_000);
        assert_eq!(Window::Day.start_ms(now), 1_795_305_600_000);
        // 2026-11-01T00:00:00Z and 2026-01-01T00:00:00Z
        assert_eq!(Window::Month.start_ms(now), 1_793_491_200_000);
        assert_eq!(Window::Year.start_ms(now), 1_767_225_600_000);
        // 2026-12-01 and 2027-01-01
        assert_eq!(Window::Month.end_ms(now), 1_796_083_200_000);
        assert_eq!(Window::Year.end_ms(now), 1_798_761_600_000);
        assert_eq!(Window::Minute.reset_secs(now), 15);
        assert_eq!(Window::Second.reset_secs(now), 1);
    }

    #[test]
    fn civil_round_trip() {
        for z in [-1000i64, 0, 59, 60, 365, 11_016, 20_000, 20_454, 30_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn most_constrained_prefers_longer_window_on_ties() {
        let d = Decision {
            admitted: true,
            usage: vec![
                Usage {
                    window: Window::Second,
                    limit: 5,
                    used: 3,
                },
                Usage {
                    window: Window::Minute,
                    limit: 10,
                    used: 8,
                },
            ],
        };
        assert_eq!(d.most_constrained().map(|u| u.window), Some(Window::Minute));
    }
}
