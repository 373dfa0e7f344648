//! From a typed compose file to the project margo-agent runs: names resolved, paths made
//! absolute, environment merged, dependencies ordered, and everything validated.
//!
//! Owns the cross-service rules: project name normalisation, container naming
//! (`<project>-<service>-1` unless `container_name`), image qualification
//! (`busybox` → `docker.io/library/busybox:latest`, as docker resolves short names, because
//! Podman's short-name resolution needs a TTY), `depends_on` targets and cycles, references to
//! declared networks and volumes, relative paths that must stay inside the project directory,
//! duplicate container names, and which networks and volumes are actually used (only those are
//! created).
//!
//! The only I/O is reading `env_file`s inside the project directory, and resolving symlinks
//! of paths that already exist there so a link cannot lead a relative path outside it.

use super::dotenv;
use super::error::{ComposeError, Warning};
use super::file::{ComposeFile, Subnet};
use super::interpolate::Lookup;
use super::order::dependency_order;
use super::paths::inside_project;
use super::service::NetworkAttachment;
use super::service::{
    Condition, Dependency, FileRef, Healthcheck, Limits, Logging, Mount, NetworkMode, PullPolicy,
    Restart, RestartPolicy, Service, Ulimit,
};
use super::syntax::Port;
use crate::oci::reference::Reference;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A project ready to be planned and applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// Normalised: `^[a-z0-9][a-z0-9_-]*$`.
    pub name: String,
    /// The package directory holding the compose file; relative paths resolve against it.
    pub working_dir: PathBuf,
    /// Enabled services, dependencies before dependents (ties in name order).
    pub services: Vec<ServiceSpec>,
    /// Networks used by at least one service, in key order.
    pub networks: Vec<NetworkSpec>,
    /// Named volumes used by at least one service, in key order.
    pub volumes: Vec<VolumeSpec>,
}

impl Project {
    /// The service with key `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The network with Podman name `name` (as a plan's `CreateNetwork` names it).
    pub fn network(&self, name: &str) -> Option<&NetworkSpec> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The volume with Podman name `name` (as a plan's `CreateVolume` names it).
    pub fn volume(&self, name: &str) -> Option<&VolumeSpec> {
        self.volumes.iter().find(|v| v.name == name)
    }
}

/// The project-level facts every container is labelled with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectInfo {
    pub name: String,
    #[serde(serialize_with = "lossy_path")]
    pub working_dir: PathBuf,
    #[serde(serialize_with = "lossy_path")]
    pub config_file: PathBuf,
}

/// Paths are hashed as text; a non-UTF-8 path must not make serialisation fail.
fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// Everything needed to create one service's container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub project: ProjectInfo,
    /// The service key.
    pub name: String,
    /// The first (or only) container's name; see [`ServiceSpec::container_names`].
    pub container_name: String,
    /// `deploy.replicas` / `scale`. Not hashed (as docker compose): scaling adds or removes
    /// containers and leaves the others alone.
    #[serde(skip)]
    pub replicas: u32,
    /// Fully qualified: `registry/repository:tag` or `…@sha256:…`.
    pub image: String,
    pub platform: Option<String>,
    pub pull_policy: PullPolicy,
    pub command: Option<Vec<String>>,
    /// `Some(vec![])` clears the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// `env_file`s, then `environment`, unset bare names left out.
    pub environment: BTreeMap<String, String>,
    pub ports: Vec<Port>,
    /// Bind sources absolute; volume sources are Podman volume names.
    pub mounts: Vec<Mount>,
    pub network: ServiceNetwork,
    pub restart: Restart,
    /// The file's labels only; the compose and agent labels are added by the body builder.
    pub labels: BTreeMap<String, String>,
    /// Includes the dependency implied by `network_mode: service:…`.
    pub depends_on: BTreeMap<String, Dependency>,
    pub hostname: Option<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub stop_signal: Option<i64>,
    pub stop_grace_period: Option<Duration>,
    pub privileged: bool,
    pub tty: bool,
    pub stdin_open: bool,
    pub read_only: bool,
    pub init: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    // Fields added after the first release are left out of the config hash while unset,
    // so that upgrading margo-agent does not recreate containers that do not use them.
    /// `host:container:permissions`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `ulimits` by docker name (`nofile`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Static addresses by Podman network name (only networks that have one).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, Addresses>,
    pub dns: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub limits: Limits,
    pub profiles: Vec<String>,
}

impl ServiceSpec {
    /// The name of container `number` (from 1): `container_name` for the first, else
    /// `<project>-<service>-<number>` (a fixed `container_name` allows one replica).
    pub fn instance(&self, number: u32) -> String {
        if number == 1 {
            self.container_name.clone()
        } else {
            instance_name(&self.project.name, &self.name, number)
        }
    }

    /// Every container of the service, in number order (none with 0 replicas).
    pub fn container_names(&self) -> Vec<String> {
        (1..=self.replicas).map(|n| self.instance(n)).collect()
    }
}

