//! One service of a compose file, read key by key into typed values.
//!
//! Owns the list of service keys margo-agent accepts ([`SUPPORTED_SERVICE_KEYS`]), the reason
//! for every compose-spec key it refuses ([`REFUSED_SERVICE_KEYS`]; together they are the
//! spec's list, checked by a test), and the typed shape of each accepted key as the file
//! states it (paths still relative, environment not yet merged with `env_file`, names not yet
//! qualified — that is [`super::project`]'s job). Kernel-facing keys (`devices`,
//! `security_opt`, `ulimits`, …) are read by [`super::isolation`].
//!
//! Refuses, each with its own reason: `build`, `develop`, `extends`, `runtime`,
//! `volumes_from`, `userns_mode`, `cgroup_parent`, `external_links`, `gpus`, lifecycle hooks,
//! Windows-only and swarm-only keys, `deploy.mode: global`;
//! a key in no specification is refused as unknown. Nothing is silently dropped: keys without
//! effect on one Podman host produce a [`Warning`], or are documented no-ops (`expose`,
//! `attach`).

use super::error::{ComposeError, Warning};
use super::isolation;
pub use super::isolation::Ulimit;
use super::lifecycle::{self, Deploy};
pub use super::lifecycle::{Healthcheck, Limits, Logging, Restart, RestartPolicy};
use super::mounts;
pub use super::mounts::Mount;
use super::syntax::{self, Port, Protocol};
use super::tree::Node;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Service keys margo-agent accepts (besides `x-*`, dropped before reading).
#[rustfmt::skip]
pub const SUPPORTED_SERVICE_KEYS: &[&str] = &[
    "annotations", "attach", "cap_add", "cap_drop", "command", "configs", "container_name",
    "cpu_shares", "cpus", "depends_on", "deploy", "devices", "dns", "dns_opt", "dns_search",
    "domainname", "entrypoint", "env_file", "environment", "expose", "extra_hosts",
    "group_add", "healthcheck", "hostname", "image", "init", "ipc", "labels", "links",
    "logging", "mac_address", "mem_limit", "mem_reservation", "memswap_limit",
    "network_mode", "networks", "oom_score_adj", "pid", "pids_limit", "platform", "ports",
    "privileged", "profiles", "pull_policy", "read_only", "restart", "scale", "secrets",
    "security_opt", "shm_size", "stdin_open", "stop_grace_period", "stop_signal", "sysctls",
    "tmpfs", "tty", "ulimits", "user", "volumes", "working_dir",
];

/// Keys refused, with the reason shown to the operator.
#[rustfmt::skip]
pub const REFUSED_SERVICE_KEYS: &[(&str, &str)] = &[
    ("build", "margo-agent runs prebuilt images only"),
    ("develop", "it configures development-time file watching, not a device"),
    ("extends", "the package must hold one self-contained compose file"),
    ("runtime", "containers run with the device's default OCI runtime"),
    ("volumes_from", "share data through named volumes instead"),
    ("userns_mode", "user namespaces are set by the device's Podman configuration"),
    ("cgroup_parent", "containers stay in the cgroup Podman gives them"),
    ("cgroup", "containers use the cgroup namespace mode of the device's Podman configuration"),
    ("external_links", "links to containers outside the project are not supported"),
    ("gpus", "device access is decided by the device policy, not the compose file"),
    ("device_cgroup_rules", "device access is decided by the device policy, not the compose file"),
    ("post_start", "lifecycle hooks are not supported"),
    ("pre_stop", "lifecycle hooks are not supported"),
    ("provider", "provider services are not supported"),
    ("use_api_socket", "workloads get no access to the container engine's socket"),
    ("models", "model runners are not supported"),
    ("credential_spec", "it configures Windows containers only"),
    ("isolation", "it configures Windows containers only"),
    ("cpu_count", "it configures Windows containers only; use cpus"),
    ("cpu_percent", "it configures Windows containers only; use cpus"),
    ("cpu_period", "margo-agent derives the CFS period and quota from cpus; use cpus"),
    ("cpu_quota", "margo-agent derives the CFS period and quota from cpus; use cpus"),
    ("cpu_rt_period", "real-time CPU scheduling is not supported"),
    ("cpu_rt_runtime", "real-time CPU scheduling is not supported"),
    ("cpuset", "pinning containers to CPUs is the device's decision, not the compose file's"),
    ("blkio_config", "block I/O weights and throttling are not supported"),
    ("mem_swappiness", "swappiness is a cgroup v1 setting margo-agent does not pass on"),
    ("oom_kill_disable", "a container without the OOM killer can exhaust the device's memory"),
    ("storage_opt", "container storage options are set by the device's Podman configuration"),
    ("uts", "containers keep their own UTS namespace (hostname)"),
    ("label_file", "write the labels under labels: in the compose file"),
    ("pull_refresh_after", "images are pulled by pull_policy only"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub condition: Condition,
    /// `required: false` turns a failed dependency into a warning.
    pub required: bool,
    /// `restart: true`: restart this service when the dependency is recreated or restarted.
    pub restart: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// `bridge`: Podman's default network, not the project's.
    Bridge,
    Host,
    None,
    /// `service:<name>`: join that service's network namespace.
    Service(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    Always,
    Never,
    #[default]
    Missing,
}

/// One entry of a service's `networks`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkAttachment {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub mac_address: Option<String>,
}

/// A service's use of a top-level `secrets` or `configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The top-level key.
    pub source: String,
    /// As written; `None` for the default (`/run/secrets/<source>`, `/<source>`).
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    pub path: String,
    pub required: bool,
}

