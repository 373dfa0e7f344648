#![allow(clippy::unwrap_used)]
//! Device reboots and Podman outages, end to end: the real binary against the test bed's
//! real Podman, whose API service `tests/bed/podman-service.sh` kills, restarts, or "reboots"
//! (every container process killed and the runtime directory wiped, so Podman finds a fresh
//! boot and resets running containers to `created`).
//!
//! One test function: these phases stop the bed's Podman service, which would break any other
//! test running at the same time in this binary.
mod common;

use common::{Bed, Device, deployment};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn states(dep_id: &str) -> BTreeMap<String, String> {
    Bed::get().states("org.margo.deployment-id", dep_id)
}

fn state_of(dep_id: &str, name: &str) -> String {
    states(dep_id).get(name).cloned().unwrap_or_default()
}

/// Services with every restart policy; `hand` and `always-hand` get stopped by hand.
fn policies_compose(image: &str) -> String {
    let svc = |name: &str, restart: &str, cmd: &str| {
        format!(
            "  {name}:\n    image: {image}\n    container_name: rb-{name}\n    restart: {restart}\n    command: [sh, -c, '{cmd}']\n"
        )
    };
    let long = "exec sleep 600";
    [
        "services:\n".to_string(),
        svc("always", "always", long),
        svc("unless", "unless-stopped", long),
        svc("onfail", "on-failure:3", long),
        svc("never", "\"no\"", long),
        svc("hand", "unless-stopped", long),
        svc("always-hand", "always", long),
        svc("job", "\"no\"", "exit 0"),
        // Healthy until its marker file is removed by hand.
        format!(
            "  flaky:\n    image: {image}\n    container_name: rb-flaky\n    restart: unless-stopped\n    command: [sh, -c, 'touch /tmp/ok; exec sleep 600']\n    healthcheck: {{test: [CMD, test, -f, /tmp/ok], interval: 1s, retries: 1}}\n"
        ),
        // Starts only after `always` is running again: restored in dependency order.
        format!(
            "  after:\n    image: {image}\n    container_name: rb-after\n    restart: unless-stopped\n    command: [sleep, '600']\n    depends_on: [always]\n"
        ),
    ]
    .concat()
}

