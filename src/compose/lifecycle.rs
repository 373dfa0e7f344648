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
