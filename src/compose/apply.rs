//! Apply: executes a [`Plan`](super::plan::Plan) through Podman, then waits for the result.
//!
//! Order: images present by `pull_policy` (pulled through Podman with the configured registry
//! credentials), then the plan's steps in order (networks and volumes, removals, creates,
//! starts) — before a service's container is created or started, its `depends_on` conditions
//! are awaited (`service_healthy`, `service_completed_successfully`) — then the wait. Without
//! `wait`, a deployment is Installed once each started container is still up a moment after
//! the last start; with `wait`, every container must also be running — and healthy where it
//! has a healthcheck, which the agent runs itself (see [`super::health`]) — within the
//! component's timeout. A container that exits non-zero while starting, or turns unhealthy,
//! fails the deployment with its last log lines or check output.

use super::health::HealthDriver;
use super::libpod::{CreateContext, LABEL_PROJECT};
use super::plan::{Action, ActualContainer, ActualNetwork, plan, plan_removal};
use super::policy::DevicePolicy;
use super::project::{Project, ServiceSpec};
use super::service::{Condition, PullPolicy};
use crate::journal;
use crate::podman::{Podman, PodmanError, PullAuth};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a container must stay up after its start to count as started when the component
/// does not ask to wait.
pub const SETTLE_TIME: Duration = Duration::from_millis(1500);
/// Wait used when a component sets `wait` without `timeout`, and the bound on waiting for
/// `depends_on` conditions when it does not ask to wait at all.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest time between state checks while waiting (healthchecks run on their own cadence,
/// see [`super::health`]).
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
    /// Where to pull `image` from instead (a registry mirror); the pulled image is then
    /// tagged with `image`. Default: the image itself.
    fn pull_source(&self, _image: &str) -> Option<String> {
        None
    }
}

/// What an apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub pulled: Vec<String>,
    pub actions: Vec<String>,
}

/// `repo:tag` → (`repo`, `tag`); `None` for a digest reference (cannot be tagged).
fn split_tag(image: &str) -> Option<(&str, &str)> {
    if image.contains('@') {
        return None;
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].find(':') {
        Some(i) => Some((&image[..slash + i], &image[slash + i + 1..])),
        None => Some((image, "latest")),
    }
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
            image_id: c.image_id,
            started_before: c.started_at > 0,
        })
        .collect())
}

/// Makes every image of the project present, by its `pull_policy`, and returns their IDs by
/// reference.
fn ensure_images(
    podman: &mut Podman,
    project: &Project,
    images: &dyn ImageAccess,
    report: &mut ApplyReport,
    fields: &[(&str, &str)],
) -> Result<BTreeMap<String, String>, ApplyError> {
    let mut ids = BTreeMap::new();
    for svc in &project.services {
        if ids.contains_key(&svc.image) {
            continue;
        }
        let present = podman.image_id(&svc.image)?;
        let pull = match (svc.pull_policy, &present) {
            (PullPolicy::Always, _) | (PullPolicy::Missing, None) => true,
            (PullPolicy::Never, None) => {
                return Err(ApplyError {
                    code: "ERR_IMAGE_MISSING",
                    podman_unavailable: false,
                    message: format!(
                        "service {:?}: image {:?} is not on the device and pull_policy is never",
                        svc.name, svc.image
                    ),
                });
            }
            _ => false,
        };
        let id = if pull {
            let mirrored = images.pull_source(&svc.image);
            let source = mirrored.as_deref().unwrap_or(&svc.image);
            let host = registry_of(source);
            let via = mirrored
                .as_deref()
                .map(|m| format!(" through mirror {m:?}"))
                .unwrap_or_default();
            journal::info(
                &format!(
                    "pulling image {:?}{via} for service {:?}",
                    svc.image, svc.name
                ),
                fields,
            );
            let pull_error = |e: crate::podman::PodmanError| ApplyError {
                code: "ERR_IMAGE_PULL",
                podman_unavailable: e.is_unavailable(),
                message: format!("service {:?}: {e}", svc.name),
            };
            podman
                .pull_image(
                    source,
                    images.pull_auth(host).as_ref(),
                    images.tls_verify(host),
                )
                .map_err(pull_error)?;
            if let Some(m) = &mirrored
                && let Some((repo, tag)) = split_tag(&svc.image)
            {
                podman.tag_image(m, repo, tag).map_err(pull_error)?;
            }
            report.pulled.push(svc.image.clone());
            podman.image_id(&svc.image)?
        } else {
            present
        };
        if let Some(id) = id {
            ids.insert(svc.image.clone(), id);
        }
    }
    Ok(ids)
}

