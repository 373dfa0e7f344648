//! The device policy: which compose keys that reach past the container's own sandbox a
//! deployment may use on this device, and where its bind mounts may point.
//!
//! A desired state comes from a remote Fleet Manager; the device maker decides, in the
//! `policy:` section of the config, how much of the host it may touch. [`DevicePolicy::check`]
//! runs on a loaded [`Project`] before anything is pulled or created and reports every
//! violation at once, each naming `services.<svc>.<key>`, its value and the policy key that
//! would allow it, so one round trip tells the deployment author everything to fix. A refused
//! project becomes a `Failed` deployment with `ERR_POLICY`; nothing of it is applied.
//!
//! Gated: `privileged`, `cap_add`, `network_mode: host`, `pid: host`, `ipc: host`, `devices`,
//! `security_opt` (all but `no-new-privileges`), bind sources outside the package directory,
//! and sysctls that are not namespaced (always refused: they would change the host kernel).
//! The defaults refuse all of it except what Docker grants every container anyway
//! (`docs/policy.md` gives the reasons).
//!
//! Paths are compared as the kernel will resolve them: symlinks in the part of a path that
//! exists are resolved, then `..` and `.` in the rest are applied, and prefixes match whole
//! components (`/data2` is not under `/data`). The only I/O is that resolution (reading
//! links) and, in [`DevicePolicy::create_bind_sources`], creating missing bind sources.

use super::mounts::Mount;
use super::project::{Project, ServiceNetwork, ServiceSpec};
use crate::config::Policy;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The deployment-status code of a policy refusal.
pub const ERR_POLICY: &str = "ERR_POLICY";

/// Every Linux capability name (without `CAP_`), as of Linux 6.x; what `cap_add` and
/// `policy.allow_capabilities` may name, besides `ALL`.
pub const KNOWN_CAPABILITIES: [&str; 41] = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// The default `policy.allow_capabilities`: Docker's default capability set. Docker grants
/// these to every container; Podman leaves out `AUDIT_WRITE`, `MKNOD` and `NET_RAW`, so a
/// compose file written for Docker may `cap_add` them to behave the same here.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls that belong to the container's own IPC namespace (runc's list).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];
/// Sysctls that belong to the container's own UTS namespace.
const UTS_SYSCTLS: [&str; 2] = ["kernel.domainname", "kernel.hostname"];

/// `CAP_net_admin`, `net_admin`, `NET_ADMIN` → `NET_ADMIN`; `all` → `ALL`; `None` for a
/// name that is no Linux capability.
pub fn normalise_capability(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    (bare == "ALL" || KNOWN_CAPABILITIES.contains(&bare)).then(|| bare.to_string())
}

/// Why a device pattern in `policy.allow_devices` is not acceptable; `None` when it is.
pub fn device_pattern_problem(pattern: &str) -> Option<&'static str> {
    if !pattern.starts_with('/') {
        return Some("must be an absolute path such as /dev/ttyUSB0 or /dev/ttyUSB*");
    }
    if Path::new(pattern)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Some("must not contain ..");
    }
    if pattern.contains(['[', ']', '{', '}']) {
        return Some("only * and ? are wildcards; [..] and {..} are not supported");
    }
    None
}

/// One compose value the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `services.<svc>.<key>` (with an index or sysctl name where the key is a list or map).
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every violation of one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub violations: Vec<Violation>,
}

impl PolicyError {
    pub fn code(&self) -> &'static str {
        ERR_POLICY
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused by the device policy: ")?;
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        f.write_str("; nothing of this project was applied")
    }
}

impl std::error::Error for PolicyError {}

/// A bind source that could not be prepared at create time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSourceError {
    /// `ERR_COMPOSE_INVALID` (`create_host_path: false`), `ERR_POLICY` or `ERR_LOCAL_IO`.
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for BindSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<BindSourceError> for super::apply::ApplyError {
    fn from(e: BindSourceError) -> Self {
        super::apply::ApplyError {
            code: e.code,
            message: e.message,
            podman_unavailable: false,
        }
    }
}

/// The policy in force, built from the validated `policy:` config section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    pub allow_privileged: bool,
    /// Absolute glob patterns (`*`, `?`; neither crosses `/`).
    pub allow_devices: Vec<String>,
    pub allow_host_network: bool,
    pub allow_host_pid: bool,
    pub allow_host_ipc: bool,
    /// Normalised names (`NET_ADMIN`, or `ALL`).
    pub allow_capabilities: Vec<String>,
    /// Absolute host path prefixes, besides the package directory.
    pub allow_bind_paths: Vec<PathBuf>,
    pub create_bind_paths: bool,
    pub allow_security_opt: bool,
}