/// A service as its compose file states it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub image: Option<String>,
    /// `Some(vec![])` for `command: []` / `""`.
    pub command: Option<Vec<String>>,
    /// `Some(vec![])` for `entrypoint: []` / `""` (clear the image's entrypoint).
    pub entrypoint: Option<Vec<String>>,
    /// In file order; `None` values are taken from the variables at load time.
    pub environment: Vec<(String, Option<String>)>,
    pub env_file: Vec<EnvFile>,
    pub ports: Vec<Port>,
    pub mounts: Vec<Mount>,
    /// `deploy.replicas` / `scale`: how many containers (default 1).
    pub replicas: u32,
    /// Network key → aliases and addresses. Empty means the project's `default` network.
    pub networks: BTreeMap<String, NetworkAttachment>,
    pub network_mode: Option<NetworkMode>,
    pub restart: Option<Restart>,
    pub labels: BTreeMap<String, String>,
    pub depends_on: BTreeMap<String, Dependency>,
    pub container_name: Option<String>,
    pub hostname: Option<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `None`: the image's own healthcheck (if any) applies unchanged.
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
    /// `devices`, normalised to `host:container:permissions`.
    pub devices: Vec<String>,
    pub security_opt: Vec<String>,
    /// `pid: host` (the only value besides unset that compose files use).
    pub pid: Option<String>,
    /// `ipc`: `host`, `private`, `shareable`, `service:x`.
    pub ipc: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub shm_size: Option<u64>,
    pub group_add: Vec<String>,
    pub oom_score_adj: Option<i64>,
    pub annotations: BTreeMap<String, String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_opt: Vec<String>,
    pub domainname: Option<String>,
    /// Service-level `mac_address` (for its only network).
    pub mac_address: Option<String>,
    /// `host:address` entries.
    pub extra_hosts: Vec<String>,
    /// `links`: (service, alias) pairs.
    pub links: Vec<(String, Option<String>)>,
    pub logging: Option<Logging>,
    pub secrets: Vec<FileRef>,
    pub configs: Vec<FileRef>,
    pub profiles: Vec<String>,
    pub limits: Limits,
    pub pull_policy: PullPolicy,
    pub platform: Option<String>,
}