/// Converges `project`: images present, then the plan executed in order — each service's
/// `depends_on` conditions awaited before its container is created or started — then the
/// wait. `wait`: the component's `wait` timeout, if it asks to wait.
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
    let mut ctx = ctx.clone();
    ctx.image_ids = ensure_images(podman, project, images, &mut report, fields)?;
    let actual = actual_containers(podman, &project.name)?;
    let the_plan = plan(project, &ctx, &actual);
    let start = Instant::now();
    let deadline = start
        .checked_add(wait.unwrap_or(DEFAULT_WAIT_TIMEOUT))
        .unwrap_or(start);
    let mut health = HealthDriver::new();
    let mut awaited = BTreeSet::new();
    let mut started = Vec::new();
    let mut last_start = None;
    for action in &the_plan.actions {
        match action {
            Action::CreateContainer { service, .. }
            | Action::StartContainer { service, .. }
            | Action::RestartContainer { service, .. } => {
                if awaited.insert(service.clone())
                    && let Some(spec) = project.service(service)
                {
                    await_dependencies(podman, project, spec, &mut health, deadline, fields)?;
                }
            }
            _ => {}
        }
        journal::info(&format!("project {:?}: {action}", project.name), fields);
        match action {
            Action::CreateNetwork { name } => {
                if !podman.network_exists(name)?
                    && let Some(n) = project.networks.iter().find(|n| &n.name == name)
                {
                    podman.create_network(name, &n.create_body(&project.name, &ctx))?;
                }
            }
            Action::CreateVolume { name } => {
                if !podman.volume_exists(name)?
                    && let Some(v) = project.volumes.iter().find(|v| &v.name == name)
                {
                    podman.create_volume(name, &v.create_body(&project.name, &ctx))?;
                }
            }
            Action::RemoveContainer { id, name, .. } => {
                podman.remove_container(id)?;
                health.forget(name);
            }
            Action::CreateContainer {
                service,
                container,
                number,
            } => {
                let Some(spec) = project.service(service) else {
                    continue;
                };
                policy.create_bind_sources(spec, &project.working_dir)?;
                check_name_free(podman, service, container)?;
                podman
                    .create_container(container, &spec.instance_body(&ctx, *number))
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
                health.started(podman, container, Instant::now())?;
                started.push((service.clone(), container.clone()));
                last_start = Some(Instant::now());
            }
            Action::RestartContainer {
                service, container, ..
            } => {
                podman
                    .restart_container(container)
                    .map_err(|e| ApplyError {
                        code: "ERR_CONTAINER_START",
                        podman_unavailable: e.is_unavailable(),
                        message: format!(
                            "service {service:?}: container {container:?} did not restart: {e}"
                        ),
                    })?;
                health.started(podman, container, Instant::now())?;
                started.push((service.clone(), container.clone()));
                last_start = Some(Instant::now());
            }
            Action::RemoveNetwork { name } => podman.remove_network(name)?,
        }
        report.actions.push(action.to_string());
    }
    if let Some(timeout) = wait {
        wait_ready(podman, project, &mut health, timeout, deadline)?;
    }
    // Ready (or not asked to wait) is not enough: a container that exits right after its
    // start would look running to a check made in that instant.
    if let Some(last) = last_start {
        settle(podman, &started, last)?;
    }
    Ok(report)
}

/// A container name taken by a container outside the project (another deployment, or one
/// created by hand) is reported with its owner rather than as Podman's 500 name conflict.
fn check_name_free(podman: &mut Podman, service: &str, container: &str) -> Result<(), ApplyError> {
    if !podman.container_exists(container)? {
        return Ok(());
    }
    let owner = podman
        .inspect_container_json(container)
        .ok()
        .and_then(|v| {
            let labels = v.get("Config")?.get("Labels")?;
            let label = |k: &str| labels.get(k).and_then(|l| l.as_str()).map(str::to_string);
            Some(match label(crate::reconcile::LABEL_DEPLOYMENT) {
                Some(d) => format!("deployment {d:?}"),
                None => match label(LABEL_PROJECT) {
                    Some(p) => format!("compose project {p:?}"),
                    None => "a container margo-agent does not manage".to_string(),
                },
            })
        })
        .unwrap_or_else(|| "another container".to_string());
    Err(ApplyError {
        code: "ERR_NAME_CONFLICT",
        podman_unavailable: false,
        message: format!(
            "service {service:?}: container name {container:?} is already used by {owner}; container names must be unique on the device"
        ),
    })
}