impl Default for DevicePolicy {
    /// The conservative default, the same as an empty `policy:` section.
    fn default() -> Self {
        DevicePolicy::from_config(&Policy::default())
    }
}

/// Where a bind source lies, as the policy sees it.
enum Place {
    Package,
    Allowed,
    Outside,
}

impl DevicePolicy {
    /// From the config section (validated at load: unknown capability names there never match).
    pub fn from_config(p: &Policy) -> DevicePolicy {
        DevicePolicy {
            allow_privileged: p.allow_privileged,
            allow_devices: p.allow_devices.clone(),
            allow_host_network: p.allow_host_network,
            allow_host_pid: p.allow_host_pid,
            allow_host_ipc: p.allow_host_ipc,
            allow_capabilities: p
                .allow_capabilities
                .iter()
                .filter_map(|c| normalise_capability(c))
                .collect(),
            allow_bind_paths: p.allow_bind_paths.clone(),
            create_bind_paths: p.create_bind_paths,
            allow_security_opt: p.allow_security_opt,
        }
    }

    /// Checks every service of `project`; `Err` lists every violation.
    pub fn check(&self, project: &Project) -> Result<(), PolicyError> {
        let mut violations = Vec::new();
        for svc in &project.services {
            self.check_service(svc, &project.working_dir, &mut violations);
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(PolicyError { violations })
        }
    }

    fn check_service(&self, svc: &ServiceSpec, package_dir: &Path, out: &mut Vec<Violation>) {
        let mut refuse = |key: String, reason: String| {
            out.push(Violation {
                path: format!("services.{}.{key}", svc.name),
                reason,
            });
        };
        if svc.privileged && !self.allow_privileged {
            refuse(
                "privileged".into(),
                "privileged containers are not allowed on this device (policy.allow_privileged)"
                    .into(),
            );
        }
        for (i, cap) in svc.cap_add.iter().enumerate() {
            let name = normalise_capability(cap);
            let allowed = name
                .as_ref()
                .is_some_and(|n| self.allow_capabilities.iter().any(|a| a == n || a == "ALL"));
            if !allowed {
                let what = match &name {
                    None => format!("{cap:?} is not a Linux capability"),
                    Some(_) => format!(
                        "capability {cap:?} is not in policy.allow_capabilities (allowed: {})",
                        if self.allow_capabilities.is_empty() {
                            "none".to_string()
                        } else {
                            self.allow_capabilities.join(", ")
                        }
                    ),
                };
                refuse(format!("cap_add[{i}]"), what);
            }
        }
        if svc.network == ServiceNetwork::Host && !self.allow_host_network {
            refuse(
                "network_mode".into(),
                "the host network is not allowed on this device (policy.allow_host_network)".into(),
            );
        }
        if svc.pid.as_deref() == Some("host") && !self.allow_host_pid {
            refuse(
                "pid".into(),
                "the host PID namespace is not allowed on this device (policy.allow_host_pid)"
                    .into(),
            );
        }
        if svc.ipc.as_deref() == Some("host") && !self.allow_host_ipc {
            refuse(
                "ipc".into(),
                "the host IPC namespace is not allowed on this device (policy.allow_host_ipc)"
                    .into(),
            );
        }
        for (i, device) in svc.devices.iter().enumerate() {
            if let Some(reason) = self.device_problem(device) {
                refuse(format!("devices[{i}]"), reason);
            }
        }
        for (i, opt) in svc.security_opt.iter().enumerate() {
            if !self.allow_security_opt && !tightens(opt) {
                refuse(
                    format!("security_opt[{i}]"),
                    format!(
                        "{opt:?} changes the container's confinement, which is not allowed on this device (policy.allow_security_opt); only no-new-privileges is always allowed"
                    ),
                );
            }
        }
        // `volumes` and `tmpfs` both land in `mounts`; only `volumes` entries are counted so
        // the index matches the compose file's `volumes` list.
        let volumes = svc
            .mounts
            .iter()
            .filter(|m| !matches!(m, Mount::Tmpfs { .. }));
        for (i, m) in volumes.enumerate() {
            let Mount::Bind { source, .. } = m else {
                continue;
            };
            if let Some(reason) = self.bind_problem(source, package_dir) {
                refuse(format!("volumes[{i}]"), reason);
            }
        }
        for name in svc.sysctls.keys() {
            if let Some(reason) = sysctl_problem(name, svc) {
                refuse(format!("sysctls.{name}"), reason);
            }
        }
    }

