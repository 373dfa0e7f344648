//! Apply: executes a [`Plan`](super::plan::Plan) through Podman, then waits for the result.
//!
//! Order: images present (pulled through Podman with the configured registry credentials when
//! missing), then the plan's steps in order (networks and volumes, removals, creates, starts),
//! then the wait. Without `wait`, a deployment is Installed once each container is running a
//! moment after its start; with `wait`, every container must be running — and healthy where
//! it has a healthcheck, which the agent runs itself through the libpod endpoint because
//! Podman only schedules them with systemd timers — within the component's timeout. A
//! container that exits non-zero while starting fails the deployment with its last log lines.

use super::libpod::{CreateContext, LABEL_PROJECT};
use super::plan::{Action, ActualContainer, ActualNetwork, plan, plan_removal};
use super::policy::DevicePolicy;
use super::project::Project;
use crate::journal;
use crate::podman::{Podman, PodmanError, PullAuth};
use std::time::{Duration, Instant};

/// How long a container must stay up after its start to count as started when the component
/// does not ask to wait.
pub const SETTLE_TIME: Duration = Duration::from_millis(1500);
/// Wait used when a component sets `wait` without `timeout`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between checks while waiting (and between driven healthchecks).
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Log lines quoted in a failure message.
pub const FAILURE_LOG_LINES: u32 = 10;

/// Why an apply failed. `code` is the stable deployment-status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    pub code: &'static str,
    pub message: String,
    /// Podman itself was unreachable: retry later rather than fail for good.
    pub podman_unavailable: bool,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<PodmanError> for ApplyError {
    fn from(e: PodmanError) -> ApplyError {
        ApplyError {
            code: e.code(),
            podman_unavailable: e.is_unavailable(),
            message: e.to_string(),
        }
    }
}

/// How images are pulled: credentials and TLS per registry host.
pub trait ImageAccess {
    fn pull_auth(&self, registry: &str) -> Option<PullAuth>;
    fn tls_verify(&self, registry: &str) -> bool;
}

/// What an apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub pulled: Vec<String>,
    pub actions: Vec<String>,
}

fn registry_of(image: &str) -> &str {
    image.split('/').next().unwrap_or("")
}

/// Containers of `project` as Podman lists them.
pub fn actual_containers(
    podman: &mut Podman,
    project: &str,
) -> Result<Vec<ActualContainer>, PodmanError> {
    Ok(podman
        .list_containers(&[(LABEL_PROJECT, project)])?
        .into_iter()
        .map(|c| ActualContainer {
            name: c.name().to_string(),
            id: c.id,
            labels: c.labels,
            state: c.state,
            exit_code: Some(c.exit_code),
        })
        .collect())
}

/// Converges `project`: pull what is missing, execute the plan, wait.
pub fn converge(
    podman: &mut Podman,
    project: &Project,
    ctx: &CreateContext,
    images: &dyn ImageAccess,
    wait: Option<Duration>,
    fields: &[(&str, &str)],
    policy: &DevicePolicy,
) -> Result<ApplyReport, ApplyError> {
    let mut report = ApplyReport::default();
    for svc in &project.services {
        if podman.image_exists(&svc.image)? {
            continue;
        }
        let host = registry_of(&svc.image);
        journal::info(
            &format!("pulling image {:?} for service {:?}", svc.image, svc.name),
            fields,
        );
        podman
            .pull_image(
                &svc.image,
                images.pull_auth(host).as_ref(),
                images.tls_verify(host),
            )
            .map_err(|e| ApplyError {
                code: "ERR_IMAGE_PULL",
                podman_unavailable: e.is_unavailable(),
                message: format!("service {:?}: {e}", svc.name),
            })?;
        report.pulled.push(svc.image.clone());
    }
    let actual = actual_containers(podman, &project.name)?;
    let the_plan = plan(project, ctx, &actual);
    let mut started = Vec::new();
    for action in &the_plan.actions {
        journal::info(&format!("project {:?}: {action}", project.name), fields);
        match action {
            Action::CreateNetwork { name } => {
                if !podman.network_exists(name)?
                    && let Some(n) = project.networks.iter().find(|n| &n.name == name)
                {
                    podman.create_network(name, &n.create_body(&project.name, ctx))?;
                }
            }
            Action::CreateVolume { name } => {
                if !podman.volume_exists(name)?
                    && let Some(v) = project.volumes.iter().find(|v| &v.name == name)
                {
                    podman.create_volume(name, &v.create_body(&project.name, ctx))?;
                }
            }
            Action::RemoveContainer { id, .. } => podman.remove_container(id)?,
            Action::CreateContainer { service, container } => {
                let Some(spec) = project.service(service) else {
                    continue;
                };
                policy.create_bind_sources(spec, &project.working_dir)?;
                podman
                    .create_container(container, &spec.create_body(ctx))
                    .map_err(|e| ApplyError {
                        code: if matches!(e, PodmanError::Api { status: 404, .. }) {
                            "ERR_IMAGE_MISSING"
                        } else {
                            e.code()
                        },
                        podman_unavailable: e.is_unavailable(),
                        message: format!("service {service:?}: {e}"),
                    })?;
            }
            Action::StartContainer { service, container } => {
                podman.start_container(container).map_err(|e| ApplyError {
                    code: "ERR_CONTAINER_START",
                    podman_unavailable: e.is_unavailable(),
                    message: format!(
                        "service {service:?}: container {container:?} did not start: {e}"
                    ),
                })?;
                started.push((service.clone(), container.clone()));
            }
            Action::RemoveNetwork { name } => podman.remove_network(name)?,
        }
        report.actions.push(action.to_string());
    }
    match wait {
        Some(timeout) => wait_ready(podman, project, timeout)?,
        None if !started.is_empty() => settle(podman, &started)?,
        None => {}
    }
    Ok(report)
}

