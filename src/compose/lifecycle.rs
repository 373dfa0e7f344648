//! How a service's container runs and stops: `restart`, `healthcheck`, `logging`, resource
//! limits and the parts of `deploy` that mean something on one Podman host.
//!
//! Owns the reconciliation the specification asks for: `deploy.restart_policy` overrides
//! `restart`; `deploy.resources.limits` and the legacy `mem_limit`/`cpus`/`pids_limit` (and
//! `reservations.memory` and `mem_reservation`) must agree when both are given (an error
//! rather than a silent choice); a healthcheck gets docker's defaults (30s interval, 30s
//! timeout, 3 retries) so `Interval` can always be sent to libpod. Docker's file log drivers
//! (`json-file`, `local`) become Podman's `k8s-file`, as Podman does itself.
//!
//! Reads `deploy.replicas` (or `scale`, which must agree with it), 0 to [`MAX_REPLICAS`].
//! Refuses: `deploy.mode: global` (a swarm mode), device reservations (`gpus`-style access is the device
//! policy's decision), `max_attempts` with a restart condition other than `on-failure`
//! (Podman, like docker, counts retries only for on-failure), log drivers Podman lacks.
//! Ignores with a [`Warning`]: swarm-only `deploy` keys, CPU reservations,
//! `restart_policy.delay`/`window`, `healthcheck.start_interval`, log options `max-file` and
//! `compress`, and a healthcheck without `test` (libpod cannot retime the image's own check).

use super::error::{ComposeError, Warning};
use super::tree::Node;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    OnFailure,
    UnlessStopped,
}

impl RestartPolicy {
    /// The spelling libpod's `restart_policy` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// `on-failure:N` or `deploy.restart_policy.max_attempts`.
    pub max_retries: Option<u64>,
}

/// A service's healthcheck as it will be configured on the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Healthcheck {
    /// `disable: true` or `test: ["NONE"]`: the image's check is switched off.
    Disabled,
    /// `test` is `["CMD", …]` or `["CMD-SHELL", "…"]`; durations already defaulted.
    Check {
        test: Vec<String>,
        interval: Duration,
        timeout: Duration,
        retries: u64,
        start_period: Duration,
    },
}

/// Defaults docker applies to a healthcheck whose timing is not given.
const HEALTH_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
const HEALTH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
const HEALTH_RETRIES_DEFAULT: u64 = 3;

/// Resource limits after `deploy.resources.limits` and the legacy keys are reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Limits {
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    // Added after the first release: left out of the config hash while unset (see
    // `ServiceSpec`).
    /// `cpu_shares`: relative CPU weight (cgroup `cpu.shares`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// `mem_reservation` or `deploy.resources.reservations.memory`: the soft memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u64>,
    /// `memswap_limit`: memory plus swap, in bytes; `-1` is unlimited swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
}

/// Log drivers margo-agent passes to Podman. Docker's file drivers (`json-file`, `local`)
/// become Podman's file driver `k8s-file`, as Podman itself does for `json-file`.
const LOG_DRIVERS: &[(&str, &str)] = &[
    ("json-file", "k8s-file"),
    ("local", "k8s-file"),
    ("k8s-file", "k8s-file"),
    ("journald", "journald"),
    ("none", "none"),
];

/// `logging`: where the container's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Logging {
    /// Podman's driver name; `None` keeps Podman's configured default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `max-size`: the log file is truncated past this many bytes (file driver only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// `tag`: the log tag (journald's `SYSLOG_IDENTIFIER`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

pub(super) fn restart(v: &Node<'_>) -> Result<Restart, ComposeError> {
    let text = v.string()?;
    let (policy, retries) = match text.split_once(':') {
        Some(("on-failure", n)) => {
            let n = n
                .parse()
                .map_err(|_| v.invalid(format!("{n:?} is not a retry count")))?;
            (RestartPolicy::OnFailure, Some(n))
        }
        _ => {
            let p = match text.as_str() {
                "no" | "" => RestartPolicy::No,
                "always" => RestartPolicy::Always,
                "on-failure" => RestartPolicy::OnFailure,
                "unless-stopped" => RestartPolicy::UnlessStopped,
                _ => {
                    return Err(v.invalid(format!(
                        "{text:?} is not no, always, on-failure[:N] or unless-stopped"
                    )));
                }
            };
            (p, None)
        }
    };
    Ok(Restart {
        policy,
        max_retries: retries,
    })
}

