//! Metrics of the workload containers the agent manages, from one non-streaming Podman stats
//! call per export (plus the container list that finds them by the agent's labels).

use super::instruments::{Batch, Point, attr, int};
use super::proto::{KeyValue, Metric, Value};
use crate::compose::libpod::{LABEL_PROJECT, LABEL_SERVICE};
use crate::podman::{ContainerStats, ContainerSummary, Podman, PodmanError};
use crate::reconcile::{
    LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_DEVICE, LABEL_MANAGED_BY, MANAGED_BY,
};

/// A managed container with its stats (`None` when not running).
pub struct Observed {
    pub summary: ContainerSummary,
    pub stats: Option<ContainerStats>,
}

/// Lists the device's managed containers and reads the stats of the running ones.
pub fn collect(podman: &mut Podman, device_id: &str) -> Result<Vec<Observed>, PodmanError> {
    let list =
        podman.list_containers(&[(LABEL_MANAGED_BY, MANAGED_BY), (LABEL_DEVICE, device_id)])?;
    let running: Vec<&str> = list
        .iter()
        .filter(|c| c.state == "running")
        .map(|c| c.id.as_str())
        .collect();
    let mut stats = match podman.container_stats(&running) {
        Ok(s) => s,
        // Podman fails the whole named report when one container stopped between the list
        // and this call (a crash-looping workload): ask per container, so the others still
        // report. Rare, so the extra calls do not matter.
        Err(e) if !e.is_unavailable() && running.len() > 1 => running
            .iter()
            .filter_map(|id| podman.container_stats(&[id]).ok())
            .flatten()
            .collect(),
        Err(e) => return Err(e),
    };
    Ok(list
        .into_iter()
        .map(|summary| {
            let s = stats
                .iter()
                .position(|s| s.id == summary.id)
                .map(|i| stats.swap_remove(i));
            Observed { summary, stats: s }
        })
        .collect())
}

/// The resource attributes of a container (semantic conventions `container.*`, plus the
/// compose and Margo labels the agent set).
fn attributes(c: &ContainerSummary) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::str("container.id", c.id.clone()),
        KeyValue::str("container.name", c.name()),
        KeyValue::str("container.image.name", c.image.clone()),
        KeyValue::str("container.runtime.name", "podman"),
    ];
    for (label, key) in [
        (LABEL_PROJECT, "margo.compose.project"),
        (LABEL_SERVICE, "margo.compose.service"),
        (LABEL_DEPLOYMENT, "margo.deployment.id"),
        (LABEL_COMPONENT, "margo.component"),
    ] {
        if let Some(v) = c.labels.get(label) {
            a.push(KeyValue::str(key, v.clone()));
        }
    }
    a
}

/// The metrics of each container, as (resource attributes, metrics): one OTLP resource per
/// container, as the semantic conventions model it, so its identifying attributes are sent
/// once rather than on every point. Cumulative series start when the container started (a
/// restart starts a new series, as the data model wants after a reset).
pub fn record(now: u64, observed: &[Observed]) -> Vec<(Vec<KeyValue>, Vec<Metric>)> {
    let mut out = Vec::new();
    for o in observed {
        let c = &o.summary;
        let mut b = Batch::new(now);
        if matches!(c.health.as_str(), "healthy" | "unhealthy" | "starting") {
            b.gauge(
                "margo.container.healthy",
                "1 when the container's healthcheck passes, else 0 (containers with a healthcheck only).",
                "1",
                vec![(
                    attr("margo.container.health", &c.health),
                    0,
                    int(u64::from(c.health == "healthy")),
                )],
            );
        }
        if let Some(s) = &o.stats {
            let start = u64::try_from(c.started_at)
                .unwrap_or(0)
                .saturating_mul(1_000_000_000);
            let one = |v: Value| -> Vec<Point> { vec![(vec![], start, v)] };
            b.sum(
                "container.cpu.time",
                "Total CPU time consumed by the container on all CPU cores.",
                "s",
                true,
                one(Value::AsDouble(s.cpu_nano as f64 / 1e9)),
            );
            b.sum(
                "container.memory.usage",
                "Memory usage of the container.",
                "By",
                false,
                one(int(s.mem_usage)),
            );
            b.sum(
                "container.network.io",
                "Network bytes for the container.",
                "By",
                true,
                vec![
                    (
                        attr("network.io.direction", "receive"),
                        start,
                        int(s.net_input),
                    ),
                    (
                        attr("network.io.direction", "transmit"),
                        start,
                        int(s.net_output),
                    ),
                ],
            );
            b.sum(
                "container.disk.io",
                "Disk bytes for the container.",
                "By",
                true,
                vec![
                    (attr("disk.io.direction", "read"), start, int(s.block_input)),
                    (
                        attr("disk.io.direction", "write"),
                        start,
                        int(s.block_output),
                    ),
                ],
            );
            b.sum(
                "margo.container.pids",
                "Processes in the container.",
                "{process}",
                false,
                one(int(s.pids)),
            );
            if start > 0 {
                let secs = now.saturating_sub(start) as f64 / 1e9;
                b.gauge(
                    "container.uptime",
                    "The time the container has been running.",
                    "s",
                    vec![(vec![], 0, Value::AsDouble(secs))],
                );
            }
        }
        if !b.metrics.is_empty() {
            out.push((attributes(c), b.metrics));
        }
    }
    out
}
