//! Request bodies for libpod's create endpoints, the compose labels, and the config hash.
//!
//! Owns the translation of a [`ServiceSpec`] into `POST /libpod/containers/create` JSON, of a
//! [`NetworkSpec`] into `POST /libpod/networks/create` and of a [`VolumeSpec`] into
//! `POST /libpod/volumes/create`, exactly as `references.md` §2 describes them (healthcheck
//! durations in nanoseconds with `Interval` always sent, `stop_signal` as a number, binds and
//! tmpfs under `mounts`, named volumes under `volumes`, `entrypoint: [""]` to clear).
//!
//! Also owns the config hash: SHA-256 over a canonical JSON of the service (keys sorted, no
//! whitespace) plus what the agent injects, leaving out `depends_on`, `profiles` and
//! `pull_policy` as docker compose does (they change the order or the pull, not the
//! container), and the project directory (a new package revision may unpack elsewhere; bind
//! sources, which are absolute, still carry it where it matters). The hash is stable across runs and changes whenever anything that reaches the
//! container changes, so the plan can compare it with the container's label.
//!
//! Pure: no Podman calls here; `apply` sends the bodies.

use super::project::{Addresses, NetworkSpec, ServiceNetwork, ServiceSpec, VolumeSpec};
use super::service::{Healthcheck, Mount, RestartPolicy};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
pub const LABEL_CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const LABEL_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const LABEL_CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const LABEL_DEPENDS_ON: &str = "com.docker.compose.depends_on";
pub const LABEL_IMAGE: &str = "com.docker.compose.image";
pub const LABEL_NETWORK: &str = "com.docker.compose.network";
pub const LABEL_VOLUME: &str = "com.docker.compose.volume";

/// CFS period libpod uses when translating `cpus` into a quota.
const CPU_PERIOD_US: u64 = 100_000;

/// What the agent adds to every object it creates, beyond the compose file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateContext {
    /// The agent's labels (`org.margo.deployment-id`, `org.margo.component`,
    /// `org.margo.managed-by`). They override the file's labels; the compose labels override
    /// them.
    pub extra_labels: BTreeMap<String, String>,
    /// Environment injected into every container (the Margo OTEL collector variables). A
    /// variable the compose file sets itself keeps the file's value.
    pub extra_env: BTreeMap<String, String>,
    /// Image IDs by qualified reference, filled by apply after pulling. When an ID is known
    /// it becomes the `com.docker.compose.image` label and a container made from another
    /// image is recreated; when not known the reference is used and not compared.
    pub image_ids: BTreeMap<String, String>,
}

impl ServiceSpec {
    /// The value of the `com.docker.compose.config-hash` label for this service under `ctx`.
    pub fn config_hash(&self, ctx: &CreateContext) -> String {
        // Serialising cannot fail: every map has string keys and every path is stored as
        // a UTF-8 string or serialised lossily (see `ProjectInfo`).
        let mut service = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut service {
            // `project` holds the package directory, which may change with every package
            // revision; it reaches the container only through bind sources, which are
            // absolute and hashed. The name is in `container_name`.
            for excluded in ["depends_on", "profiles", "pull_policy", "project"] {
                fields.remove(excluded);
            }
        }
        let canonical = json!({
            "service": service,
            "extra_env": ctx.extra_env,
            "extra_labels": ctx.extra_labels,
        });
        // serde_json's `Map` is a BTreeMap (no `preserve_order` feature): keys come out sorted.
        crate::digest::sha256_hex(canonical.to_string().as_bytes())
    }

    /// The `com.docker.compose.image` label value under `ctx`.
    pub fn image_label(&self, ctx: &CreateContext) -> String {
        ctx.image_ids
            .get(&self.image)
            .cloned()
            .unwrap_or_else(|| self.image.clone())
    }

    /// Every label the (first) container gets: the file's, the agent's, then the compose
    /// labels.
    pub fn container_labels(&self, ctx: &CreateContext) -> BTreeMap<String, String> {
        self.instance_labels(ctx, 1)
    }

