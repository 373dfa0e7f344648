//! The configuration: one YAML file (default [`DEFAULT_CONFIG_PATH`]).
//!
//! Precedence, once: `--config PATH` on the command line, else `$MARGO_AGENT_CONFIG`, else the
//! default path. Every key, with its default, is documented in `examples/config.yaml`; the
//! defaults live in the `Default` impls below and nowhere else. Unknown keys are refused
//! (a misspelt `pol_interval` must not silently leave polling at its default), and every
//! value is validated once, at load, so the rest of the agent never sees an invalid config.

use crate::oci::reference::Reference;
use crate::units::{format_duration, parse_duration};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/margo-agent/config.yaml";
/// A config file larger than this is refused (it is hand-written YAML, never this big).
pub const CONFIG_MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is larger than {CONFIG_MAX_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("config file {path} is invalid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("config file {path}: key {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The device id reported to the WFM and used in labels; default: `/etc/machine-id`.
    pub device_id: Option<String>,
    /// Where desired state comes from.
    pub desired_state: DesiredState,
    /// Registry endpoints: credentials and transport per host.
    pub registries: Vec<Registry>,
    /// Trust store.
    pub tls: Tls,
    /// The Podman service.
    pub podman: Podman,
    /// The one state file.
    pub state_file: PathBuf,
    /// Unpacked packages and downloads in progress.
    pub work_dir: PathBuf,
    /// `error|warning|notice|info|debug`.
    pub log_level: String,
    /// What deployments may reach on the host (`docs/policy.md`).
    pub policy: Policy,
    /// The Fleet Manager (`docs/wfm-api.md`); no `url`: registry-only mode.
    pub wfm: crate::wfm::config::WfmConfig,
    /// OTLP metrics export and the collector variables of workloads (`docs/metrics.md`).
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Package signature trust policy (`docs/packages.md`).
    pub signatures: crate::package::signature::Signatures,
    /// Image housekeeping (`docs/packages.md`).
    pub images: crate::package::images::ImagesConfig,
    /// Registry mirrors: rewrite hosts to one endpoint (`docs/mirrors.md`).
    pub mirrors: crate::mirror::Mirrors,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_id: None,
            desired_state: DesiredState::default(),
            registries: Vec::new(),
            tls: Tls::default(),
            podman: Podman::default(),
            state_file: PathBuf::from("/var/lib/margo-agent/state.json"),
            work_dir: PathBuf::from("/var/lib/margo-agent/work"),
            log_level: "info".into(),
            policy: Policy::default(),
            wfm: crate::wfm::config::WfmConfig::default(),
            telemetry: Default::default(),
            signatures: Default::default(),
            images: Default::default(),
            mirrors: Default::default(),
        }
    }
}

/// The desired-state source (an OCI artifact in a registry).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DesiredState {
    /// `registry/repository[:tag]`; the tag defaults to `latest`. Required for `run` unless
    /// `directory` is set.
    pub reference: String,
    /// Air-gapped source: a local directory of ApplicationDeployment YAMLs and the packages
    /// they name by relative path (`docs/packages.md`); replaces `reference`.
    pub directory: Option<PathBuf>,
    /// Time between polls of the tag.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// A random delay up to this is added to each interval, so a fleet does not poll in step.
    #[serde(deserialize_with = "duration")]
    pub poll_jitter: Duration,
    /// Longest wait between retries while the source is unreachable (backoff doubles up to it).
    #[serde(deserialize_with = "duration")]
    pub retry_max: Duration,
}

impl Default for DesiredState {
    fn default() -> Self {
        DesiredState {
            reference: String::new(),
            directory: None,
            poll_interval: Duration::from_secs(60),
            poll_jitter: Duration::from_secs(10),
            retry_max: Duration::from_secs(600),
        }
    }
}

/// Settings for one registry host (`host` or `host:port`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registry {
    pub host: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Read the password from this file instead (keeps secrets out of the config).
    pub password_file: Option<PathBuf>,
    /// Speak plain HTTP to this host. Default false: TLS everywhere.
    pub plain_http: bool,
}

/// Trust store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// The system CA bundle; ignored when the file does not exist.
    pub ca_bundle: PathBuf,
    /// Extra CA certificates (PEM files) trusted in addition.
    pub extra_ca: Vec<PathBuf>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            ca_bundle: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            extra_ca: Vec::new(),
        }
    }
}