/// Reads one service; `node` is `services.<name>` with `x-*` keys already removed.
pub fn read(
    name: &str,
    node: &Node<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Service, ComposeError> {
    let mut s = Service::default();
    let mut legacy = Limits::default();
    let mut deploy = Deploy::default();
    let mut scale = None;
    for (key, v) in node.entries()? {
        match key {
            "image" => s.image = v.opt_string()?,
            "command" => s.command = command(&v)?,
            "entrypoint" => s.entrypoint = command(&v)?,
            "environment" => s.environment = v.key_values()?,
            "env_file" => s.env_file = env_files(&v)?,
            "ports" => s.ports = ports(&v)?,
            "volumes" => s.mounts.extend(mounts::volumes(&v)?),
            "tmpfs" => s.mounts.extend(mounts::tmpfs(&v)?),
            "networks" => s.networks = networks(&v)?,
            "network_mode" => s.network_mode = Some(network_mode(&v)?),
            "restart" => s.restart = Some(lifecycle::restart(&v)?),
            "labels" => s.labels = labels(&v)?,
            "depends_on" => s.depends_on = depends_on(&v)?,
            "container_name" => s.container_name = v.opt_string()?,
            "hostname" => s.hostname = v.opt_string()?,
            "working_dir" => s.working_dir = v.opt_string()?,
            "user" => s.user = v.opt_string()?,
            "healthcheck" => s.healthcheck = lifecycle::healthcheck(&v, warnings)?,
            "stop_signal" => {
                s.stop_signal =
                    Some(syntax::signal_number(&v.string()?).map_err(|e| v.invalid(e))?);
            }
            "stop_grace_period" => s.stop_grace_period = Some(v.duration()?),
            "privileged" => s.privileged = v.bool()?,
            "tty" => s.tty = v.bool()?,
            "stdin_open" => s.stdin_open = v.bool()?,
            "read_only" => s.read_only = v.bool()?,
            "init" => s.init = v.bool()?,
            "cap_add" => s.cap_add = v.string_list()?,
            "cap_drop" => s.cap_drop = v.string_list()?,
            "dns" => s.dns = v.string_or_list()?,
            "dns_search" => s.dns_search = v.string_or_list()?,
            "dns_opt" => s.dns_opt = v.string_list()?,
            "domainname" => s.domainname = v.opt_string()?.filter(|d| !d.is_empty()),
            "mac_address" => s.mac_address = Some(mac_address(&v)?),
            "extra_hosts" => s.extra_hosts = extra_hosts(&v)?,
            "links" => s.links = links(&v)?,
            // Documentation only: every port is reachable on the project network anyway.
            "expose" => drop(v.string_list()?),
            // Whether `docker compose up` shows the service's output; nothing to run.
            "attach" => drop(v.bool()?),
            "devices" => s.devices = isolation::devices(&v)?,
            "security_opt" => s.security_opt = isolation::security_opt(&v)?,
            "pid" => s.pid = isolation::pid(&v)?,
            "ipc" => s.ipc = isolation::ipc(&v)?,
            "sysctls" => s.sysctls = isolation::sysctls(&v)?,
            "ulimits" => s.ulimits = isolation::ulimits(&v)?,
            "group_add" => s.group_add = isolation::group_add(&v)?,
            "shm_size" => s.shm_size = Some(v.bytes()?),
            "oom_score_adj" => s.oom_score_adj = Some(oom_score_adj(&v)?),
            "annotations" => s.annotations = labels(&v)?,
            "logging" => s.logging = Some(lifecycle::logging(&v, name, warnings)?),
            "secrets" => s.secrets = file_refs(&v, warnings)?,
            "configs" => s.configs = file_refs(&v, warnings)?,
            "cpu_shares" => legacy.cpu_shares = Some(v.u64()?),
            "mem_reservation" => legacy.memory_reservation = Some(v.bytes()?),
            "memswap_limit" => legacy.memory_swap = Some(memswap(&v)?),
            "profiles" => s.profiles = v.string_list()?,
            "pull_policy" => s.pull_policy = pull_policy(&v, name)?,
            "platform" => s.platform = v.opt_string()?,
            "mem_limit" => legacy.memory = Some(v.bytes()?),
            "cpus" => legacy.cpus = Some(lifecycle::cpus(&v)?),
            "pids_limit" => legacy.pids = Some(v.i64()?),
            "scale" => scale = Some((lifecycle::replicas(&v)?, v)),
            "deploy" => deploy = lifecycle::read_deploy(&v, name, warnings)?,
            other => return Err(refuse(name, other)),
        }
    }
    s.replicas = match (scale, deploy.replicas) {
        (Some((a, v)), Some(b)) if a != b => {
            return Err(v.invalid(format!(
                "scale: {a} and deploy.replicas: {b} disagree; set one of them"
            )));
        }
        (Some((n, _)), _) | (None, Some(n)) => n,
        (None, None) => 1,
    };
    s.limits = lifecycle::merge_limits(node, legacy, deploy.limits)?;
    if deploy.restart.is_some() {
        // The spec: deploy.restart_policy takes precedence over `restart`.
        s.restart = deploy.restart;
    }
    if s.network_mode.is_some() && !s.networks.is_empty() {
        return Err(node.invalid("network_mode and networks cannot both be set"));
    }
    Ok(s)
}

fn refuse(service: &str, key: &str) -> ComposeError {
    let reason = if let Some((_, why)) = REFUSED_SERVICE_KEYS.iter().find(|(k, _)| *k == key) {
        (*why).to_string()
    } else {
        "it is not a compose-spec service key (custom keys must start with x-)".to_string()
    };
    ComposeError::unsupported(Some(service), key, reason)
}

/// `command`/`entrypoint`: a string (split like a shell) or a list; `[]` and `""` clear.
fn command(v: &Node<'_>) -> Result<Option<Vec<String>>, ComposeError> {
    match v.value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => syntax::shell_words(s).map(Some).map_err(|e| v.invalid(e)),
        serde_json::Value::Array(_) => v.string_list().map(Some),
        _ => Err(v.type_error("a string or a list of strings")),
    }
}

fn env_files(v: &Node<'_>) -> Result<Vec<EnvFile>, ComposeError> {
    let items = match v.value {
        serde_json::Value::Array(_) => v.items()?,
        _ => vec![v.clone()],
    };
    let mut out = Vec::new();
    for item in items {
        if item.value.is_object() {
            let mut f = EnvFile {
                path: String::new(),
                required: true,
            };
            for (k, e) in item.entries()? {
                match k {
                    "path" => f.path = e.string()?,
                    "required" => f.required = e.bool()?,
                    "format" => {
                        return Err(e.invalid("only the default env file format is supported"));
                    }
                    _ => {
                        return Err(
                            e.invalid("unknown key; env_file entries have path and required")
                        );
                    }
                }
            }
            if f.path.is_empty() {
                return Err(item.invalid("env_file entry has no path"));
            }
            out.push(f);
        } else {
            out.push(EnvFile {
                path: item.string()?,
                required: true,
            });
        }
    }
    Ok(out)
}

fn ports(v: &Node<'_>) -> Result<Vec<Port>, ComposeError> {
    let mut out = Vec::new();
    for item in v.items()? {
        let port = match item.value {
            serde_json::Value::Object(_) => long_port(&item)?,
            serde_json::Value::String(_) | serde_json::Value::Number(_) => {
                syntax::short_port(&item.string()?).map_err(|e| item.invalid(e))?
            }
            _ => return Err(item.type_error("a port string such as \"8080:80\" or a mapping")),
        };
        out.push(port);
    }
    Ok(out)
}

