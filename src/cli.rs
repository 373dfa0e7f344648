//! Command line: `margo-agent [--config PATH] <command>`.
//!
//! Commands: `run` (daemon), `run --once`, `status [--json]`, `check-config`, `publish`,
//! `onboard [--force]`, `capabilities`,
//! `version`. Parsing is by hand: a handful of flags do not earn an argument-parser crate.

use crate::config::Config;
use crate::daemon::{self, exit};
use crate::journal::{self, Level, Target};
use crate::state::{self, Failure, State};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: margo-agent [--config PATH] <command> [options]

commands:
  run [--once]          run the agent (daemon); --once: one reconcile, exit code tells the outcome
  status [--json]       show what is applied and each deployment's state (from the state file)
  check-config          validate the config file and print the effective settings
  onboard [--force]     onboard with the Fleet Manager (wfm.url); --force: onboard again
  capabilities          print the DeviceCapabilities document the agent reports
  publish [options] FILE...
                        pack ApplicationDeployment YAML files into the desired-state OCI artifact
                        and push it (see `margo-agent publish --help`)
  version               print the version

The config is read from --config, else $MARGO_AGENT_CONFIG, else /etc/margo-agent/config.yaml.
Exit codes: 0 converged, 1 apply failed, 2 usage, 3 config invalid, 4 source unreachable,
5 desired state invalid, 6 Podman unavailable, 7 state file error.";

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ExitCode::from(dispatch(&args))
}

fn dispatch(args: &[String]) -> u8 {
    let mut config_path: Option<PathBuf> = None;
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--config" | "-c" => {
                let Some(p) = args.get(i + 1) else {
                    eprintln!("--config needs a path\n\n{USAGE}");
                    return exit::USAGE;
                };
                config_path = Some(PathBuf::from(p));
                i += 2;
            }
            a if a.starts_with("--config=") => {
                config_path = Some(PathBuf::from(&a["--config=".len()..]));
                i += 1;
            }
            _ => {
                rest.push(args[i].clone());
                i += 1;
            }
        }
    }
    let Some((command, opts)) = rest.split_first() else {
        eprintln!("{USAGE}");
        return exit::USAGE;
    };
    let path = Config::path_from(config_path.as_deref());
    match command.as_str() {
        "run" => {
            let once = match opts {
                [] => false,
                [o] if o == "--once" => true,
                _ => {
                    eprintln!("run takes only --once\n\n{USAGE}");
                    return exit::USAGE;
                }
            };
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            journal::init(
                Target::Auto,
                Level::parse(&config.log_level).unwrap_or(Level::Info),
            );
            if once {
                daemon::run_once(config)
            } else {
                daemon::run(&path, config)
            }
        }
        "status" => status(&path, opts),
        "check-config" => match load(&path) {
            Ok(c) => {
                println!("config {} is valid", path.display());
                match &c.desired_state.directory {
                    Some(d) => println!("  desired state: directory {}", d.display()),
                    None => println!("  desired state: {}", or_unset(&c.desired_state.reference)),
                }
                println!(
                    "  poll: every {} + up to {} jitter, retries back off to {}",
                    crate::units::format_duration(c.desired_state.poll_interval),
                    crate::units::format_duration(c.desired_state.poll_jitter),
                    crate::units::format_duration(c.desired_state.retry_max)
                );
                println!("  podman socket: {}", c.podman.socket.display());
                println!("  state file: {}", c.state_file.display());
                println!("  work dir: {}", c.work_dir.display());
                println!("  device id: {}", c.device_id());
                match crate::telemetry::Settings::from_process_env(&c.telemetry) {
                    Ok(t) => println!("  telemetry: {}", t.summary()),
                    Err(e) => {
                        eprintln!("telemetry setting {e}");
                        return exit::CONFIG;
                    }
                }
                for r in &c.registries {
                    println!(
                        "  registry {}: {}{}",
                        r.host,
                        if r.plain_http { "plain HTTP" } else { "HTTPS" },
                        if r.username.is_some() {
                            ", with credentials"
                        } else {
                            ""
                        }
                    );
                }
                exit::OK
            }
            Err(code) => code,
        },
        "publish" => crate::publish::main(opts, config_path.as_deref()),
        "onboard" => {
            let force = match opts {
                [] => false,
                [o] if o == "--force" => true,
                _ => {
                    eprintln!("onboard takes only --force\n\n{USAGE}");
                    return exit::USAGE;
                }
            };
            match load(&path) {
                Ok(c) => {
                    journal::init(
                        Target::Auto,
                        Level::parse(&c.log_level).unwrap_or(Level::Info),
                    );
                    crate::wfm::onboard_command(c, force)
                }
                Err(code) => code,
            }
        }
        "capabilities" => match load(&path) {
            Ok(c) => {
                let doc = crate::wfm::capabilities_document(&c.wfm, &c.device_id());
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                exit::OK
            }
            Err(code) => code,
        },
        "version" | "--version" | "-V" => {
            println!("margo-agent {}", env!("CARGO_PKG_VERSION"));
            exit::OK
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            exit::OK
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            exit::USAGE
        }
    }
}

fn or_unset(s: &str) -> &str {
    if s.is_empty() { "(not set)" } else { s }
}