pub(super) fn healthcheck(
    v: &Node<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Healthcheck>, ComposeError> {
    let mut test: Option<Vec<String>> = None;
    let mut disable = false;
    let (mut interval, mut timeout, mut start_period) = (None, None, None);
    let mut retries = None;
    for (k, e) in v.entries()? {
        match k {
            "test" => {
                test = Some(match e.value {
                    serde_json::Value::String(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                    _ => e.string_list()?,
                });
            }
            "interval" => interval = Some(e.duration()?),
            "timeout" => timeout = Some(e.duration()?),
            "start_period" => start_period = Some(e.duration()?),
            "retries" => retries = Some(e.u64()?),
            "disable" => disable = e.bool()?,
            "start_interval" => {
                e.duration()?;
                warnings.push(Warning::Ignored { path: e.path.clone(), reason: "Podman's healthcheck has no separate start interval" });
            }
            _ => return Err(e.invalid("unknown healthcheck key; expected test, interval, timeout, retries, start_period, disable")),
        }
    }
    if disable
        || test
            .as_ref()
            .is_some_and(|t| t.first().map(String::as_str) == Some("NONE"))
    {
        return Ok(Some(Healthcheck::Disabled));
    }
    let Some(test) = test else {
        warnings.push(Warning::Ignored {
            path: v.path.clone(),
            reason: "a healthcheck without test cannot retime the image's own check through libpod",
        });
        return Ok(None);
    };
    match test.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") if test.len() > 1 => {}
        _ => return Err(v.invalid(
            "healthcheck test must be a string, [\"CMD\", …], [\"CMD-SHELL\", \"…\"] or [\"NONE\"]",
        )),
    }
    Ok(Some(Healthcheck::Check {
        test,
        interval: interval.unwrap_or(HEALTH_INTERVAL_DEFAULT),
        timeout: timeout.unwrap_or(HEALTH_TIMEOUT_DEFAULT),
        retries: retries.unwrap_or(HEALTH_RETRIES_DEFAULT),
        start_period: start_period.unwrap_or_default(),
    }))
}

pub(super) fn cpus(v: &Node<'_>) -> Result<f64, ComposeError> {
    let c = v.f64()?;
    if c < 0.0 {
        return Err(v.invalid("cpus cannot be negative"));
    }
    Ok(c)
}

/// Replicas a service may ask for: more would be a mistake on one device, not a workload.
pub const MAX_REPLICAS: u32 = 64;

/// `scale` / `deploy.replicas`: how many containers the service runs (0 to
/// [`MAX_REPLICAS`]).
pub(super) fn replicas(v: &Node<'_>) -> Result<u32, ComposeError> {
    match u32::try_from(v.u64()?) {
        Ok(n) if n <= MAX_REPLICAS => Ok(n),
        _ => Err(v.invalid(format!(
            "at most {MAX_REPLICAS} replicas per service on one device"
        ))),
    }
}

/// What `deploy` contributes to a service.
#[derive(Default)]
pub(super) struct Deploy {
    pub limits: Limits,
    pub restart: Option<Restart>,
    pub replicas: Option<u32>,
}

/// `logging: {driver, options}`.
pub(super) fn logging(
    v: &Node<'_>,
    service: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Logging, ComposeError> {
    let mut l = Logging::default();
    for (k, e) in v.entries()? {
        match k {
            "driver" => {
                let name = e.string()?;
                let Some((_, podman)) = LOG_DRIVERS.iter().find(|(d, _)| *d == name) else {
                    return Err(ComposeError::unsupported(
                        Some(service),
                        "logging.driver",
                        format!(
                            "log driver {name:?}: Podman logs to json-file/local/k8s-file (as k8s-file), journald or none"
                        ),
                    ));
                };
                l.driver = Some((*podman).to_string());
            }
            "options" => {
                if e.is_null() {
                    continue;
                }
                for (ok, oe) in e.entries()? {
                    match ok {
                        "max-size" => l.max_size = Some(oe.bytes()?),
                        "tag" => l.tag = Some(oe.string()?),
                        "max-file" | "compress" => {
                            oe.string()?;
                            warnings.push(Warning::Ignored {
                                path: oe.path.clone(),
                                reason: "Podman's k8s-file driver keeps one file, truncated at max-size; it does not rotate or compress",
                            });
                        }
                        _ => {
                            return Err(ComposeError::unsupported(
                                Some(service),
                                &format!("logging.options.{ok}"),
                                "supported log options are max-size, tag (and max-file, compress, ignored)",
                            ));
                        }
                    }
                }
            }
            _ => return Err(e.invalid("unknown logging key; expected driver or options")),
        }
    }
    if l.max_size.is_some() && l.driver.as_deref().is_some_and(|d| d != "k8s-file") {
        return Err(v.invalid(
            "max-size applies only to the file log drivers (json-file, local, k8s-file)",
        ));
    }
    Ok(l)
}

pub(super) fn read_deploy(
    v: &Node<'_>,
    service: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Deploy, ComposeError> {
    let mut d = Deploy::default();
    let swarm_only = "swarm-only setting, no effect on a single Podman host";
    for (k, e) in v.entries()? {
        match k {
            "replicas" => d.replicas = Some(replicas(&e)?),
            "mode" => match e.string()?.as_str() {
                "replicated" | "replicated-job" => {}
                other => {
                    return Err(ComposeError::unsupported(
                        Some(service),
                        "deploy.mode",
                        format!(
                            "mode {other:?} is a swarm mode (one container per node); use deploy.replicas"
                        ),
                    ));
                }
            },
            "resources" => {
                for (rk, re) in e.entries()? {
                    match rk {
                        "limits" => {
                            let reservation = d.limits.memory_reservation;
                            d.limits = deploy_limits(&re)?;
                            d.limits.memory_reservation = reservation;
                        }
                        "reservations" => {
                            for (xk, xe) in re.entries()? {
                                match xk {
                                    // As docker compose does: the soft memory limit.
                                    "memory" => d.limits.memory_reservation = Some(xe.bytes()?),
                                    "devices" | "generic_resources" => {
                                        return Err(ComposeError::unsupported(
                                            Some(service),
                                            &format!("deploy.resources.reservations.{xk}"),
                                            "device access is decided by the device policy, not the compose file",
                                        ));
                                    }
                                    "cpus" => warnings.push(Warning::Ignored {
                                        path: xe.path.clone(),
                                        reason: "a CPU reservation only guides swarm scheduling",
                                    }),
                                    _ => return Err(xe.invalid("unknown reservation; expected cpus, memory, devices, generic_resources")),
                                }
                            }
                        }
                        _ => return Err(re.invalid("unknown key; expected limits or reservations")),
                    }
                }
            }
            "restart_policy" => d.restart = Some(deploy_restart(&e, warnings)?),
            "labels" | "update_config" | "rollback_config" | "placement" | "endpoint_mode" => {
                warnings.push(Warning::Ignored {
                    path: e.path.clone(),
                    reason: swarm_only,
                });
            }
            _ => return Err(e.invalid("unknown deploy key")),
        }
    }
    Ok(d)
}

fn deploy_limits(v: &Node<'_>) -> Result<Limits, ComposeError> {
    let mut l = Limits::default();
    for (k, e) in v.entries()? {
        match k {
            "cpus" => l.cpus = Some(cpus(&e)?),
            "memory" => l.memory = Some(e.bytes()?),
            "pids" => l.pids = Some(e.i64()?),
            _ => return Err(e.invalid("unknown limit; expected cpus, memory or pids")),
        }
    }
    Ok(l)
}

fn deploy_restart(v: &Node<'_>, warnings: &mut Vec<Warning>) -> Result<Restart, ComposeError> {
    let mut r = Restart {
        policy: RestartPolicy::Always,
        max_retries: None,
    };
    for (k, e) in v.entries()? {
        match k {
            "condition" => {
                r.policy = match e.string()?.as_str() {
                    "none" => RestartPolicy::No,
                    "on-failure" => RestartPolicy::OnFailure,
                    "any" => RestartPolicy::Always,
                    other => {
                        return Err(e.invalid(format!("{other:?} is not none, on-failure or any")));
                    }
                }
            }
            "max_attempts" => r.max_retries = Some(e.u64()?),
            "delay" | "window" => {
                e.duration()?;
                warnings.push(Warning::Ignored {
                    path: e.path.clone(),
                    reason: "Podman restarts without delay or window",
                });
            }
            _ => {
                return Err(
                    e.invalid("unknown key; expected condition, max_attempts, delay, window")
                );
            }
        }
    }
    if r.max_retries.is_some() && r.policy != RestartPolicy::OnFailure {
        return Err(v.invalid(
            "max_attempts applies only to condition: on-failure (Podman counts retries only then)",
        ));
    }
    Ok(r)
}

/// `deploy.resources.limits` wins; a legacy key (`mem_limit`, `cpus`, `pids_limit`,
/// `mem_reservation`) that contradicts it is an error rather than a silent choice.
pub(super) fn merge_limits(
    node: &Node<'_>,
    legacy: Limits,
    deploy: Limits,
) -> Result<Limits, ComposeError> {
    fn pick<T: PartialEq + Copy>(
        node: &Node<'_>,
        what: &str,
        legacy: Option<T>,
        deploy: Option<T>,
    ) -> Result<Option<T>, ComposeError> {
        let section = if what == "mem_reservation" {
            "deploy.resources.reservations"
        } else {
            "deploy.resources.limits"
        };
        match (legacy, deploy) {
            (Some(a), Some(b)) if a != b => {
                Err(node.invalid(format!("{what} and {section} disagree")))
            }
            (a, b) => Ok(b.or(a)),
        }
    }
    let memory = pick(node, "mem_limit", legacy.memory, deploy.memory)?;
    if let Some(swap) = legacy.memory_swap {
        // Docker's rule: memswap_limit is memory plus swap, so it needs a memory limit and
        // cannot be below it.
        match memory {
            None => {
                return Err(node
                    .invalid("memswap_limit needs mem_limit (or deploy.resources.limits.memory)"));
            }
            Some(m) if swap != -1 && u64::try_from(swap).is_ok_and(|s| s < m) => {
                return Err(
                    node.invalid("memswap_limit is memory plus swap and cannot be below mem_limit")
                );
            }
            Some(_) => {}
        }
    }
    Ok(Limits {
        memory,
        cpus: pick(node, "cpus", legacy.cpus, deploy.cpus)?,
        pids: pick(node, "pids_limit", legacy.pids, deploy.pids)?,
        cpu_shares: legacy.cpu_shares,
        memory_reservation: pick(
            node,
            "mem_reservation",
            legacy.memory_reservation,
            deploy.memory_reservation,
        )?,
        memory_swap: legacy.memory_swap,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::compose::file;
    use crate::compose::service::Service;
    use std::path::Path;

    fn web(body: &str) -> Result<(Service, Vec<Warning>), ComposeError> {
        let text = format!(
            "services:\n  web:\n    image: x\n{}",
            body.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let mut warnings = Vec::new();
        let f = file::parse(&text, Path::new("compose.yaml"), &|_| None, &mut warnings)?;
        Ok((f.services["web"].clone(), warnings))
    }

    #[test]
    fn reads_restart_policies() {
        let r = |s: &str| web(&format!("restart: {s}")).unwrap().0.restart.unwrap();
        assert_eq!(r("always").policy, RestartPolicy::Always);
        assert_eq!(r("'no'").policy, RestartPolicy::No);
        assert_eq!(r("unless-stopped").policy, RestartPolicy::UnlessStopped);
        assert_eq!(
            r("on-failure:5"),
            Restart {
                policy: RestartPolicy::OnFailure,
                max_retries: Some(5)
            }
        );
        assert!(web("restart: sometimes").is_err());
    }

    #[test]
    fn deploy_restart_policy_overrides_restart() {
        let (s, w) = web("restart: always\ndeploy:\n  restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s}").unwrap();
        assert_eq!(
            s.restart,
            Some(Restart {
                policy: RestartPolicy::OnFailure,
                max_retries: Some(3)
            })
        );
        assert_eq!(w.len(), 1, "delay is ignored with a warning: {w:?}");
        let (s, _) = web("deploy: {restart_policy: {condition: none}}").unwrap();
        assert_eq!(s.restart.unwrap().policy, RestartPolicy::No);
    }

    #[test]
    fn healthcheck_string_test_becomes_cmd_shell_with_defaults() {
        let (s, _) = web("healthcheck: {test: curl -f localhost}").unwrap();
        assert_eq!(
            s.healthcheck,
            Some(Healthcheck::Check {
                test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(30),
                retries: 3,
                start_period: Duration::ZERO,
            })
        );
    }

    #[test]
    fn healthcheck_disable_and_none_test_both_disable() {
        assert_eq!(
            web("healthcheck: {disable: true}").unwrap().0.healthcheck,
            Some(Healthcheck::Disabled)
        );
        assert_eq!(
            web("healthcheck: {test: [NONE]}").unwrap().0.healthcheck,
            Some(Healthcheck::Disabled)
        );
    }

    #[test]
    fn healthcheck_without_test_keeps_the_image_check_with_a_warning() {
        let (s, w) = web("healthcheck: {interval: 5s}").unwrap();
        assert_eq!(s.healthcheck, None);
        assert!(
            matches!(&w[..], [Warning::Ignored { path, .. }] if path == "services.web.healthcheck")
        );
    }

    #[test]
    fn rejects_healthcheck_test_without_command_kind() {
        let e = web("healthcheck: {test: [curl, localhost]}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("services.web.healthcheck: healthcheck test must be"),
            "{e}"
        );
        let e = web("healthcheck: {test: x, interval: soon}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("services.web.healthcheck.interval: "),
            "{e}"
        );
    }

    #[test]
    fn reads_cpu_shares_memory_reservation_and_swap() {
        let (s, _) = web("mem_limit: 64m
mem_reservation: 32m
memswap_limit: 128m
cpu_shares: 512")
        .unwrap();
        assert_eq!(s.limits.memory_reservation, Some(32 << 20));
        assert_eq!(s.limits.memory_swap, Some(128 << 20));
        assert_eq!(s.limits.cpu_shares, Some(512));
        let (s, _) = web("mem_limit: 64m
memswap_limit: -1")
        .unwrap();
        assert_eq!(s.limits.memory_swap, Some(-1));
        let (s, w) =
            web("deploy: {resources: {reservations: {memory: 16m, cpus: '0.1'}, limits: {memory: 64m}}}")
                .unwrap();
        assert_eq!(s.limits.memory_reservation, Some(16 << 20));
        assert_eq!(s.limits.memory, Some(64 << 20));
        assert_eq!(w.len(), 1, "cpu reservation warned: {w:?}");
        assert_eq!(
            web("memswap_limit: 1g").unwrap_err().to_string(),
            "services.web: memswap_limit needs mem_limit (or deploy.resources.limits.memory)"
        );
        assert!(
            web("mem_limit: 1g
memswap_limit: 512m")
            .is_err()
        );
        assert!(
            web("mem_reservation: 1g
deploy: {resources: {reservations: {memory: 2g}}}")
            .unwrap_err()
            .to_string()
            .contains("mem_reservation and deploy.resources.reservations disagree")
        );
        assert_eq!(
            web("cpu_shares: -2").unwrap_err().to_string(),
            "services.web.cpu_shares: expected a non-negative integer, found a number"
        );
    }

    #[test]
    fn maps_log_drivers_and_options() {
        let l = |body: &str| web(body).map(|(s, w)| (s.logging.unwrap(), w.len()));
        let (log, warned) =
            l("logging: {driver: json-file, options: {max-size: 10m, max-file: '3', tag: web}}")
                .unwrap();
        assert_eq!(
            log,
            Logging {
                driver: Some("k8s-file".into()),
                max_size: Some(10 << 20),
                tag: Some("web".into())
            }
        );
        assert_eq!(warned, 1, "max-file is ignored with a warning");
        assert_eq!(
            l("logging: {driver: local}").unwrap().0.driver.as_deref(),
            Some("k8s-file")
        );
        assert_eq!(
            l("logging: {driver: none}").unwrap().0.driver.as_deref(),
            Some("none")
        );
        assert_eq!(
            l("logging: {driver: journald, options: {tag: x}}")
                .unwrap()
                .0
                .driver
                .as_deref(),
            Some("journald")
        );
        let e = web("logging: {driver: syslog}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "service \"web\": key \"logging.driver\" is not supported: log driver \"syslog\": \
             Podman logs to json-file/local/k8s-file (as k8s-file), journald or none"
        );
        let e = web("logging: {options: {labels: a}}").unwrap_err();
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        assert!(e.to_string().contains("logging.options.labels"), "{e}");
        assert!(web("logging: {driver: journald, options: {max-size: 1m}}").is_err());
        assert!(
            web("logging: {drive: none}")
                .unwrap_err()
                .to_string()
                .starts_with("services.web.logging.drive: ")
        );
    }

    #[test]
    fn refuses_max_attempts_without_on_failure() {
        let e = web("deploy: {restart_policy: {condition: any, max_attempts: 3}}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("services.web.deploy.restart_policy: max_attempts applies only"),
            "{e}"
        );
    }

    #[test]
    fn deploy_limits_and_legacy_keys_merge_or_conflict() {
        let (s, _) = web("mem_limit: 256m\ncpus: 0.5\npids_limit: 100").unwrap();
        assert_eq!(
            s.limits,
            Limits {
                memory: Some(256 << 20),
                cpus: Some(0.5),
                pids: Some(100),
                ..Limits::default()
            }
        );
        let (s, _) =
            web("mem_limit: 1g\ndeploy: {resources: {limits: {memory: 1024M, cpus: '2'}}}")
                .unwrap();
        assert_eq!(
            s.limits,
            Limits {
                memory: Some(1 << 30),
                cpus: Some(2.0),
                pids: None,
                ..Limits::default()
            }
        );
        let e = web("mem_limit: 1g\ndeploy: {resources: {limits: {memory: 2g}}}").unwrap_err();
        assert!(
            e.to_string()
                .contains("mem_limit and deploy.resources.limits disagree"),
            "{e}"
        );
    }

    #[test]
    fn refuses_global_mode_and_device_reservations() {
        let e = web("deploy: {mode: global}").unwrap_err();
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        let e = web("deploy: {resources: {reservations: {devices: [{capabilities: [gpu]}]}}}")
            .unwrap_err();
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        assert!(web("deploy: {replicas: 1, mode: replicated}").is_ok());
    }

    #[test]
    fn reads_replicas_from_scale_or_deploy() {
        assert_eq!(web("scale: 3").unwrap().0.replicas, 3);
        assert_eq!(web("deploy: {replicas: 0}").unwrap().0.replicas, 0);
        assert_eq!(web("restart: always").unwrap().0.replicas, 1);
        assert_eq!(
            web("scale: 2\ndeploy: {replicas: 2}").unwrap().0.replicas,
            2
        );
        let e = web("scale: 2\ndeploy: {replicas: 3}").unwrap_err();
        assert!(e.to_string().contains("scale"), "{e}");
        let e = web("scale: 65").unwrap_err();
        assert_eq!(e.code(), "ERR_COMPOSE_INVALID");
        assert!(e.to_string().contains("at most 64"), "{e}");
        assert!(web("scale: -1").is_err());
    }

    #[test]
    fn warns_about_swarm_only_deploy_keys() {
        let (_, w) =
            web("deploy: {placement: {constraints: []}, resources: {reservations: {cpus: '0.5'}}}")
                .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
    }
}
