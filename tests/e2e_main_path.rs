//! The main path end to end, against the real Podman service and registry of the test bed:
//! publish → converge → unchanged poll → update of one service → invalid state refused →
//! removal.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure
mod common;

use common::{Bed, ConfigChanges, Device, deployment, free_port, http_get};
use std::time::Duration;

/// Fixture: a web service (busybox httpd answering `$GREETING` on a published port) and a
/// sidecar that only sleeps and binds `./state`, a directory the package does not hold (the
/// agent creates it, as compose does); `web` depends on `sidecar`, both on the project's default
/// network.
fn shop_compose(port: u16, greeting: &str) -> String {
    let image = Bed::get().image();
    format!(
        "name: ignored-by-agent\n\
         services:\n\
         \x20 web:\n\
         \x20   image: {image}\n\
         \x20   command: [\"sh\", \"-c\", \"mkdir -p /www && echo $$GREETING > /www/index.html && exec httpd -f -p 80 -h /www\"]\n\
         \x20   environment:\n\
         \x20     GREETING: \"{greeting}\"\n\
         \x20   ports:\n\
         \x20     - \"127.0.0.1:{port}:80\"\n\
         \x20   depends_on: [sidecar]\n\
         \x20   restart: unless-stopped\n\
         \x20 sidecar:\n\
         \x20   image: {image}\n\
         \x20   command: [\"sleep\", \"3600\"]\n\
         \x20   volumes: [\"./state:/state\"]\n\
         \x20   restart: unless-stopped\n"
    )
}

