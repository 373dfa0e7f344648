//! How a service's container runs and stops: `restart`, `healthcheck`, resource limits and
//! the parts of `deploy` that mean something on one Podman host.
//!
//! Owns the reconciliation the specification asks for: `deploy.restart_policy` overrides
//! `restart`; `deploy.resources.limits` and the legacy `mem_limit`/`cpus`/`pids_limit` must
//! agree when both are given (an error rather than a silent choice); a healthcheck gets
//! docker's defaults (30s interval, 30s timeout, 3 retries) so `Interval` can always be sent
//! to libpod.
//!
//! Refuses: `deploy.replicas`/`scale` other than 1 and `deploy.mode: global` (one device runs
//! one container per service), device reservations (`gpus`-style access is the device
//! policy's decision). Ignores with a [`Warning`]: swarm-only `deploy` keys, `reservations`,
//! `restart_policy.delay`/`window`, `healthcheck.start_interval`, and a healthcheck without
//! `test` (libpod cannot retime the image's own check).

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

pub(super) fn replicas(v: &Node<'_>, service: &str, key: &str) -> Result<(), ComposeError> {
    match v.u64()? {
        1 => Ok(()),
        n => Err(ComposeError::unsupported(
            Some(service),
            key,
            format!("{n} replicas requested; margo-agent runs exactly one container per service"),
        )),
    }
}

/// What `deploy` contributes to a service.
#[derive(Default)]
pub(super) struct Deploy {
    pub limits: Limits,
    pub restart: Option<Restart>,
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
            "replicas" => replicas(&e, service, "deploy.replicas")?,
            "mode" => match e.string()?.as_str() {
                "replicated" | "replicated-job" => {}
                other => {
                    return Err(ComposeError::unsupported(
                        Some(service),
                        "deploy.mode",
                        format!(
                            "mode {other:?} is a swarm mode; margo-agent runs one replica per service"
                        ),
                    ));
                }
            },
            "resources" => {
                for (rk, re) in e.entries()? {
                    match rk {
                        "limits" => d.limits = deploy_limits(&re)?,
                        "reservations" => {
                            if re
                                .entries()?
                                .iter()
                                .any(|(k, _)| *k == "devices" || *k == "generic_resources")
                            {
                                return Err(ComposeError::unsupported(
                                    Some(service),
                                    "deploy.resources.reservations.devices",
                                    "device access is decided by the device policy, not the compose file",
                                ));
                            }
                            warnings.push(Warning::Ignored {
                                path: re.path.clone(),
                                reason: "reservations only guide swarm scheduling",
                            });
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
    Ok(r)
}

/// `deploy.resources.limits` wins; a legacy key (`mem_limit`, `cpus`, `pids_limit`) that
/// contradicts it is an error rather than a silent choice.
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
        match (legacy, deploy) {
            (Some(a), Some(b)) if a != b => {
                Err(node.invalid(format!("{what} and deploy.resources.limits disagree")))
            }
            (a, b) => Ok(b.or(a)),
        }
    }
    Ok(Limits {
        memory: pick(node, "mem_limit", legacy.memory, deploy.memory)?,
        cpus: pick(node, "cpus", legacy.cpus, deploy.cpus)?,
        pids: pick(node, "pids_limit", legacy.pids, deploy.pids)?,
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
    fn deploy_limits_and_legacy_keys_merge_or_conflict() {
        let (s, _) = web("mem_limit: 256m\ncpus: 0.5\npids_limit: 100").unwrap();
        assert_eq!(
            s.limits,
            Limits {
                memory: Some(256 << 20),
                cpus: Some(0.5),
                pids: Some(100)
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
                pids: None
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
        assert!(web("scale: 2").is_err());
    }

    #[test]
    fn warns_about_swarm_only_deploy_keys() {
        let (_, w) =
            web("deploy: {placement: {constraints: []}, resources: {reservations: {cpus: '0.5'}}}")
                .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
    }
}
