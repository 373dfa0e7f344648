//! Durations (`90s`, `1m30s`, `500ms`) and byte sizes (`512m`, `1.5g`, `64MiB`) as they appear in
//! margo-agent's config, Margo documents (`timeout: 5m30s`) and Compose files (`interval: 1m30s`,
//! `mem_limit: 512m`). One parser each, so every place accepts the same spellings.

use std::time::Duration;

/// Longest duration accepted (about 31 years, the unit form's 1e18 ns): larger values are
/// typos, and adding them to an `Instant` would overflow.
pub const DURATION_MAX_SECS: u64 = 1_000_000_000;

/// The wall clock in seconds since the Unix epoch (0 when the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses a Go-style duration: a sequence of `<number><unit>` with units `ns us ms s m h`
/// (`1m30s`, `1.5s`, `500ms`). A bare integer is taken as seconds, as Compose does for
/// `stop_grace_period: 10`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        if secs > DURATION_MAX_SECS {
            return Err(format!("duration {s:?} is too large"));
        }
        return Ok(Duration::from_secs(secs));
    }
    let mut total_ns: f64 = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit (ns, us, ms, s, m, h)"))?;
        if num_len == 0 {
            return Err(format!("duration {s:?} is not of the form 1m30s"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("duration {s:?} has a malformed number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("duration {s:?} has unknown unit {u:?}")),
        };
        total_ns += value * factor;
        rest = &rest[unit_len..];
    }
    if !total_ns.is_finite() || total_ns > 1e18 {
        return Err(format!("duration {s:?} is too large"));
    }
    // In range and non-negative: checked just above, and the parser accepts no sign.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Duration::from_nanos(total_ns as u64))
}

/// Formats a duration the way the config documents it (`1m30s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    let h = secs / 3600;
    secs %= 3600;
    let m = secs / 60;
    secs %= 60;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// Parses a Compose byte size: `1024`, `512k`, `512m`, `1.5g`, `64MiB`, `2gb` (binary units,
/// as docker does).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    if num_len == 0 {
        return Err(format!(
            "size {s:?} is not a number with an optional unit (k, m, g)"
        ));
    }
    let value: f64 = t[..num_len]
        .parse()
        .map_err(|_| format!("size {s:?} has a malformed number"))?;
    let factor: f64 = match t[num_len..].trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        u => return Err(format!("size {s:?} has unknown unit {u:?}")),
    };
    let v = value * factor;
    if !v.is_finite() || v > 9.0e18 {
        return Err(format!("size {s:?} is too large"));
    }
    // Bounded above and non-negative (no sign accepted).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compose_and_go_durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("18446744073709551615").is_err());
    }

    #[test]
    fn formats_durations_round_trip() {
        for s in ["1m30s", "250ms", "2h", "45s", "1h1m1s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn parses_compose_sizes() {
        assert_eq!(parse_bytes("512m"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5q").is_err());
    }
}
