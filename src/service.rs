//! Running as a systemd service on a device: the checks made before the loop starts, and the
//! `STATUS=` line a field engineer reads in `systemctl status margo-agent`.
//!
//! - **State directory not writable** (read-only root file system without a writable
//!   `/var/lib`, wrong owner): one journal line naming the directory and the cause, exit code 7.
//!   The unit lists 7 in `RestartPreventExitStatus=`, so systemd does not restart into the same
//!   failure; fix the image and `systemctl restart margo-agent`.
//! - **Clock far in the past** (no RTC, NTP not synced yet): one warning line. Polling and
//!   backoff run on the monotonic clock and are unaffected; HTTPS to a registry fails with
//!   "certificate not valid yet" until the clock is set, each poll is retried with backoff, and
//!   the agent converges on the first poll after time sync. Plain-HTTP registries work.
//!
//! The unit file is `examples/systemd/margo-agent.service` (see docs/systemd.md).

use crate::config::Config;
use crate::daemon::exit;
use crate::journal;
use crate::reconcile::Outcome;
use crate::units::format_duration;
use std::path::Path;
use std::time::Duration;

/// A wall clock earlier than this (2026-01-01T00:00:00Z, before any margo-agent release) is
/// certainly wrong: the device has no RTC or has not synced its time yet.
pub const CLOCK_FLOOR_UNIX: u64 = 1_767_225_600;

/// Checks made by `run` and `run --once` before the agent starts. The error is the exit code;
/// its reason is already in the journal.
pub fn preflight(config: &Config) -> Result<(), u8> {
    if let Err(msg) = state_dir_writable(&config.state_file) {
        journal::error(&msg, &[("ERROR_CODE", "ERR_STATE_UNWRITABLE")]);
        return Err(exit::STATE);
    }
    if let Some(msg) = clock_warning(crate::units::unix_now()) {
        journal::warn(&msg, &[("ERROR_CODE", "ERR_CLOCK_UNSET")]);
    }
    Ok(())
}

/// Creates (if needed) the state file's directory and writes and removes a probe file in it.
pub fn state_dir_writable(state_file: &Path) -> Result<(), String> {
    let dir = match state_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |what: &str, e: std::io::Error| {
        let hint = match e.raw_os_error() {
            Some(30) => {
                " (read-only file system: the state needs a writable directory, e.g. systemd's StateDirectory= on a writable /var/lib)"
            }
            Some(13) | Some(1) => {
                " (permission denied: check the directory's owner and the unit's ReadWritePaths=/StateDirectory=)"
            }
            Some(28) => " (no space left on the device)",
            _ => "",
        };
        format!(
            "state directory {} is not writable: {what}: {e}{hint}; margo-agent cannot record what it applies and does not start",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create it", e))?;
    let probe = dir.join(format!(".margo-agent-probe-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"probe\n"));
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| fail("cannot write a file in it", e))
}

/// The warning for a wall clock before [`CLOCK_FLOOR_UNIX`], or `None` when it looks set.
pub fn clock_warning(now_unix: u64) -> Option<String> {
    (now_unix < CLOCK_FLOOR_UNIX).then(|| {
        format!(
            "system clock reads {}, before this agent was built: the device has no RTC or has not synced its time yet; HTTPS registries will fail with \"certificate not valid yet\" until the clock is set (NTP, systemd-timesyncd), polls are retried with backoff and converge once it is; timestamps in the state file are wrong until then",
            utc(now_unix)
        )
    })
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The `STATUS=` text after a poll: what happened and when the next poll is.
pub fn status_line(outcome: &Outcome, next_poll: Duration) -> String {
    let secs = next_poll.as_secs() + u64::from(next_poll.subsec_nanos() > 0);
    let next = format_duration(Duration::from_secs(secs));
    match outcome {
        Outcome::SourceUnreachable(why) => {
            format!("desired-state source unreachable, retry in {next}: {why}")
        }
        Outcome::PodmanUnavailable(why) => format!("Podman unavailable, retry in {next}: {why}"),
        Outcome::State(why) => format!("state file not writable: {why}"),
        other => format!("{}; next poll in {next}", other.summary()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(CLOCK_FLOOR_UNIX), "2026-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
    }

    #[test]
    fn clock_before_the_floor_warns_and_names_tls() {
        let w = clock_warning(86_400 * 3).unwrap_or_default();
        assert!(w.contains("1970-01-04"), "{w}");
        assert!(w.contains("certificate not valid yet"), "{w}");
        assert!(clock_warning(CLOCK_FLOOR_UNIX + 1).is_none());
    }

    #[test]
    fn state_dir_probe_creates_the_directory_and_refuses_a_file_in_the_way() {
        let base = std::env::temp_dir().join(format!("margo-svc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let state = base.join("a/b/state.json");
        assert!(state_dir_writable(&state).is_ok());
        assert!(base.join("a/b").is_dir());
        assert_eq!(
            std::fs::read_dir(base.join("a/b")).map(|d| d.count()).ok(),
            Some(0)
        );
        // A plain file where the directory should be: not writable, and the message says so.
        std::fs::write(base.join("f"), b"x").ok();
        let err = state_dir_writable(&base.join("f/state.json")).unwrap_err();
        assert!(err.contains("is not writable"), "{err}");
        assert!(err.contains(&base.join("f").display().to_string()), "{err}");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn status_lines_say_what_and_when() {
        let s = status_line(
            &Outcome::PodmanUnavailable("socket /run/podman/podman.sock missing".into()),
            Duration::from_secs(120),
        );
        assert!(s.starts_with("Podman unavailable, retry in 2m"), "{s}");
        assert!(s.contains("/run/podman/podman.sock"), "{s}");
        let s = status_line(&Outcome::Unchanged, Duration::from_secs(60));
        assert!(s.contains("next poll in 1m"), "{s}");
    }
}