    /// Why a `host:container:perms` device mapping is refused, if it is.
    fn device_problem(&self, device: &str) -> Option<String> {
        let host = device.split(':').next().unwrap_or_default();
        if !host.starts_with('/') {
            return Some(format!(
                "{host:?} is not a host device path; only device paths listed in policy.allow_devices can be mapped"
            ));
        }
        let resolved = resolve(Path::new(host));
        let text = resolved.to_string_lossy();
        if self.allow_devices.iter().any(|p| glob_path(p, &text)) {
            return None;
        }
        let shown = if Path::new(host) == resolved {
            format!("device {host:?}")
        } else {
            format!("device {host:?} (resolves to {text:?})")
        };
        Some(if self.allow_devices.is_empty() {
            format!(
                "{shown} cannot be mapped: no devices are allowed on this device (policy.allow_devices is empty)"
            )
        } else {
            format!(
                "{shown} matches no pattern in policy.allow_devices ({})",
                self.allow_devices.join(", ")
            )
        })
    }

    /// Why a bind source is refused, if it is: outside the package and the allowed paths, or
    /// missing under an allowed path that the agent may not create.
    fn bind_problem(&self, source: &str, package_dir: &Path) -> Option<String> {
        let (place, resolved) = self.place(source, package_dir);
        match place {
            Place::Package => None,
            // Found here rather than at create time, so that nothing (a network, an earlier
            // service) is applied before the refusal.
            Place::Allowed if !self.create_bind_paths && !resolved.exists() => Some(format!(
                "bind source {source:?} does not exist, and policy.create_bind_paths is false so margo-agent does not create it"
            )),
            Place::Allowed => None,
            Place::Outside => {
                let shown = if Path::new(source) == resolved {
                    format!("bind source {source:?}")
                } else {
                    format!(
                        "bind source {source:?} (resolves to {:?})",
                        resolved.display()
                    )
                };
                Some(if !source.starts_with('/') {
                    format!("{shown} is not an absolute path")
                } else if self.allow_bind_paths.is_empty() {
                    format!(
                        "{shown} is outside the package directory, and policy.allow_bind_paths allows no host path"
                    )
                } else {
                    format!(
                        "{shown} is outside the package directory and every path in policy.allow_bind_paths ({})",
                        self.allow_bind_paths
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            }
        }
    }

    fn place(&self, source: &str, package_dir: &Path) -> (Place, PathBuf) {
        let path = Path::new(source);
        let resolved = resolve(path);
        // Before the absolute-path rule: with a relative `work_dir`, sources in the package
        // are relative too.
        if resolved.starts_with(resolve(package_dir)) {
            return (Place::Package, resolved);
        }
        if !path.is_absolute() {
            return (Place::Outside, resolved);
        }
        if self
            .allow_bind_paths
            .iter()
            .any(|p| resolved.starts_with(resolve(p)))
        {
            return (Place::Allowed, resolved);
        }
        (Place::Outside, resolved)
    }

    /// Creates `spec`'s missing bind sources, as compose does (`create_host_path`, its
    /// default): always inside the package directory, under `policy.allow_bind_paths` only
    /// with `policy.create_bind_paths`. Anything else was refused by [`Self::check`]; it is
    /// refused again here so a caller that skipped the check cannot create host paths.
    pub fn create_bind_sources(
        &self,
        spec: &ServiceSpec,
        package_dir: &Path,
    ) -> Result<(), BindSourceError> {
        let volumes = spec
            .mounts
            .iter()
            .filter(|m| !matches!(m, Mount::Tmpfs { .. }));
        for (i, m) in volumes.enumerate() {
            let Mount::Bind {
                source,
                target,
                create_host_path,
                ..
            } = m
            else {
                continue;
            };
            if Path::new(source).exists() {
                continue;
            }
            let fail = |code: &'static str, why: String| BindSourceError {
                code,
                message: format!(
                    "services.{}.volumes[{i}]: bind source {source:?} for {target:?} {why}",
                    spec.name
                ),
            };
            if !create_host_path {
                return Err(fail(
                    "ERR_COMPOSE_INVALID",
                    "does not exist and create_host_path is false".into(),
                ));
            }
            let (place, resolved) = self.place(source, package_dir);
            match place {
                Place::Package => {}
                Place::Allowed if self.create_bind_paths => {}
                Place::Allowed => {
                    return Err(fail(
                        ERR_POLICY,
                        "does not exist, and policy.create_bind_paths is false so margo-agent does not create it".into(),
                    ));
                }
                Place::Outside => {
                    return Err(fail(
                        ERR_POLICY,
                        "is outside the package directory and policy.allow_bind_paths".into(),
                    ));
                }
            }
            // The resolved path, so a `..` after a missing component cannot create
            // directories outside the place that was checked.
            std::fs::create_dir_all(&resolved).map_err(|e| {
                fail(
                    "ERR_LOCAL_IO",
                    format!("cannot be created at {}: {e}", resolved.display()),
                )
            })?;
        }
        Ok(())
    }
}

/// `security_opt` values that only ever restrict the container.
fn tightens(opt: &str) -> bool {
    matches!(
        opt.trim(),
        "no-new-privileges"
            | "no-new-privileges=true"
            | "no-new-privileges:true"
            | "no-new-privileges=false"
            | "no-new-privileges:false"
    )
}

/// Why a sysctl is refused, if it is: only namespaced ones, in a namespace the container does
/// not share with the host, change nothing outside it.
fn sysctl_problem(name: &str, svc: &ServiceSpec) -> Option<String> {
    let key = name.replace('/', ".");
    if key.starts_with("net.") {
        return (svc.network == ServiceNetwork::Host).then(|| {
            format!(
                "{name:?} would change the host's network stack: the service uses the host network"
            )
        });
    }
    if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
        return (svc.ipc.as_deref() == Some("host")).then(|| {
            format!("{name:?} would change the host's IPC settings: the service uses the host IPC namespace")
        });
    }
    if UTS_SYSCTLS.contains(&key.as_str()) {
        return None;
    }
    Some(format!(
        "{name:?} is not a namespaced sysctl; setting it would change the host kernel (only net.*, fs.mqueue.*, kernel.shm*/msg*/sem, kernel.hostname and kernel.domainname can be set)"
    ))
}

/// `path` as the kernel will resolve it: the longest existing prefix with its symlinks
/// resolved, then the rest with `.` dropped and `..` applied (it does not exist, so it holds
/// no links). A relative path is resolved lexically only.
pub fn resolve(path: &Path) -> PathBuf {
    if !path.is_absolute() {
        // Canonicalising would resolve it against the agent's working directory.
        return apply_components(PathBuf::new(), path);
    }
    let mut base = path;
    loop {
        if let Ok(real) = base.canonicalize() {
            let rest = path.strip_prefix(base).unwrap_or(Path::new(""));
            return apply_components(real, rest);
        }
        match base.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => base = parent,
            _ => return apply_components(PathBuf::new(), path),
        }
    }
}