/// The Podman REST service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Podman {
    /// libpod API socket.
    pub socket: PathBuf,
    /// Deadline of one API call (create, start, inspect, …).
    #[serde(deserialize_with = "duration")]
    pub call_timeout: Duration,
    /// Deadline of one image pull.
    #[serde(deserialize_with = "duration")]
    pub pull_timeout: Duration,
    /// Grace time given to a container to stop before it is killed.
    #[serde(deserialize_with = "duration")]
    pub stop_timeout: Duration,
    /// How often running workloads are looked at between applies: containers restored after
    /// a reboot or a Podman outage, healthchecks run (each on its own interval, checked at
    /// this granularity), problems recorded in the status.
    #[serde(deserialize_with = "duration")]
    pub observe_interval: Duration,
}

impl Default for Podman {
    fn default() -> Self {
        Podman {
            socket: PathBuf::from("/run/podman/podman.sock"),
            call_timeout: Duration::from_secs(60),
            pull_timeout: Duration::from_secs(15 * 60),
            stop_timeout: Duration::from_secs(10),
            observe_interval: Duration::from_secs(30),
        }
    }
}

/// The device policy: which host-reaching compose keys deployments may use. Every default
/// refuses; `docs/policy.md` says why for each key. Enforced by
/// [`crate::compose::policy::DevicePolicy`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// `privileged: true` (every device, every capability, no confinement). Default false.
    pub allow_privileged: bool,
    /// Host device paths `devices` may map; `*` and `?` match within one path component
    /// (`/dev/ttyUSB*`). Default empty: no devices.
    pub allow_devices: Vec<String>,
    /// `network_mode: host`. Default false.
    pub allow_host_network: bool,
    /// `pid: host`. Default false.
    pub allow_host_pid: bool,
    /// `ipc: host`. Default false.
    pub allow_host_ipc: bool,
    /// Capabilities `cap_add` may name (`NET_ADMIN` or `CAP_NET_ADMIN`; `ALL` for any).
    /// Default: Docker's default set, [`crate::compose::policy::DEFAULT_CAPABILITIES`].
    pub allow_capabilities: Vec<String>,
    /// Absolute host path prefixes bind mounts may use besides the package directory.
    /// Default empty.
    pub allow_bind_paths: Vec<PathBuf>,
    /// Create missing bind sources under `allow_bind_paths`, as docker does. Default false.
    pub create_bind_paths: bool,
    /// `security_opt` other than `no-new-privileges` (`seccomp=unconfined`,
    /// `apparmor=unconfined`, `label=disable`, …). Default false.
    pub allow_security_opt: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_privileged: false,
            allow_devices: Vec::new(),
            allow_host_network: false,
            allow_host_pid: false,
            allow_host_ipc: false,
            allow_capabilities: crate::compose::policy::DEFAULT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            allow_bind_paths: Vec::new(),
            create_bind_paths: false,
            allow_security_opt: false,
        }
    }
}

impl Policy {
    /// The first invalid value, as (key, reason).
    fn problem(&self) -> Option<(String, String)> {
        use crate::compose::policy::{device_pattern_problem, normalise_capability};
        for (i, d) in self.allow_devices.iter().enumerate() {
            if let Some(why) = device_pattern_problem(d) {
                return Some((format!("policy.allow_devices[{i}]"), format!("{d:?} {why}")));
            }
        }
        for (i, c) in self.allow_capabilities.iter().enumerate() {
            if normalise_capability(c).is_none() {
                return Some((
                    format!("policy.allow_capabilities[{i}]"),
                    format!(
                        "{c:?} is not a Linux capability (e.g. NET_ADMIN or CAP_NET_ADMIN, or ALL)"
                    ),
                ));
            }
        }
        for (i, p) in self.allow_bind_paths.iter().enumerate() {
            let key = format!("policy.allow_bind_paths[{i}]");
            if !p.is_absolute() {
                return Some((key, format!("{:?} must be an absolute path", p.display())));
            }
            if p.components().any(|c| c == std::path::Component::ParentDir) {
                return Some((key, format!("{:?} must not contain ..", p.display())));
            }
        }
        None
    }
}

/// A config duration (`90s`, `1m30s`), for `#[serde(deserialize_with)]` in every section.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

impl Config {
    /// Where the config is read from: `--config`, else `$MARGO_AGENT_CONFIG`, else the default.
    pub fn path_from(cli: Option<&Path>) -> PathBuf {
        if let Some(p) = cli {
            return p.to_path_buf();
        }
        match std::env::var_os("MARGO_AGENT_CONFIG") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    /// Reads, parses and validates the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.len() > CONFIG_MAX_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(path, &text)
    }