    /// The labels of container `number` (from 1).
    pub fn instance_labels(&self, ctx: &CreateContext, number: u32) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.extend(ctx.extra_labels.clone());
        let depends_on: Vec<String> = self
            .depends_on
            .iter()
            .map(|(name, d)| format!("{name}:{}:false", d.condition.as_str()))
            .collect();
        let compose = [
            (LABEL_PROJECT, self.project.name.clone()),
            (LABEL_SERVICE, self.name.clone()),
            (LABEL_CONTAINER_NUMBER, number.to_string()),
            (LABEL_ONEOFF, "False".to_string()),
            (LABEL_CONFIG_HASH, self.config_hash(ctx)),
            (
                LABEL_WORKING_DIR,
                self.project.working_dir.to_string_lossy().into_owned(),
            ),
            (
                LABEL_CONFIG_FILES,
                self.project.config_file.to_string_lossy().into_owned(),
            ),
            (LABEL_DEPENDS_ON, depends_on.join(",")),
            (LABEL_IMAGE, self.image_label(ctx)),
        ];
        labels.extend(compose.into_iter().map(|(k, v)| (k.to_string(), v)));
        labels
    }

    /// The `POST /libpod/containers/create` body of the (first) container.
    pub fn create_body(&self, ctx: &CreateContext) -> Value {
        self.instance_body(ctx, 1)
    }

    /// The `POST /libpod/containers/create` body of container `number` (from 1): replicas
    /// differ only in their name and `container-number` label.
    pub fn instance_body(&self, ctx: &CreateContext, number: u32) -> Value {
        let mut b = Map::new();
        let mut set = |k: &str, v: Value| {
            b.insert(k.to_string(), v);
        };
        set("name", json!(self.instance(number)));
        set("image", json!(self.image));
        match &self.entrypoint {
            Some(e) if e.is_empty() => set("entrypoint", json!([""])),
            Some(e) => set("entrypoint", json!(e)),
            None => {}
        }
        if let Some(c) = self.command.as_ref().filter(|c| !c.is_empty()) {
            set("command", json!(c));
        }
        let mut env = self.environment.clone();
        for (k, v) in &ctx.extra_env {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        set("env", json!(env));
        set("labels", json!(self.instance_labels(ctx, number)));
        set_network(&mut set, &self.network, &self.addresses);
        if !self.ports.is_empty() {
            set(
                "portmappings",
                Value::Array(self.ports.iter().map(port_mapping).collect()),
            );
        }
        let (mounts, volumes) = mounts(&self.mounts);
        if !mounts.is_empty() {
            set("mounts", Value::Array(mounts));
        }
        if !volumes.is_empty() {
            set("volumes", Value::Array(volumes));
        }
        match &self.healthcheck {
            Some(Healthcheck::Disabled) => set("healthconfig", json!({"Test": ["NONE"]})),
            Some(Healthcheck::Check {
                test,
                interval,
                timeout,
                retries,
                start_period,
            }) => set(
                "healthconfig",
                json!({
                    "Test": test,
                    "Interval": nanos(*interval),
                    "Timeout": nanos(*timeout),
                    "Retries": retries,
                    "StartPeriod": nanos(*start_period),
                }),
            ),
            None => {}
        }
        set("restart_policy", json!(self.restart.policy.as_str()));
        if let (RestartPolicy::OnFailure, Some(n)) = (self.restart.policy, self.restart.max_retries)
        {
            set("restart_tries", json!(n));
        }
        if let Some(sig) = self.stop_signal {
            set("stop_signal", json!(sig));
        }
        if let Some(grace) = self.stop_grace_period {
            // Podman counts whole seconds; round up so the grace is never shortened.
            set(
                "stop_timeout",
                json!(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)),
            );
        }
        if let Some(limits) = resource_limits(self) {
            set("resource_limits", limits);
        }
        let optional_strings = [
            ("hostname", &self.hostname),
            ("work_dir", &self.working_dir),
            ("user", &self.user),
        ];
        for (k, v) in optional_strings {
            if let Some(v) = v {
                set(k, json!(v));
            }
        }
        let flags = [
            ("privileged", self.privileged),
            ("terminal", self.tty),
            ("stdin", self.stdin_open),
            ("read_only_filesystem", self.read_only),
            ("init", self.init),
        ];
        for (k, on) in flags {
            if on {
                set(k, json!(true));
            }
        }
        let lists = [
            ("cap_add", &self.cap_add),
            ("cap_drop", &self.cap_drop),
            ("dns_server", &self.dns),
            ("hostadd", &self.extra_hosts),
        ];
        for (k, v) in lists {
            if !v.is_empty() {
                set(k, json!(v));
            }
        }
        self.set_host_access(&mut set);
        Value::Object(b)
    }

    /// Keys added after the first release (devices, security options, namespaces, kernel
    /// settings, logging); each is sent only when set.
    fn set_host_access(&self, set: &mut impl FnMut(&str, Value)) {
        if !self.devices.is_empty() {
            // libpod parses `host:container:permissions` from the path, as `--device` does.
            let devices: Vec<Value> = self.devices.iter().map(|d| json!({"path": d})).collect();
            set("devices", Value::Array(devices));
        }
        security_options(set, &self.security_opt);
        if let Some(pid) = &self.pid {
            set("pidns", json!({"nsmode": pid}));
        }
        if let Some(ipc) = &self.ipc {
            set("ipcns", json!({"nsmode": ipc}));
        }
        let mut sysctl = self.sysctls.clone();
        if let Some(d) = &self.domainname {
            // libpod has no domain name field; the UTS namespace's kernel.domainname is what
            // docker sets for `domainname`.
            sysctl.insert("kernel.domainname".into(), d.clone());
        }
        if !sysctl.is_empty() {
            set("sysctl", json!(sysctl));
        }
        if !self.ulimits.is_empty() {
            let limits: Vec<Value> = self
                .ulimits
                .iter()
                .map(|(name, u)| json!({"type": name, "soft": u.soft, "hard": u.hard}))
                .collect();
            set("r_limits", Value::Array(limits));
        }
        if let Some(size) = self.shm_size {
            set("shm_size", json!(size));
        }
        if !self.group_add.is_empty() {
            set("groups", json!(self.group_add));
        }
        if let Some(adj) = self.oom_score_adj {
            set("oom_score_adj", json!(adj));
        }
        if !self.annotations.is_empty() {
            set("annotations", json!(self.annotations));
        }
        if !self.dns_search.is_empty() {
            set("dns_search", json!(self.dns_search));
        }
        if !self.dns_opt.is_empty() {
            set("dns_option", json!(self.dns_opt));
        }
        if let Some(l) = &self.logging {
            let mut c = Map::new();
            if let Some(d) = &l.driver {
                c.insert("driver".into(), json!(d));
            }
            if let Some(size) = l.max_size {
                c.insert("size".into(), json!(size));
            }
            if let Some(tag) = &l.tag {
                c.insert("options".into(), json!({"tag": tag}));
            }
            if !c.is_empty() {
                set("log_configuration", Value::Object(c));
            }
        }
    }
}