/// Static addresses of a container on one network (`ipv4_address`, `ipv6_address`,
/// `mac_address`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Addresses {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// How a container is networked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceNetwork {
    /// Project networks (Podman names) with the DNS aliases the container answers to.
    Networks(BTreeMap<String, Vec<String>>),
    /// `network_mode: bridge`: Podman's default network.
    PodmanDefault,
    Host,
    None,
    /// `network_mode: service:x`: the container name whose namespace is joined.
    Container(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSpec {
    pub key: String,
    /// The Podman network name.
    pub name: String,
    pub external: bool,
    pub internal: bool,
    pub enable_ipv6: bool,
    pub labels: BTreeMap<String, String>,
    pub subnets: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSpec {
    pub key: String,
    /// The Podman volume name.
    pub name: String,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
    pub driver_opts: BTreeMap<String, String>,
}

/// Label prefixes that belong to the engine and the agent; a compose file may not set them,
/// because the plan relies on them to recognise its containers.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["com.docker.compose.", "org.margo."];

/// Inputs of [`normalise`] besides the file.
pub struct Context<'a> {
    pub project_name: &'a str,
    pub working_dir: &'a Path,
    pub config_file: &'a Path,
    /// Active profiles: a service with `profiles` runs only when one of them is active.
    pub profiles: &'a [String],
    /// Variables for bare `environment` names and for `env_file` interpolation.
    pub lookup: Lookup<'a>,
}

/// Normalises a project name the way docker compose does: lowercase, keep `[a-z0-9_-]`,
/// drop leading `_`/`-`. Refuses a name left empty.
pub fn normalise_project_name(raw: &str) -> Result<String, ComposeError> {
    let kept: String = raw
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        .collect();
    let name = kept.trim_start_matches(['_', '-']).to_string();
    if name.is_empty() {
        return Err(ComposeError::invalid(
            "name",
            format!("project name {raw:?} has no letter or digit left after normalisation"),
        ));
    }
    Ok(name)
}

/// Turns a parsed file into a validated [`Project`].
pub fn normalise(
    file: &ComposeFile,
    cx: &Context<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Project, ComposeError> {
    let project = normalise_project_name(cx.project_name)?;
    let info = ProjectInfo {
        name: project.clone(),
        working_dir: cx.working_dir.to_path_buf(),
        config_file: cx.config_file.to_path_buf(),
    };
    let enabled: BTreeMap<&str, &Service> = file
        .services
        .iter()
        .filter(|(_, s)| {
            s.profiles.is_empty() || s.profiles.iter().any(|p| cx.profiles.contains(p))
        })
        .map(|(k, s)| (k.as_str(), s))
        .collect();
    if enabled.is_empty() {
        return Err(ComposeError::invalid(
            "services",
            "every service is disabled by its profiles; no profile is active",
        ));
    }
    let container_names = container_names(&project, &enabled)?;
    let mut used_networks = BTreeSet::new();
    let mut used_volumes = BTreeSet::new();
    let mut specs = BTreeMap::new();
    for (&name, s) in &enabled {
        let path = format!("services.{name}");
        let container_name = container_names[name].clone();
        let mut depends_on = s.depends_on.clone();
        for target in depends_on.keys() {
            if !enabled.contains_key(target.as_str()) {
                return Err(missing_service(&path, "depends_on", target, file));
            }
        }
        check_replicas(s, &path)?;
        if s.network_mode.is_some() && s.mac_address.is_some() {
            return Err(ComposeError::invalid(
                &format!("{path}.mac_address"),
                "a MAC address needs a project network; network_mode is set",
            ));
        }
        let mut addresses = BTreeMap::new();
        let network = match &s.network_mode {
            Some(NetworkMode::Host) => ServiceNetwork::Host,
            Some(NetworkMode::None) => ServiceNetwork::None,
            Some(NetworkMode::Bridge) => ServiceNetwork::PodmanDefault,
            Some(NetworkMode::Service(target)) => {
                let Some(other) = container_names.get(target.as_str()) else {
                    return Err(missing_service(&path, "network_mode", target, file));
                };
                if enabled
                    .get(target.as_str())
                    .is_some_and(|t| t.replicas == 0)
                {
                    return Err(ComposeError::invalid(
                        &format!("{path}.network_mode"),
                        format!("service {target:?} has 0 replicas: no container to join"),
                    ));
                }
                depends_on.entry(target.clone()).or_insert(Dependency {
                    condition: Condition::ServiceStarted,
                    required: true,
                    restart: false,
                });
                ServiceNetwork::Container(other.clone())
            }
            None => ServiceNetwork::Networks(attach(
                name,
                s,
                &container_name,
                &project,
                file,
                &mut used_networks,
                &mut addresses,
            )?),
        };
        let mut mounts = Vec::new();
        for (i, m) in s.mounts.iter().enumerate() {
            let mpath = format!("{path}.volumes[{i}]");
            mounts.push(resolve_mount(
                m,
                &mpath,
                &project,
                file,
                cx.working_dir,
                &mut used_volumes,
            )?);
        }
        for (kind, refs, defs) in [
            ("secrets", &s.secrets, &file.secrets),
            ("configs", &s.configs, &file.configs),
        ] {
            for (i, r) in refs.iter().enumerate() {
                let rpath = format!("{path}.{kind}[{i}]");
                mounts.push(file_mount(kind, r, defs, &rpath, cx.working_dir)?);
            }
        }
        specs.insert(
            name.to_string(),
            ServiceSpec {
                project: info.clone(),
                name: name.to_string(),
                container_name,
                replicas: s.replicas,
                image: qualify_image(s.image.as_deref(), &path)?,
                platform: s.platform.clone(),
                pull_policy: s.pull_policy,
                command: check_command(s, &path)?,
                entrypoint: s.entrypoint.clone(),
                environment: environment(s, &path, cx, warnings)?,
                ports: s.ports.clone(),
                mounts,
                network,
                restart: s.restart.unwrap_or(Restart {
                    policy: RestartPolicy::No,
                    max_retries: None,
                }),
                labels: check_labels(&s.labels, &path)?,
                depends_on,
                hostname: s.hostname.clone(),
                working_dir: s.working_dir.clone(),
                user: s.user.clone(),
                healthcheck: s.healthcheck.clone(),
                stop_signal: s.stop_signal,
                stop_grace_period: s.stop_grace_period,
                privileged: s.privileged,
                tty: s.tty,
                stdin_open: s.stdin_open,
                read_only: s.read_only,
                init: s.init,
                cap_add: s.cap_add.clone(),
                cap_drop: s.cap_drop.clone(),
                devices: s.devices.clone(),
                security_opt: security_opt(&s.security_opt, &path, cx.working_dir)?,
                pid: s.pid.clone(),
                ipc: s.ipc.clone(),
                sysctls: s.sysctls.clone(),
                ulimits: s.ulimits.clone(),
                shm_size: s.shm_size,
                group_add: s.group_add.clone(),
                oom_score_adj: s.oom_score_adj,
                annotations: s.annotations.clone(),
                dns_search: s.dns_search.clone(),
                dns_opt: s.dns_opt.clone(),
                domainname: s.domainname.clone(),
                logging: s.logging.clone(),
                addresses,
                dns: s.dns.clone(),
                extra_hosts: s.extra_hosts.clone(),
                limits: s.limits,
                profiles: s.profiles.clone(),
            },
        );
    }
    link(&enabled, file, &mut specs)?;
    let graph = specs
        .iter()
        .map(|(k, s)| (k.clone(), s.depends_on.keys().cloned().collect()))
        .collect();
    let services = dependency_order(&graph)?
        .into_iter()
        .filter_map(|name| specs.remove(&name))
        .collect();
    Ok(Project {
        name: project.clone(),
        working_dir: cx.working_dir.to_path_buf(),
        services,
        networks: used_networks
            .iter()
            .map(|key| network_spec(&project, file, key))
            .collect(),
        volumes: used_volumes
            .iter()
            .map(|key| volume_spec(&project, file, key))
            .collect(),
    })
}

/// The project networks a service joins (`default` when it names none), by Podman name,
/// with its DNS aliases: the service name, its `container_name`, then configured aliases.
/// Static addresses go to `addresses`; a service-level `mac_address` needs exactly one
/// network.
fn attach(
    service: &str,
    s: &Service,
    container_name: &str,
    project: &str,
    file: &ComposeFile,
    used_networks: &mut BTreeSet<String>,
    addresses: &mut BTreeMap<String, Addresses>,
) -> Result<BTreeMap<String, Vec<String>>, ComposeError> {
    let default = NetworkAttachment::default();
    let keys: Vec<(&str, &NetworkAttachment)> = if s.networks.is_empty() {
        vec![("default", &default)]
    } else {
        s.networks.iter().map(|(k, a)| (k.as_str(), a)).collect()
    };
    if s.mac_address.is_some() && keys.len() > 1 {
        return Err(ComposeError::invalid(
            &format!("services.{service}.mac_address"),
            "the service joins several networks; set mac_address under networks.<name> instead",
        ));
    }
    let mut attached = BTreeMap::new();
    for (key, a) in keys {
        if key != "default" && !file.networks.contains_key(key) {
            return Err(ComposeError::invalid(
                &format!("services.{service}.networks"),
                format!("network {key:?} is not declared under the top-level networks key"),
            ));
        }
        used_networks.insert(key.to_string());
        let mut aliases = vec![service.to_string()];
        if s.container_name.is_some() {
            aliases.push(container_name.to_string());
        }
        aliases.extend(a.aliases.iter().cloned());
        dedup_keep_order(&mut aliases);
        let net_name = network_spec(project, file, key).name;
        let fixed = Addresses {
            ips: [&a.ipv4_address, &a.ipv6_address]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            mac: a.mac_address.clone().or_else(|| s.mac_address.clone()),
        };
        if fixed != Addresses::default() {
            addresses.insert(net_name.clone(), fixed);
        }
        attached.insert(net_name, aliases);
    }
    Ok(attached)
}

/// `links`: the linked service must be enabled; it starts first, and answers to the link
/// alias on every network it shares with the linking service. (Docker scopes a link alias to
/// the linking container; on a Podman network the alias is visible to the whole network.)
fn link(
    enabled: &BTreeMap<&str, &Service>,
    file: &ComposeFile,
    specs: &mut BTreeMap<String, ServiceSpec>,
) -> Result<(), ComposeError> {
    let networks_of = |spec: Option<&ServiceSpec>| -> BTreeSet<String> {
        match spec.map(|s| &s.network) {
            Some(ServiceNetwork::Networks(n)) => n.keys().cloned().collect(),
            _ => BTreeSet::new(),
        }
    };
    for (&name, s) in enabled {
        let path = format!("services.{name}");
        for (target, alias) in &s.links {
            if !specs.contains_key(target) {
                return Err(missing_service(&path, "links", target, file));
            }
            let mine = networks_of(specs.get(name));
            let shared: Vec<String> = networks_of(specs.get(target))
                .intersection(&mine)
                .cloned()
                .collect();
            if shared.is_empty() {
                return Err(ComposeError::invalid(
                    &format!("{path}.links"),
                    format!("service {target:?} and this service share no project network"),
                ));
            }
            if let Some(alias) = alias
                && let Some(ServiceNetwork::Networks(nets)) =
                    specs.get_mut(target).map(|t| &mut t.network)
            {
                for n in &shared {
                    if let Some(aliases) = nets.get_mut(n)
                        && !aliases.contains(alias)
                    {
                        aliases.push(alias.clone());
                    }
                }
            }
            if let Some(me) = specs.get_mut(name) {
                me.depends_on.entry(target.clone()).or_insert(Dependency {
                    condition: Condition::ServiceStarted,
                    required: true,
                    restart: false,
                });
            }
        }
    }
    Ok(())
}

/// A service's secret or config: a read-only bind of the top-level entry's file, which must
/// be a file inside the package. Secrets go to `/run/secrets/<name>`, configs to `/<name>`,
/// unless `target` says otherwise (a relative target is taken under those directories).
fn file_mount(
    kind: &str,
    r: &FileRef,
    defs: &BTreeMap<String, String>,
    path: &str,
    dir: &Path,
) -> Result<Mount, ComposeError> {
    let Some(file) = defs.get(&r.source) else {
        return Err(ComposeError::invalid(
            path,
            format!(
                "{:?} is not declared under the top-level {kind} key",
                r.source
            ),
        ));
    };
    let source = inside_project(dir, file, path)?;
    if !source.is_file() {
        return Err(ComposeError::invalid(
            path,
            format!("{file:?} is not a file in the package"),
        ));
    }
    let base = if kind == "secrets" {
        "/run/secrets/"
    } else {
        "/"
    };
    let target = match &r.target {
        Some(t) if t.starts_with('/') => t.clone(),
        Some(t) => format!("{base}{t}"),
        None => format!("{base}{}", r.source),
    };
    Ok(Mount::Bind {
        source: source.to_string_lossy().into_owned(),
        target,
        read_only: true,
        // The file exists (checked above); never let apply create a directory in its place.
        create_host_path: false,
        propagation: None,
        selinux: None,
    })
}

/// `security_opt` with a `seccomp=<path>` profile resolved inside the package: a profile
/// elsewhere on the device is the device policy's business, not the package's.
fn security_opt(opts: &[String], path: &str, dir: &Path) -> Result<Vec<String>, ComposeError> {
    opts.iter()
        .enumerate()
        .map(|(i, o)| match o.strip_prefix("seccomp=") {
            Some(p) if p != "unconfined" => {
                let file = inside_project(dir, p, &format!("{path}.security_opt[{i}]"))?;
                Ok(format!("seccomp={}", file.to_string_lossy()))
            }
            _ => Ok(o.clone()),
        })
        .collect()
}

fn missing_service(path: &str, key: &str, target: &str, file: &ComposeFile) -> ComposeError {
    let why = if file.services.contains_key(target) {
        "is disabled by its profiles"
    } else {
        "is not defined"
    };
    ComposeError::invalid(
        &format!("{path}.{key}"),
        format!("service {target:?} {why}"),
    )
}

fn dedup_keep_order(items: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    items.retain(|i| seen.insert(i.clone()));
}

/// The name of container `n` (from 1) of a service without `container_name`.
pub fn instance_name(project: &str, service: &str, n: u32) -> String {
    format!("{project}-{service}-{n}")
}

/// The first container name of every enabled service; refuses names Podman rejects and
/// duplicates among all containers of the project (replicas included).
fn container_names(
    project: &str,
    enabled: &BTreeMap<&str, &Service>,
) -> Result<BTreeMap<String, String>, ComposeError> {
    let mut names = BTreeMap::new();
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    for (&service, s) in enabled {
        let mut all: Vec<String> = match &s.container_name {
            Some(n) => vec![n.clone()],
            None => (1..=s.replicas.max(1))
                .map(|n| instance_name(project, service, n))
                .collect(),
        };
        let path = format!("services.{service}.container_name");
        for name in &all {
            let valid = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid {
                return Err(ComposeError::invalid(
                    &path,
                    format!("container name {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
                ));
            }
            if let Some(other) = owner.insert(name.clone(), service) {
                return Err(ComposeError::invalid(
                    &path,
                    format!("container name {name:?} is also used by service {other:?}"),
                ));
            }
        }
        names.insert(service.to_string(), all.swap_remove(0));
    }
    Ok(names)
}

/// What several containers of one service cannot share: a fixed name, a fixed host port,
/// a static address.
fn check_replicas(s: &Service, path: &str) -> Result<(), ComposeError> {
    let n = s.replicas;
    if n <= 1 {
        return Ok(());
    }
    let why = format!("{n} replicas requested");
    if s.container_name.is_some() {
        return Err(ComposeError::invalid(
            &format!("{path}.container_name"),
            format!("a fixed container name allows one container; {why}"),
        ));
    }
    for (i, p) in s.ports.iter().enumerate() {
        if let Some(host) = p.published {
            return Err(ComposeError::invalid(
                &format!("{path}.ports[{i}]"),
                format!(
                    "host port {host} can be published by one container only; {why} (publish the container port alone to get a free host port per replica)"
                ),
            ));
        }
    }
    if s.mac_address.is_some() {
        return Err(ComposeError::invalid(
            &format!("{path}.mac_address"),
            format!("a MAC address belongs to one container; {why}"),
        ));
    }
    for (net, a) in &s.networks {
        if a.ipv4_address.is_some() || a.ipv6_address.is_some() || a.mac_address.is_some() {
            return Err(ComposeError::invalid(
                &format!("{path}.networks.{net}"),
                format!("a static address belongs to one container; {why}"),
            ));
        }
    }
    Ok(())
}

fn qualify_image(image: Option<&str>, path: &str) -> Result<String, ComposeError> {
    let path = format!("{path}.image");
    let Some(image) = image.filter(|i| !i.trim().is_empty()) else {
        return Err(ComposeError::invalid(
            &path,
            "every service needs an image; margo-agent does not build images",
        ));
    };
    let r = Reference::parse(image).map_err(|e| ComposeError::invalid(&path, e.to_string()))?;
    let mut q = r.name();
    if let Some(tag) = &r.tag {
        q.push(':');
        q.push_str(tag);
    } else if r.digest.is_none() {
        q.push_str(":latest");
    }
    if let Some(d) = &r.digest {
        q.push('@');
        q.push_str(d.as_str());
    }
    Ok(q)
}

/// Podman can clear an image's CMD only by also setting an entrypoint (a set entrypoint
/// discards the image CMD), so `command: []` alone cannot be honoured.
fn check_command(s: &Service, path: &str) -> Result<Option<Vec<String>>, ComposeError> {
    if s.command.as_ref().is_some_and(Vec::is_empty) && s.entrypoint.is_none() {
        return Err(ComposeError::invalid(
            &format!("{path}.command"),
            "an empty command clears the image's CMD, which Podman can only do when entrypoint is also set",
        ));
    }
    Ok(s.command.clone())
}

fn check_labels(
    labels: &BTreeMap<String, String>,
    path: &str,
) -> Result<BTreeMap<String, String>, ComposeError> {
    for key in labels.keys() {
        if RESERVED_LABEL_PREFIXES.iter().any(|p| key.starts_with(p)) {
            return Err(ComposeError::invalid(
                &format!("{path}.labels.{key}"),
                "labels starting with com.docker.compose. or org.margo. are set by margo-agent",
            ));
        }
    }
    Ok(labels.clone())
}

fn environment(
    s: &Service,
    path: &str,
    cx: &Context<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<BTreeMap<String, String>, ComposeError> {
    let mut env = BTreeMap::new();
    for (i, f) in s.env_file.iter().enumerate() {
        let fpath = format!("{path}.env_file[{i}]");
        let file = inside_project(cx.working_dir, &f.path, &fpath)?;
        if !file.exists() {
            if !f.required {
                continue;
            }
            return Err(ComposeError::invalid(
                &fpath,
                format!("env file {:?} does not exist in the package", f.path),
            ));
        }
        for (k, v) in dotenv::read_env_file(&file, cx.lookup, warnings)? {
            match v.or_else(|| (cx.lookup)(&k)) {
                Some(v) => env.insert(k, v),
                None => env.remove(&k),
            };
        }
    }
    for (k, v) in &s.environment {
        match v.clone().or_else(|| (cx.lookup)(k)) {
            Some(v) => env.insert(k.clone(), v),
            None => env.remove(k),
        };
    }
    Ok(env)
}

fn resolve_mount(
    m: &Mount,
    path: &str,
    project: &str,
    file: &ComposeFile,
    dir: &Path,
    used_volumes: &mut BTreeSet<String>,
) -> Result<Mount, ComposeError> {
    Ok(match m {
        Mount::Bind {
            source,
            target,
            read_only,
            create_host_path,
            propagation,
            selinux,
        } => {
            let source = if source.starts_with('~') {
                return Err(ComposeError::invalid(
                    path,
                    "a bind source under ~ has no meaning on a device; use a path in the package or an absolute path",
                ));
            } else if source.starts_with('/') {
                source.clone()
            } else {
                inside_project(dir, source, path)?
                    .to_string_lossy()
                    .into_owned()
            };
            Mount::Bind {
                source,
                target: target.clone(),
                read_only: *read_only,
                create_host_path: *create_host_path,
                propagation: propagation.clone(),
                selinux: selinux.clone(),
            }
        }
        Mount::Volume {
            source,
            target,
            read_only,
            nocopy,
        } => {
            let name = match source {
                None => None,
                Some(key) if file.volumes.contains_key(key) => {
                    used_volumes.insert(key.clone());
                    Some(volume_spec(project, file, key).name)
                }
                Some(key) => {
                    return Err(ComposeError::invalid(
                        path,
                        format!("volume {key:?} is not declared under the top-level volumes key"),
                    ));
                }
            };
            Mount::Volume {
                source: name,
                target: target.clone(),
                read_only: *read_only,
                nocopy: *nocopy,
            }
        }
        Mount::Tmpfs { .. } => m.clone(),
    })
}

fn network_spec(project: &str, file: &ComposeFile, key: &str) -> NetworkSpec {
    let def = file.networks.get(key).cloned().unwrap_or_default();
    let name = match (&def.name, def.external) {
        (Some(n), _) => n.clone(),
        (None, true) => key.to_string(),
        (None, false) => format!("{project}_{key}"),
    };
    NetworkSpec {
        key: key.to_string(),
        name,
        external: def.external,
        internal: def.internal,
        enable_ipv6: def.enable_ipv6,
        labels: def.labels,
        subnets: def
            .subnets
            .into_iter()
            .map(|Subnet { subnet, gateway }| (subnet, gateway))
            .collect(),
    }
}

fn volume_spec(project: &str, file: &ComposeFile, key: &str) -> VolumeSpec {
    let def = file.volumes.get(key).cloned().unwrap_or_default();
    let name = match (&def.name, def.external) {
        (Some(n), _) => n.clone(),
        (None, true) => key.to_string(),
        (None, false) => format!("{project}_{key}"),
    };
    VolumeSpec {
        key: key.to_string(),
        name,
        external: def.external,
        labels: def.labels,
        driver_opts: def.driver_opts,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
pub(crate) mod tests {
    use super::*;
    use crate::compose::file;

    /// Loads inline YAML as project "demo" in `/srv/pkg` (which need not exist).
    pub(crate) fn from_yaml_with(
        yaml: &str,
        profiles: &[String],
        lookup: Lookup<'_>,
    ) -> Result<Project, ComposeError> {
        let mut warnings = Vec::new();
        let f = file::parse(
            yaml,
            Path::new("/srv/pkg/compose.yaml"),
            lookup,
            &mut warnings,
        )?;
        let cx = Context {
            project_name: "demo",
            working_dir: Path::new("/srv/pkg"),
            config_file: Path::new("/srv/pkg/compose.yaml"),
            profiles,
            lookup,
        };
        normalise(&f, &cx, &mut warnings)
    }

    pub(crate) fn from_yaml(yaml: &str) -> Project {
        match from_yaml_with(yaml, &[], &|_| None) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    fn from_yaml_err(yaml: &str) -> ComposeError {
        from_yaml_with(yaml, &[], &|_| None).unwrap_err()
    }

    #[test]
    fn replicas_get_numbered_names_and_refuse_what_one_container_owns() {
        let p =
            from_yaml("services:\n  w: {image: x, scale: 3, ports: ['80']}\n  one: {image: x}\n");
        let w = p.service("w").unwrap();
        assert_eq!(w.container_names(), ["demo-w-1", "demo-w-2", "demo-w-3"]);
        assert_eq!(p.service("one").unwrap().container_names(), ["demo-one-1"]);
        let zero = from_yaml("services:\n  w: {image: x, deploy: {replicas: 0}}\n");
        assert!(zero.service("w").unwrap().container_names().is_empty());

        for (yaml, path, why) in [
            (
                "w: {image: x, scale: 2, container_name: fixed}",
                "services.w.container_name",
                "a fixed container name allows one container; 2 replicas requested",
            ),
            (
                "w: {image: x, scale: 2, networks: {default: {ipv4_address: 10.1.0.5}}}",
                "services.w.networks.default",
                "a static address belongs to one container",
            ),
            (
                "w: {image: x, scale: 2, mac_address: '02:42:ac:11:00:02'}",
                "services.w.mac_address",
                "a MAC address belongs to one container",
            ),
            (
                "w: {image: x, deploy: {replicas: 0}}\n  s: {image: x, network_mode: 'service:w'}",
                "services.s.network_mode",
                "service \"w\" has 0 replicas",
            ),
            (
                "w: {image: x, scale: 2}\n  v: {image: x, container_name: demo-w-2}",
                "services.w.container_name",
                "container name \"demo-w-2\" is also used by service \"v\"",
            ),
        ] {
            let e = from_yaml_err(&format!("services:\n  {yaml}\n")).to_string();
            assert!(e.starts_with(&format!("{path}: {why}")), "{yaml}: {e}");
        }
    }

    #[test]
    fn normalises_project_names() {
        assert_eq!(normalise_project_name("My App").unwrap(), "myapp");
        assert_eq!(
            normalise_project_name("__Edge.Gateway-2").unwrap(),
            "edgegateway-2"
        );
        assert_eq!(normalise_project_name("-_x").unwrap(), "x");
        let e = normalise_project_name("***").unwrap_err();
        assert!(e.to_string().contains("no letter or digit"), "{e}");
    }

    #[test]
    fn qualifies_images_like_docker() {
        let p = from_yaml(
            "services:\n  a: {image: busybox}\n  b: {image: bitnami/redis:7}\n  c: {image: 'registry.local:5000/app/x:1'}\n  \
             d: {image: 'localhost/built'}\n  e: {image: 'alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}",
        );
        let img = |s: &str| p.service(s).unwrap().image.clone();
        assert_eq!(img("a"), "docker.io/library/busybox:latest");
        assert_eq!(img("b"), "docker.io/bitnami/redis:7");
        assert_eq!(img("c"), "registry.local:5000/app/x:1");
        assert_eq!(img("d"), "localhost/built:latest");
        assert_eq!(
            img("e"),
            "docker.io/library/alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn requires_an_image_for_every_service() {
        let e = from_yaml_err("services: {web: {command: [sh]}}");
        assert_eq!(
            e.to_string(),
            "services.web.image: every service needs an image; margo-agent does not build images"
        );
        let e = from_yaml_err("services: {web: {image: 'Not/Valid'}}");
        assert!(
            e.to_string().starts_with("services.web.image: reference"),
            "{e}"
        );
    }

    #[test]
    fn names_containers_and_aliases() {
        let p = from_yaml("services:\n  web: {image: x}\n  db: {image: x, container_name: pg}");
        let web = p.service("web").unwrap();
        assert_eq!(web.container_name, "demo-web-1");
        let mut expected = BTreeMap::new();
        expected.insert("demo_default".to_string(), vec!["web".to_string()]);
        assert_eq!(web.network, ServiceNetwork::Networks(expected));
        let db = p.service("db").unwrap();
        let ServiceNetwork::Networks(n) = &db.network else {
            panic!("{:?}", db.network)
        };
        assert_eq!(n["demo_default"], ["db", "pg"]);
        assert_eq!(p.networks.len(), 1);
        assert_eq!(p.networks[0].name, "demo_default");
    }

    #[test]
    fn creates_only_used_networks_and_volumes() {
        let p = from_yaml(
            "services:\n  web: {image: x, networks: [front], volumes: ['data:/d']}\n\
             networks: {front: , unused: }\nvolumes: {data: , spare: }",
        );
        let nets: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nets, ["demo_front"]);
        let vols: Vec<&str> = p.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(vols, ["demo_data"]);
    }

    #[test]
    fn uses_names_of_named_and_external_objects_verbatim() {
        let p = from_yaml(
            "services:\n  web: {image: x, networks: [lan], volumes: ['db:/d', 'keep:/k']}\n\
             networks: {lan: {external: true, name: plant-lan}}\nvolumes: {db: {name: shared-db}, keep: {external: true}}",
        );
        assert_eq!(p.networks[0].name, "plant-lan");
        assert!(p.networks[0].external);
        let vols: Vec<(&str, bool)> = p
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.external))
            .collect();
        assert_eq!(vols, [("shared-db", false), ("keep", true)]);
    }

    #[test]
    fn rejects_undeclared_networks_and_volumes() {
        let e = from_yaml_err("services: {web: {image: x, networks: [front]}}");
        assert_eq!(
            e.to_string(),
            "services.web.networks: network \"front\" is not declared under the top-level networks key"
        );
        let e = from_yaml_err("services: {web: {image: x, volumes: ['data:/d']}}");
        assert_eq!(
            e.to_string(),
            "services.web.volumes[0]: volume \"data\" is not declared under the top-level volumes key"
        );
    }

    #[test]
    fn resolves_binds_against_the_project_directory() {
        let p = from_yaml(
            "services: {web: {image: x, volumes: ['./html:/www:ro', '/var/log:/logs', '.:/pkg']}}",
        );
        let sources: Vec<String> = p.services[0]
            .mounts
            .iter()
            .map(|m| match m {
                Mount::Bind { source, .. } => source.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sources, ["/srv/pkg/html", "/var/log", "/srv/pkg"]);
        let e = from_yaml_err("services: {web: {image: x, volumes: ['~/data:/d']}}");
        assert!(e.to_string().contains("has no meaning on a device"), "{e}");
    }

    #[test]
    fn network_mode_service_joins_that_container_and_implies_dependency() {
        let p = from_yaml(
            "services:\n  vpn: {image: x}\n  app: {image: y, network_mode: 'service:vpn'}",
        );
        let app = p.service("app").unwrap();
        assert_eq!(app.network, ServiceNetwork::Container("demo-vpn-1".into()));
        assert_eq!(app.depends_on["vpn"].condition, Condition::ServiceStarted);
        assert_eq!(p.services[0].name, "vpn");
        let e = from_yaml_err("services: {app: {image: y, network_mode: 'service:vpn'}}");
        assert_eq!(
            e.to_string(),
            "services.app.network_mode: service \"vpn\" is not defined"
        );
    }

    #[test]
    fn profiles_disable_services_unless_active() {
        let yaml = "services:\n  web: {image: x}\n  debug: {image: y, profiles: [debug]}";
        let p = from_yaml(yaml);
        assert!(p.service("debug").is_none());
        let p = from_yaml_with(yaml, &["debug".to_string()], &|_| None).unwrap();
        assert!(p.service("debug").is_some());
        let e = from_yaml_err(
            "services:\n  web: {image: x, depends_on: [debug]}\n  debug: {image: y, profiles: [debug]}",
        );
        assert_eq!(
            e.to_string(),
            "services.web.depends_on: service \"debug\" is disabled by its profiles"
        );
    }

    #[test]
    fn environment_overrides_env_file_and_bare_names_come_from_variables() {
        let p = from_yaml_with(
            "services: {web: {image: x, environment: [FROM_VARS, MISSING, SET=1]}}",
            &[],
            &|n| (n == "FROM_VARS").then(|| "v".into()),
        )
        .unwrap();
        let env = &p.services[0].environment;
        assert_eq!(env["FROM_VARS"], "v");
        assert_eq!(env["SET"], "1");
        assert!(!env.contains_key("MISSING"));
    }

    #[test]
    fn missing_optional_env_file_is_skipped_and_required_one_fails() {
        assert!(
            from_yaml_with(
                "services: {web: {image: x, env_file: [{path: none.env, required: false}]}}",
                &[],
                &|_| None
            )
            .is_ok()
        );
        let e = from_yaml_err("services: {web: {image: x, env_file: none.env}}");
        assert_eq!(e.code(), "ERR_COMPOSE_INVALID");
        assert_eq!(
            e.to_string(),
            "services.web.env_file[0]: env file \"none.env\" does not exist in the package"
        );
        let e = from_yaml_err("services: {web: {image: x, env_file: ../secrets.env}}");
        assert!(
            e.to_string().starts_with("services.web.env_file[0]: "),
            "{e}"
        );
    }

    #[test]
    fn rejects_reserved_labels() {
        let e = from_yaml_err(
            "services: {web: {image: x, labels: {com.docker.compose.project: other}}}",
        );
        assert!(
            e.to_string()
                .starts_with("services.web.labels.com.docker.compose.project: "),
            "{e}"
        );
    }

    #[test]
    fn rejects_empty_command_without_entrypoint() {
        let e = from_yaml_err("services: {web: {image: x, command: []}}");
        assert!(e.to_string().starts_with("services.web.command: "), "{e}");
        assert!(
            from_yaml_with(
                "services: {web: {image: x, command: [], entrypoint: [/init]}}",
                &[],
                &|_| None
            )
            .is_ok()
        );
    }

    /// A package directory with `files` (relative path, content), loaded as project "demo".
    fn load_in_package(
        name: &str,
        files: &[(&str, &str)],
        yaml: &str,
    ) -> (PathBuf, Result<Project, ComposeError>) {
        let dir = std::env::temp_dir().join(format!("margo-project-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (rel, content) in files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        let f = file::parse(yaml, &dir.join("compose.yaml"), &|_| None, &mut Vec::new()).unwrap();
        let cx = Context {
            project_name: "demo",
            working_dir: &dir,
            config_file: &dir.join("compose.yaml"),
            profiles: &[],
            lookup: &|_| None,
        };
        let p = normalise(&f, &cx, &mut Vec::new());
        (dir, p)
    }

    #[test]
    fn secrets_and_configs_become_read_only_binds_of_package_files() {
        let yaml = "services:\n  web:\n    image: x\n    secrets: [token, {source: cert, target: tls.pem}]\n    \
                    configs: [app, {source: app, target: /etc/app.conf}]\n\
                    secrets: {token: {file: ./secrets/token}, cert: {file: cert.pem}}\nconfigs: {app: {file: conf/app.conf}}";
        let files = [
            ("secrets/token", "t"),
            ("cert.pem", "c"),
            ("conf/app.conf", "a"),
        ];
        let (dir, p) = load_in_package("secrets", &files, yaml);
        let p = p.unwrap();
        let binds: Vec<(String, String, bool, bool)> = p.services[0]
            .mounts
            .iter()
            .map(|m| match m {
                Mount::Bind {
                    source,
                    target,
                    read_only,
                    create_host_path,
                    ..
                } => (
                    source.clone(),
                    target.clone(),
                    *read_only,
                    *create_host_path,
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        let at = |rel: &str| dir.join(rel).to_string_lossy().into_owned();
        assert_eq!(
            binds,
            [
                (
                    at("secrets/token"),
                    "/run/secrets/token".to_string(),
                    true,
                    false
                ),
                (
                    at("cert.pem"),
                    "/run/secrets/tls.pem".to_string(),
                    true,
                    false
                ),
                (at("conf/app.conf"), "/app".to_string(), true, false),
                (
                    at("conf/app.conf"),
                    "/etc/app.conf".to_string(),
                    true,
                    false
                ),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_secrets_outside_the_package_missing_or_undeclared() {
        let (dir, p) = load_in_package(
            "secret-escape",
            &[],
            "services: {web: {image: x, secrets: [s]}}\nsecrets: {s: {file: ../../etc/passwd}}",
        );
        let e = p.unwrap_err();
        assert!(
            e.to_string().starts_with("services.web.secrets[0]: "),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("leads outside the project directory"),
            "{e}"
        );
        let (_, p) = load_in_package(
            "secret-missing",
            &[],
            "services: {web: {image: x, configs: [c]}}\nconfigs: {c: {file: nope.conf}}",
        );
        assert_eq!(
            p.unwrap_err().to_string(),
            "services.web.configs[0]: \"nope.conf\" is not a file in the package"
        );
        let (_, p) = load_in_package(
            "secret-undeclared",
            &[],
            "services: {web: {image: x, secrets: [s]}}",
        );
        assert_eq!(
            p.unwrap_err().to_string(),
            "services.web.secrets[0]: \"s\" is not declared under the top-level secrets key"
        );
        let _ = std::fs::remove_dir_all(dir);
        let e = from_yaml_err("services: {web: {image: x}}\nsecrets: {s: {environment: TOKEN}}");
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        assert!(e.to_string().contains("secrets.s.environment"), "{e}");
        let e = from_yaml_err("services: {web: {image: x}}\nconfigs: {c: {content: hi}}");
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        let e = from_yaml_err("services: {web: {image: x}}\nsecrets: {s: {external: true}}");
        assert!(
            e.to_string().contains("only from a file: in the package"),
            "{e}"
        );
    }

    #[test]
    fn seccomp_profiles_resolve_inside_the_package_only() {
        let p = from_yaml(
            "services: {web: {image: x, security_opt: ['seccomp=./sec.json', 'seccomp:unconfined']}}",
        );
        assert_eq!(
            p.services[0].security_opt,
            ["seccomp=/srv/pkg/sec.json", "seccomp=unconfined"]
        );
        let e = from_yaml_err("services: {web: {image: x, security_opt: ['seccomp=/etc/x.json']}}");
        assert!(
            e.to_string().starts_with("services.web.security_opt[0]: "),
            "{e}"
        );
    }

    #[test]
    fn static_addresses_go_to_their_network() {
        let p = from_yaml(
            "services:\n  a: {image: x, networks: {lan: {ipv4_address: 10.1.0.5, mac_address: '02:00:00:00:00:05'}, other: }}\n  \
             b: {image: x, mac_address: '02:00:00:00:00:06'}\nnetworks: {lan: , other: }",
        );
        let a = &p.service("a").unwrap().addresses;
        assert_eq!(a.len(), 1);
        assert_eq!(a["demo_lan"].ips, ["10.1.0.5"]);
        assert_eq!(a["demo_lan"].mac.as_deref(), Some("02:00:00:00:00:05"));
        let b = &p.service("b").unwrap().addresses;
        assert_eq!(b["demo_default"].mac.as_deref(), Some("02:00:00:00:00:06"));
        let e = from_yaml_err(
            "services: {a: {image: x, mac_address: '02:00:00:00:00:05', networks: [l, m]}}\nnetworks: {l: , m: }",
        );
        assert!(
            e.to_string()
                .starts_with("services.a.mac_address: the service joins several networks"),
            "{e}"
        );
        let e = from_yaml_err(
            "services: {a: {image: x, mac_address: '02:00:00:00:00:05', network_mode: host}}",
        );
        assert!(e.to_string().starts_with("services.a.mac_address: "), "{e}");
    }

    #[test]
    fn links_add_the_alias_to_the_linked_service_and_order_startup() {
        let p = from_yaml(
            "services:\n  web: {image: x, links: ['db:database', cache]}\n  db: {image: y}\n  cache: {image: z}",
        );
        let ServiceNetwork::Networks(n) = &p.service("db").unwrap().network else {
            panic!()
        };
        assert_eq!(n["demo_default"], ["db", "database"]);
        let web = p.service("web").unwrap();
        assert_eq!(web.depends_on.keys().collect::<Vec<_>>(), ["cache", "db"]);
        assert_eq!(p.services.last().unwrap().name, "web");
        let e = from_yaml_err("services: {web: {image: x, links: [db]}}");
        assert_eq!(
            e.to_string(),
            "services.web.links: service \"db\" is not defined"
        );
        let e = from_yaml_err(
            "services:\n  web: {image: x, links: [db], network_mode: host}\n  db: {image: y}",
        );
        assert!(e.to_string().contains("share no project network"), "{e}");
    }

    #[test]
    fn default_restart_policy_is_no() {
        let p = from_yaml("services: {web: {image: x}}");
        assert_eq!(
            p.services[0].restart,
            Restart {
                policy: RestartPolicy::No,
                max_retries: None
            }
        );
    }
}