    /// Parses and validates YAML text (`path` only names the source in errors).
    pub fn from_yaml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let options = serde_saphyr::options! {
                // One line in the journal: no source snippet (line and column stay in it).
                with_snippet: false,
            };
            serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                reason: one_line(&e.to_string()),
            })?
        };
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        if !self.desired_state.reference.is_empty() {
            Reference::parse(&self.desired_state.reference)
                .map_err(|e| invalid("desired_state.reference", e.to_string()))?;
        }
        if let Some(d) = &self.desired_state.directory {
            if !self.desired_state.reference.is_empty() {
                return Err(invalid(
                    "desired_state.directory",
                    "set reference or directory, not both".into(),
                ));
            }
            if !d.is_absolute() {
                return Err(invalid(
                    "desired_state.directory",
                    format!("{:?} must be an absolute path", d.display()),
                ));
            }
        }
        if self.desired_state.poll_interval < Duration::from_secs(1) {
            return Err(invalid(
                "desired_state.poll_interval",
                format!(
                    "{} is below the 1s minimum",
                    format_duration(self.desired_state.poll_interval)
                ),
            ));
        }
        for (i, r) in self.registries.iter().enumerate() {
            if r.host.is_empty() || r.host.contains('/') {
                return Err(invalid(
                    &format!("registries[{i}].host"),
                    "must be host or host:port".into(),
                ));
            }
            if r.password.is_some() && r.password_file.is_some() {
                return Err(invalid(
                    &format!("registries[{i}]"),
                    "set password or password_file, not both".into(),
                ));
            }
            if r.username.is_none() && (r.password.is_some() || r.password_file.is_some()) {
                return Err(invalid(
                    &format!("registries[{i}].username"),
                    "a password needs a username".into(),
                ));
            }
        }
        if let Some(id) = &self.device_id
            && (id.is_empty() || id.len() > 128)
        {
            return Err(invalid("device_id", "must be 1 to 128 characters".into()));
        }
        if let Some((key, reason)) = self.policy.problem() {
            return Err(invalid(&key, reason));
        }
        if let Some((key, reason)) = self.wfm.problem() {
            return Err(invalid(&key, reason));
        }
        if let Some((key, reason)) = self.telemetry.problem() {
            return Err(invalid(&key, reason));
        }
        if let Some((key, reason)) = self.mirrors.problem() {
            return Err(invalid(&key, reason));
        }
        if let Some((key, reason)) = self.signatures.problem() {
            return Err(invalid(&key, reason));
        }
        if crate::journal::Level::parse(&self.log_level).is_none() {
            return Err(invalid(
                "log_level",
                format!(
                    "{:?} is not one of error, warning, notice, info, debug",
                    self.log_level
                ),
            ));
        }
        Ok(())
    }

    /// The desired-state reference, which `run` requires.
    pub fn source_reference(&self) -> Result<Reference, String> {
        if self.desired_state.reference.is_empty() {
            return Err(
                "desired_state.reference is not set; margo-agent has no source of desired state"
                    .into(),
            );
        }
        Reference::parse(&self.desired_state.reference).map_err(|e| e.to_string())
    }

    /// The settings for a registry host, if any.
    pub fn registry(&self, host: &str) -> Option<&Registry> {
        self.registries.iter().find(|r| r.host == host)
    }

    /// Whether `host` is to be spoken to over plain HTTP.
    pub fn plain_http(&self, host: &str) -> bool {
        self.registry(host).is_some_and(|r| r.plain_http)
    }

    /// Username and password for `host`, reading `password_file` when set.
    pub fn credentials(&self, host: &str) -> Result<Option<(String, String)>, String> {
        let Some(r) = self.registry(host) else {
            return Ok(None);
        };
        let Some(user) = &r.username else {
            return Ok(None);
        };
        let password = match (&r.password, &r.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read password_file {} for {host}: {e}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }

    /// The device id: configured, else `/etc/machine-id`, else the hostname.
    pub fn device_id(&self) -> String {
        if let Some(id) = &self.device_id {
            return id.clone();
        }
        for f in ["/etc/machine-id", "/proc/sys/kernel/hostname"] {
            if let Ok(s) = std::fs::read_to_string(f) {
                let s = s.trim();
                if !s.is_empty() {
                    return s.to_string();
                }
            }
        }
        "unknown-device".into()
    }
}

