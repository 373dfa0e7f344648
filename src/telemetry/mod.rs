//! OpenTelemetry metrics over OTLP/HTTP: the agent's own metrics, its process, and the
//! workload containers it manages, exported to the device's collector as a timed job of the
//! daemon loop ([`Telemetry::export`]), plus the collector variables injected into workloads
//! ([`Settings::workload_env`]). Names, units and settings: `docs/metrics.md`.
//!
//! - [`config`]: the `telemetry:` config section and the `OTEL_*` environment variables
//! - [`instruments`]: the agent's counters (the hooks `reconcile` calls) and metric building
//! - [`process`], [`containers`]: collectors (`/proc/self`, Podman stats)
//! - [`proto`], [`json`]: the OTLP request as protobuf (hand-written prost structs) and JSON
//! - [`export`]: the HTTP POST and how its answer is classified
//!
//! Every series is cumulative and rebuilt from current values at each export: nothing is
//! queued while the collector is away (memory stays flat), and the first export that gets
//! through carries everything. A retry is the same job rescheduled sooner (`Retry-After`, or
//! exponential backoff from 1 s up to the export interval), never a sleep in the loop.

pub mod config;
pub mod containers;
pub mod export;
pub mod instruments;
pub mod json;
pub mod process;
pub mod proto;

pub use config::{Settings, TelemetryConfig};
pub use instruments::AgentMetrics;

use crate::journal;
use crate::podman::Podman;
use crate::reconcile::Outcome;
use crate::state::{Phase, State};
use export::{Exporter, Sent};
use instruments::{Batch, attr, int};
use prost::Message;
use proto::*;
use std::time::{Duration, Instant, SystemTime};

/// What an export reads from the agent (see `Agent::telemetry_view`).
pub struct View<'a> {
    pub metrics: &'a AgentMetrics,
    pub state: &'a State,
    /// `None` while Podman is unreachable: container metrics are then left out.
    pub podman: Option<&'a mut Podman>,
    pub device_id: &'a str,
    /// Status reports queued in the WFM outbox.
    pub outbox_len: usize,
}

/// The `result` attribute of a reconcile.
pub fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Unchanged => "unchanged",
        Outcome::Converged { .. } => "converged",
        Outcome::Invalid(_) => "invalid",
        Outcome::ApplyFailed { .. } => "apply_failed",
        Outcome::SourceUnreachable(_) => "source_unreachable",
        Outcome::PodmanUnavailable(_) => "podman_unavailable",
        Outcome::State(_) => "state_error",
    }
}

/// The size of the last export's request (for the bench).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Size on the wire of the last request.
    pub last_wire_bytes: usize,
    /// Size of the last request before compression.
    pub last_raw_bytes: usize,
}

/// The export job.
pub struct Telemetry {
    settings: Settings,
    exporter: Exporter,
    resource: Resource,
    /// The device's attributes, added to each container's resource.
    device_attributes: Vec<KeyValue>,
    /// Start time of the agent's own cumulative series (the process start).
    start_unix_nano: u64,
    /// System boot time (Unix seconds), read once: `None` leaves the process metrics out.
    btime: Option<u64>,
    next: Instant,
    /// Consecutive retryable failures (the backoff step).
    failures: u32,
    /// Failed exports since the last delivered one.
    failed_since: u64,
    /// The failure being reported (logged when it starts or changes, not every time).
    outage: Option<String>,
    last_partial: Option<String>,
    container_error: Option<String>,
    pub counts: Counts,
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm32",
        "x86" => "x86",
        other => other,
    }
}

impl Telemetry {
    /// The job for `settings`, or `None` when export is off. An error names the setting
    /// (certificate files are read here).
    pub fn start(
        settings: &Settings,
        tls: &crate::config::Tls,
        device_id: &str,
    ) -> Result<Option<Telemetry>, config::SettingError> {
        if !settings.enabled {
            return Ok(None);
        }
        let exporter = Exporter::new(settings, tls)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let mut attrs = vec![
            ("service.name".to_string(), settings.service_name.clone()),
            ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
            ("service.instance.id".into(), device_id.into()),
            ("margo.device.id".into(), device_id.into()),
            ("host.name".into(), host),
            ("host.arch".into(), host_arch().into()),
            ("os.type".into(), "linux".into()),
        ];
        for (k, v) in &settings.resource_attributes {
            if k == "service.name" {
                continue; // settled in `service_name`
            }
            attrs.retain(|(old, _)| old != k);
            attrs.push((k.clone(), v.clone()));
        }
        let mut attributes: Vec<KeyValue> = attrs
            .into_iter()
            .map(|(k, v)| KeyValue::str(&k, v))
            .collect();
        attributes.push(KeyValue::int("process.pid", i64::from(std::process::id())));
        let device_attributes = attributes
            .iter()
            .filter(|kv| {
                matches!(
                    kv.key.as_str(),
                    "margo.device.id" | "host.name" | "host.arch" | "os.type"
                )
            })
            .cloned()
            .collect();
        let btime = process::boot_time();
        let start_unix_nano = btime
            .and_then(process::read)
            .map_or_else(now_unix_nano, |r| r.start_unix_nano);
        journal::info(
            &format!(
                "exporting metrics every {} s to {} ({}{})",
                settings.interval.as_secs_f64(),
                exporter.url(),
                settings.protocol.as_str(),
                if settings.gzip { ", gzip" } else { "" }
            ),
            &[],
        );
        Ok(Some(Telemetry {
            settings: settings.clone(),
            exporter,
            resource: Resource { attributes },
            device_attributes,
            start_unix_nano,
            btime,
            // The first export waits one interval: there is little to say before that.
            next: Instant::now() + settings.interval,
            failures: 0,
            failed_since: 0,
            outage: None,
            last_partial: None,
            container_error: None,
            counts: Counts::default(),
        }))
    }

