//! Metrics of the workload containers the agent manages, from one non-streaming Podman stats
//! call per export (plus the container list that finds them by the agent's labels).

use super::instruments::{Batch, Point, int};
use super::proto::{KeyValue, Value};
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
    let mut stats = podman.container_stats(&running)?;
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

fn with(mut a: Vec<KeyValue>, k: &str, v: &str) -> Vec<KeyValue> {
    a.push(KeyValue::str(k, v));
    a
}

/// Adds the container metrics to `b`. Cumulative series start when the container started
/// (a restart starts a new series, as the data model wants for a reset).
pub fn record(b: &mut Batch, observed: &[Observed]) {
    let (mut cpu, mut mem, mut net, mut disk, mut up, mut health, mut pids) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for o in observed {
        let c = &o.summary;
        let a = attributes(c);
        match c.health.as_str() {
            "healthy" | "unhealthy" | "starting" => health.push((
                with(a.clone(), "margo.container.health", &c.health),
                0,
                int(u64::from(c.health == "healthy")),
            )),
            _ => {}
        }
        let Some(s) = &o.stats else { continue };
        let start = u64::try_from(c.started_at)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000);
        cpu.push((a.clone(), start, Value::AsDouble(s.cpu_nano as f64 / 1e9)));
        mem.push((a.clone(), start, int(s.mem_usage)));
        pids.push((a.clone(), start, int(s.pids)));
        net.push((
            with(a.clone(), "network.io.direction", "receive"),
            start,
            int(s.net_input),
        ));
        net.push((
            with(a.clone(), "network.io.direction", "transmit"),
            start,
            int(s.net_output),
        ));
        disk.push((
            with(a.clone(), "disk.io.direction", "read"),
            start,
            int(s.block_input),
        ));
        disk.push((
            with(a.clone(), "disk.io.direction", "write"),
            start,
            int(s.block_output),
        ));
        if start > 0 {
            let secs = b.now.saturating_sub(start) as f64 / 1e9;
            up.push((a, 0, Value::AsDouble(secs)));
        }
    }
    let sum =
        |b: &mut Batch, n: &str, d: &str, u: &str, m: bool, p: Vec<Point>| b.sum(n, d, u, m, p);
    sum(
        b,
        "container.cpu.time",
        "Total CPU time consumed by the container on all CPU cores.",
        "s",
        true,
        cpu,
    );
    sum(
        b,
        "container.memory.usage",
        "Memory usage of the container.",
        "By",
        false,
        mem,
    );
    sum(
        b,
        "container.network.io",
        "Network bytes for the container.",
        "By",
        true,
        net,
    );
    sum(
        b,
        "container.disk.io",
        "Disk bytes for the container.",
        "By",
        true,
        disk,
    );
    sum(
        b,
        "margo.container.pids",
        "Processes in the container.",
        "{process}",
        false,
        pids,
    );
    b.gauge(
        "container.uptime",
        "The time the container has been running.",
        "s",
        up,
    );
    b.gauge(
        "margo.container.healthy",
        "1 when the container's healthcheck passes, else 0 (containers with a healthcheck only).",
        "1",
        health,
    );
}
