//! The single-threaded loop: `run` and `run --once`.
//!
//! One OS thread. Timed jobs — poll the desired state, observe the workloads (restore after
//! a reboot, run healthchecks), ping the watchdog — each have a next deadline; between them
//! the loop sleeps on a socket that signal handlers write to (signal-hook's self-pipe), so a signal wakes it at once and no handler runs agent code.
//! SIGTERM/SIGINT stop cleanly after the current pass, SIGHUP reloads the config, SIGUSR1
//! polls now. Every I/O call below has its own deadline, so no job can hang the loop.
//!
//! Polling backs off while the source is unreachable: the delay doubles from the poll interval
//! up to `desired_state.retry_max`; a random jitter (`poll_jitter`) spreads a fleet's polls.

use crate::config::Config;
use crate::journal;
use crate::reconcile::{Agent, Outcome};
use crate::wfm::schedule::Schedule;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Exit codes of `run --once` (and of `run` when it cannot start). Documented in README.
pub mod exit {
    /// Converged (or nothing to do).
    pub const OK: u8 = 0;
    /// At least one deployment failed to apply.
    pub const APPLY_FAILED: u8 = 1;
    /// Command-line usage error.
    pub const USAGE: u8 = 2;
    /// Config missing or invalid (systemd: `RestartPreventExitStatus=3`).
    pub const CONFIG: u8 = 3;
    /// The desired-state source could not be reached.
    pub const SOURCE_UNREACHABLE: u8 = 4;
    /// The desired state was invalid and refused; workloads left as they were.
    pub const INVALID_DESIRED_STATE: u8 = 5;
    /// Podman's API socket is missing or not answering.
    pub const PODMAN_UNAVAILABLE: u8 = 6;
    /// The state file cannot be read or written.
    pub const STATE: u8 = 7;
}

/// Longest sleep between loop turns even without deadlines (keeps the loop observable).
const MAX_SLEEP: Duration = Duration::from_secs(60);

struct Signals {
    wake: UnixStream,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    poll_now: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let (wake, wake_tx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        let poll_now = Arc::new(AtomicBool::new(false));
        for (sig, flag) in [
            (SIGTERM, &stop),
            (SIGINT, &stop),
            (SIGHUP, &reload),
            (SIGUSR1, &poll_now),
        ] {
            signal_hook::flag::register(sig, flag.clone())?;
            signal_hook::low_level::pipe::register(sig, wake_tx.try_clone()?)?;
        }
        Ok(Signals {
            wake,
            stop,
            reload,
            poll_now,
        })
    }

    /// Sleeps up to `d`, returning early when a signal arrives.
    fn sleep(&mut self, d: Duration) {
        let d = d.clamp(Duration::from_millis(1), MAX_SLEEP);
        if self.wake.set_read_timeout(Some(d)).is_err() {
            std::thread::sleep(d);
            return;
        }
        let mut buf = [0u8; 64];
        let _ = self.wake.read(&mut buf);
    }
}

/// A random duration in `[0, max]` from the kernel's entropy (jitter needs no strong RNG, but
/// this is what is at hand without a crate).
pub fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok || max.is_zero() {
        return Duration::ZERO;
    }
    let r = u64::from_le_bytes(b);
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(r % (ms + 1))
}

/// Delay before the next poll after `failures` consecutive source failures.
pub fn next_poll_delay(interval: Duration, retry_max: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    interval.saturating_mul(factor).min(retry_max.max(interval))
}

/// What `run` and `run --once` start with: the preflight checks, the WFM job (`None` when
/// off) and the agent; `Err` is the exit code.
fn start(mut config: Config) -> Result<(Option<crate::wfm::Wfm>, Agent), u8> {
    crate::service::preflight(&config)?;
    let wfm = crate::wfm::Wfm::start(&mut config).map_err(|e| {
        journal::error(&format!("{e}; margo-agent cannot start"), &[]);
        exit::CONFIG
    })?;
    Ok((wfm, Agent::start(config)?))
}

/// `run --once`: one reconcile; the exit code tells the outcome.
pub fn run_once(config: Config) -> u8 {
    let (mut wfm, mut agent) = match start(config) {
        Ok(started) => started,
        Err(code) => return code,
    };
    agent.observe();
    let outcome = agent.reconcile();
    if let Some(w) = wfm.as_mut() {
        crate::wfm::deliver_now(w, &mut agent);
    }
    outcome.exit_code()
}