fn long_port(item: &Node<'_>) -> Result<Port, ComposeError> {
    let mut target = None;
    let mut published = None;
    let mut port = Port {
        host_ip: None,
        published: None,
        target: 0,
        range: 1,
        protocol: Protocol::Tcp,
    };
    for (k, e) in item.entries()? {
        match k {
            "target" => target = Some(syntax::port_range(&e.string()?).map_err(|m| e.invalid(m))?),
            "published" => {
                let text = e.string()?;
                if !text.is_empty() {
                    published = Some(syntax::port_range(&text).map_err(|m| e.invalid(m))?);
                }
            }
            "host_ip" => port.host_ip = e.opt_string()?.filter(|ip| !ip.is_empty()),
            "protocol" => port.protocol = Protocol::parse(&e.string()?).map_err(|m| e.invalid(m))?,
            // `mode: ingress` is swarm's routing mesh; on one host every mode is `host`.
            "mode" | "name" | "app_protocol" => drop(e.string()?),
            _ => return Err(e.invalid("unknown port key; expected target, published, host_ip, protocol, mode, name, app_protocol")),
        }
    }
    let (t, range) = target.ok_or_else(|| item.invalid("a long-form port needs a target"))?;
    port.target = t;
    port.range = range;
    if let Some((p, count)) = published {
        if count != range {
            return Err(item.invalid(format!(
                "the published range has {count} ports but the target range has {range}"
            )));
        }
        port.published = Some(p);
    }
    Ok(port)
}

fn networks(v: &Node<'_>) -> Result<BTreeMap<String, NetworkAttachment>, ComposeError> {
    let mut out = BTreeMap::new();
    match v.value {
        serde_json::Value::Array(_) => {
            for name in v.string_list()? {
                out.insert(name, NetworkAttachment::default());
            }
        }
        serde_json::Value::Object(_) => {
            for (name, n) in v.entries()? {
                let mut a = NetworkAttachment::default();
                if !n.is_null() {
                    for (k, e) in n.entries()? {
                        match k {
                            "aliases" => a.aliases = e.string_list()?,
                            "ipv4_address" => {
                                a.ipv4_address = Some(ip_address::<std::net::Ipv4Addr>(&e, "IPv4")?)
                            }
                            "ipv6_address" => {
                                a.ipv6_address = Some(ip_address::<std::net::Ipv6Addr>(&e, "IPv6")?)
                            }
                            "mac_address" => a.mac_address = Some(mac_address(&e)?),
                            _ => {
                                let why = match k {
                                    "priority" | "gw_priority" => {
                                        "margo-agent does not order networks or choose the gateway network"
                                    }
                                    "link_local_ips" => {
                                        "link-local addresses are not supported by Podman"
                                    }
                                    "driver_opts" => {
                                        "per-attachment driver options are not supported"
                                    }
                                    "interface_name" => "interface names are chosen by Podman",
                                    _ => {
                                        "unknown key; a service's network takes aliases, ipv4_address, ipv6_address, mac_address"
                                    }
                                };
                                return Err(ComposeError::unsupported(None, &e.path, why));
                            }
                        }
                    }
                }
                out.insert(name.to_string(), a);
            }
        }
        _ => return Err(v.type_error("a list of network names or a mapping")),
    }
    Ok(out)
}

fn ip_address<T: std::str::FromStr>(v: &Node<'_>, kind: &str) -> Result<String, ComposeError> {
    let text = v.string()?;
    text.parse::<T>()
        .map_err(|_| v.invalid(format!("{text:?} is not an {kind} address")))?;
    Ok(text)
}

/// A MAC address, `xx:xx:xx:xx:xx:xx`, kept lowercase.
fn mac_address(v: &Node<'_>) -> Result<String, ComposeError> {
    let text = v.string()?;
    let ok = text.split(':').count() == 6
        && text
            .split(':')
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(v.invalid(format!(
            "{text:?} is not a MAC address (six hex pairs separated by ':')"
        )));
    }
    Ok(text.to_ascii_lowercase())
}

/// `links`: `service` or `service:alias`.
fn links(v: &Node<'_>) -> Result<Vec<(String, Option<String>)>, ComposeError> {
    let mut out = Vec::new();
    for item in v.items()? {
        let text = item.string()?;
        let (service, alias) = match text.split_once(':') {
            Some((s, a)) => (s.to_string(), Some(a.to_string())),
            None => (text.clone(), None),
        };
        if service.is_empty() || alias.as_deref().is_some_and(str::is_empty) {
            return Err(item.invalid(format!("{text:?} is not service or service:alias")));
        }
        out.push((service, alias));
    }
    Ok(out)
}

/// `oom_score_adj`: -1000 to 1000, as the kernel takes it.
fn oom_score_adj(v: &Node<'_>) -> Result<i64, ComposeError> {
    let n = v.i64()?;
    if !(-1000..=1000).contains(&n) {
        return Err(v.invalid(format!("{n} is out of range -1000 to 1000")));
    }
    Ok(n)
}

/// `memswap_limit`: a size, or `-1` for unlimited swap.
fn memswap(v: &Node<'_>) -> Result<i64, ComposeError> {
    if v.i64().ok() == Some(-1) {
        return Ok(-1);
    }
    let bytes = v.bytes()?;
    i64::try_from(bytes).map_err(|_| v.invalid(format!("{bytes} bytes is too large")))
}