#[test]
fn restores_workloads_after_reboots_and_podman_outages() {
    let bed = Bed::get();
    let dev = Device::new("reboot");
    dev.cleanup();
    let dep_id = "reboot-d1";
    let package = dev.publish_package("fleet", &policies_compose(bed.image()), "1.0.0");
    let doc = deployment(dep_id, "fleet", &package, "1.0.0").replace("wait: true", "wait: false");
    assert!(dev.publish_desired(&[&doc], &[]).status.success());
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    let s = states(dep_id);
    assert_eq!(s.get("rb-job").map(String::as_str), Some("exited"), "{s:?}");
    assert_eq!(s.values().filter(|st| *st == "running").count(), 8, "{s:?}");

    // The observation tick runs healthchecks after the install: a check that starts failing
    // shows in the status and the journal.
    assert!(
        bed.podman(&["exec", "rb-flaky", "rm", "/tmp/ok"])
            .status
            .success()
    );
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    let status = dev.status();
    let problems = status["deployments"][dep_id]["components"]["fleet"]["problems"].to_string();
    assert!(
        problems.contains("service \\\"flaky\\\": unhealthy"),
        "{status}"
    );
    assert!(log.contains("\"flaky\": unhealthy"), "{log}");

    // A field engineer stops two containers by hand; the observation tick leaves them alone.
    for c in ["rb-hand", "rb-always-hand"] {
        assert!(bed.podman(&["stop", "-t", "0", c]).status.success());
    }
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(state_of(dep_id, "rb-hand"), "exited");
    assert_eq!(state_of(dep_id, "rb-always-hand"), "exited");
    let status = dev.status();
    let problems = status["deployments"][dep_id]["components"]["fleet"]["problems"].to_string();
    assert!(
        problems.contains("service \\\"hand\\\": not running"),
        "{status}"
    );

    // 1. Reboot (same boot id: as if podman-restart.service were missing). Podman resets the
    // running containers to "created" and starts none of them.
    bed.podman_service("reboot");
    let s = states(dep_id);
    assert_eq!(
        s.get("rb-always").map(String::as_str),
        Some("created"),
        "{s:?}"
    );
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "after the reboot:\n{log}");
    let s = states(dep_id);
    let expect = [
        ("rb-always", "running"),
        ("rb-unless", "running"),
        ("rb-onfail", "running"),
        ("rb-after", "running"),
        ("rb-flaky", "running"),
        // restart "no": not restored after a reboot
        ("rb-never", "created"),
        // stopped by hand before the reboot
        ("rb-hand", "exited"),
        ("rb-always-hand", "exited"),
        ("rb-job", "exited"),
    ];
    for (name, state) in expect {
        assert_eq!(
            s.get(name).map(String::as_str),
            Some(state),
            "{name}: {s:?}"
        );
    }
    assert!(
        log.contains("started container \"rb-always\" again"),
        "{log}"
    );
    let started = |name: &str| -> String {
        bed.inspect(name)["State"]["StartedAt"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        started("rb-always") <= started("rb-after"),
        "dependency order: {} vs {}",
        started("rb-always"),
        started("rb-after")
    );

    // 2. A new boot id: `always` containers come back even when stopped by hand, as
    // podman-restart.service would do; `unless-stopped` ones stay stopped.
    bed.podman_service("reboot");
    let (code, log) = dev.run_once_env(&[("MARGO_AGENT_BOOT_ID", "simulated-boot-2")]);
    assert_eq!(code, 0, "after the second reboot:\n{log}");
    assert!(log.contains("the device rebooted"), "{log}");
    let s = states(dep_id);
    assert_eq!(
        s.get("rb-always-hand").map(String::as_str),
        Some("running"),
        "{s:?}"
    );
    assert_eq!(
        s.get("rb-hand").map(String::as_str),
        Some("exited"),
        "{s:?}"
    );
    assert_eq!(
        s.get("rb-never").map(String::as_str),
        Some("created"),
        "{s:?}"
    );

    // 3. The Podman service restarts (containers keep running): nothing to restore, nothing
    // written.
    let before = dev.container_ids();
    bed.podman_service("restart");
    let (code, log) = dev.run_once_env(&[("MARGO_AGENT_BOOT_ID", "simulated-boot-2")]);
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("started container"), "{log}");
    assert_eq!(dev.container_ids(), before);

    // 4. Podman goes away in the middle of an apply: the deployment is left Pending with the
    // reason, nothing half-made is hidden, and the next run finishes the job.
    dev.cleanup();
    let image = bed.image();
    let slow = format!(
        "services:\n\
         \x20 db:\n    image: {image}\n    container_name: rb-db\n    command: [sh, -c, 'sleep 3; touch /tmp/ready; exec sleep 600']\n\
         \x20   healthcheck: {{test: [CMD, test, -f, /tmp/ready], interval: 1s, retries: 30}}\n\
         \x20 app:\n    image: {image}\n    container_name: rb-app\n    command: [sleep, '600']\n\
         \x20   depends_on: {{db: {{condition: service_healthy}}}}\n"
    );
    let package = dev.publish_package("slow", &slow, "1.0.0");
    let slow_id = "reboot-d2";
    let doc = deployment(slow_id, "slow", &package, "1.0.0");
    assert!(dev.publish_desired(&[&doc], &[]).status.success());
    let child = Command::new(common::binary())
        .args(["--config", dev.config.to_str().unwrap(), "run", "--once"])
        .env("MARGO_AGENT_LOG", "stderr")
        .env("MARGO_AGENT_BOOT_ID", "simulated-boot-2")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once db exists the agent is waiting for it to become healthy: take Podman away.
    let t0 = Instant::now();
    while !states(slow_id).contains_key("rb-db") {
        assert!(t0.elapsed() < Duration::from_secs(30), "db never created");
        std::thread::sleep(Duration::from_millis(100));
    }
    bed.podman_service("stop");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    bed.podman_service("start");
    assert_eq!(out.status.code(), Some(6), "Podman unavailable:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    let status = dev.status();
    let dep = &status["deployments"][slow_id];
    assert_eq!(dep["phase"], "Pending", "{status}");
    assert!(
        dep["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Podman"),
        "{status}"
    );
    assert!(
        !states(slow_id).contains_key("rb-app"),
        "app must not exist before db is healthy"
    );
    let (code, log) = dev.run_once_env(&[("MARGO_AGENT_BOOT_ID", "simulated-boot-2")]);
    assert_eq!(code, 0, "after Podman came back:\n{log}");
    let s = states(slow_id);
    assert_eq!(s.get("rb-db").map(String::as_str), Some("running"), "{s:?}");
    assert_eq!(
        s.get("rb-app").map(String::as_str),
        Some("running"),
        "{s:?}"
    );
    assert_eq!(dev.status()["deployments"][slow_id]["phase"], "Installed");
    dev.cleanup();
}
