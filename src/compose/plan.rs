//! Planning: what to do to Podman so that a project's containers match its compose file.
//!
//! Owns the decision, as a pure function of the desired [`Project`] and what Podman lists
//! for the project's label. Apply executes the actions in order; this module does no I/O.
//!
//! Rules, in the order the actions come out:
//! 1. **Orphans** — containers of the project whose service is no longer desired (or who
//!    carry no service label) are removed.
//! 2. **Changed** — a container whose `config-hash` label differs from the desired hash, or
//!    whose image label differs from a known image ID, is removed (dependents first) and
//!    created again. A service runs `deploy.replicas` containers, `<project>-<service>-<n>`
//!    numbered from 1 (the `container-number` label); containers numbered above it are
//!    removed (scale down), others of the service under a stale name as duplicates. Scaling
//!    up or down leaves the other replicas alone (the replica count is not hashed).
//! 3. **Networks and volumes** — when at least one container is to be created, every
//!    project network and named volume that is not `external` is ensured (create with
//!    ignore-if-exists). When nothing is created, they are left alone, so a second plan on
//!    unchanged state is empty.
//! 4. **Create and start**, in dependency order: missing containers are created and started.
//!    A plan is made when a deployment changed (or to finish a failed apply); an existing,
//!    unchanged container that is not running is then started when its restart policy says
//!    it should run, so that an apply of an unchanged project writes nothing:
//!    - `created`/`configured`/`initialized` (never ran, e.g. an interrupted apply): start;
//!    - `exited`/`stopped` with `always` or `unless-stopped`: start (a container stopped by
//!      hand is brought up by the next apply, as `docker compose up` would);
//!    - `exited`/`stopped` with `on-failure`: start when the exit code is not 0;
//!    - `exited`/`stopped` with `no`: leave it (a completed one-shot job does not rerun;
//!      `docker compose up` would rerun it, at the price of writes on every apply);
//!    - `running`, `paused`, `restarting`, `stopping` and unknown states: leave it.
//!
//!    Between applies, the observation tick restores containers by the rules of
//!    [`should_restore`] instead: restart policies, never a hand-stopped container.
//! 5. **Dependents** of a recreated or restarted service are restarted when their
//!    `depends_on` entry says `restart: true` (compose semantics), and otherwise left running.
//!    A service in `network_mode: service:<x>` is always recreated with `x`, because its
//!    network namespace goes away with `x`'s container and Podman refuses to remove `x`
//!    while it is joined.
//!
//! Orphan networks (a network no longer used by the file) are not removed by [`plan`];
//! [`plan_removal`] removes a whole project's containers and networks and keeps its named
//! volumes (they hold the workload's data).

use super::libpod::{
    CreateContext, LABEL_CONFIG_HASH, LABEL_CONTAINER_NUMBER, LABEL_DEPENDS_ON, LABEL_PROJECT,
    LABEL_SERVICE,
};
use super::order::dependency_order;
use super::project::{Project, ServiceNetwork};
use super::service::RestartPolicy;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A container as Podman lists it (`GET /libpod/containers/json?all=true` filtered by the
/// project label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualContainer {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Podman's state: `running`, `exited`, `created`, `paused`, …
    pub state: String,
    pub exit_code: Option<i64>,
    /// The ID of the image it runs (empty when unknown).
    pub image_id: String,
    /// Whether it ever ran: Podman resets a running container to `created` when it finds the
    /// device rebooted, and only this tells such a container from one never started.
    pub started_before: bool,
}

/// A network as Podman lists it (`GET /libpod/networks/json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualNetwork {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Why a container is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its service is no longer in the compose file.
    Orphan,
    /// Its configuration hash differs: it is recreated.
    ConfigChanged,
    /// It runs another image than the one the tag now names: it is recreated.
    ImageChanged,
    /// A second container for one service, or one under a stale name.
    Duplicate,
    /// A replica numbered above the service's `deploy.replicas`.
    ScaledDown,
    /// It shares the network namespace of a container that is recreated.
    NetworkProviderRecreated,
    /// The whole project is removed.
    ProjectRemoved,
}

