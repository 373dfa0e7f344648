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
//! container). The hash is stable across runs and changes whenever anything that reaches the
//! container changes, so the plan can compare it with the container's label.
//!
//! Pure: no Podman calls here; `apply` sends the bodies.

use super::project::{NetworkSpec, ServiceNetwork, ServiceSpec, VolumeSpec};
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
    /// Environment injected into every container (the Margo OTEL collector variables). It
    /// overrides the file's environment: the device knows its own collector.
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
            for excluded in ["depends_on", "profiles", "pull_policy"] {
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

    /// Every label the container gets: the file's, the agent's, then the compose labels.
    pub fn container_labels(&self, ctx: &CreateContext) -> BTreeMap<String, String> {
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
            (LABEL_CONTAINER_NUMBER, "1".to_string()),
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

    /// The `POST /libpod/containers/create` body.
    pub fn create_body(&self, ctx: &CreateContext) -> Value {
        let mut b = Map::new();
        let mut set = |k: &str, v: Value| {
            b.insert(k.to_string(), v);
        };
        set("name", json!(self.container_name));
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
        env.extend(ctx.extra_env.clone());
        set("env", json!(env));
        set("labels", json!(self.container_labels(ctx)));
        set_network(&mut set, &self.network);
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
        Value::Object(b)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn set_network(set: &mut impl FnMut(&str, Value), network: &ServiceNetwork) {
    match network {
        ServiceNetwork::Networks(attached) => {
            set("netns", json!({"nsmode": "bridge"}));
            let networks: Map<String, Value> = attached
                .iter()
                .map(|(name, aliases)| (name.clone(), json!({"aliases": aliases})))
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
    if let Some(memory) = s.limits.memory.filter(|m| *m > 0) {
        l.insert("memory".into(), json!({"limit": memory}));
    }
    if let Some(cpus) = s.limits.cpus.filter(|c| *c > 0.0) {
        // Bounded: cpus is finite and non-negative (checked when read); 1e6 CPUs is absurd.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let quota = (cpus.min(1e6) * CPU_PERIOD_US as f64).round() as u64;
        l.insert(
            "cpu".into(),
            json!({"quota": quota, "period": CPU_PERIOD_US}),
        );
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