/// `run`: the daemon.
pub fn run(config_path: &Path, config: Config) -> u8 {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            journal::error(
                &format!("cannot install signal handlers: {e}; exiting"),
                &[],
            );
            return exit::CONFIG;
        }
    };
    let (mut wfm, mut agent) = match start(config) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let mut telemetry = match start_telemetry(&agent) {
        Ok(t) => t,
        Err(e) => {
            journal::error(&format!("{e}; margo-agent cannot start"), &[]);
            return exit::CONFIG;
        }
    };
    let mut telemetry_built = telemetry_setup(&agent);
    // Polling hours and downtime windows, parsed once per config (start and SIGHUP).
    let mut schedule = Schedule::from_config(&agent.config().wfm);
    let watchdog = journal::watchdog_arm();
    journal::notify("READY=1\nSTATUS=started, polling desired state");
    let mut failures: u32 = 0;
    let mut next_poll = Instant::now();
    let mut next_ping = Instant::now();
    // The first observation runs before the first poll: after a reboot, workloads are
    // restored even when the desired-state source is out of reach.
    let mut next_observe = Instant::now();
    loop {
        if signals.stop.swap(false, Ordering::Relaxed) {
            journal::notice("stopping on signal; workloads keep running", &[]);
            journal::notify("STOPPING=1");
            return exit::OK;
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            journal::notify("RELOADING=1");
            match Config::load(config_path) {
                Ok(mut c) => {
                    if let Some(w) = &wfm {
                        w.apply_desired_state(&mut c);
                    }
                    journal::notice(&format!("reloaded config {}", config_path.display()), &[]);
                    agent.reload(c);
                    schedule = Schedule::from_config(&agent.config().wfm);
                    // Rebuilt only when its settings changed: a reload that leaves them alone
                    // keeps the export's schedule and backoff.
                    if telemetry_setup(&agent) != telemetry_built {
                        match start_telemetry(&agent) {
                            Ok(t) => {
                                telemetry = t;
                                telemetry_built = telemetry_setup(&agent);
                            }
                            Err(e) => journal::error(
                                &format!("{e}; the running metrics export is kept"),
                                &[],
                            ),
                        }
                    }
                    next_poll = Instant::now();
                }
                Err(e) => journal::error(
                    &format!("config reload refused, keeping the running config: {e}"),
                    &[],
                ),
            }
            journal::notify("READY=1");
        }
        if signals.poll_now.swap(false, Ordering::Relaxed) {
            next_poll = Instant::now();
        }
        let now = Instant::now();
        if let Some(w) = watchdog
            && now >= next_ping
        {
            journal::watchdog_ping();
            next_ping = now + w;
        }
        if now >= next_observe {
            agent.observe();
            next_observe = agent.next_observation(Instant::now());
        }
        let hold = schedule.hold_now();
        if let (true, Some(h)) = (now >= next_poll, &hold) {
            // Outside polling hours or in a downtime window: poll when it ends.
            next_poll = now + Duration::from_secs(h.seconds());
        }
        if let Some(w) = wfm.as_mut()
            && now >= w.next_due()
            && w.tick(agent.state_mut())
        {
            agent.persist();
        }
        if now >= next_poll {
            journal::status("polling the desired state and converging");
            let started = Instant::now();
            let outcome = agent.reconcile();
            let label = crate::telemetry::outcome_label(&outcome);
            agent.metrics.reconcile(label, started.elapsed());
            failures = match outcome {
                Outcome::SourceUnreachable(_) | Outcome::PodmanUnavailable(_) => {
                    failures.saturating_add(1)
                }
                _ => 0,
            };
            if let (Some(w), Outcome::Converged { .. } | Outcome::ApplyFailed { .. }) =
                (wfm.as_mut(), &outcome)
            {
                w.nudge();
            }
            let ds = &agent.config().desired_state;
            let delay =
                next_poll_delay(ds.poll_interval, ds.retry_max, failures) + jitter(ds.poll_jitter);
            journal::status(&crate::service::status_line(&outcome, delay));
            next_poll = Instant::now() + delay;
        }
        if let Some(t) = telemetry.as_mut()
            && Instant::now() >= t.due()
        {
            t.export(agent.telemetry_view());
        }
        let mut wake_at = next_poll.min(next_observe);
        if let Some(w) = &wfm {
            wake_at = wake_at.min(w.next_due());
        }
        if let Some(t) = &telemetry {
            wake_at = wake_at.min(t.due());
        }
        if watchdog.is_some() {
            wake_at = wake_at.min(next_ping);
        }
        signals.sleep(wake_at.saturating_duration_since(Instant::now()));
    }
}

/// What the telemetry export is built from (settings, TLS, device id).
fn telemetry_setup(agent: &Agent) -> (crate::telemetry::Settings, crate::config::Tls, String) {
    let c = agent.config();
    (
        agent.telemetry_settings().clone(),
        c.tls.clone(),
        c.device_id(),
    )
}

/// The telemetry export job for the agent's settings (`None`: export is off); the error
/// names a setting that cannot be used (an unreadable or unusable certificate).
fn start_telemetry(agent: &Agent) -> Result<Option<crate::telemetry::Telemetry>, String> {
    let c = agent.config();
    crate::telemetry::Telemetry::start(agent.telemetry_settings(), &c.tls, &c.device_id())
        .map_err(|e| format!("telemetry setting {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_interval_up_to_the_cap() {
        let i = Duration::from_secs(60);
        let cap = Duration::from_secs(600);
        assert_eq!(next_poll_delay(i, cap, 0), i);
        assert_eq!(next_poll_delay(i, cap, 1), i);
        assert_eq!(next_poll_delay(i, cap, 2), Duration::from_secs(120));
        assert_eq!(next_poll_delay(i, cap, 4), Duration::from_secs(480));
        assert_eq!(next_poll_delay(i, cap, 5), cap);
        assert_eq!(next_poll_delay(i, cap, 200), cap);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for _ in 0..50 {
            assert!(jitter(Duration::from_millis(30)) <= Duration::from_millis(30));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
