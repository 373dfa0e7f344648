//! Healthchecks driven by margo-agent.
//!
//! Podman stores a container's healthcheck but runs it only from systemd timers, which a
//! device (and a minimal image) may not have: without them a container stays `starting`
//! forever. The agent runs each check itself through `GET /libpod/containers/{id}/healthcheck`,
//! which executes the check once and updates the container's health state in Podman (failing
//! streak, retries, start period), on the container's own schedule:
//!
//! - every `Interval` (30 s when unset, as Docker and Podman default it);
//! - during the `StartPeriod` after the start, every [`START_PROBE_INTERVAL`] at most, as
//!   Docker's `start_interval` default does, so a service that becomes ready early is seen
//!   early;
//! - the first probe of a container the agent just started is one cadence after its start
//!   (as the engines do); a container first seen running (after an agent restart) is probed
//!   right away, its history being unknown.
//!
//! The driver runs while the agent waits (`service_healthy`, `wait`) and on the observation
//! tick afterwards; the status it returns is the one Podman recorded for the container (the
//! endpoint's answer describes only the run it made: one failed run is not yet unhealthy).

use crate::podman::{HealthConfig, Podman, PodmanError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Interval of a check that sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Longest time between probes during a check's start period.
pub const START_PROBE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Probe {
    /// `None`: the container has no (enabled) healthcheck.
    check: Option<Timing>,
    next: Instant,
    status: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    interval: Duration,
    start_period: Duration,
    started: Instant,
}

impl Timing {
    fn from_config(c: &HealthConfig, started: Instant) -> Timing {
        let nanos = |n: i64| Duration::from_nanos(u64::try_from(n).unwrap_or(0));
        let interval = match nanos(c.interval) {
            d if d.is_zero() => DEFAULT_INTERVAL,
            d => d,
        };
        Timing {
            interval,
            start_period: nanos(c.start_period),
            started,
        }
    }

    /// Time from a probe at `at` to the next one.
    fn cadence(&self, at: Instant) -> Duration {
        if at.saturating_duration_since(self.started) < self.start_period {
            self.interval.min(START_PROBE_INTERVAL)
        } else {
            self.interval
        }
    }
}

/// The health of the containers the agent looks after, keyed by what the caller names them
/// with (a container name while applying, a container ID on the observation tick).
#[derive(Debug, Default)]
pub struct HealthDriver {
    probes: BTreeMap<String, Probe>,
}

impl HealthDriver {
    pub fn new() -> HealthDriver {
        HealthDriver::default()
    }

    /// Notes that the agent (re)started `container` at `started`: its first probe is one
    /// cadence later.
    pub fn started(
        &mut self,
        podman: &mut Podman,
        container: &str,
        started: Instant,
    ) -> Result<(), PodmanError> {
        let config = podman.inspect_container(container)?.config.healthcheck;
        let check = config
            .filter(HealthConfig::enabled)
            .map(|c| Timing::from_config(&c, started));
        let next = check.map_or(started, |t| started + t.cadence(started));
        self.probes.insert(
            container.to_string(),
            Probe {
                check,
                next,
                status: check.map(|_| "starting".to_string()),
            },
        );
        Ok(())
    }

    fn ensure(
        &mut self,
        podman: &mut Podman,
        container: &str,
        now: Instant,
    ) -> Result<(), PodmanError> {
        if self.probes.contains_key(container) {
            return Ok(());
        }
        let config = podman.inspect_container(container)?.config.healthcheck;
        // Unknown history: treat the start period as over and probe now.
        let check = config.filter(HealthConfig::enabled).map(|c| {
            let t = Timing::from_config(&c, now);
            Timing {
                started: now.checked_sub(t.start_period).unwrap_or(now),
                ..t
            }
        });
        self.probes.insert(
            container.to_string(),
            Probe {
                check,
                next: now,
                status: None,
            },
        );
        Ok(())
    }

    /// The health of `container` (`healthy`, `unhealthy`, `starting`), running its check
    /// when a probe is due at `now`; `None` when it has no healthcheck.
    pub fn status(
        &mut self,
        podman: &mut Podman,
        container: &str,
        now: Instant,
    ) -> Result<Option<String>, PodmanError> {
        self.ensure(podman, container, now)?;
        let Some(probe) = self.probes.get_mut(container) else {
            return Ok(None);
        };
        let Some(timing) = probe.check else {
            return Ok(None);
        };
        if now >= probe.next || probe.status.is_none() {
            // The endpoint's own answer describes this one run ("unhealthy" for any failed
            // run); the container's health — failing streak against `retries`, the start
            // period — is what Podman records, read back right after.
            let run = podman.run_healthcheck(container)?;
            let recorded = podman
                .inspect_container(container)?
                .state
                .health
                .map(|h| h.status)
                .filter(|s| !s.is_empty());
            probe.next = now + timing.cadence(now);
            probe.status = Some(recorded.unwrap_or(run));
        }
        Ok(probe.status.clone())
    }

    /// When the next probe of any tracked container is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.probes
            .values()
            .filter(|p| p.check.is_some())
            .map(|p| p.next)
            .min()
    }

    /// Forgets containers for which `keep` is false (removed or recreated ones).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.probes.retain(|name, _| keep(name));
    }

    /// Forgets one container.
    pub fn forget(&mut self, container: &str) {
        self.probes.remove(container);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval_s: u64, start_period_s: u64) -> HealthConfig {
        HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: i64::try_from(interval_s * 1_000_000_000).unwrap_or(0),
            timeout: 0,
            start_period: i64::try_from(start_period_s * 1_000_000_000).unwrap_or(0),
            retries: 3,
        }
    }

    #[test]
    fn probes_on_the_interval_and_faster_during_the_start_period() {
        let t0 = Instant::now();
        let t = Timing::from_config(&config(30, 60), t0);
        assert_eq!(t.cadence(t0), START_PROBE_INTERVAL);
        assert_eq!(
            t.cadence(t0 + Duration::from_secs(59)),
            START_PROBE_INTERVAL
        );
        assert_eq!(
            t.cadence(t0 + Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        let short = Timing::from_config(&config(1, 60), t0);
        assert_eq!(short.cadence(t0), Duration::from_secs(1));
    }

    #[test]
    fn an_unset_interval_defaults_to_thirty_seconds() {
        let t0 = Instant::now();
        let t = Timing::from_config(&config(0, 0), t0);
        assert_eq!(t.cadence(t0), DEFAULT_INTERVAL);
    }

    #[test]
    fn none_and_empty_tests_disable_the_check() {
        let mut c = config(1, 0);
        assert!(c.enabled());
        c.test = vec!["NONE".into()];
        assert!(!c.enabled());
        c.test = vec![];
        assert!(!c.enabled());
    }
}