fn apply_components(mut out: PathBuf, rest: &Path) -> PathBuf {
    for c in rest.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Matches an absolute path against a pattern component by component; `*` and `?` do not
/// cross `/`.
fn glob_path(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let t: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    p.len() == t.len()
        && p.iter()
            .zip(&t)
            .all(|(p, t)| glob(p.as_bytes(), t.as_bytes()))
}

/// `*` (any run) and `?` (one byte) over one path component.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::compose::project::tests::from_yaml;

    fn with(f: impl FnOnce(&mut Policy)) -> DevicePolicy {
        let mut p = Policy::default();
        f(&mut p);
        DevicePolicy::from_config(&p)
    }

    /// The violations `policy` finds in inline compose YAML (project in `/srv/pkg`).
    fn violations(policy: &DevicePolicy, yaml: &str) -> Vec<String> {
        violations_of(policy, &from_yaml(yaml))
    }

    fn violations_of(policy: &DevicePolicy, project: &Project) -> Vec<String> {
        match policy.check(project) {
            Ok(()) => Vec::new(),
            Err(e) => e.violations.iter().map(ToString::to_string).collect(),
        }
    }

    /// A one-service project "app" in `/srv/pkg` with fields set by `f`.
    fn app(f: impl FnOnce(&mut ServiceSpec)) -> Project {
        let mut p = from_yaml("services: {app: {image: x}}");
        f(&mut p.services[0]);
        p
    }

    fn bind(source: &str) -> Mount {
        Mount::Bind {
            source: source.into(),
            target: "/data".into(),
            read_only: false,
            create_host_path: true,
            propagation: None,
            selinux: None,
        }
    }

    /// A fresh temp directory for one test.
    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("margo-policy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn conservative_default_allows_a_plain_service() {
        let v = violations(
            &DevicePolicy::default(),
            "services: {app: {image: x, volumes: ['./conf:/conf', 'data:/data'], cap_drop: [ALL], tmpfs: [/run]}}\nvolumes: {data: {}}",
        );
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn refuses_privileged_unless_allowed() {
        let yaml = "services: {app: {image: x, privileged: true}}";
        assert_eq!(
            violations(&DevicePolicy::default(), yaml),
            [
                "services.app.privileged: privileged containers are not allowed on this device (policy.allow_privileged)"
            ]
        );
        assert!(violations(&with(|p| p.allow_privileged = true), yaml).is_empty());
    }

    #[test]
    fn cap_add_needs_an_allowed_capability() {
        let yaml = "services: {app: {image: x, cap_add: [CHOWN, cap_net_bind_service, NET_ADMIN, SYS_ADMIN, BOGUS]}}";
        let v = violations(&DevicePolicy::default(), yaml);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(
            v[0].starts_with("services.app.cap_add[2]: capability \"NET_ADMIN\" is not in policy.allow_capabilities (allowed: AUDIT_WRITE, CHOWN"),
            "{v:?}"
        );
        assert!(v[1].starts_with("services.app.cap_add[3]: "), "{v:?}");
        assert_eq!(
            v[2],
            "services.app.cap_add[4]: \"BOGUS\" is not a Linux capability"
        );
        let admin = with(|p| p.allow_capabilities = vec!["CAP_NET_ADMIN".into()]);
        let v = violations(
            &admin,
            "services: {app: {image: x, cap_add: [NET_ADMIN, CHOWN]}}",
        );
        assert_eq!(v.len(), 1, "the list replaces the default set: {v:?}");
        assert!(v[0].starts_with("services.app.cap_add[1]: "), "{v:?}");
    }

    #[test]
    fn cap_add_all_needs_all() {
        let yaml = "services: {app: {image: x, cap_add: [ALL]}}";
        assert_eq!(violations(&DevicePolicy::default(), yaml).len(), 1);
        let all = with(|p| p.allow_capabilities = vec!["all".into()]);
        assert!(violations(&all, yaml).is_empty());
        assert!(violations(&all, "services: {app: {image: x, cap_add: [SYS_ADMIN]}}").is_empty());
    }

    #[test]
    fn host_namespaces_need_their_keys() {
        let project = app(|s| {
            s.network = ServiceNetwork::Host;
            s.pid = Some("host".into());
            s.ipc = Some("host".into());
        });
        assert_eq!(
            violations_of(&DevicePolicy::default(), &project),
            [
                "services.app.network_mode: the host network is not allowed on this device (policy.allow_host_network)",
                "services.app.pid: the host PID namespace is not allowed on this device (policy.allow_host_pid)",
                "services.app.ipc: the host IPC namespace is not allowed on this device (policy.allow_host_ipc)",
            ]
        );
        let open = with(|p| {
            p.allow_host_network = true;
            p.allow_host_pid = true;
            p.allow_host_ipc = true;
        });
        assert!(violations_of(&open, &project).is_empty());
        // Sharing with another service, or private namespaces, is not the host's.
        let shared = app(|s| {
            s.pid = Some("service:db".into());
            s.ipc = Some("shareable".into());
            s.network = ServiceNetwork::PodmanDefault;
        });
        assert!(violations_of(&DevicePolicy::default(), &shared).is_empty());
        // network_mode: host as parsed from compose text.
        let v = violations(
            &DevicePolicy::default(),
            "services: {app: {image: x, network_mode: host}}",
        );
        assert_eq!(v.len(), 1);
        assert!(v[0].starts_with("services.app.network_mode: "), "{v:?}");
    }

    #[test]
    fn devices_must_match_an_allowed_pattern() {
        let project = app(|s| {
            s.devices = vec![
                "/dev/ttyUSB0:/dev/ttyUSB0:rwm".into(),
                "/dev/ttyUSB1".into(),
                "/dev/ttyUSB0/x:/dev/x".into(),
                "/dev/sda:/dev/sda".into(),
                "nvidia.com/gpu=all".into(),
            ]
        });
        let v = violations_of(&DevicePolicy::default(), &project);
        assert_eq!(v.len(), 5, "{v:?}");
        assert!(
            v[0].starts_with("services.app.devices[0]: device \"/dev/ttyUSB0\" cannot be mapped: no devices are allowed"),
            "{v:?}"
        );
        let usb = with(|p| p.allow_devices = vec!["/dev/ttyUSB*".into()]);
        let v = violations_of(&usb, &project);
        assert_eq!(v.len(), 3, "{v:?}");
        // `*` stays within one component.
        assert!(v[0].starts_with("services.app.devices[2]: "), "{v:?}");
        assert!(
            v[1].starts_with("services.app.devices[3]: device \"/dev/sda\" matches no pattern in policy.allow_devices (/dev/ttyUSB*)"),
            "{v:?}"
        );
        assert!(
            v[2].starts_with(
                "services.app.devices[4]: \"nvidia.com/gpu=all\" is not a host device path"
            ),
            "{v:?}"
        );
        let one = with(|p| p.allow_devices = vec!["/dev/ttyUSB?".into(), "/dev/sda".into()]);
        assert_eq!(violations_of(&one, &project).len(), 2);
    }

    #[test]
    fn a_device_path_is_matched_after_dotdot_and_symlinks() {
        let usb = with(|p| p.allow_devices = vec!["/dev/ttyUSB*".into()]);
        let dotdot = app(|s| s.devices = vec!["/dev/ttyUSB0/../sda:/dev/x".into()]);
        assert_eq!(violations_of(&usb, &dotdot).len(), 1);

        let dir = temp("devlink");
        std::os::unix::fs::symlink("/dev/null", dir.join("ttyUSB9")).unwrap();
        let pattern = format!("{}/ttyUSB*", dir.display());
        let via_link = with(|p| p.allow_devices = vec![pattern.clone()]);
        let project = app(|s| s.devices = vec![format!("{}/ttyUSB9", dir.display())]);
        let v = violations_of(&via_link, &project);
        let allow_null = with(|p| p.allow_devices = vec![pattern, "/dev/null".into()]);
        let v_null = violations_of(&allow_null, &project);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            v.len(),
            1,
            "a link is judged by the node it leads to: {v:?}"
        );
        assert!(v[0].contains("resolves to \"/dev/null\""), "{v:?}");
        assert!(v_null.is_empty(), "{v_null:?}");
    }

    #[test]
    fn security_opt_other_than_no_new_privileges_needs_the_key() {
        let project = app(|s| {
            s.security_opt = vec![
                "no-new-privileges:true".into(),
                "no-new-privileges".into(),
                "seccomp=unconfined".into(),
                "apparmor:unconfined".into(),
                "label=disable".into(),
                "label=type:spc_t".into(),
            ]
        });
        let v = violations_of(&DevicePolicy::default(), &project);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(
            v[0].starts_with("services.app.security_opt[2]: \"seccomp=unconfined\" changes the container's confinement"),
            "{v:?}"
        );
        assert!(v[0].contains("policy.allow_security_opt"), "{v:?}");
        assert!(violations_of(&with(|p| p.allow_security_opt = true), &project).is_empty());
    }

    #[test]
    fn only_namespaced_sysctls_pass() {
        let project = app(|s| {
            for k in [
                "net.core.somaxconn",
                "net/ipv4/ip_forward",
                "kernel.shmmax",
                "fs.mqueue.msg_max",
                "kernel.domainname",
                "kernel.panic",
                "vm.swappiness",
            ] {
                s.sysctls.insert(k.into(), "1".into());
            }
        });
        let v = violations_of(&DevicePolicy::default(), &project);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].starts_with(
                "services.app.sysctls.kernel.panic: \"kernel.panic\" is not a namespaced sysctl"
            ),
            "{v:?}"
        );
        assert!(
            v[1].starts_with("services.app.sysctls.vm.swappiness: "),
            "{v:?}"
        );
        // Even a policy that allows everything else does not let them through.
        let open = with(|p| {
            p.allow_privileged = true;
            p.allow_security_opt = true;
        });
        assert_eq!(violations_of(&open, &project).len(), 2);
        // In the host's namespaces, namespaced sysctls are the host's.
        let host = app(|s| {
            s.network = ServiceNetwork::Host;
            s.ipc = Some("host".into());
            s.sysctls.insert("net.core.somaxconn".into(), "1".into());
            s.sysctls.insert("kernel.sem".into(), "1".into());
        });
        let all_hosts = with(|p| {
            p.allow_host_network = true;
            p.allow_host_ipc = true;
        });
        let v = violations_of(&all_hosts, &host);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("host's IPC"), "{v:?}");
        assert!(v[1].contains("host's network stack"), "{v:?}");
    }

    #[test]
    fn collects_every_violation_of_every_service() {
        let yaml = "services:\n  a: {image: x, privileged: true, cap_add: [SYS_ADMIN]}\n  b: {image: x, network_mode: host, volumes: ['/etc:/etc']}\n";
        let e = DevicePolicy::default().check(&from_yaml(yaml)).unwrap_err();
        let paths: Vec<&str> = e.violations.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "services.a.privileged",
                "services.a.cap_add[0]",
                "services.b.network_mode",
                "services.b.volumes[0]",
            ]
        );
        assert_eq!(e.code(), "ERR_POLICY");
        let msg = e.to_string();
        assert!(msg.starts_with("refused by the device policy: services.a.privileged: "));
        assert!(
            msg.ends_with("; nothing of this project was applied"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn bind_sources_inside_the_package_are_always_allowed() {
        let v = violations(
            &DevicePolicy::default(),
            "services: {app: {image: x, volumes: ['.:/pkg', './conf:/conf', '/srv/pkg/data:/data']}}",
        );
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn bind_sources_outside_need_an_allowed_prefix() {
        let project = from_yaml(
            "services: {app: {image: x, volumes: ['/srv/data/app:/a', '/srv/data2:/b', '/srv/data/../etc:/c', '/srv/pkg2:/d', '/srv/data:/e']}}",
        );
        let v = violations_of(&DevicePolicy::default(), &project);
        assert_eq!(v.len(), 5, "{v:?}");
        assert_eq!(
            v[0],
            "services.app.volumes[0]: bind source \"/srv/data/app\" is outside the package directory, and policy.allow_bind_paths allows no host path"
        );
        // (With create_bind_paths, so that missing sources under /srv/data are not refused.)
        let data = with(|p| {
            p.allow_bind_paths = vec!["/srv/data".into()];
            p.create_bind_paths = true;
        });
        let v = violations_of(&data, &project);
        let refused: Vec<&str> = v.iter().map(|v| &v[..23]).collect();
        // `/srv/data2` and `/srv/pkg2` are siblings, not children; `..` climbs out.
        assert_eq!(
            refused,
            [
                "services.app.volumes[1]",
                "services.app.volumes[2]",
                "services.app.volumes[3]"
            ],
            "{v:?}"
        );
        assert!(v[1].contains("(resolves to \"/srv/etc\")"), "{v:?}");
        assert!(
            v[0].contains("every path in policy.allow_bind_paths (/srv/data)"),
            "{v:?}"
        );
    }

    #[test]
    fn a_missing_source_under_an_allowed_path_is_refused_unless_it_may_be_created() {
        let dir = temp("missing");
        let project = app(|s| {
            s.mounts = vec![
                bind(&dir.join("there").to_string_lossy()),
                bind(&dir.join("missing").to_string_lossy()),
            ]
        });
        std::fs::create_dir_all(dir.join("there")).unwrap();
        let no_create = with(|p| p.allow_bind_paths = vec![dir.clone()]);
        let create = with(|p| {
            p.allow_bind_paths = vec![dir.clone()];
            p.create_bind_paths = true;
        });
        let v = violations_of(&no_create, &project);
        let v_create = violations_of(&create, &project);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with("services.app.volumes[1]: bind source ")
                && v[0].ends_with("does not exist, and policy.create_bind_paths is false so margo-agent does not create it"),
            "{v:?}"
        );
        assert!(v_create.is_empty(), "{v_create:?}");
    }

    #[test]
    fn relative_bind_sources_are_refused() {
        // project.rs makes relative sources absolute; the policy does not trust that blindly.
        let project = app(|s| s.mounts = vec![bind("data/x")]);
        let everything = with(|p| p.allow_bind_paths = vec!["/".into()]);
        let v = violations_of(&everything, &project);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("is not an absolute path"), "{v:?}");
        // Unless the package directory is relative too (a relative work_dir).
        let mut in_pkg = project.clone();
        in_pkg.working_dir = PathBuf::from("data");
        assert!(violations_of(&DevicePolicy::default(), &in_pkg).is_empty());
    }

    #[test]
    fn the_volumes_index_skips_tmpfs_mounts() {
        let project = from_yaml(
            "services: {app: {image: x, tmpfs: [/run, /tmp], volumes: ['v:/v', '/etc:/etc']}}\nvolumes: {v: {}}",
        );
        let v = violations_of(&DevicePolicy::default(), &project);
        assert_eq!(v.len(), 1);
        assert!(v[0].starts_with("services.app.volumes[1]: "), "{v:?}");
    }

    #[test]
    fn a_symlink_cannot_lead_a_bind_source_out_of_an_allowed_path() {
        let dir = temp("symlink");
        let allowed = dir.join("allowed");
        let outside = dir.join("outside");
        let pkg = dir.join("pkg");
        for d in [&allowed, &outside, &pkg] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, pkg.join("link")).unwrap();
        let policy = with(|p| {
            p.allow_bind_paths = vec![allowed.clone()];
            p.create_bind_paths = true;
        });
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mut project = app(|sv| {
            sv.mounts = vec![
                bind(&s(&allowed.join("link"))),
                bind(&s(&allowed.join("link/missing/deeper"))),
                bind(&s(&pkg.join("link"))),
                bind(&s(&allowed.join("real/missing"))),
                bind(&s(&allowed.join("missing/../../outside"))),
            ]
        });
        project.working_dir = pkg.clone();
        let v = violations_of(&policy, &project);
        std::fs::remove_dir_all(&dir).unwrap();
        let refused: Vec<&str> = v.iter().map(|v| &v[..23]).collect();
        assert_eq!(
            refused,
            [
                "services.app.volumes[0]",
                "services.app.volumes[1]",
                "services.app.volumes[2]",
                "services.app.volumes[4]"
            ],
            "{v:?}"
        );
        assert!(v[0].contains("resolves to"), "{v:?}");
    }

    #[test]
    fn an_allowed_path_that_is_itself_a_link_is_followed() {
        let dir = temp("linked-allowed");
        std::fs::create_dir_all(dir.join("real/app")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("data")).unwrap();
        let policy = with(|p| p.allow_bind_paths = vec![dir.join("data")]);
        let project = app(|s| {
            s.mounts = vec![
                bind(&dir.join("data/app").to_string_lossy()),
                bind(&dir.join("real/app").to_string_lossy()),
            ]
        });
        let v = violations_of(&policy, &project);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn creates_missing_sources_in_the_package_and_allowed_paths_when_configured() {
        let dir = temp("create");
        let pkg = dir.join("pkg");
        let allowed = dir.join("allowed");
        std::fs::create_dir_all(&pkg).unwrap();
        let in_pkg = pkg.join("conf/sub");
        let in_allowed = allowed.join("app/data");
        let spec = app(|s| {
            s.mounts = vec![
                Mount::Tmpfs {
                    target: "/run".into(),
                    size: None,
                    mode: None,
                },
                bind(&in_pkg.to_string_lossy()),
                bind(&in_allowed.to_string_lossy()),
            ]
        })
        .services
        .remove(0);

        let no_create = with(|p| p.allow_bind_paths = vec![allowed.clone()]);
        let e = no_create.create_bind_sources(&spec, &pkg).unwrap_err();
        let created_in_pkg = in_pkg.is_dir();
        let created_without_leave = in_allowed.exists();

        let create = with(|p| {
            p.allow_bind_paths = vec![allowed.clone()];
            p.create_bind_paths = true;
        });
        let ok = create.create_bind_sources(&spec, &pkg);
        let created = in_allowed.is_dir();

        let refused = DevicePolicy::default().create_bind_sources(&spec, &pkg);
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(created_in_pkg, "sources in the package are created");
        assert!(!created_without_leave);
        assert_eq!(e.code, "ERR_POLICY");
        assert!(
            e.message
                .starts_with("services.app.volumes[1]: bind source ")
                && e.message.contains("policy.create_bind_paths is false"),
            "{e}"
        );
        assert_eq!(ok, Ok(()));
        assert!(created);
        // The sources exist now, so a policy that would refuse them has nothing to create.
        assert_eq!(refused, Ok(()));
    }

    #[test]
    fn never_creates_sources_outside_allowed_paths() {
        let dir = temp("never");
        let outside = dir.join("outside/x");
        let spec = app(|s| s.mounts = vec![bind(&outside.to_string_lossy())])
            .services
            .remove(0);
        let create = with(|p| p.create_bind_paths = true);
        let e = create.create_bind_sources(&spec, &dir.join("pkg"));
        let exists = outside.exists();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.unwrap_err().code, "ERR_POLICY");
        assert!(!exists);
    }

    #[test]
    fn create_host_path_false_refuses_a_missing_source() {
        let dir = temp("nocreate");
        let mut m = bind(&dir.join("conf").to_string_lossy());
        if let Mount::Bind {
            create_host_path, ..
        } = &mut m
        {
            *create_host_path = false;
        }
        let spec = app(|s| s.mounts = vec![m]).services.remove(0);
        let e = DevicePolicy::default().create_bind_sources(&spec, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let e = e.unwrap_err();
        assert_eq!(e.code, "ERR_COMPOSE_INVALID");
        assert!(e.message.contains("create_host_path is false"), "{e}");
    }

    #[test]
    fn resolve_applies_dotdot_after_the_existing_prefix() {
        assert_eq!(resolve(Path::new("/")), Path::new("/"));
        assert_eq!(
            resolve(Path::new("/nonexistent-margo/a/../b/./c")),
            Path::new("/nonexistent-margo/b/c")
        );
        assert_eq!(
            resolve(Path::new("/nonexistent-margo/../../etc")),
            Path::new("/etc")
        );
        assert_eq!(resolve(Path::new("a/../b")), Path::new("b"));
    }

    #[test]
    fn globs_match_within_one_component() {
        assert!(glob_path("/dev/ttyUSB*", "/dev/ttyUSB0"));
        assert!(glob_path("/dev/ttyUSB*", "/dev/ttyUSB"));
        assert!(glob_path("/dev/tty?", "/dev/tty1"));
        assert!(!glob_path("/dev/tty?", "/dev/tty10"));
        assert!(!glob_path("/dev/*", "/dev/bus/usb"));
        assert!(glob_path("/dev/*/*", "/dev/bus/usb"));
        assert!(glob_path("/dev/*a*b", "/dev/xaxab"));
        assert!(!glob_path("/dev/*a*b", "/dev/xaxa"));
        assert!(!glob_path("/dev/ttyUSB0", "/dev/ttyUSB00"));
    }

    #[test]
    fn capability_names_normalise() {
        assert_eq!(
            normalise_capability("cap_net_admin").as_deref(),
            Some("NET_ADMIN")
        );
        assert_eq!(
            normalise_capability("SYS_TIME").as_deref(),
            Some("SYS_TIME")
        );
        assert_eq!(normalise_capability("all").as_deref(), Some("ALL"));
        assert_eq!(normalise_capability("CAP_"), None);
        assert_eq!(normalise_capability("NET_ADMINX"), None);
        for c in DEFAULT_CAPABILITIES {
            assert!(KNOWN_CAPABILITIES.contains(&c), "{c}");
        }
    }
}