/// A service's `secrets` or `configs`: names, or `{source, target, uid, gid, mode}`.
fn file_refs(v: &Node<'_>, warnings: &mut Vec<Warning>) -> Result<Vec<FileRef>, ComposeError> {
    let mut out = Vec::new();
    for item in v.items()? {
        if !item.value.is_object() {
            out.push(FileRef {
                source: item.string()?,
                target: None,
            });
            continue;
        }
        let (mut source, mut target) = (None, None);
        for (k, e) in item.entries()? {
            match k {
                "source" => source = Some(e.string()?),
                "target" => target = e.opt_string()?.filter(|t| !t.is_empty()),
                "uid" | "gid" | "mode" => {
                    e.string()?;
                    warnings.push(Warning::Ignored {
                        path: e.path.clone(),
                        reason: "a file-based secret or config is bind-mounted with the file's own owner and mode (as docker compose does); set them on the file in the package",
                    });
                }
                _ => return Err(e.invalid("unknown key; expected source, target, uid, gid, mode")),
            }
        }
        let source = source.ok_or_else(|| item.invalid("a long-form entry needs a source"))?;
        out.push(FileRef { source, target });
    }
    Ok(out)
}

fn network_mode(v: &Node<'_>) -> Result<NetworkMode, ComposeError> {
    let text = v.string()?;
    match text.as_str() {
        "bridge" => Ok(NetworkMode::Bridge),
        "host" => Ok(NetworkMode::Host),
        "none" => Ok(NetworkMode::None),
        _ => match text.split_once(':') {
            Some(("service", s)) if !s.is_empty() => Ok(NetworkMode::Service(s.to_string())),
            Some(("container", _)) => Err(v.invalid(
                "network_mode container: names a container outside the project; use service:<name>",
            )),
            _ => Err(v.invalid(format!(
                "{text:?} is not bridge, host, none or service:<name>"
            ))),
        },
    }
}

fn labels(v: &Node<'_>) -> Result<BTreeMap<String, String>, ComposeError> {
    v.key_values()?
        .into_iter()
        .map(|(k, val)| Ok((k, val.unwrap_or_default())))
        .collect()
}

fn depends_on(v: &Node<'_>) -> Result<BTreeMap<String, Dependency>, ComposeError> {
    let started = Dependency {
        condition: Condition::ServiceStarted,
        required: true,
        restart: false,
    };
    let mut out = BTreeMap::new();
    if let serde_json::Value::Array(_) = v.value {
        for name in v.string_list()? {
            out.insert(name, started);
        }
        return Ok(out);
    }
    for (name, d) in v.entries()? {
        let mut dep = started;
        for (k, e) in d.entries()? {
            match k {
                "condition" => {
                    dep.condition = match e.string()?.as_str() {
                        "service_started" => Condition::ServiceStarted,
                        "service_healthy" => Condition::ServiceHealthy,
                        "service_completed_successfully" => Condition::ServiceCompletedSuccessfully,
                        other => return Err(e.invalid(format!("{other:?} is not service_started, service_healthy or service_completed_successfully"))),
                    }
                }
                "required" => dep.required = e.bool()?,
                // Restarting dependents when a dependency is updated: see plan.rs.
                "restart" => dep.restart = e.bool()?,
                _ => return Err(e.invalid("unknown key; expected condition, required, restart")),
            }
        }
        out.insert(name.to_string(), dep);
    }
    Ok(out)
}

fn extra_hosts(v: &Node<'_>) -> Result<Vec<String>, ComposeError> {
    if let serde_json::Value::Object(_) = v.value {
        return v
            .entries()?
            .into_iter()
            .map(|(host, ip)| Ok(format!("{host}:{}", ip.string()?)))
            .collect();
    }
    v.string_list()?
        .iter()
        .map(|e| syntax::extra_host(e).map_err(|m| v.invalid(m)))
        .collect()
}