impl RemoveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Orphan => "service no longer in the compose file",
            RemoveReason::ConfigChanged => "configuration changed",
            RemoveReason::ImageChanged => "image changed",
            RemoveReason::Duplicate => "duplicate container for the service",
            RemoveReason::ScaledDown => "the service was scaled down",
            RemoveReason::NetworkProviderRecreated => "its network_mode service is recreated",
            RemoveReason::ProjectRemoved => "project removed",
        }
    }
}

/// One step for apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ensure the network (`Project::networks`, by Podman name) exists.
    CreateNetwork { name: String },
    /// Ensure the named volume (`Project::volumes`, by Podman name) exists.
    CreateVolume { name: String },
    /// Stop and remove the container (with its anonymous volumes).
    RemoveContainer {
        id: String,
        name: String,
        reason: RemoveReason,
    },
    /// Create container `number` (from 1) of the service from `ServiceSpec::instance_body`.
    CreateContainer {
        service: String,
        container: String,
        number: u32,
    },
    /// Start the service's container. Apply first waits for the conditions of its
    /// `depends_on` (healthy, completed) on the containers started before it.
    StartContainer { service: String, container: String },
    /// Restart a kept container because a dependency it names with `restart: true` was
    /// recreated or restarted.
    RestartContainer {
        service: String,
        container: String,
        dependency: String,
    },
    /// Remove a network of the project.
    RemoveNetwork { name: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateNetwork { name } => write!(f, "create network {name:?}"),
            Action::CreateVolume { name } => write!(f, "create volume {name:?}"),
            Action::RemoveContainer { name, reason, .. } => {
                write!(f, "remove container {name:?} ({})", reason.as_str())
            }
            Action::CreateContainer {
                service, container, ..
            } => {
                write!(f, "create container {container:?} for service {service:?}")
            }
            Action::StartContainer { container, .. } => write!(f, "start container {container:?}"),
            Action::RestartContainer {
                container,
                dependency,
                ..
            } => write!(
                f,
                "restart container {container:?} (its dependency {dependency:?} was restarted)"
            ),
            Action::RemoveNetwork { name } => write!(f, "remove network {name:?}"),
        }
    }
}

/// The ordered actions; empty when Podman already matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Whether an apply starts an unchanged container that is not running (see the module docs).
fn should_start(state: &str, exit_code: Option<i64>, policy: RestartPolicy) -> bool {
    match state {
        "created" | "configured" | "initialized" => true,
        "exited" | "stopped" => match policy {
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure => exit_code != Some(0),
            RestartPolicy::No => false,
        },
        _ => false,
    }
}

/// Whether the observation tick starts a container that is not running, by its restart
/// policy, as the container engine's restart logic would after a reboot (Podman itself
/// restarts only `always` containers, and only where `podman-restart.service` runs):
/// - `created`/`configured`/`initialized` and never started: an interrupted apply: start;
/// - `created`/`configured` but started before: Podman found the device rebooted and reset
///   it; start unless the policy is `no` (`always`, `unless-stopped`, and `on-failure`,
///   which had not failed: it was running);
/// - `exited`/`stopped`: stopped by hand, or failed and given up by Podman: leave it, except
///   `always` after a reboot (what `podman-restart.service` does);
/// - anything else (running, paused, …): leave it.
pub fn should_restore(
    state: &str,
    started_before: bool,
    policy: RestartPolicy,
    rebooted: bool,
) -> bool {
    match state {
        "created" | "configured" | "initialized" => !started_before || policy != RestartPolicy::No,
        "exited" | "stopped" => rebooted && policy == RestartPolicy::Always,
        _ => false,
    }
}

