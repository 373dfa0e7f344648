//! The device policy end to end: the real binary against the test bed's registries and Podman.
//!
//! Each case publishes deployments, runs `run --once` and checks the deployment status
//! (`status --json`), the journal line and what Podman holds: a refused deployment is Failed
//! with `ERR_POLICY` naming the service and key and has no container or network; the other
//! deployments of the same desired state are Installed; once the config's `policy:` allows
//! what was refused, the next poll installs it. Device names start with `policy-`.
#![allow(clippy::unwrap_used)]
mod common;

use common::{Bed, Device, assert_one_problem, deployment};
use serde_json::Value;
use std::path::Path;

/// Fixture: one busybox service `app` that sleeps, with `extra` lines added to the service.
fn sleeper(extra: &str) -> String {
    format!(
        "services:\n\
         \x20 app:\n\
         \x20   image: {}\n\
         \x20   command: [\"sleep\", \"3600\"]\n\
         {extra}",
        Bed::get().image()
    )
}

/// Containers Podman holds for deployment `dep_id`.
fn containers_of(dep_id: &str) -> Vec<Value> {
    Bed::get().containers("org.margo.deployment-id", dep_id)
}

/// Nothing of deployment `dep_id` (component `component`) in Podman.
fn assert_nothing_in_podman(check: &str, dep_id: &str, component: &str) {
    let containers = containers_of(dep_id);
    assert!(containers.is_empty(), "{check}: containers {containers:?}");
    let nets = Bed::get().podman(&["network", "ls", "--format", "{{.Name}}"]);
    let nets = String::from_utf8_lossy(&nets.stdout);
    assert!(
        !nets
            .lines()
            .any(|n| n.starts_with(&format!("{component}-"))),
        "{check}: network created: {nets}"
    );
}

/// The one running container of deployment `dep_id`.
fn running_container(check: &str, dep_id: &str) -> Value {
    let c = containers_of(dep_id);
    assert_eq!(c.len(), 1, "{check}: {c:?}");
    assert_eq!(c[0]["State"], "running", "{check}: {c:?}");
    c[0].clone()
}

/// `run --once` fails deployment `dep_id` with ERR_POLICY; the status message and the one
/// journal error line hold every needle. Returns the status.
fn expect_policy_failure(dev: &Device, check: &str, dep_id: &str, needles: &[&str]) -> Value {
    let (exit, log) = dev.run_once();
    let mut all = vec!["ERR_POLICY", dep_id];
    all.extend_from_slice(needles);
    assert_one_problem(check, (exit, &log), 1, &all);
    let status = dev.status();
    let dep = &status["deployments"][dep_id];
    assert_eq!(dep["phase"], "Failed", "{check}: {status}");
    assert_eq!(dep["error"]["code"], "ERR_POLICY", "{check}: {status}");
    let message = dep["error"]["message"].as_str().unwrap_or_default();
    for n in needles {
        assert!(message.contains(n), "{check}: {n:?} not in {message:?}");
    }
    status
}

fn publish(dev: &Device, docs: &[&str]) {
    let out = dev.publish_desired(docs, &[]);
    assert!(
        out.status.success(),
        "publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refuses_a_privileged_service_until_the_policy_allows_it() {
    let dev = Device::new("policy-priv");
    dev.cleanup();
    let plain = dev.publish_package("plain", &sleeper(""), "1.0.0");
    let privileged = dev.publish_package("priv", &sleeper("    privileged: true\n"), "1.0.0");
    let (ok_id, bad_id) = ("policy-priv-ok", "policy-priv-bad");
    publish(
        &dev,
        &[
            &deployment(ok_id, "plain", &plain, "1.0.0"),
            &deployment(bad_id, "priv", &privileged, "1.0.0"),
        ],
    );

    // Default policy: the privileged deployment is refused, the other one installed.
    let check = "privileged under the default policy";
    let status = expect_policy_failure(
        &dev,
        check,
        bad_id,
        &[
            "component \"priv\"",
            "services.app.privileged",
            "policy.allow_privileged",
        ],
    );
    assert_eq!(
        status["deployments"][ok_id]["phase"], "Installed",
        "{check}: {status}"
    );
    running_container(check, ok_id);
    assert_nothing_in_podman(check, bad_id, "priv");

    // The device maker allows privileged containers: the next poll installs it.
    dev.write_config("policy:\n  allow_privileged: true\n");
    let (exit, log) = dev.run_once();
    assert_eq!(exit, 0, "allowed by policy:\n{log}");
    let status = dev.status();
    assert_eq!(
        status["deployments"][bad_id]["phase"], "Installed",
        "{status}"
    );
    assert_eq!(
        status["deployments"][ok_id]["phase"], "Installed",
        "{status}"
    );
    let c = running_container("allowed by policy", bad_id);
    let id = c["Id"].as_str().unwrap();
    assert_eq!(
        Bed::get().inspect(id)["HostConfig"]["Privileged"],
        true,
        "the container must be the privileged one"
    );
    dev.cleanup();
}

#[test]
fn refuses_a_bind_mount_outside_allowed_paths_until_the_policy_allows_and_creates_it() {
    let dev = Device::new("policy-bind");
    dev.cleanup();
    // A host path outside the package directory (the package unpacks under work/).
    let host = dev.dir.join("host");
    let source = host.join("app/data");
    let compose = format!(
        "services:\n\
         \x20 app:\n\
         \x20   image: {}\n\
         \x20   command: [\"sh\", \"-c\", \"echo written > /data/hello && exec sleep 3600\"]\n\
         \x20   volumes:\n\
         \x20     - {}:/data\n",
        Bed::get().image(),
        source.display()
    );
    let repo = dev.publish_package("store", &compose, "1.0.0");
    let dep_id = "policy-bind-d1";
    publish(&dev, &[&deployment(dep_id, "store", &repo, "1.0.0")]);
    let shown = format!("{:?}", source.display().to_string());

    let check = "bind source outside the allowed paths";
    expect_policy_failure(
        &dev,
        check,
        dep_id,
        &[
            "services.app.volumes[0]",
            &shown,
            "outside the package directory",
        ],
    );
    assert_nothing_in_podman(check, dep_id, "store");
    assert!(!host.exists(), "{check}: {} was created", host.display());

    // Allowed, but the source is missing and the agent may not create it.
    let allow = format!("policy:\n  allow_bind_paths: [{}]\n", host.display());
    dev.write_config(&allow);
    let check = "allowed path without create_bind_paths";
    expect_policy_failure(
        &dev,
        check,
        dep_id,
        &[
            "services.app.volumes[0]",
            &shown,
            "policy.create_bind_paths is false",
        ],
    );
    assert_nothing_in_podman(check, dep_id, "store");
    assert!(!host.exists(), "{check}: {} was created", host.display());

    // Allowed and created: installed, and the container writes through the mount.
    dev.write_config(&format!("{allow}  create_bind_paths: true\n"));
    let (exit, log) = dev.run_once();
    assert_eq!(exit, 0, "allowed and created:\n{log}");
    let status = dev.status();
    assert_eq!(
        status["deployments"][dep_id]["phase"], "Installed",
        "{status}"
    );
    running_container("allowed and created", dep_id);
    let written = std::fs::read_to_string(source.join("hello")).unwrap_or_default();
    assert_eq!(written.trim(), "written");
    dev.cleanup();
    let _ = std::fs::remove_dir_all(Path::new(&host));
}