/// `security_opt` in the canonical forms of [`super::isolation`] → libpod's fields.
fn security_options(set: &mut impl FnMut(&str, Value), opts: &[String]) {
    let mut selinux = Vec::new();
    for o in opts {
        match o.split_once(['=', ':']) {
            Some(("no-new-privileges", "true")) => set("no_new_privileges", json!(true)),
            Some(("label", l)) => selinux.push(l.to_string()),
            Some(("seccomp", p)) => set("seccomp_profile_path", json!(p)),
            Some(("apparmor", p)) => set("apparmor_profile", json!(p)),
            Some(("systempaths", "unconfined")) => set("unmask", json!(["ALL"])),
            _ => {}
        }
    }
    if !selinux.is_empty() {
        set("selinux_opts", json!(selinux));
    }
}

/// Podman takes durations as int64 nanoseconds.
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn set_network(
    set: &mut impl FnMut(&str, Value),
    network: &ServiceNetwork,
    addresses: &BTreeMap<String, Addresses>,
) {
    match network {
        ServiceNetwork::Networks(attached) => {
            set("netns", json!({"nsmode": "bridge"}));
            let networks: Map<String, Value> = attached
                .iter()
                .map(|(name, aliases)| {
                    let mut n = json!({"aliases": aliases});
                    if let Some(a) = addresses.get(name) {
                        if !a.ips.is_empty() {
                            n["static_ips"] = json!(a.ips);
                        }
                        if let Some(mac) = &a.mac {
                            n["static_mac"] = json!(mac);
                        }
                    }
                    (name.clone(), n)
                })
                .collect();
            set("Networks", Value::Object(networks));
        }
        // Rootless Podman would otherwise pick slirp4netns or pasta.
        ServiceNetwork::PodmanDefault => set("netns", json!({"nsmode": "bridge"})),
        ServiceNetwork::Host => set("netns", json!({"nsmode": "host"})),
        ServiceNetwork::None => set("netns", json!({"nsmode": "none"})),
        ServiceNetwork::Container(name) => {
            set("netns", json!({"nsmode": "container", "value": name}));
        }
    }
}