fn pull_policy(v: &Node<'_>, service: &str) -> Result<PullPolicy, ComposeError> {
    match v.string()?.as_str() {
        "always" => Ok(PullPolicy::Always),
        "never" => Ok(PullPolicy::Never),
        "missing" | "if_not_present" => Ok(PullPolicy::Missing),
        "build" => Err(ComposeError::unsupported(
            Some(service),
            "pull_policy: build",
            "margo-agent runs prebuilt images only",
        )),
        other => Err(v.invalid(format!(
            "{other:?} is not always, never, missing or if_not_present"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::compose::file;
    use std::path::Path;

    fn vars(name: &str) -> Option<String> {
        (name == "TAG").then(|| "1.27".to_string())
    }

    /// Reads `services.web` of a file made of `body` under `services: web:`.
    fn web(body: &str) -> Result<(Service, Vec<Warning>), ComposeError> {
        let text = format!(
            "services:\n  web:\n{}",
            body.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let mut warnings = Vec::new();
        let f = file::parse(&text, Path::new("compose.yaml"), &vars, &mut warnings)?;
        Ok((f.services["web"].clone(), warnings))
    }

    fn ok(body: &str) -> Service {
        match web(body) {
            Ok((s, _)) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn err(body: &str) -> ComposeError {
        match web(body) {
            Ok((s, _)) => panic!("accepted: {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn refuses_each_excluded_key_with_its_reason() {
        for (key, reason) in [
            ("build: .", "prebuilt images only"),
            ("extends: {service: base}", "self-contained"),
            ("develop: {watch: []}", "development-time"),
            ("runtime: runc", "default OCI runtime"),
            ("cpuset: '0-1'", "device's decision"),
            ("volumes_from: [db]", "named volumes"),
            ("userns_mode: host", "user namespaces"),
            ("cgroup_parent: x", "cgroup"),
        ] {
            let e = err(&format!("image: nginx\n{key}"));
            assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED", "{key}");
            let text = e.to_string();
            assert!(text.starts_with("service \"web\": key "), "{text}");
            assert!(text.contains(reason), "{key}: {text}");
        }
    }

    /// Service keys of compose-spec `schema/compose-spec.json` (`definitions.service`), the
    /// list the tables above must cover exactly.
    #[rustfmt::skip]
    const SPEC_SERVICE_KEYS: &[&str] = &[
        "develop", "deploy", "annotations", "attach", "build", "blkio_config", "cpu_count",
        "cpu_percent", "cpu_shares", "cpu_quota", "cpu_period", "cpu_rt_period",
        "cpu_rt_runtime", "cpus", "cpuset", "cap_add", "cap_drop", "cgroup", "cgroup_parent",
        "command", "configs", "container_name", "credential_spec", "depends_on",
        "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname",
        "entrypoint", "env_file", "label_file", "environment", "expose", "extends", "provider",
        "external_links", "extra_hosts", "gpus", "group_add", "healthcheck", "hostname",
        "image", "init", "ipc", "isolation", "labels", "links", "logging", "mac_address",
        "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit", "network_mode",
        "models", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit",
        "platform", "ports", "post_start", "pre_stop", "privileged", "profiles", "pull_policy",
        "pull_refresh_after", "read_only", "restart", "runtime", "scale", "security_opt",
        "shm_size", "secrets", "sysctls", "stdin_open", "stop_grace_period", "stop_signal",
        "storage_opt", "tmpfs", "tty", "ulimits", "use_api_socket", "user", "uts",
        "userns_mode", "volumes", "volumes_from", "working_dir",
    ];

    /// A minimal valid value for each supported key, so `read` can be shown to accept it.
    fn sample(key: &str) -> &'static str {
        match key {
            "annotations" | "labels" | "sysctls" => "{a.b: c}",
            "attach" | "init" | "privileged" | "read_only" | "stdin_open" | "tty" => "true",
            "cap_add" | "cap_drop" => "[NET_ADMIN]",
            "command" | "entrypoint" => "[sh]",
            "configs" | "secrets" | "depends_on" | "links" | "profiles" => "[other]",
            "container_name" | "hostname" | "domainname" | "user" => "name",
            "cpu_shares" | "pids_limit" | "oom_score_adj" | "scale" => "1",
            "cpus" => "0.5",
            "deploy" => "{replicas: 1}",
            "devices" => "[/dev/null]",
            "dns" | "dns_search" | "dns_opt" | "expose" | "group_add" => "[x]",
            "env_file" => "a.env",
            "environment" => "[A=1]",
            "extra_hosts" => "['h=10.0.0.1']",
            "healthcheck" => "{disable: true}",
            "image" => "busybox",
            "ipc" | "pid" => "host",
            "logging" => "{driver: none}",
            "mac_address" => "02:42:ac:11:00:02",
            "mem_limit" | "mem_reservation" | "memswap_limit" | "shm_size" => "64m",
            "network_mode" => "none",
            "networks" => "[front]",
            "platform" => "linux/amd64",
            "ports" => "['80']",
            "pull_policy" => "missing",
            "restart" => "always",
            "security_opt" => "[no-new-privileges]",
            "stop_grace_period" => "10s",
            "stop_signal" => "SIGTERM",
            "tmpfs" => "/run",
            "ulimits" => "{nofile: 1024}",
            "volumes" => "['data:/data']",
            "working_dir" => "/app",
            other => panic!("no sample value for supported key {other:?}"),
        }
    }

    #[test]
    fn key_tables_cover_the_compose_spec_exactly() {
        let mut ours: Vec<&str> = SUPPORTED_SERVICE_KEYS
            .iter()
            .copied()
            .chain(REFUSED_SERVICE_KEYS.iter().map(|(k, _)| *k))
            .collect();
        ours.sort_unstable();
        let before = ours.len();
        ours.dedup();
        assert_eq!(before, ours.len(), "a key is both supported and refused");
        let mut spec = SPEC_SERVICE_KEYS.to_vec();
        spec.sort_unstable();
        assert_eq!(ours, spec);
    }

    #[test]
    fn read_accepts_every_supported_key() {
        for key in SUPPORTED_SERVICE_KEYS {
            let body = if *key == "image" {
                "image: busybox".to_string()
            } else if *key == "memswap_limit" {
                "image: busybox\nmem_limit: 32m\nmemswap_limit: 64m".to_string()
            } else {
                format!("image: busybox\n{key}: {}", sample(key))
            };
            if let Err(e) = web(&body) {
                panic!("{key}: {e}");
            }
        }
    }

    #[test]
    fn read_refuses_every_refused_key_with_its_reason() {
        for (key, reason) in REFUSED_SERVICE_KEYS {
            let e = err(&format!("image: busybox\n{key}: x"));
            assert_eq!(
                e.to_string(),
                format!("service \"web\": key {key:?} is not supported: {reason}")
            );
        }
        let e = err("image: busybox\nlog_driver: x");
        assert!(
            e.to_string().contains("not a compose-spec service key"),
            "{e}"
        );
    }

    #[test]
    fn reads_host_and_runtime_keys() {
        let s = ok(
            "image: x\nshm_size: 64m\ndomainname: example.org\ndns_search: example.org\ndns_opt: [ndots:2]\n\
             oom_score_adj: -500\nannotations: [org.example/a=b]\nlinks: [db, 'cache:redis']\nattach: false\n\
             secrets: [token, {source: cert, target: /etc/cert.pem, mode: 0400}]\nconfigs: [{source: app, target: app.conf}]",
        );
        assert_eq!(s.shm_size, Some(64 << 20));
        assert_eq!(s.domainname.as_deref(), Some("example.org"));
        assert_eq!(s.dns_search, ["example.org"]);
        assert_eq!(s.dns_opt, ["ndots:2"]);
        assert_eq!(s.oom_score_adj, Some(-500));
        assert_eq!(s.annotations["org.example/a"], "b");
        assert_eq!(
            s.links,
            [
                ("db".to_string(), None),
                ("cache".to_string(), Some("redis".to_string()))
            ]
        );
        assert_eq!(
            s.secrets[1],
            FileRef {
                source: "cert".into(),
                target: Some("/etc/cert.pem".into())
            }
        );
        assert_eq!(s.configs[0].target.as_deref(), Some("app.conf"));
        let (_, warnings) = web("image: x\nsecrets: [{source: a, uid: '0'}]").unwrap();
        assert_eq!(warnings.len(), 1, "uid is ignored with a warning");
        assert_eq!(
            err("image: x\noom_score_adj: 2000").to_string(),
            "services.web.oom_score_adj: 2000 is out of range -1000 to 1000"
        );
        assert!(
            err("image: x\nshm_size: lots")
                .to_string()
                .starts_with("services.web.shm_size: ")
        );
        assert!(
            err("image: x\nlinks: ['db:']")
                .to_string()
                .starts_with("services.web.links[0]: ")
        );
        assert!(
            err("image: x\nsecrets: [{target: /x}]")
                .to_string()
                .contains("needs a source")
        );
    }

    #[test]
    fn drops_service_level_extension_keys() {
        let s = ok("image: nginx\nx-note: ${UNSET:?not evaluated}");
        assert_eq!(s.image.as_deref(), Some("nginx"));
    }

    #[test]
    fn reads_command_and_entrypoint_as_string_or_list() {
        let s = ok(
            "image: nginx\ncommand: nginx -g 'daemon off;'\nentrypoint: [/docker-entrypoint.sh]",
        );
        assert_eq!(s.command.unwrap(), ["nginx", "-g", "daemon off;"]);
        assert_eq!(s.entrypoint.unwrap(), ["/docker-entrypoint.sh"]);
        assert_eq!(ok("image: x\nentrypoint: []").entrypoint, Some(vec![]));
        assert_eq!(ok("image: x\nentrypoint: ''").entrypoint, Some(vec![]));
        assert_eq!(ok("image: x\nentrypoint:").entrypoint, None);
        let e = err("image: x\ncommand: {a: b}");
        assert_eq!(
            e.to_string(),
            "services.web.command: expected a string or a list of strings, found a mapping"
        );
    }

    #[test]
    fn reads_environment_as_list_or_map() {
        let s = ok("image: x\nenvironment: [A=1, B, C=]");
        assert_eq!(
            s.environment,
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), None),
                ("C".into(), Some(String::new()))
            ]
        );
        let s = ok("image: x\nenvironment: {N: 3, T: true, U: }");
        assert_eq!(
            s.environment,
            vec![
                ("N".into(), Some("3".into())),
                ("T".into(), Some("true".into())),
                ("U".into(), None)
            ]
        );
    }

    #[test]
    fn reads_env_file_string_list_and_long_form() {
        let s = ok("image: x\nenv_file: a.env");
        assert_eq!(
            s.env_file,
            vec![EnvFile {
                path: "a.env".into(),
                required: true
            }]
        );
        let s = ok("image: x\nenv_file: [a.env, {path: b.env, required: false}]");
        assert_eq!(
            s.env_file[1],
            EnvFile {
                path: "b.env".into(),
                required: false
            }
        );
    }

    #[test]
    fn reads_short_and_long_ports() {
        let s = ok(
            "image: x\nports: [80, '8080:80', {target: 53, published: 5353, protocol: udp, host_ip: 127.0.0.1}]",
        );
        assert_eq!(s.ports[0].target, 80);
        assert_eq!(s.ports[0].published, None);
        assert_eq!(s.ports[1].published, Some(8080));
        assert_eq!(s.ports[2].protocol, Protocol::Udp);
        assert_eq!(s.ports[2].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.ports[2].published, Some(5353));
    }

    #[test]
    fn unquoted_port_pair_is_not_read_as_sexagesimal() {
        // YAML 1.1 would read 22:22 as the number 1342; compose files rely on YAML 1.2.
        let s = ok("image: x\nports:\n  - 2222:22");
        assert_eq!((s.ports[0].published, s.ports[0].target), (Some(2222), 22));
    }

    #[test]
    fn rejects_long_port_without_target() {
        let e = err("image: x\nports: [{published: 80}]");
        assert_eq!(
            e.to_string(),
            "services.web.ports[0]: a long-form port needs a target"
        );
    }

    #[test]
    fn reads_networks_as_list_or_map_with_aliases() {
        let s = ok("image: x\nnetworks: [front, back]");
        assert_eq!(s.networks.keys().collect::<Vec<_>>(), ["back", "front"]);
        let s = ok("image: x\nnetworks:\n  front:\n  back: {aliases: [api]}");
        assert_eq!(s.networks["back"].aliases, ["api"]);
        assert_eq!(s.networks["front"], NetworkAttachment::default());
        let s = ok(
            "image: x\nnetworks: {front: {ipv4_address: 10.0.0.5, ipv6_address: 'fd00::5', mac_address: '02:42:AC:11:00:05'}}",
        );
        assert_eq!(
            s.networks["front"],
            NetworkAttachment {
                aliases: vec![],
                ipv4_address: Some("10.0.0.5".into()),
                ipv6_address: Some("fd00::5".into()),
                mac_address: Some("02:42:ac:11:00:05".into()),
            }
        );
        assert_eq!(
            err("image: x\nnetworks: {front: {ipv4_address: 10.0.0.300}}").to_string(),
            "services.web.networks.front.ipv4_address: \"10.0.0.300\" is not an IPv4 address"
        );
        assert!(
            err("image: x\nnetworks: {front: {ipv6_address: 10.0.0.3}}")
                .to_string()
                .contains("is not an IPv6 address")
        );
        assert!(
            err("image: x\nmac_address: 02:42")
                .to_string()
                .starts_with("services.web.mac_address: ")
        );
        let e = err("image: x\nnetworks: {front: {link_local_ips: [169.254.0.1]}}");
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        assert!(
            e.to_string().contains("networks.front.link_local_ips"),
            "{e}"
        );
    }

    #[test]
    fn reads_network_modes_and_refuses_container_mode() {
        assert_eq!(
            ok("image: x\nnetwork_mode: host").network_mode,
            Some(NetworkMode::Host)
        );
        assert_eq!(
            ok("image: x\nnetwork_mode: service:vpn").network_mode,
            Some(NetworkMode::Service("vpn".into()))
        );
        assert!(
            err("image: x\nnetwork_mode: container:abc")
                .to_string()
                .contains("outside the project")
        );
        assert!(
            err("image: x\nnetwork_mode: host\nnetworks: [a]")
                .to_string()
                .contains("cannot both be set")
        );
    }

    #[test]
    fn reads_depends_on_short_and_long_forms() {
        let s = ok("image: x\ndepends_on: [db]");
        assert_eq!(
            s.depends_on["db"],
            Dependency {
                condition: Condition::ServiceStarted,
                required: true,
                restart: false
            }
        );
        let s = ok(
            "image: x\ndepends_on:\n  db: {condition: service_completed_successfully, required: false, restart: true}",
        );
        assert_eq!(
            s.depends_on["db"],
            Dependency {
                condition: Condition::ServiceCompletedSuccessfully,
                required: false,
                restart: true
            }
        );
        let e = err("image: x\ndepends_on: {db: {condition: service_ready}}");
        assert!(
            e.to_string()
                .starts_with("services.web.depends_on.db.condition: "),
            "{e}"
        );
    }

    #[test]
    fn reads_flags_lists_and_scalars_leniently() {
        let s = ok(
            "image: x\nprivileged: 'true'\ntty: true\nstdin_open: false\nread_only: true\ninit: true\n\
                    cap_add: [NET_ADMIN]\ncap_drop: [ALL]\ndns: 1.1.1.1\nextra_hosts: ['db=10.0.0.2']\n\
                    user: 1000:1000\nhostname: gw\nworking_dir: /app\nplatform: linux/arm64\nexpose: [80, '443']\n\
                    stop_signal: SIGQUIT\nstop_grace_period: 20s\npull_policy: always\nlabels: [a=b]",
        );
        assert!(s.privileged && s.tty && !s.stdin_open && s.read_only && s.init);
        assert_eq!(s.cap_add, ["NET_ADMIN"]);
        assert_eq!(s.dns, ["1.1.1.1"]);
        assert_eq!(s.extra_hosts, ["db:10.0.0.2"]);
        assert_eq!(s.user.as_deref(), Some("1000:1000"));
        assert_eq!(s.stop_signal, Some(3));
        assert_eq!(s.stop_grace_period, Some(Duration::from_secs(20)));
        assert_eq!(s.pull_policy, PullPolicy::Always);
        assert_eq!(s.labels["a"], "b");
        let e = err("image: x\nprivileged: maybe");
        assert_eq!(
            e.to_string(),
            "services.web.privileged: expected a boolean (true or false), found a string"
        );
    }

    #[test]
    fn interpolates_before_reading_types() {
        let s = ok("image: nginx:${TAG}\nhealthcheck: {test: x, retries: '${RETRIES:-7}'}");
        assert_eq!(s.image.as_deref(), Some("nginx:1.27"));
        assert!(matches!(
            s.healthcheck,
            Some(Healthcheck::Check { retries: 7, .. })
        ));
    }

    #[test]
    fn refuses_pull_policy_build() {
        let e = err("image: x\npull_policy: build");
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
    }
}