fn container_ids(dev: &Device) -> std::collections::BTreeMap<String, String> {
    Bed::get()
        .containers("org.margo.device-id", &dev.name)
        .into_iter()
        .map(|c| {
            let name = c["Names"][0].as_str().unwrap_or_default().to_string();
            (name, c["Id"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn converges_updates_one_service_and_removes_a_deployment() {
    let dev = Device::new("main-path");
    dev.cleanup();
    let port = free_port();

    let repo = dev.publish_package("shop", &shop_compose(port, "v1"), "1.0.0");
    let out = dev.publish_desired(&[&deployment("main-path-d1", "shop", &repo, "1.0.0")], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "first converge failed:\n{log}");
    assert_eq!(
        http_get(port, "/", Duration::from_secs(20))
            .as_deref()
            .map(str::trim),
        Some("v1")
    );
    let first = container_ids(&dev);
    assert_eq!(first.len(), 2, "{first:?}");
    let status = dev.status();
    assert_eq!(status["deployments"]["main-path-d1"]["phase"], "Installed");
    // The missing bind source was created inside the unpacked package.
    let created: Vec<_> = std::fs::read_dir(dev.dir.join("work/projects"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("shop/state").is_dir())
        .collect();
    assert_eq!(
        created.len(),
        1,
        "bind source ./state must be created in the package"
    );
    // The project's default network has DNS: the sidecar reaches `web` by its service name.
    let sidecar_name = first
        .keys()
        .find(|n| n.contains("sidecar"))
        .unwrap()
        .clone();
    let out = Bed::get().podman(&[
        "exec",
        &sidecar_name,
        "wget",
        "-q",
        "-O",
        "-",
        "http://web/",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "v1",
        "DNS between services: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Unchanged desired state: nothing is recreated, nothing is written.
    let state_file = dev.dir.join("state.json");
    let before = std::fs::metadata(&state_file).unwrap().modified().unwrap();
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(container_ids(&dev), first);
    assert_eq!(
        std::fs::metadata(&state_file).unwrap().modified().unwrap(),
        before
    );
    assert!(!log.contains("desired state changed"), "{log}");

    // Change only the web service: web is recreated, the sidecar keeps its container.
    let repo2 = dev.publish_package("shop", &shop_compose(port, "v2"), "1.0.1");
    assert_eq!(repo, repo2);
    let out = dev.publish_desired(&[&deployment("main-path-d1", "shop", &repo, "1.0.1")], &[]);
    assert!(out.status.success());
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "update failed:\n{log}");
    assert_eq!(
        http_get(port, "/", Duration::from_secs(20))
            .as_deref()
            .map(str::trim),
        Some("v2")
    );
    let second = container_ids(&dev);
    let sidecar = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .find(|(n, _)| n.contains("sidecar"))
            .map(|(_, id)| id.clone())
    };
    let web = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .find(|(n, _)| n.contains("web"))
            .map(|(_, id)| id.clone())
    };
    assert_eq!(
        sidecar(&first),
        sidecar(&second),
        "sidecar must not be recreated"
    );
    assert_ne!(web(&first), web(&second), "web must be recreated");

    // An invalid desired state is refused and the workloads keep running.
    let bad = dev.dir.join("bad.yaml");
    std::fs::write(&bad, "kind: ApplicationDeployment\nmetadata: [unclosed\n").unwrap();
    let out = dev.cmd(&["publish", "--to", &dev.reference, bad.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, log) = dev.run_once();
    assert_eq!(code, 5, "invalid state must exit 5:\n{log}");
    assert!(log.contains("ERR_DESIRED_STATE_INVALID"), "{log}");
    assert_eq!(
        container_ids(&dev),
        second,
        "workloads must stay as they were"
    );
    assert_eq!(
        http_get(port, "/", Duration::from_secs(5))
            .as_deref()
            .map(str::trim),
        Some("v2")
    );
    assert!(dev.status()["source"]["rejected"].is_string());

    // Empty desired state: the deployment is removed, containers and network gone.
    let out = dev.publish_desired(&[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "removal failed:\n{log}");
    assert!(container_ids(&dev).is_empty());
    let nets = Bed::get().podman(&["network", "ls", "--format", "{{.Name}}"]);
    let nets = String::from_utf8_lossy(&nets.stdout);
    assert!(
        !nets.lines().any(|n| n.starts_with("shop-")),
        "network left: {nets}"
    );
    assert!(
        dev.status()["deployments"]
            .as_object()
            .is_none_or(|m| m.is_empty())
    );
    dev.cleanup();
}

#[test]
fn recovers_from_a_corrupt_state_file_using_podman_labels() {
    // Fixture: one converged deployment; then the state file is cut in half (a power cut on a
    // filesystem without the agent's atomic rename would look like this).
    let dev = Device::new("corrupt-state");
    dev.cleanup();
    let port = free_port();
    let repo = dev.publish_package("recover", &shop_compose(port, "r1"), "1.0.0");
    let out = dev.publish_desired(&[&deployment("corrupt-d1", "recover", &repo, "1.0.0")], &[]);
    assert!(out.status.success());
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(container_ids(&dev).len(), 2);

    let state_file = dev.dir.join("state.json");
    let text = std::fs::read(&state_file).unwrap();
    std::fs::write(&state_file, &text[..text.len() / 2]).unwrap();

    // The desired state now names nothing: the deployment must still be found (by label) and
    // removed, and the unreadable file kept aside for a post-mortem.
    let out = dev.publish_desired(&[], &[]);
    assert!(out.status.success());
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("was unreadable"), "{log}");
    assert!(
        container_ids(&dev).is_empty(),
        "containers found by label must be removed"
    );
    let aside: Vec<_> = std::fs::read_dir(&dev.dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file is kept aside");
    assert!(dev.status()["source"]["applied"].is_string());
    dev.cleanup();
}

/// A revision recorded while Podman is unreachable is fetched again on every poll until it is
/// applied; the journal announces it once (notice), the retries only at debug level.
#[test]
fn a_revision_waiting_for_podman_is_announced_once() {
    let dev = Device::new("main-path-no-podman");
    let repo = dev.publish_package("shop", &shop_compose(free_port(), "v1"), "1.0.0");
    let out = dev.publish_desired(&[&deployment("main-path-np", "shop", &repo, "1.0.0")], &[]);
    assert!(out.status.success());
    let missing = dev.dir.join("no-podman.sock");
    dev.write_config_with(&ConfigChanges {
        podman_socket: Some(missing.to_str().unwrap()),
        ..Default::default()
    });
    let announced = |log: &str| {
        log.lines()
            .filter(|l| l.starts_with("<5>desired state changed"))
            .count()
    };
    let (code, log) = dev.run_once();
    assert_eq!(code, 6, "Podman unavailable:\n{log}");
    assert_eq!(announced(&log), 1, "{log}");
    let (code, log) = dev.run_once();
    assert_eq!(code, 6, "{log}");
    assert_eq!(announced(&log), 0, "announced again:\n{log}");
    assert!(log.contains("<7>desired state changed"), "{log}");
    dev.cleanup();
}
