//! The observation tick: what happens to installed workloads between applies.
//!
//! One list call for all of the agent's containers, then per container:
//! - not running: started again when [`should_restore`] says its restart policy wants it
//!   running (after a device reboot, Podman resets running containers to `created` and
//!   restarts only `always` ones, and only where `podman-restart.service` runs); containers
//!   of one project start in `depends_on` order; a container stopped by hand is left alone;
//! - running with a healthcheck: the check is run when due (see [`super::health`]);
//! - problems (unhealthy, exited non-zero, failed to restore) are returned per project for
//!   the status.
//!
//! Nothing is written to Podman for a project whose containers are all as they should be.

use super::health::HealthDriver;
use super::libpod::{LABEL_PROJECT, LABEL_SERVICE};
use super::plan::{label_dependency_order, should_restore};
use super::service::RestartPolicy;
use crate::journal;
use crate::podman::{ContainerSummary, Podman, PodmanError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// What one observation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Containers started again, by name.
    pub restored: Vec<String>,
    /// Per compose project: what is wrong, one line per service (sorted).
    pub problems: BTreeMap<String, Vec<String>>,
}

fn policy_of(name: &str) -> RestartPolicy {
    match name {
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => RestartPolicy::OnFailure,
        _ => RestartPolicy::No,
    }
}

/// The containers in start order: per project, dependencies first (from the
/// `com.docker.compose.depends_on` labels), projects by name.
fn start_order(containers: Vec<&ContainerSummary>) -> Vec<&ContainerSummary> {
    let mut by_project: BTreeMap<&str, Vec<&ContainerSummary>> = BTreeMap::new();
    for c in containers {
        let p = c.labels.get(LABEL_PROJECT).map_or("", String::as_str);
        by_project.entry(p).or_default().push(c);
    }
    let service = |c: &ContainerSummary| {
        c.labels
            .get(LABEL_SERVICE)
            .cloned()
            .unwrap_or_else(|| c.name().to_string())
    };
    let mut out = Vec::new();
    for (_, cs) in by_project {
        for s in label_dependency_order(cs.iter().map(|c| (service(c), &c.labels))) {
            out.extend(cs.iter().filter(|c| service(c) == s));
        }
    }
    out
}

/// What the observation tick keeps between ticks, by container ID (a recreated container
/// has a new ID, so nothing stale carries over): healthcheck schedules, and restart
/// policies (read once per container rather than on every tick for a stopped one).
#[derive(Debug, Default)]
pub struct Observer {
    health: HealthDriver,
    policies: BTreeMap<String, RestartPolicy>,
}

impl Observer {
    pub fn new() -> Observer {
        Observer::default()
    }