/// Waits until every `depends_on` condition of `spec` holds: `service_healthy` (the
/// dependency's healthcheck, driven by the agent, passes), `service_completed_successfully`
/// (it exited 0); `service_started` holds once the dependency was started, which the plan's
/// order guarantees. A dependency with `required: false` that fails is logged and skipped.
fn await_dependencies(
    podman: &mut Podman,
    project: &Project,
    spec: &ServiceSpec,
    health: &mut HealthDriver,
    deadline: Instant,
    fields: &[(&str, &str)],
) -> Result<(), ApplyError> {
    for (dep, d) in &spec.depends_on {
        if d.condition == Condition::ServiceStarted {
            continue;
        }
        let Some(target) = project.service(dep) else {
            continue;
        };
        let all = target.container_names().iter().try_for_each(|c| {
            await_condition(podman, spec, target, c, d.condition, health, deadline)
        });
        match all {
            Ok(()) => {}
            Err(e) if !d.required && !e.podman_unavailable => journal::warn(
                &format!(
                    "{}; starting {:?} anyway (required: false)",
                    e.message, spec.name
                ),
                fields,
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until `condition` holds for `container`, one container of `target` (every
/// replica of a dependency must meet it, as with docker compose).
fn await_condition(
    podman: &mut Podman,
    spec: &ServiceSpec,
    target: &ServiceSpec,
    container: &str,
    condition: Condition,
    health: &mut HealthDriver,
    deadline: Instant,
) -> Result<(), ApplyError> {
    let failed = |code: &'static str, why: String| ApplyError {
        code,
        podman_unavailable: false,
        message: format!(
            "service {:?}: depends_on {:?} ({}): {why}",
            spec.name,
            target.name,
            condition.as_str()
        ),
    };
    loop {
        let st = podman.inspect_container(container)?.state;
        let now = Instant::now();
        let exited = st.status == "exited" || st.status == "stopped";
        match condition {
            Condition::ServiceCompletedSuccessfully if exited => {
                if st.exit_code == 0 {
                    return Ok(());
                }
                let e = exited_error(podman, &target.name, container, st.exit_code);
                return Err(failed("ERR_DEPENDENCY_FAILED", e.message));
            }
            Condition::ServiceHealthy if exited => {
                let e = exited_error(podman, &target.name, container, st.exit_code);
                return Err(failed("ERR_DEPENDENCY_FAILED", e.message));
            }
            Condition::ServiceHealthy if st.running => {
                match health.status(podman, container, now)?.as_deref() {
                    None => {
                        return Err(failed(
                            "ERR_DEPENDENCY_FAILED",
                            format!("{:?} has no healthcheck", target.name),
                        ));
                    }
                    Some("healthy") => return Ok(()),
                    Some("unhealthy") => {
                        return Err(failed(
                            "ERR_DEPENDENCY_FAILED",
                            format!("{:?} is unhealthy", target.name),
                        ));
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }
        if now >= deadline {
            return Err(failed(
                "ERR_HEALTH_TIMEOUT",
                format!("still {} when the timeout ran out", st.status),
            ));
        }
        sleep_until(health.next_due(), deadline);
    }
}

/// Sleeps until the next due probe, at most [`WAIT_POLL_INTERVAL`], never past `deadline`.
fn sleep_until(next_probe: Option<Instant>, deadline: Instant) {
    crate::journal::keep_alive();
    let now = Instant::now();
    let mut until = (now + WAIT_POLL_INTERVAL).min(deadline);
    if let Some(p) = next_probe {
        until = until.min(p.max(now + Duration::from_millis(50)));
    }
    std::thread::sleep(until.saturating_duration_since(now));
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

/// A container whose healthcheck failed `retries` times in a row, with the check's last
/// output (bounded).
fn unhealthy_error(podman: &mut Podman, service: &str, container: &str) -> ApplyError {
    let last = podman
        .inspect_container_json(container)
        .ok()
        .and_then(|v| {
            let log = v.get("State")?.get("Health")?.get("Log")?.as_array()?;
            let output = log.last()?.get("Output")?.as_str()?.trim().to_string();
            Some(output)
        })
        .filter(|o| !o.is_empty())
        .map(|o| {
            let cut: String = o.chars().take(400).collect();
            format!("; last check output: {}", cut.replace('\n', " | "))
        })
        .unwrap_or_default();
    ApplyError {
        code: "ERR_UNHEALTHY",
        podman_unavailable: false,
        message: format!("service {service:?}: container {container:?} is unhealthy{last}"),
    }
}

/// Each started container must still be running (or have exited 0) [`SETTLE_TIME`] after the
/// last start.
fn settle(
    podman: &mut Podman,
    started: &[(String, String)],
    last_start: Instant,
) -> Result<(), ApplyError> {
    std::thread::sleep(SETTLE_TIME.saturating_sub(last_start.elapsed()));
    for (service, container) in started {
        let st = podman.inspect_container(container)?.state;
        if !st.running && st.exit_code != 0 {
            return Err(exited_error(podman, service, container, st.exit_code));
        }
    }
    Ok(())
}

/// With `wait`: every container running, and healthy where it has a healthcheck (its own or
/// its image's), or exited 0 (a one-shot job), before the deadline.
fn wait_ready(
    podman: &mut Podman,
    project: &Project,
    health: &mut HealthDriver,
    timeout: Duration,
    deadline: Instant,
) -> Result<(), ApplyError> {
    loop {
        let mut pending = Vec::new();
        let now = Instant::now();
        for svc in &project.services {
            for container in svc.container_names() {
                let st = podman.inspect_container(&container)?.state;
                if !st.running {
                    if st.status == "exited" || st.status == "stopped" {
                        if st.exit_code != 0 {
                            return Err(exited_error(podman, &svc.name, &container, st.exit_code));
                        }
                        continue; // a one-shot service that completed
                    }
                    pending.push(format!("{container} is {}", st.status));
                    continue;
                }
                match health.status(podman, &container, now)?.as_deref() {
                    None | Some("healthy") => {}
                    Some("unhealthy") => {
                        return Err(unhealthy_error(podman, &svc.name, &container));
                    }
                    Some(other) => pending.push(format!("{container} is {other}")),
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
        sleep_until(health.next_due(), deadline);
    }
}