/// Library error texts may span lines (snippets); the journal wants one.
pub fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(Path::new("test.yaml"), text)
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.podman.socket, PathBuf::from("/run/podman/podman.sock"));
        assert_eq!(
            c.state_file,
            PathBuf::from("/var/lib/margo-agent/state.json")
        );
        assert_eq!(c.desired_state.poll_interval, Duration::from_secs(60));
        assert!(c.registries.is_empty());
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../examples/config.yaml");
        let c = parse(text).unwrap();
        assert!(c.source_reference().is_ok());
    }

    #[test]
    fn rejects_unknown_key_naming_it() {
        let err = parse("desired_state:\n  pol_interval: 5s\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pol_interval"), "{msg}");
        assert!(msg.contains("test.yaml"), "{msg}");
        // Said once, on one line: no source snippet flattened into the journal line.
        assert_eq!(msg.matches("pol_interval").count(), 1, "{msg}");
        assert!(!msg.contains(" | "), "{msg}");
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let err = parse("desired_state:\n  reference: 'Reg/UP'\n").unwrap_err();
        assert!(err.to_string().contains("desired_state.reference"));
        let err = parse("desired_state:\n  poll_interval: 10x\n").unwrap_err();
        assert!(err.to_string().contains("10x"), "{err}");
        let err = parse("registries:\n  - host: a.b/c\n").unwrap_err();
        assert!(err.to_string().contains("registries[0].host"));
        let err = parse("log_level: loud\n").unwrap_err();
        assert!(err.to_string().contains("log_level"));
    }

    #[test]
    fn credentials_come_from_password_file() {
        let dir = std::env::temp_dir().join(format!("margo-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = parse(&format!(
            "registries:\n  - host: r.example:5000\n    username: u\n    password_file: {}\n",
            pw.display()
        ))
        .unwrap();
        assert_eq!(
            c.credentials("r.example:5000").unwrap(),
            Some(("u".into(), "s3cret".into()))
        );
        assert_eq!(c.credentials("other").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn policy_defaults_are_conservative() {
        let p = parse("").unwrap().policy;
        assert!(!p.allow_privileged && !p.allow_host_network && !p.allow_host_pid);
        assert!(!p.allow_host_ipc && !p.allow_security_opt && !p.create_bind_paths);
        assert!(p.allow_devices.is_empty() && p.allow_bind_paths.is_empty());
        assert!(p.allow_capabilities.iter().any(|c| c == "NET_BIND_SERVICE"));
        assert!(
            !p.allow_capabilities
                .iter()
                .any(|c| c == "NET_ADMIN" || c == "SYS_ADMIN")
        );
        // The example documents the same values it would get by leaving the section out.
        let example = parse(include_str!("../examples/config.yaml"))
            .unwrap()
            .policy;
        assert_eq!(
            crate::compose::policy::DevicePolicy::from_config(&example),
            crate::compose::policy::DevicePolicy::default()
        );
    }

    #[test]
    fn policy_section_parses() {
        let c = parse(
            "policy:\n  allow_privileged: true\n  allow_devices: [/dev/ttyUSB0, '/dev/ttyACM*']\n  allow_host_network: true\n  allow_capabilities: [cap_net_admin, SYS_TIME]\n  allow_bind_paths: [/srv/data, /var/log/]\n  create_bind_paths: true\n",
        )
        .unwrap();
        assert!(c.policy.allow_privileged && c.policy.allow_host_network);
        assert!(c.policy.create_bind_paths && !c.policy.allow_host_pid);
        assert_eq!(c.policy.allow_devices, ["/dev/ttyUSB0", "/dev/ttyACM*"]);
        let d = crate::compose::policy::DevicePolicy::from_config(&c.policy);
        assert_eq!(d.allow_capabilities, ["NET_ADMIN", "SYS_TIME"]);
        assert_eq!(
            d.allow_bind_paths,
            [PathBuf::from("/srv/data"), PathBuf::from("/var/log")]
        );
    }

    #[test]
    fn rejects_bad_policy_values_naming_the_key() {
        for (yaml, key, needle) in [
            (
                "policy:\n  allow_privilegd: true\n",
                "allow_privilegd",
                "allow_privilegd",
            ),
            (
                "policy:\n  allow_capabilities: [NET_ADMIN, NET_ADMINS]\n",
                "policy.allow_capabilities[1]",
                "NET_ADMINS",
            ),
            (
                "policy:\n  allow_bind_paths: [data]\n",
                "policy.allow_bind_paths[0]",
                "absolute",
            ),
            (
                "policy:\n  allow_bind_paths: [/srv, /srv/../etc]\n",
                "policy.allow_bind_paths[1]",
                "..",
            ),
            (
                "policy:\n  allow_devices: [ttyUSB0]\n",
                "policy.allow_devices[0]",
                "absolute",
            ),
            (
                "policy:\n  allow_devices: ['/dev/ttyUSB[01]']\n",
                "policy.allow_devices[0]",
                "not supported",
            ),
            // A type error is located by line and column (the YAML parser does not name the key).
            (
                "policy:\n  allow_host_network: yes please\n",
                "invalid boolean",
                "line 2",
            ),
        ] {
            let msg = parse(yaml).unwrap_err().to_string();
            assert!(msg.contains(key) && msg.contains(needle), "{yaml}: {msg}");
        }
    }
}