fn port_mapping(p: &super::syntax::Port) -> Value {
    let mut m = Map::new();
    if let Some(ip) = &p.host_ip {
        m.insert("host_ip".into(), json!(ip));
    }
    if let Some(host) = p.published {
        m.insert("host_port".into(), json!(host));
    }
    m.insert("container_port".into(), json!(p.target));
    m.insert("protocol".into(), json!(p.protocol.as_str()));
    if p.range > 1 {
        m.insert("range".into(), json!(p.range));
    }
    Value::Object(m)
}

/// Splits mounts into libpod's `mounts` (binds, tmpfs) and `volumes` (named volumes).
fn mounts(all: &[Mount]) -> (Vec<Value>, Vec<Value>) {
    let (mut mounts, mut volumes) = (Vec::new(), Vec::new());
    for m in all {
        match m {
            Mount::Bind {
                source,
                target,
                read_only,
                propagation,
                selinux,
                ..
            } => {
                let mut options = vec!["rbind".to_string()];
                if *read_only {
                    options.push("ro".into());
                }
                options.extend(propagation.iter().cloned());
                options.extend(selinux.iter().cloned());
                mounts.push(json!({
                    "type": "bind", "source": source, "destination": target, "options": options,
                }));
            }
            Mount::Tmpfs { target, size, mode } => {
                let mut options = Vec::new();
                if let Some(size) = size {
                    options.push(format!("size={size}"));
                }
                if let Some(mode) = mode {
                    options.push(format!("mode={mode:o}"));
                }
                mounts.push(json!({
                    "type": "tmpfs", "source": "tmpfs", "destination": target, "options": options,
                }));
            }
            Mount::Volume {
                source,
                target,
                read_only,
                nocopy,
            } => {
                let mut options = Vec::new();
                if *read_only {
                    options.push("ro");
                }
                if *nocopy {
                    options.push("nocopy");
                }
                volumes.push(json!({
                    "Name": source.clone().unwrap_or_default(), "Dest": target, "Options": options,
                }));
            }
        }
    }
    (mounts, volumes)
}

fn resource_limits(s: &ServiceSpec) -> Option<Value> {
    let mut l = Map::new();
    let mut memory = Map::new();
    if let Some(limit) = s.limits.memory.filter(|m| *m > 0) {
        memory.insert("limit".into(), json!(limit));
    }
    if let Some(r) = s.limits.memory_reservation.filter(|m| *m > 0) {
        memory.insert("reservation".into(), json!(r));
    }
    if let Some(swap) = s.limits.memory_swap {
        memory.insert("swap".into(), json!(swap));
    }
    if !memory.is_empty() {
        l.insert("memory".into(), Value::Object(memory));
    }
    let mut cpu = Map::new();
    if let Some(cpus) = s.limits.cpus.filter(|c| *c > 0.0) {
        // Bounded: cpus is finite and non-negative (checked when read); 1e6 CPUs is absurd.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let quota = (cpus.min(1e6) * CPU_PERIOD_US as f64).round() as u64;
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(CPU_PERIOD_US));
    }
    if let Some(shares) = s.limits.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if !cpu.is_empty() {
        l.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(pids) = s.limits.pids.filter(|p| *p > 0) {
        l.insert("pids".into(), json!({"limit": pids}));
    }
    (!l.is_empty()).then_some(Value::Object(l))
}

/// Labels shared by networks and volumes: the file's, the agent's, then the compose ones.
fn object_labels(
    own: &BTreeMap<String, String>,
    ctx: &CreateContext,
    project: &str,
    kind_label: &str,
    key: &str,
) -> BTreeMap<String, String> {
    let mut labels = own.clone();
    labels.extend(ctx.extra_labels.clone());
    labels.insert(LABEL_PROJECT.to_string(), project.to_string());
    labels.insert(kind_label.to_string(), key.to_string());
    labels
}