    /// When the next healthcheck is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.health.next_due()
    }

    fn policy(&mut self, podman: &mut Podman, id: &str) -> Result<RestartPolicy, PodmanError> {
        if let Some(p) = self.policies.get(id) {
            return Ok(*p);
        }
        let policy = podman
            .inspect_container(id)?
            .host_config
            .restart_policy
            .as_ref()
            .map_or(RestartPolicy::No, |p| policy_of(&p.name));
        self.policies.insert(id.to_string(), policy);
        Ok(policy)
    }

    /// Observes `containers` (the agent's, as listed): restores, runs due healthchecks, and
    /// reports problems. `rebooted`: the device rebooted since the agent last ran.
    pub fn observe(
        &mut self,
        podman: &mut Podman,
        containers: &[ContainerSummary],
        rebooted: bool,
    ) -> Result<Observation, PodmanError> {
        let mut out = Observation::default();
        let ids: BTreeSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        self.health.retain(|id| ids.contains(id));
        self.policies.retain(|id, _| ids.contains(id.as_str()));
        let stopped = containers.iter().filter(|c| {
            !matches!(
                c.state.as_str(),
                "running" | "paused" | "restarting" | "stopping"
            )
        });
        let mut restored = BTreeSet::new();
        for c in start_order(stopped.collect()) {
            let project = c.labels.get(LABEL_PROJECT).cloned().unwrap_or_default();
            let service = c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default();
            let policy = self.policy(podman, &c.id)?;
            let fields = [
                ("CONTAINER", c.name()),
                ("COMPOSE_PROJECT", project.as_str()),
            ];
            if should_restore(&c.state, c.started_at > 0, policy, rebooted) {
                let why = if c.started_at > 0 {
                    format!(
                        "it was reset by a reboot or an engine restart and its restart policy is {}",
                        policy.as_str()
                    )
                } else {
                    "it was created but never started".to_string()
                };
                match podman.start_container(&c.id) {
                    Ok(()) => {
                        journal::notice(
                            &format!("started container {:?} again: {why}", c.name()),
                            &fields,
                        );
                        self.health.forget(&c.id);
                        self.health.started(podman, &c.id, Instant::now())?;
                        restored.insert(c.id.as_str());
                        out.restored.push(c.name().to_string());
                    }
                    Err(e) if e.is_unavailable() => return Err(e),
                    Err(e) => {
                        journal::error(
                            &format!(
                                "cannot start container {:?} again: {e}; tried again on the next observation tick",
                                c.name()
                            ),
                            &fields,
                        );
                        out.problems
                            .entry(project)
                            .or_default()
                            .push(format!("service {service:?}: could not be restarted: {e}"));
                    }
                }
            } else if (c.state == "exited" || c.state == "stopped")
                && (c.exit_code != 0
                    || matches!(policy, RestartPolicy::Always | RestartPolicy::UnlessStopped))
            {
                // A one-shot job that completed (exit 0, no restart) is not a problem.
                out.problems.entry(project).or_default().push(format!(
                    "service {service:?}: not running (exited with code {})",
                    c.exit_code
                ));
            }
        }
        let now = Instant::now();
        for c in containers {
            if c.state != "running" || restored.contains(c.id.as_str()) {
                continue;
            }
            if self.health.status(podman, &c.id, now)?.as_deref() == Some("unhealthy") {
                let project = c.labels.get(LABEL_PROJECT).cloned().unwrap_or_default();
                let service = c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default();
                out.problems
                    .entry(project)
                    .or_default()
                    .push(format!("service {service:?}: unhealthy"));
            }
        }
        for p in out.problems.values_mut() {
            p.sort();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::libpod::LABEL_DEPENDS_ON;

    fn summary(name: &str, service: &str, depends_on: &str) -> ContainerSummary {
        ContainerSummary {
            id: format!("id-{name}"),
            names: vec![name.to_string()],
            labels: BTreeMap::from([
                (LABEL_PROJECT.to_string(), "p".to_string()),
                (LABEL_SERVICE.to_string(), service.to_string()),
                (LABEL_DEPENDS_ON.to_string(), depends_on.to_string()),
            ]),
            state: "created".into(),
            exit_code: 0,
            image: String::new(),
            image_id: String::new(),
            started_at: 1,
            health: String::new(),
        }
    }

    #[test]
    fn starts_dependencies_first() {
        let web = summary("p-web-1", "web", "api:service_healthy:false");
        let api = summary("p-api-1", "api", "db:service_started:false");
        let db = summary("p-db-1", "db", "");
        let order: Vec<&str> = start_order(vec![&web, &api, &db])
            .into_iter()
            .map(ContainerSummary::name)
            .collect();
        assert_eq!(order, ["p-db-1", "p-api-1", "p-web-1"]);
    }

    #[test]
    fn maps_podman_restart_policy_names() {
        assert_eq!(policy_of("always"), RestartPolicy::Always);
        assert_eq!(policy_of("unless-stopped"), RestartPolicy::UnlessStopped);
        assert_eq!(policy_of("on-failure"), RestartPolicy::OnFailure);
        assert_eq!(policy_of(""), RestartPolicy::No);
        assert_eq!(policy_of("no"), RestartPolicy::No);
    }
}