    /// When the job wants to run next.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Builds the request from current values: the agent's resource (agent and process
    /// metrics), then one resource per managed container.
    pub fn collect(&mut self, view: View<'_>) -> ExportMetricsServiceRequest {
        let mut b = Batch::new(now_unix_nano());
        self.record_agent(&mut b, &view);
        if let Some(r) = self.btime.and_then(process::read) {
            process::record(&mut b, &r);
        }
        let scope = || {
            Some(InstrumentationScope {
                name: "margo-agent".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            })
        };
        let mut resource_metrics = vec![ResourceMetrics {
            resource: Some(self.resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: b.metrics,
            }],
            schema_url: String::new(),
        }];
        if let Some(podman) = view.podman {
            match containers::collect(podman, view.device_id) {
                Ok(observed) => {
                    if self.container_error.take().is_some() {
                        journal::info("container metrics available again", &[]);
                    }
                    for (mut attributes, metrics) in containers::record(b.now, &observed) {
                        attributes.extend(self.device_attributes.iter().cloned());
                        resource_metrics.push(ResourceMetrics {
                            resource: Some(Resource { attributes }),
                            scope_metrics: vec![ScopeMetrics {
                                scope: scope(),
                                metrics,
                            }],
                            schema_url: String::new(),
                        });
                    }
                }
                Err(e) => {
                    let msg = format!(
                        "container metrics left out of this export: {e}; tried again with the next one"
                    );
                    if self.container_error.as_deref() != Some(msg.as_str()) {
                        journal::warn(&msg, &[("ERROR_CODE", e.code())]);
                        self.container_error = Some(msg);
                    }
                }
            }
        }
        ExportMetricsServiceRequest { resource_metrics }
    }

    fn record_agent(&self, b: &mut Batch, v: &View<'_>) {
        let start = self.start_unix_nano;
        let m = v.metrics;
        let result = |r: &str| attr("result", r);
        b.sum(
            "margo.agent.reconciles",
            "Reconcile passes, by result.",
            "{reconcile}",
            true,
            m.reconciles
                .iter()
                .map(|(r, h)| (result(r), start, int(h.count)))
                .collect(),
        );
        b.histogram(
            "margo.agent.reconcile.duration",
            "Duration of a reconcile pass, by result.",
            "s",
            m.reconciles
                .iter()
                .map(|(r, h)| (result(r), start, h))
                .collect(),
        );
        b.sum(
            "margo.agent.desired_state.polls",
            "Polls of the desired-state source, by result.",
            "{poll}",
            true,
            m.polls
                .iter()
                .map(|(r, (n, _))| (result(r), start, int(*n)))
                .collect(),
        );
        b.sum(
            "margo.agent.desired_state.bytes",
            "Bytes of desired-state documents received, by poll result.",
            "By",
            true,
            m.polls
                .iter()
                .map(|(r, (_, bytes))| (result(r), start, int(*bytes)))
                .collect(),
        );
        let phases = [
            Phase::Pending,
            Phase::Installing,
            Phase::Installed,
            Phase::Failed,
            Phase::Removing,
        ];
        b.sum(
            "margo.agent.deployments",
            "Deployments the agent manages, by state.",
            "{deployment}",
            false,
            phases
                .iter()
                .map(|p| {
                    let n = v
                        .state
                        .deployments
                        .values()
                        .filter(|d| d.phase == *p)
                        .count();
                    (
                        attr("margo.deployment.state", p.as_str()),
                        start,
                        int(n as u64),
                    )
                })
                .collect(),
        );
        b.sum(
            "margo.agent.status_outbox.length",
            "Deployment statuses waiting to be delivered to the WFM.",
            "{status}",
            false,
            vec![(vec![], start, int(v.outbox_len as u64))],
        );
        b.sum(
            "margo.agent.errors",
            "Errors reported by the agent, by code.",
            "{error}",
            true,
            m.errors
                .iter()
                .map(|(code, n)| (attr("error.type", code.clone()), start, int(*n)))
                .collect(),
        );
        if let Some(d) = &v.state.source.applied {
            let mut a = vec![KeyValue::str("margo.revision.digest", d.to_string())];
            if let Some(ver) = v.state.source.applied_version {
                a.push(KeyValue::int(
                    "margo.revision.version",
                    i64::try_from(ver).unwrap_or(i64::MAX),
                ));
            }
            b.gauge(
                "margo.agent.desired_state.revision",
                "The desired-state revision last applied (value 1; the revision is in the attributes).",
                "1",
                vec![(a, 0, int(1))],
            );
        }
    }

    /// Encodes `req` as configured: (bytes on the wire, bytes before compression).
    pub fn encode(&self, req: &ExportMetricsServiceRequest) -> (Vec<u8>, usize) {
        let raw = match self.settings.protocol {
            config::Protocol::Protobuf => req.encode_to_vec(),
            config::Protocol::Json => json::encode(req),
        };
        let n = raw.len();
        (self.exporter.wire_body(raw), n)
    }

    /// The job: collect, encode, send, log what changed, and reschedule.
    pub fn export(&mut self, view: View<'_>) -> Sent {
        let req = self.collect(view);
        let (wire, raw) = self.encode(&req);
        drop(req);
        self.counts.last_raw_bytes = raw;
        self.counts.last_wire_bytes = wire.len();
        let sent = self.exporter.send(&wire);
        let now = Instant::now();
        let interval = self.settings.interval;
        match &sent {
            Sent::Delivered | Sent::Partial { .. } => {
                if self.outage.take().is_some() {
                    journal::notice(
                        &format!(
                            "metrics export to {} works again after {} failed attempt(s); the cumulative values cover the gap",
                            self.exporter.url(),
                            self.failed_since
                        ),
                        &[],
                    );
                }
                self.failures = 0;
                self.failed_since = 0;
                self.next = now + interval;
            }
            Sent::Retry { after, reason } => {
                self.failed_since += 1;
                self.failures = self.failures.saturating_add(1);
                // A Retry-After of 0 (or a date the device clock has passed) must not turn the
                // export into a tight loop: never sooner than the backoff.
                let floor = backoff(self.failures, interval);
                let delay = after.map_or(floor, |d| d.max(floor));
                self.next = now + delay;
                self.report(format!(
                    "metrics export failed: {reason}; retrying in {:.1} s (nothing is queued: the next export carries the cumulative values)",
                    delay.as_secs_f64()
                ));
            }
            Sent::Dropped { reason } => {
                self.failed_since += 1;
                self.failures = 0;
                self.next = now + interval;
                self.report(format!(
                    "metrics export refused: {reason}; not retried, the next export is in {} s",
                    interval.as_secs()
                ));
            }
        }
        if let Sent::Partial { rejected, message } = &sent {
            let msg = format!(
                "the collector at {} rejected {rejected} data point(s) of the export: {message:?}; not retried",
                self.exporter.url()
            );
            if self.last_partial.as_deref() != Some(msg.as_str()) {
                journal::warn(&msg, &[]);
                self.last_partial = Some(msg);
            }
        } else if sent == Sent::Delivered {
            self.last_partial = None;
        }
        sent
    }

    /// Logs a failure when it starts or its kind changes: the HTTP status, or "no answer"
    /// (connection, TLS and timeout failures, whose wording varies from one try to the next).
    fn report(&mut self, msg: String) {
        let key = match msg.split_once(" answered HTTP ") {
            Some((_, rest)) => format!("HTTP {}", rest.get(..3).unwrap_or(rest)),
            None => "no answer".to_string(),
        };
        if self.outage.as_deref() != Some(key.as_str()) {
            journal::warn(&msg, &[("ERROR_CODE", "ERR_TELEMETRY_EXPORT")]);
            self.outage = Some(key);
        }
    }
}

/// Delay before retry `n` (1-based) without a `Retry-After`: 1 s doubling, at most the export
/// interval, plus up to 10 % jitter.
pub fn backoff(n: u32, interval: Duration) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let d = base.min(interval);
    d + crate::daemon::jitter(d / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let i = Duration::from_secs(60);
        let b1 = backoff(1, i);
        assert!(b1 >= Duration::from_secs(1) && b1 <= Duration::from_millis(1100));
        let b3 = backoff(3, i);
        assert!(b3 >= Duration::from_secs(4) && b3 <= Duration::from_millis(4400));
        let b30 = backoff(30, i);
        assert!(b30 >= i && b30 <= Duration::from_secs(66));
    }
}