impl NetworkSpec {
    /// The `POST /libpod/networks/create` body (send with `?ignoreIfExists=true`).
    pub fn create_body(&self, project: &str, ctx: &CreateContext) -> Value {
        let mut body = json!({
            "name": self.name,
            "driver": "bridge",
            // libpod defaults to false, which breaks service-name resolution.
            "dns_enabled": true,
            "internal": self.internal,
            "labels": object_labels(&self.labels, ctx, project, LABEL_NETWORK, &self.key),
        });
        if self.enable_ipv6 {
            body["ipv6_enabled"] = json!(true);
        }
        if !self.subnets.is_empty() {
            let subnets: Vec<Value> = self
                .subnets
                .iter()
                .map(|(subnet, gateway)| match gateway {
                    Some(g) => json!({"subnet": subnet, "gateway": g}),
                    None => json!({"subnet": subnet}),
                })
                .collect();
            body["subnets"] = Value::Array(subnets);
        }
        body
    }
}

impl VolumeSpec {
    /// The `POST /libpod/volumes/create` body.
    pub fn create_body(&self, project: &str, ctx: &CreateContext) -> Value {
        let mut body = json!({
            "Name": self.name,
            "Driver": "local",
            "Labels": object_labels(&self.labels, ctx, project, LABEL_VOLUME, &self.key),
            "IgnoreIfExists": true,
        });
        if !self.driver_opts.is_empty() {
            body["Options"] = json!(self.driver_opts);
        }
        body
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::compose::project::Project;
    use crate::compose::project::tests::from_yaml;
    use std::path::Path;

    fn ctx() -> CreateContext {
        let mut c = CreateContext::default();
        c.extra_labels
            .insert("org.margo.deployment-id".into(), "d-1".into());
        c.extra_labels
            .insert("org.margo.managed-by".into(), "margo-agent".into());
        c.extra_env.insert(
            "HTTP_OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            "http://collector:4318".into(),
        );
        c
    }

    const WEB: &str = "\
services:
  web:
    image: nginx:1.27
    entrypoint: []
    command: [nginx, -g, daemon off;]
    environment: {TZ: UTC, HTTP_OTEL_EXPORTER_OTLP_ENDPOINT: from-file}
    labels: {tier: front}
    ports: ['127.0.0.1:8080:80', '9000-9001:9000-9001/udp', '443']
    volumes:
      - ./conf:/etc/nginx/conf.d:ro
      - data:/data
      - {type: tmpfs, target: /run, tmpfs: {size: 1m, mode: 755}}
    healthcheck: {test: curl -f localhost, interval: 10s, timeout: 2s, retries: 4, start_period: 1m}
    restart: on-failure:5
    stop_signal: SIGQUIT
    stop_grace_period: 1500ms
    deploy: {resources: {limits: {cpus: '0.5', memory: 256m, pids: 64}}}
    user: '101'
    working_dir: /srv
    hostname: web
    read_only: true
    init: true
    cap_drop: [ALL]
    extra_hosts: ['gw=10.0.0.1']
    depends_on: {db: {condition: service_healthy}}
  db:
    image: postgres:16
volumes:
  data:
";

    #[test]
    fn builds_the_libpod_container_create_body() {
        let p = from_yaml(WEB);
        let web = p.service("web").unwrap();
        let body = web.create_body(&ctx());
        let hash = web.config_hash(&ctx());
        let expected = json!({
            "name": "demo-web-1",
            "image": "docker.io/library/nginx:1.27",
            "entrypoint": [""],
            "command": ["nginx", "-g", "daemon off;"],
            // The file sets the collector variable itself: its value is kept.
            "env": {"TZ": "UTC", "HTTP_OTEL_EXPORTER_OTLP_ENDPOINT": "from-file"},
            "labels": {
                "tier": "front",
                "org.margo.deployment-id": "d-1",
                "org.margo.managed-by": "margo-agent",
                "com.docker.compose.project": "demo",
                "com.docker.compose.service": "web",
                "com.docker.compose.container-number": "1",
                "com.docker.compose.oneoff": "False",
                "com.docker.compose.config-hash": hash,
                "com.docker.compose.project.working_dir": "/srv/pkg",
                "com.docker.compose.project.config_files": "/srv/pkg/compose.yaml",
                "com.docker.compose.depends_on": "db:service_healthy:false",
                "com.docker.compose.image": "docker.io/library/nginx:1.27",
            },
            "netns": {"nsmode": "bridge"},
            "Networks": {"demo_default": {"aliases": ["web"]}},
            "portmappings": [
                {"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80, "protocol": "tcp"},
                {"host_port": 9000, "container_port": 9000, "protocol": "udp", "range": 2},
                {"container_port": 443, "protocol": "tcp"},
            ],
            "mounts": [
                {"type": "bind", "source": "/srv/pkg/conf", "destination": "/etc/nginx/conf.d", "options": ["rbind", "ro"]},
                {"type": "tmpfs", "source": "tmpfs", "destination": "/run", "options": ["size=1048576", "mode=755"]},
            ],
            "volumes": [{"Name": "demo_data", "Dest": "/data", "Options": []}],
            "healthconfig": {
                "Test": ["CMD-SHELL", "curl -f localhost"],
                "Interval": 10_000_000_000u64,
                "Timeout": 2_000_000_000u64,
                "Retries": 4,
                "StartPeriod": 60_000_000_000u64,
            },
            "restart_policy": "on-failure",
            "restart_tries": 5,
            "stop_signal": 3,
            "stop_timeout": 2,
            "resource_limits": {
                "memory": {"limit": 268_435_456u64},
                "cpu": {"quota": 50_000, "period": 100_000},
                "pids": {"limit": 64},
            },
            "hostname": "web",
            "work_dir": "/srv",
            "user": "101",
            "read_only_filesystem": true,
            "init": true,
            "cap_drop": ["ALL"],
            "hostadd": ["gw:10.0.0.1"],
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn maps_host_access_keys_into_the_body() {
        let p = from_yaml(
            "services:\n  app:\n    image: x\n    devices: ['/dev/null:/dev/mynull']\n    \
             security_opt: [no-new-privileges, 'no-new-privileges:false', 'label=disable', 'label=level:s0', 'seccomp=unconfined', 'apparmor=unconfined', 'systempaths=unconfined']\n    \
             pid: host\n    ipc: shareable\n    sysctls: {net.core.somaxconn: 1024}\n    domainname: example.org\n    \
             ulimits: {nofile: {soft: 1000, hard: 2000}, nproc: 100}\n    shm_size: 32m\n    group_add: ['1234']\n    \
             oom_score_adj: 100\n    annotations: {org.example/a: b}\n    dns_search: [example.org]\n    dns_opt: ['ndots:2']\n    \
             logging: {driver: json-file, options: {max-size: 1m, tag: app}}\n    \
             mem_limit: 64m\n    mem_reservation: 32m\n    memswap_limit: 128m\n    cpu_shares: 512\n    \
             networks: {lan: {ipv4_address: 10.1.0.5, ipv6_address: 'fd00::5', mac_address: '02:00:00:00:00:05'}}\n\
             networks: {lan: {enable_ipv6: true}}",
        );
        let b = p.services[0].create_body(&CreateContext::default());
        assert_eq!(b["devices"], json!([{"path": "/dev/null:/dev/mynull:rwm"}]));
        assert_eq!(b["no_new_privileges"], json!(true));
        assert_eq!(b["selinux_opts"], json!(["disable", "level:s0"]));
        assert_eq!(b["seccomp_profile_path"], "unconfined");
        assert_eq!(b["apparmor_profile"], "unconfined");
        assert_eq!(b["unmask"], json!(["ALL"]));
        assert_eq!(b["pidns"], json!({"nsmode": "host"}));
        assert_eq!(b["ipcns"], json!({"nsmode": "shareable"}));
        assert_eq!(
            b["sysctl"],
            json!({"net.core.somaxconn": "1024", "kernel.domainname": "example.org"})
        );
        assert_eq!(
            b["r_limits"],
            json!([{"type": "nofile", "soft": 1000, "hard": 2000}, {"type": "nproc", "soft": 100, "hard": 100}])
        );
        assert_eq!(b["shm_size"], json!(32 << 20));
        assert_eq!(b["groups"], json!(["1234"]));
        assert_eq!(b["oom_score_adj"], json!(100));
        assert_eq!(b["annotations"], json!({"org.example/a": "b"}));
        assert_eq!(b["dns_search"], json!(["example.org"]));
        assert_eq!(b["dns_option"], json!(["ndots:2"]));
        assert_eq!(
            b["log_configuration"],
            json!({"driver": "k8s-file", "size": 1 << 20, "options": {"tag": "app"}})
        );
        assert_eq!(
            b["resource_limits"],
            json!({"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20}, "cpu": {"shares": 512}})
        );
        assert_eq!(
            b["Networks"],
            json!({"demo_lan": {"aliases": ["app"], "static_ips": ["10.1.0.5", "fd00::5"], "static_mac": "02:00:00:00:00:05"}})
        );
    }

    #[test]
    fn each_new_key_changes_the_config_hash() {
        // New fields are skipped while empty, so a service that uses none of them hashes as it
        // did before they existed (the pinned hash); one that uses one must hash differently.
        let base = from_yaml("services: {web: {image: x}}").services[0].config_hash(&ctx());
        for changed in [
            "services: {web: {image: x, devices: [/dev/null]}}",
            "services: {web: {image: x, ulimits: {nofile: 10}}}",
            "services: {web: {image: x, cpu_shares: 10}}",
            "services: {web: {image: x, logging: {driver: none}}}",
        ] {
            assert_ne!(
                from_yaml(changed).services[0].config_hash(&ctx()),
                base,
                "{changed}"
            );
        }
        let on_n = |extra: &str| {
            from_yaml(&format!(
                "services: {{web: {{image: x, networks: {{n: {extra}}}}}}}\nnetworks: {{n: }}"
            ))
            .services[0]
                .config_hash(&ctx())
        };
        assert_ne!(on_n(""), on_n("{ipv4_address: 10.0.0.2}"));
    }

    #[test]
    fn minimal_service_body_sets_only_what_is_given() {
        let p = from_yaml("services: {app: {image: busybox}}");
        let body = p.services[0].create_body(&CreateContext::default());
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "Networks",
                "env",
                "image",
                "labels",
                "name",
                "netns",
                "restart_policy"
            ]
        );
        assert_eq!(body["restart_policy"], "no");
    }

    #[test]
    fn disabled_healthcheck_sends_none() {
        let p = from_yaml("services: {app: {image: x, healthcheck: {disable: true}}}");
        assert_eq!(
            p.services[0].create_body(&CreateContext::default())["healthconfig"],
            json!({"Test": ["NONE"]})
        );
    }

    #[test]
    fn network_modes_map_to_netns() {
        let p = from_yaml(
            "services:\n  h: {image: x, network_mode: host}\n  n: {image: x, network_mode: none}\n  \
             b: {image: x, network_mode: bridge}\n  s: {image: x, network_mode: 'service:h'}",
        );
        let body = |s: &str| p.service(s).unwrap().create_body(&CreateContext::default());
        assert_eq!(body("h")["netns"], json!({"nsmode": "host"}));
        assert_eq!(body("n")["netns"], json!({"nsmode": "none"}));
        assert_eq!(body("b")["netns"], json!({"nsmode": "bridge"}));
        assert!(body("b").get("Networks").is_none());
        assert_eq!(
            body("s")["netns"],
            json!({"nsmode": "container", "value": "demo-h-1"})
        );
        assert!(p.networks.is_empty(), "no service uses the project network");
    }

    #[test]
    fn config_hash_is_stable_and_ignores_order_only_keys() {
        let a = from_yaml_profiles(
            "services: {web: {image: x, environment: {A: '1', B: '2'}, depends_on: [db], profiles: [p]}, db: {image: y, profiles: [p]}}",
        );
        let b = from_yaml_profiles(
            "services: {web: {image: x, environment: [B=2, A=1], pull_policy: always}}",
        );
        let h = |p: &Project| p.service("web").unwrap().config_hash(&ctx());
        // Pinned: a change here recreates every container on every device after an upgrade,
        // so it must be deliberate (then update the value and say so in the release notes).
        assert_eq!(
            h(&from_yaml(WEB)),
            "72790ef13baf01d390ff0e5336e917923063c76d6ac9ac463832a5ab33290cd0",
            "config hash of the WEB fixture changed"
        );
        assert_eq!(
            h(&a),
            h(&b),
            "depends_on, profiles, pull_policy and key order do not count"
        );
        assert_eq!(h(&a).len(), 64);
    }

    fn from_yaml_profiles(yaml: &str) -> Project {
        crate::compose::project::tests::from_yaml_with(yaml, &["p".to_string()], &|_| None).unwrap()
    }

    #[test]
    fn config_hash_changes_with_anything_that_reaches_the_container() {
        let base = from_yaml("services: {web: {image: 'x:1', environment: {A: '1'}}}").services[0]
            .config_hash(&ctx());
        for changed in [
            "services: {web: {image: 'x:2', environment: {A: '1'}}}",
            "services: {web: {image: 'x:1', environment: {A: '2'}}}",
            "services: {web: {image: 'x:1', environment: {A: '1'}, ports: ['80']}}",
            "services: {web: {image: 'x:1', environment: {A: '1'}, restart: always}}",
            "services: {web: {image: 'x:1', environment: {A: '1'}, container_name: w}}",
        ] {
            assert_ne!(
                from_yaml(changed).services[0].config_hash(&ctx()),
                base,
                "{changed}"
            );
        }
        let mut other = ctx();
        other
            .extra_env
            .insert("GRPC_OTEL_EXPORTER_OTLP_ENDPOINT".into(), "x".into());
        let p = from_yaml("services: {web: {image: 'x:1', environment: {A: '1'}}}");
        assert_ne!(
            p.services[0].config_hash(&other),
            base,
            "injected env counts"
        );
    }

    #[test]
    fn config_hash_follows_the_package_directory_only_through_binds() {
        use crate::compose::project::{Context, normalise};
        let hash_in = |dir: &str, yaml: &str| {
            let f =
                crate::compose::file::parse(yaml, Path::new("c.yaml"), &|_| None, &mut Vec::new())
                    .unwrap();
            let cx = Context {
                project_name: "demo",
                working_dir: Path::new(dir),
                config_file: &Path::new(dir).join("compose.yaml"),
                profiles: &[],
                lookup: &|_| None,
            };
            normalise(&f, &cx, &mut Vec::new()).unwrap().services[0].config_hash(&ctx())
        };
        let plain = "services: {web: {image: x}}";
        assert_eq!(hash_in("/pkg/rev1", plain), hash_in("/pkg/rev2", plain));
        let bind = "services: {web: {image: x, volumes: ['./conf:/conf']}}";
        assert_ne!(hash_in("/pkg/rev1", bind), hash_in("/pkg/rev2", bind));
    }

    #[test]
    fn image_label_uses_the_known_image_id() {
        let p = from_yaml("services: {web: {image: busybox}}");
        let mut c = CreateContext::default();
        assert_eq!(
            p.services[0].image_label(&c),
            "docker.io/library/busybox:latest"
        );
        c.image_ids.insert(
            "docker.io/library/busybox:latest".into(),
            "sha256:abc".into(),
        );
        assert_eq!(
            p.services[0].container_labels(&c)[LABEL_IMAGE],
            "sha256:abc"
        );
    }

    #[test]
    fn builds_network_and_volume_bodies() {
        let p = from_yaml(
            "services: {web: {image: x, networks: [back], volumes: ['db:/d']}}\n\
             networks: {back: {internal: true, labels: {tier: back}, ipam: {config: [{subnet: 10.89.10.0/24}]}}}\n\
             volumes: {db: {driver_opts: {type: tmpfs, device: tmpfs}}}",
        );
        assert_eq!(
            p.networks[0].create_body(&p.name, &ctx()),
            json!({
                "name": "demo_back", "driver": "bridge", "dns_enabled": true, "internal": true,
                "labels": {
                    "tier": "back", "org.margo.deployment-id": "d-1", "org.margo.managed-by": "margo-agent",
                    "com.docker.compose.project": "demo", "com.docker.compose.network": "back",
                },
                "subnets": [{"subnet": "10.89.10.0/24"}],
            })
        );
        assert_eq!(
            p.volumes[0].create_body(&p.name, &CreateContext::default()),
            json!({
                "Name": "demo_db", "Driver": "local", "IgnoreIfExists": true,
                "Labels": {"com.docker.compose.project": "demo", "com.docker.compose.volume": "db"},
                "Options": {"type": "tmpfs", "device": "tmpfs"},
            })
        );
    }
}
