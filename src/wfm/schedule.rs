//! When the agent may talk: polling hours (a daily UTC range) and downtime windows (daily or
//! one-off). Outside polling hours and inside a downtime window the agent neither polls the
//! desired state nor calls the WFM, so there is nothing to retry and nothing to log; queued
//! reports wait in the outbox.

use super::config::{Downtime, WfmConfig};

const DAY: u64 = 86_400;

/// A daily range in seconds from midnight UTC, `[start, end)`; `end < start` wraps midnight.
pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not HH:MM-HH:MM"))?;
    Ok((hhmm(a.trim())?, hhmm(b.trim())?))
}

fn hhmm(s: &str) -> Result<u64, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let h: u64 = h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    let m: u64 = m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 3600 + m * 60)
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SSZ` (UTC only: a device's clock and a fleet's windows
/// agree on UTC).
pub fn parse_utc(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not YYYY-MM-DDTHH:MM:SSZ");
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r).and_then(|x| x.parse().ok()).ok_or_else(bad)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).map_err(|_| bad())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    Daily(u64, u64),
    Once(u64, u64),
}

impl Window {
    pub fn from_config(w: &Downtime) -> Result<Window, String> {
        match (&w.daily, &w.from, &w.until) {
            (Some(r), None, None) => {
                let (a, b) = parse_range(r)?;
                Ok(Window::Daily(a, b))
            }
            (None, Some(f), Some(u)) => {
                let (a, b) = (parse_utc(f)?, parse_utc(u)?);
                if b <= a {
                    return Err("until must be after from".into());
                }
                Ok(Window::Once(a, b))
            }
            _ => Err("set either daily, or both from and until".into()),
        }
    }

    /// Seconds until the window ends when `now` is inside it.
    fn remaining(&self, now: u64) -> Option<u64> {
        match *self {
            Window::Once(a, b) => (a..b).contains(&now).then(|| b - now),
            Window::Daily(a, b) => in_daily(a, b, now),
        }
    }
}

/// Seconds until a daily range `[a, b)` ends, if `now` is inside it.
fn in_daily(a: u64, b: u64, now: u64) -> Option<u64> {
    let t = now % DAY;
    if a == b {
        return None;
    }
    if a < b {
        (a..b).contains(&t).then(|| b - t)
    } else if t >= a {
        Some(DAY - t + b)
    } else if t < b {
        Some(b - t)
    } else {
        None
    }
}

/// The parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    hours: (u64, u64),
    windows: Vec<Window>,
}

/// Why the agent is holding back now, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    OutsidePollingHours(u64),
    Downtime(u64),
}

impl Hold {
    pub fn seconds(&self) -> u64 {
        match self {
            Hold::OutsidePollingHours(s) | Hold::Downtime(s) => *s,
        }
    }
}

impl Schedule {
    /// From a validated config (invalid values fall back to "always").
    pub fn from_config(c: &WfmConfig) -> Schedule {
        Schedule {
            hours: parse_range(&c.polling_hours).unwrap_or((0, DAY)),
            windows: c
                .downtime
                .iter()
                .filter_map(|w| Window::from_config(w).ok())
                .collect(),
        }
    }

    /// [`Schedule::hold`] at the current time.
    pub fn hold_now(&self) -> Option<Hold> {
        self.hold(crate::units::unix_now())
    }

    /// `None` when talking is allowed at `now` (unix seconds).
    pub fn hold(&self, now: u64) -> Option<Hold> {
        if let Some(s) = self.windows.iter().filter_map(|w| w.remaining(now)).max() {
            return Some(Hold::Downtime(s.max(1)));
        }
        let (a, b) = self.hours;
        let all_day = (a == 0 && b == DAY) || a == b;
        if !all_day {
            // Outside [a, b) means inside the complement [b, a).
            if let Some(s) = in_daily(b % DAY, a % DAY, now) {
                return Some(Hold::OutsidePollingHours(s.max(1)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(hours: &str, windows: &[Downtime]) -> Schedule {
        let c = WfmConfig {
            polling_hours: hours.into(),
            downtime: windows.to_vec(),
            ..WfmConfig::default()
        };
        assert!(c.problem().is_none(), "{:?}", c.problem());
        Schedule::from_config(&c)
    }

    #[test]
    fn utc_timestamps_parse() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_utc("2026-11-22T14:32:09Z").unwrap(), 1_795_357_929);
        assert!(parse_utc("2026-11-22 14:32:09").is_err());
        assert!(parse_utc("2026-13-22T14:32:09Z").is_err());
    }

    #[test]
    fn default_is_always_allowed() {
        let s = sched("00:00-24:00", &[]);
        for t in [0, 3600, 86_399, 1_795_357_929] {
            assert_eq!(s.hold(t), None);
        }
    }

    #[test]
    fn polling_hours_including_a_wrap_over_midnight() {
        let s = sched("08:00-18:00", &[]);
        assert_eq!(s.hold(9 * 3600), None);
        assert_eq!(s.hold(7 * 3600), Some(Hold::OutsidePollingHours(3600)));
        assert_eq!(
            s.hold(18 * 3600),
            Some(Hold::OutsidePollingHours(14 * 3600))
        );
        let s = sched("22:00-02:00", &[]);
        assert_eq!(s.hold(23 * 3600), None);
        assert_eq!(s.hold(3600), None);
        assert_eq!(
            s.hold(12 * 3600),
            Some(Hold::OutsidePollingHours(10 * 3600))
        );
    }

    #[test]
    fn downtime_windows_daily_and_one_off() {
        let w = [
            Downtime {
                daily: Some("02:00-03:00".into()),
                ..Downtime::default()
            },
            Downtime {
                from: Some("2026-11-22T10:00:00Z".into()),
                until: Some("2026-11-22T12:00:00Z".into()),
                ..Downtime::default()
            },
        ];
        let s = sched("00:00-24:00", &w);
        let day = parse_utc("2026-11-22T00:00:00Z").unwrap();
        assert_eq!(s.hold(day + 2 * 3600 + 1800), Some(Hold::Downtime(1800)));
        assert_eq!(s.hold(day + 3 * 3600), None);
        assert_eq!(s.hold(day + 11 * 3600), Some(Hold::Downtime(3600)));
        assert_eq!(s.hold(day + 12 * 3600), None);
        assert_eq!(s.hold(day + 86_400 + 11 * 3600), None, "one-off is over");
    }

    #[test]
    fn bad_windows_are_refused() {
        for w in [
            Downtime::default(),
            Downtime {
                daily: Some("25:00-01:00".into()),
                ..Downtime::default()
            },
            Downtime {
                from: Some("2026-11-22T12:00:00Z".into()),
                until: Some("2026-11-22T10:00:00Z".into()),
                ..Downtime::default()
            },
        ] {
            assert!(Window::from_config(&w).is_err(), "{w:?}");
        }
    }
}