/// Removes a whole project: containers, then its networks (named volumes are kept).
pub fn remove_project(
    podman: &mut Podman,
    project: &str,
    fields: &[(&str, &str)],
) -> Result<usize, ApplyError> {
    let containers = actual_containers(podman, project)?;
    let networks: Vec<ActualNetwork> = podman
        .list_networks(&[(LABEL_PROJECT, project)])?
        .into_iter()
        .map(|n| ActualNetwork {
            name: n.name,
            labels: n.labels,
        })
        .collect();
    let the_plan = plan_removal(project, &containers, &networks);
    for action in &the_plan.actions {
        journal::info(&format!("project {project:?}: {action}"), fields);
        match action {
            Action::RemoveContainer { id, .. } => podman.remove_container(id)?,
            Action::RemoveNetwork { name } => podman.remove_network(name)?,
            _ => {}
        }
    }
    Ok(the_plan.actions.len())
}

fn exited_error(podman: &mut Podman, service: &str, container: &str, code: i64) -> ApplyError {
    let logs = podman
        .logs_tail(container, FAILURE_LOG_LINES)
        .unwrap_or_default();
    let tail = if logs.is_empty() {
        "no output".to_string()
    } else {
        logs.replace('\n', " | ")
    };
    ApplyError {
        code: "ERR_CONTAINER_EXITED",
        podman_unavailable: false,
        message: format!(
            "service {service:?}: container {container:?} exited with code {code} while starting; last output: {tail}"
        ),
    }
}

/// Without `wait`: each started container must still be running (or have exited 0) a moment
/// after its start.
fn settle(podman: &mut Podman, started: &[(String, String)]) -> Result<(), ApplyError> {
    std::thread::sleep(SETTLE_TIME);
    for (service, container) in started {
        let st = podman.inspect_container(container)?.state;
        if !st.running && st.exit_code != 0 {
            return Err(exited_error(podman, service, container, st.exit_code));
        }
    }
    Ok(())
}

/// With `wait`: every container running, and healthy where it has a healthcheck, before the
/// deadline.
fn wait_ready(podman: &mut Podman, project: &Project, timeout: Duration) -> Result<(), ApplyError> {
    let start = Instant::now();
    let deadline = start.checked_add(timeout).unwrap_or(start);
    loop {
        let mut pending = Vec::new();
        for svc in &project.services {
            let st = podman.inspect_container(&svc.container_name)?.state;
            if !st.running {
                if st.status == "exited" || st.status == "stopped" {
                    if st.exit_code != 0 {
                        return Err(exited_error(
                            podman,
                            &svc.name,
                            &svc.container_name,
                            st.exit_code,
                        ));
                    }
                    continue; // a one-shot service that completed
                }
                pending.push(format!("{} is {}", svc.name, st.status));
                continue;
            }
            if svc.healthcheck.is_some() {
                let health = podman.run_healthcheck(&svc.container_name)?;
                if health != "healthy" {
                    pending.push(format!("{} is {health}", svc.name));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ApplyError {
                code: "ERR_HEALTH_TIMEOUT",
                podman_unavailable: false,
                message: format!(
                    "project {:?} not ready after {}: {}",
                    project.name,
                    crate::units::format_duration(timeout),
                    pending.join(", ")
                ),
            });
        }
        std::thread::sleep(WAIT_POLL_INTERVAL);
    }
}