/// An image ID without its algorithm prefix.
fn bare_id(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

fn remove(c: &ActualContainer, reason: RemoveReason) -> Action {
    Action::RemoveContainer {
        id: c.id.clone(),
        name: c.name.clone(),
        reason,
    }
}

/// The `container-number` label of a container, when it carries one.
fn number_of(c: &ActualContainer) -> Option<u32> {
    c.labels.get(LABEL_CONTAINER_NUMBER)?.parse().ok()
}

/// Plans the convergence of `desired` from `actual` (see the module docs for the rules).
/// Containers whose project label is not `desired.name` are never touched.
pub fn plan(desired: &Project, ctx: &CreateContext, actual: &[ActualContainer]) -> Plan {
    let ours: Vec<&ActualContainer> = actual
        .iter()
        .filter(|c| c.labels.get(LABEL_PROJECT) == Some(&desired.name))
        .collect();
    let mut actions = Vec::new();

    let mut orphans: Vec<&&ActualContainer> = ours
        .iter()
        .filter(|c| {
            c.labels
                .get(LABEL_SERVICE)
                .is_none_or(|s| desired.service(s).is_none())
        })
        .collect();
    orphans.sort_by(|a, b| a.name.cmp(&b.name));
    actions.extend(orphans.iter().map(|c| remove(c, RemoveReason::Orphan)));

    // Per service, in dependency order: removals (collected, emitted reversed) and steps.
    let mut removals: Vec<Vec<Action>> = Vec::new();
    let mut steps = Vec::new();
    let mut recreated_containers = BTreeSet::new();
    // Services whose container is created or restarted by this plan.
    let mut restarted_services: BTreeSet<&str> = BTreeSet::new();
    for spec in &desired.services {
        let hash = spec.config_hash(ctx);
        let known_image = ctx.image_ids.get(&spec.image);
        let mut candidates: Vec<&&ActualContainer> = ours
            .iter()
            .filter(|c| c.labels.get(LABEL_SERVICE) == Some(&spec.name))
            .collect();
        // Highest numbers first: a scale-down removes the last replicas first.
        candidates.sort_by_key(|c| (number_of(c), c.name.clone(), c.id.clone()));
        candidates.reverse();
        let provider_recreated = matches!(&spec.network,
            ServiceNetwork::Container(name) if recreated_containers.contains(name));
        let names = spec.container_names();
        let mut kept: BTreeMap<&str, &ActualContainer> = BTreeMap::new();
        let mut removed_here = Vec::new();
        for c in candidates {
            let reason = if !names.contains(&c.name) {
                if number_of(c).is_some_and(|n| n > spec.replicas) {
                    RemoveReason::ScaledDown
                } else {
                    RemoveReason::Duplicate
                }
            } else if kept.contains_key(c.name.as_str()) {
                RemoveReason::Duplicate
            } else if c.labels.get(LABEL_CONFIG_HASH) != Some(&hash) {
                RemoveReason::ConfigChanged
            } else if known_image
                .is_some_and(|id| !c.image_id.is_empty() && bare_id(&c.image_id) != bare_id(id))
            {
                RemoveReason::ImageChanged
            } else if provider_recreated {
                RemoveReason::NetworkProviderRecreated
            } else {
                kept.insert(c.name.as_str(), c);
                continue;
            };
            removed_here.push(remove(c, reason));
        }
        removals.push(removed_here);
        let restart_for = spec
            .depends_on
            .iter()
            .find(|(dep, d)| d.restart && restarted_services.contains(dep.as_str()))
            .map(|(dep, _)| dep.clone());
        let mut restarted = false;
        for (number, container) in (1..).zip(names) {
            match kept.get(container.as_str()) {
                Some(c) => {
                    if should_start(&c.state, c.exit_code, spec.restart.policy) {
                        steps.push(Action::StartContainer {
                            service: spec.name.clone(),
                            container,
                        });
                    } else if let Some(dependency) = &restart_for {
                        restarted = true;
                        steps.push(Action::RestartContainer {
                            service: spec.name.clone(),
                            container,
                            dependency: dependency.clone(),
                        });
                    }
                }
                None => {
                    restarted = true;
                    recreated_containers.insert(container.clone());
                    steps.push(Action::CreateContainer {
                        service: spec.name.clone(),
                        container: container.clone(),
                        number,
                    });
                    steps.push(Action::StartContainer {
                        service: spec.name.clone(),
                        container,
                    });
                }
            }
        }
        if restarted {
            restarted_services.insert(spec.name.as_str());
        }
    }
    actions.extend(removals.into_iter().rev().flatten());
    if steps
        .iter()
        .any(|a| matches!(a, Action::CreateContainer { .. }))
    {
        actions.extend(desired.networks.iter().filter(|n| !n.external).map(|n| {
            Action::CreateNetwork {
                name: n.name.clone(),
            }
        }));
        actions.extend(desired.volumes.iter().filter(|v| !v.external).map(|v| {
            Action::CreateVolume {
                name: v.name.clone(),
            }
        }));
    }
    actions.extend(steps);
    Plan { actions }
}

/// Services in start order (dependencies first) from the `com.docker.compose.depends_on`
/// labels of a project's containers, given as (service, labels). Labels written by another
/// tool may name unknown services (ignored) or form a cycle (name order is then good enough).
pub fn label_dependency_order<'a>(
    containers: impl IntoIterator<Item = (String, &'a BTreeMap<String, String>)>,
) -> Vec<String> {
    let containers: Vec<(String, &BTreeMap<String, String>)> = containers.into_iter().collect();
    let services: BTreeSet<&str> = containers.iter().map(|(s, _)| s.as_str()).collect();
    let graph: BTreeMap<String, BTreeSet<String>> = containers
        .iter()
        .map(|(service, labels)| {
            let deps = labels
                .get(LABEL_DEPENDS_ON)
                .map(|d| {
                    d.split(',')
                        .filter_map(|e| e.split(':').next())
                        .filter(|s| services.contains(s))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            (service.clone(), deps)
        })
        .collect();
    dependency_order(&graph).unwrap_or_else(|_| graph.keys().cloned().collect())
}

/// Plans removing the whole project `project`: its containers (dependents first, from
/// their `depends_on` labels), then the networks carrying its label. Named volumes are kept.
pub fn plan_removal(
    project: &str,
    containers: &[ActualContainer],
    networks: &[ActualNetwork],
) -> Plan {
    let ours: Vec<&ActualContainer> = containers
        .iter()
        .filter(|c| c.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project))
        .collect();
    let service_of = |c: &ActualContainer| {
        c.labels
            .get(LABEL_SERVICE)
            .cloned()
            .unwrap_or_else(|| c.name.clone())
    };
    let mut order = label_dependency_order(ours.iter().map(|c| (service_of(c), &c.labels)));
    order.reverse();
    let mut actions = Vec::new();
    for service in order {
        let mut of_service: Vec<&&ActualContainer> =
            ours.iter().filter(|c| service_of(c) == service).collect();
        of_service.sort_by(|a, b| a.name.cmp(&b.name));
        actions.extend(
            of_service
                .into_iter()
                .map(|c| remove(c, RemoveReason::ProjectRemoved)),
        );
    }
    let mut nets: Vec<&ActualNetwork> = networks
        .iter()
        .filter(|n| n.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project))
        .collect();
    nets.sort_by(|a, b| a.name.cmp(&b.name));
    actions.extend(nets.into_iter().map(|n| Action::RemoveNetwork {
        name: n.name.clone(),
    }));
    Plan { actions }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::compose::project::tests::from_yaml;

    const APP: &str = "\
services:
  web: {image: 'nginx:1.27', restart: always, depends_on: {api: {condition: service_healthy}}}
  api: {image: 'example/api:1', restart: on-failure, depends_on: [db], volumes: ['data:/data']}
  db: {image: 'postgres:16', restart: unless-stopped, networks: [default, back]}
networks: {back: {internal: true}}
volumes: {data: }
";

    fn ctx() -> CreateContext {
        let mut c = CreateContext::default();
        c.extra_labels
            .insert("org.margo.deployment-id".into(), "d-1".into());
        c
    }

    /// What Podman would list after creating and starting `service` of `p`.
    fn running(p: &Project, service: &str, c: &CreateContext) -> ActualContainer {
        let spec = p.service(service).unwrap();
        ActualContainer {
            id: format!("id-{}", spec.container_name),
            name: spec.container_name.clone(),
            labels: spec.container_labels(c),
            state: "running".into(),
            exit_code: None,
            image_id: c.image_ids.get(&spec.image).cloned().unwrap_or_default(),
            started_before: true,
        }
    }

    /// Applies `plan` to a simulated Podman and returns what it would then list.
    fn apply(
        p: &Project,
        c: &CreateContext,
        plan: &Plan,
        mut actual: Vec<ActualContainer>,
    ) -> Vec<ActualContainer> {
        for a in &plan.actions {
            match a {
                Action::RemoveContainer { id, .. } => actual.retain(|x| &x.id != id),
                Action::CreateContainer {
                    service,
                    container,
                    number,
                } => {
                    let spec = p.service(service).unwrap();
                    let mut created = running(p, service, c);
                    created.id = format!("id-{container}");
                    created.name = container.clone();
                    created.labels = spec.instance_labels(c, *number);
                    created.state = "created".into();
                    actual.push(created);
                }
                Action::StartContainer { container, .. }
                | Action::RestartContainer { container, .. } => {
                    for x in actual.iter_mut().filter(|x| &x.name == container) {
                        x.state = "running".into();
                    }
                }
                Action::CreateNetwork { .. }
                | Action::CreateVolume { .. }
                | Action::RemoveNetwork { .. } => {}
            }
        }
        actual
    }

    fn render(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn first_plan_creates_networks_volumes_then_containers_in_dependency_order() {
        let p = from_yaml(APP);
        let plan = plan(&p, &ctx(), &[]);
        assert_eq!(
            render(&plan),
            [
                "create network \"demo_back\"",
                "create network \"demo_default\"",
                "create volume \"demo_data\"",
                "create container \"demo-db-1\" for service \"db\"",
                "start container \"demo-db-1\"",
                "create container \"demo-api-1\" for service \"api\"",
                "start container \"demo-api-1\"",
                "create container \"demo-web-1\" for service \"web\"",
                "start container \"demo-web-1\"",
            ]
        );
    }

    #[test]
    fn second_plan_on_unchanged_state_is_empty() {
        let p = from_yaml(APP);
        let c = ctx();
        let first = plan(&p, &c, &[]);
        let actual = apply(&p, &c, &first, Vec::new());
        assert_eq!(actual.len(), 3);
        assert!(
            plan(&p, &c, &actual).is_empty(),
            "{:?}",
            plan(&p, &c, &actual)
        );
        // And after reloading the same file (a new process, a new run).
        assert!(plan(&from_yaml(APP), &c, &actual).is_empty());
    }

    const SCALED: &str = "\
services:
  db: {image: 'postgres:16'}
  worker: {image: 'example/worker:1', depends_on: [db], deploy: {replicas: 3}}
";

    #[test]
    fn replicas_are_numbered_and_created_after_their_dependencies() {
        let p = from_yaml(SCALED);
        let c = ctx();
        let first = plan(&p, &c, &[]);
        assert_eq!(
            render(&first)[1..],
            [
                "create container \"demo-db-1\" for service \"db\"",
                "start container \"demo-db-1\"",
                "create container \"demo-worker-1\" for service \"worker\"",
                "start container \"demo-worker-1\"",
                "create container \"demo-worker-2\" for service \"worker\"",
                "start container \"demo-worker-2\"",
                "create container \"demo-worker-3\" for service \"worker\"",
                "start container \"demo-worker-3\"",
            ]
        );
        let actual = apply(&p, &c, &first, Vec::new());
        let numbers: Vec<&str> = actual
            .iter()
            .map(|a| a.labels[LABEL_CONTAINER_NUMBER].as_str())
            .collect();
        assert_eq!(numbers, ["1", "1", "2", "3"]);
        // All replicas share one config hash; a second plan is empty.
        assert_eq!(
            actual[1].labels[LABEL_CONFIG_HASH],
            actual[3].labels[LABEL_CONFIG_HASH]
        );
        assert!(plan(&p, &c, &actual).is_empty());
    }

    #[test]
    fn scaling_adds_or_removes_replicas_and_leaves_the_others_alone() {
        let c = ctx();
        let three = from_yaml(SCALED);
        let actual = apply(&three, &c, &plan(&three, &c, &[]), Vec::new());

        let one = from_yaml(&SCALED.replace("replicas: 3", "replicas: 1"));
        let down = plan(&one, &c, &actual);
        assert_eq!(
            render(&down),
            [
                "remove container \"demo-worker-3\" (the service was scaled down)",
                "remove container \"demo-worker-2\" (the service was scaled down)",
            ]
        );
        let after_down = apply(&one, &c, &down, actual.clone());
        assert!(plan(&one, &c, &after_down).is_empty());

        let five = from_yaml(&SCALED.replace("replicas: 3", "replicas: 5"));
        let up = plan(&five, &c, &actual);
        assert_eq!(
            render(&up)[1..],
            [
                "create container \"demo-worker-4\" for service \"worker\"",
                "start container \"demo-worker-4\"",
                "create container \"demo-worker-5\" for service \"worker\"",
                "start container \"demo-worker-5\"",
            ]
        );

        let zero = from_yaml(&SCALED.replace("replicas: 3", "replicas: 0"));
        let none = plan(&zero, &c, &actual);
        assert_eq!(none.actions.len(), 3, "{:?}", render(&none));
        assert!(none.actions.iter().all(|a| matches!(
            a,
            Action::RemoveContainer {
                reason: RemoveReason::ScaledDown,
                ..
            }
        )));

        // A change of the definition recreates every replica, dependents first.
        let changed = from_yaml(&SCALED.replace("example/worker:1", "example/worker:2"));
        let lines = render(&plan(&changed, &c, &actual));
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("(configuration changed)"))
                .count(),
            3,
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.contains("demo-db-1")), "{lines:?}");
    }

    #[test]
    fn removes_orphans_of_services_no_longer_desired() {
        let old = from_yaml(APP);
        let c = ctx();
        let actual = apply(&old, &c, &plan(&old, &c, &[]), Vec::new());
        let new = from_yaml(&APP.replace("  web: {image: 'nginx:1.27', restart: always, depends_on: {api: {condition: service_healthy}}}\n", ""));
        let plan = plan(&new, &c, &actual);
        assert_eq!(
            render(&plan),
            ["remove container \"demo-web-1\" (service no longer in the compose file)"]
        );
        assert!(
            matches!(&plan.actions[0], Action::RemoveContainer { id, .. } if id == "id-demo-web-1")
        );
    }

    #[test]
    fn recreates_a_container_whose_config_hash_differs() {
        let old = from_yaml(APP);
        let c = ctx();
        let actual = apply(&old, &c, &plan(&old, &c, &[]), Vec::new());
        let new = from_yaml(&APP.replace("postgres:16", "postgres:17"));
        let plan = plan(&new, &c, &actual);
        assert_eq!(
            render(&plan),
            [
                "remove container \"demo-db-1\" (configuration changed)",
                "create network \"demo_back\"",
                "create network \"demo_default\"",
                "create volume \"demo_data\"",
                "create container \"demo-db-1\" for service \"db\"",
                "start container \"demo-db-1\"",
            ],
            "dependents (api, web) are not recreated in this first cut"
        );
        let after = apply(&new, &c, &plan, actual);
        assert!(super::plan(&new, &c, &after).is_empty());
    }

    #[test]
    fn recreates_when_the_tag_now_names_another_image() {
        let p = from_yaml(APP);
        let mut c = ctx();
        c.image_ids
            .insert("docker.io/library/postgres:16".into(), "sha256:old".into());
        let actual = apply(&p, &c, &plan(&p, &c, &[]), Vec::new());
        assert!(plan(&p, &c, &actual).is_empty());
        c.image_ids
            .insert("docker.io/library/postgres:16".into(), "sha256:new".into());
        let plan = plan(&p, &c, &actual);
        assert_eq!(
            plan.actions[0].to_string(),
            "remove container \"demo-db-1\" (image changed)"
        );
    }

    #[test]
    fn removes_changed_containers_dependents_first() {
        let old = from_yaml(APP);
        let c = ctx();
        let actual = apply(&old, &c, &plan(&old, &c, &[]), Vec::new());
        let new = from_yaml(
            &APP.replace("postgres:16", "postgres:17")
                .replace("nginx:1.27", "nginx:1.28"),
        );
        let removals: Vec<String> = plan(&new, &c, &actual)
            .actions
            .iter()
            .filter(|a| matches!(a, Action::RemoveContainer { .. }))
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            removals,
            [
                "remove container \"demo-web-1\" (configuration changed)",
                "remove container \"demo-db-1\" (configuration changed)",
            ]
        );
    }

    #[test]
    fn an_apply_starts_stopped_containers_only_when_their_restart_policy_says_so() {
        let cases = [
            // (restart, state, exit code, started?)
            ("always", "exited", Some(0), true),
            ("unless-stopped", "exited", Some(137), true),
            ("on-failure", "exited", Some(1), true),
            ("on-failure", "exited", Some(0), false),
            ("'no'", "exited", Some(0), false),
            ("'no'", "exited", Some(1), false),
            ("'no'", "created", None, true),
            ("always", "running", None, false),
            ("always", "paused", None, false),
            ("always", "restarting", None, false),
        ];
        for (restart, state, exit_code, started) in cases {
            let p = from_yaml(&format!(
                "services: {{job: {{image: x, restart: {restart}}}}}"
            ));
            let c = ctx();
            let mut container = running(&p, "job", &c);
            container.state = state.into();
            container.exit_code = exit_code;
            let plan = plan(&p, &c, &[container]);
            let expected: Vec<String> = if started {
                vec!["start container \"demo-job-1\"".into()]
            } else {
                vec![]
            };
            assert_eq!(
                render(&plan),
                expected,
                "restart {restart}, {state} {exit_code:?}"
            );
        }
    }

    #[test]
    fn restores_by_restart_policy_between_applies() {
        use RestartPolicy::{Always, No, OnFailure, UnlessStopped};
        // (state, started before, policy, rebooted, restored?)
        let cases = [
            // reset to created by a reboot: it was running
            ("created", true, Always, true, true),
            ("created", true, UnlessStopped, false, true),
            ("configured", true, OnFailure, true, true),
            ("created", true, No, true, false),
            // never started: an interrupted apply
            ("created", false, No, false, true),
            // exited: by hand, or given up by Podman
            ("exited", true, UnlessStopped, true, false),
            ("exited", true, OnFailure, true, false),
            ("exited", true, Always, false, false),
            ("exited", true, Always, true, true),
            ("stopped", true, No, true, false),
            ("running", true, Always, true, false),
            ("paused", true, Always, true, false),
        ];
        for (state, before, policy, rebooted, expected) in cases {
            assert_eq!(
                should_restore(state, before, policy, rebooted),
                expected,
                "{state} started_before={before} {policy:?} rebooted={rebooted}"
            );
        }
    }

    #[test]
    fn restarts_dependents_only_with_restart_true() {
        let yaml = |tag: &str| {
            format!(
                "services:
  db: {{image: 'db:{tag}'}}
  api: {{image: api, depends_on: {{db: {{condition: service_started, restart: true}}}}}}
  web: {{image: web, depends_on: [db]}}
"
            )
        };
        let c = ctx();
        let p1 = from_yaml(&yaml("1"));
        let actual = apply(&p1, &c, &plan(&p1, &c, &[]), Vec::new());
        let p2 = from_yaml(&yaml("2"));
        let update = plan(&p2, &c, &actual);
        assert_eq!(
            render(&update),
            [
                "remove container \"demo-db-1\" (configuration changed)",
                "create network \"demo_default\"",
                "create container \"demo-db-1\" for service \"db\"",
                "start container \"demo-db-1\"",
                "restart container \"demo-api-1\" (its dependency \"db\" was restarted)",
            ]
        );
        let after = apply(&p2, &c, &update, actual);
        assert!(plan(&p2, &c, &after).is_empty());
    }

    #[test]
    fn removes_duplicate_containers_of_a_service() {
        let p = from_yaml("services: {web: {image: x}}");
        let c = ctx();
        let good = running(&p, "web", &c);
        let mut second = good.clone();
        second.id = "id-2".into();
        second.name = "demo-web-2".into();
        let plan = plan(&p, &c, &[second, good]);
        assert_eq!(
            render(&plan),
            ["remove container \"demo-web-2\" (duplicate container for the service)"]
        );
    }

    #[test]
    fn never_touches_containers_of_other_projects() {
        let p = from_yaml("services: {web: {image: x}}");
        let c = ctx();
        let mut foreign = running(&p, "web", &c);
        foreign.labels.insert(LABEL_PROJECT.into(), "other".into());
        foreign.id = "foreign".into();
        let unlabelled = ActualContainer {
            id: "x".into(),
            name: "random".into(),
            labels: BTreeMap::new(),
            state: "running".into(),
            exit_code: None,
            image_id: String::new(),
            started_before: true,
        };
        let plan = plan(&p, &c, &[foreign, unlabelled]);
        assert!(
            plan.actions
                .iter()
                .all(|a| !matches!(a, Action::RemoveContainer { .. })),
            "{plan:?}"
        );
    }

    #[test]
    fn removes_project_containers_without_a_service_label_as_orphans() {
        let p = from_yaml("services: {web: {image: x}}");
        let c = ctx();
        let stray = ActualContainer {
            id: "s".into(),
            name: "demo-stray".into(),
            labels: BTreeMap::from([(LABEL_PROJECT.to_string(), "demo".to_string())]),
            state: "exited".into(),
            exit_code: Some(0),
            image_id: String::new(),
            started_before: true,
        };
        let plan = plan(&p, &c, &[running(&p, "web", &c), stray]);
        assert_eq!(
            render(&plan),
            ["remove container \"demo-stray\" (service no longer in the compose file)"]
        );
    }

    #[test]
    fn recreates_network_mode_dependents_with_their_provider() {
        let yaml = "services:\n  vpn: {image: 'vpn:1'}\n  app: {image: 'app:1', network_mode: 'service:vpn'}\n  web: {image: 'web:1', depends_on: [vpn]}";
        let old = from_yaml(yaml);
        let c = ctx();
        let actual = apply(&old, &c, &plan(&old, &c, &[]), Vec::new());
        let new = from_yaml(&yaml.replace("vpn:1", "vpn:2"));
        let plan = plan(&new, &c, &actual);
        let lines = render(&plan);
        assert_eq!(
            lines[0],
            "remove container \"demo-app-1\" (its network_mode service is recreated)"
        );
        assert_eq!(
            lines[1],
            "remove container \"demo-vpn-1\" (configuration changed)"
        );
        assert!(lines.contains(&"create container \"demo-app-1\" for service \"app\"".to_string()));
        assert!(
            !lines.iter().any(|l| l.contains("demo-web-1")),
            "plain depends_on is not recreated: {lines:?}"
        );
    }

    #[test]
    fn removal_plan_removes_dependents_first_then_networks_and_keeps_volumes() {
        let p = from_yaml(APP);
        let c = ctx();
        let mut actual = apply(&p, &c, &plan(&p, &c, &[]), Vec::new());
        actual.reverse();
        let label =
            |project: &str| BTreeMap::from([(LABEL_PROJECT.to_string(), project.to_string())]);
        let networks = [
            ActualNetwork {
                name: "demo_default".into(),
                labels: label("demo"),
            },
            ActualNetwork {
                name: "demo_back".into(),
                labels: label("demo"),
            },
            ActualNetwork {
                name: "plant-lan".into(),
                labels: BTreeMap::new(),
            },
            ActualNetwork {
                name: "other_default".into(),
                labels: label("other"),
            },
        ];
        let plan = plan_removal("demo", &actual, &networks);
        assert_eq!(
            render(&plan),
            [
                "remove container \"demo-web-1\" (project removed)",
                "remove container \"demo-api-1\" (project removed)",
                "remove container \"demo-db-1\" (project removed)",
                "remove network \"demo_back\"",
                "remove network \"demo_default\"",
            ]
        );
        assert!(plan_removal("demo", &[], &[]).is_empty());
    }
}