fn load(path: &std::path::Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        // Before the journal is set up: stderr, with the priority prefix journald reads.
        journal::init(Target::Auto, Level::Info);
        journal::error(&format!("{e}; margo-agent cannot start"), &[]);
        exit::CONFIG
    })
}

fn status(path: &std::path::Path, opts: &[String]) -> u8 {
    let json = match opts {
        [] => false,
        [o] if o == "--json" => true,
        _ => {
            eprintln!("status takes only --json\n\n{USAGE}");
            return exit::USAGE;
        }
    };
    let state_path = match Config::load(path) {
        Ok(c) => c.state_file,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    let state = match state::read(&state_path) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            eprintln!("state file {}: {e}", state_path.display());
            return exit::STATE;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&state).unwrap_or_else(|_| "{}".into())
        );
    } else {
        print!("{}", status_table(&state));
    }
    exit::OK
}

/// The human view of the state file.
pub fn status_table(state: &State) -> String {
    let mut out = String::new();
    let src = &state.source;
    out.push_str(&format!(
        "source:   {}\napplied:  {}{}\n",
        or_unset(&src.reference),
        src.applied
            .as_ref()
            .map_or("(nothing yet)".to_string(), |d| d.to_string()),
        src.applied_version
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default()
    ));
    if let Some(d) = src
        .desired
        .as_ref()
        .filter(|d| src.applied.as_ref() != Some(*d))
    {
        let v = src
            .desired_version
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        out.push_str(&format!("desired:  {d}{v}, not applied yet\n"));
    }
    if let (Some(d), Some(e)) = (&src.rejected, &src.rejected_error) {
        out.push_str(&format!("rejected: {d}: {e}\n"));
    }
    if !state.wfm.outbox.is_empty() {
        out.push_str(&format!(
            "WFM:      {} status report(s) queued for the Fleet Manager\n",
            state.wfm.outbox.len()
        ));
    }
    out.push('\n');
    if state.deployments.is_empty() {
        out.push_str("no deployments\n");
        return out;
    }
    let row =
        |out: &mut String, id: &str, component: &str, state: &str, error: &Option<Failure>| {
            let error = error.as_ref().map(Failure::to_string).unwrap_or_default();
            out.push_str(&format!("{id:<38} {component:<24} {state:<11} {error}\n"));
        };
    out.push_str(&format!(
        "{:<38} {:<24} {:<11} ERROR\n",
        "DEPLOYMENT", "COMPONENT", "STATE"
    ));
    for (id, d) in &state.deployments {
        row(&mut out, id, "", d.phase.as_str(), &d.error);
        for (name, c) in &d.components {
            row(&mut out, "", name, c.phase.as_str(), &c.error);
            for p in &c.problems {
                out.push_str(&format!("{:<38} {:<24} {:<11} {p}\n", "", "", "observed"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::state::{ComponentRecord, DeploymentRecord, Failure, Phase};

    #[test]
    fn status_table_shows_revision_deployments_components_and_errors() {
        let mut s = State::default();
        s.source.reference = "reg.example/fleet/d:latest".into();
        s.source.applied = Some(Digest::of(b"m"));
        s.source.applied_version = Some(7);
        let mut components = std::collections::BTreeMap::new();
        components.insert(
            "web".to_string(),
            ComponentRecord {
                phase: Phase::Failed,
                project: "web-1234abcd".into(),
                error: Some(Failure::new("ERR_IMAGE_PULL", "pulling image x failed")),
                problems: vec!["service \"db\": unhealthy".into()],
                images: Vec::new(),
            },
        );
        s.deployments.insert(
            "dep-1".into(),
            DeploymentRecord {
                application_id: "app".into(),
                name: "n".into(),
                digest: Digest::of(b"d"),
                phase: Phase::Failed,
                error: Some(Failure::new("ERR_IMAGE_PULL", "service web: pull failed")),
                components,
                since: 0,
            },
        );
        let t = status_table(&s);
        assert!(t.contains("reg.example/fleet/d:latest"), "{t}");
        assert!(t.contains("(version 7)"), "{t}");
        assert!(t.contains("dep-1"), "{t}");
        assert!(t.contains("web"), "{t}");
        assert!(t.contains("Failed"), "{t}");
        assert!(t.contains("ERR_IMAGE_PULL: pulling image x failed"), "{t}");
        assert!(t.contains("observed    service \"db\": unhealthy"), "{t}");
        assert!(status_table(&State::default()).contains("no deployments"));
        assert!(!t.contains("queued"), "{t}");
        s.wfm.outbox.push(serde_json::json!({}));
        assert!(status_table(&s).contains("1 status report(s) queued"));
    }

    #[test]
    fn usage_errors_exit_2_and_unknown_config_exits_3() {
        assert_eq!(dispatch(&[]), exit::USAGE);
        assert_eq!(dispatch(&["frobnicate".into()]), exit::USAGE);
        assert_eq!(dispatch(&["run".into(), "--twice".into()]), exit::USAGE);
        assert_eq!(
            dispatch(&[
                "--config".into(),
                "/nonexistent/c.yaml".into(),
                "check-config".into()
            ]),
            exit::CONFIG
        );
    }
}
