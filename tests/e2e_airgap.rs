#![allow(clippy::unwrap_used)]
//! The air-gapped `dir` source end to end: a directory holding an ApplicationDeployment, the
//! signed proof-of-concept package it names by relative path (with the image as a `docker
//! save` archive inside) and the signer's key, converged by the real binary on the bed's
//! Podman while every registry of the bed is stopped (SIGSTOP: a connection attempt would
//! hang, so the run shows that nothing was fetched from the network). Then the same refusals
//! as the registry source: a tampered package fails with `ERR_SIGNATURE` and leaves the
//! workload running; a location leading out of the directory refuses the revision.
//!
//! Its own test binary: stopping the bed's shared registries must not overlap other tests,
//! and cargo runs test binaries one after another.
mod common;

use common::pkg::{Gpg, app, compose, image_archive, tar_gz, url_deployment, wrapper};
use common::raw_push::sha256;
use common::{Bed, Device, free_port, http_get};
use std::time::Duration;

/// Stops the bed's registries (and token server) until dropped.
struct RegistriesStopped(Vec<String>);

impl RegistriesStopped {
    fn now() -> RegistriesStopped {
        let bed = Bed::get();
        let pids: Vec<String> = [
            "MARGO_TB_PID_REG_PLAIN",
            "MARGO_TB_PID_REG_BASIC",
            "MARGO_TB_PID_REG_TOKEN",
            "MARGO_TB_PID_TOKEN_SERVER",
        ]
        .iter()
        .map(|k| bed.var(k).to_string())
        .collect();
        for p in &pids {
            let ok = std::process::Command::new("kill")
                .args(["-STOP", p])
                .status()
                .unwrap();
            assert!(ok.success(), "kill -STOP {p}");
        }
        RegistriesStopped(pids)
    }
}

impl Drop for RegistriesStopped {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", p])
                .status();
        }
    }
}

#[test]
fn directory_source_converges_with_every_registry_stopped_and_refuses_what_the_registry_source_refuses()
 {
    let device = Device::new("airgap");
    device.cleanup();
    let dir = device.dir.clone();
    let stick = dir.join("stick");
    // Puts `doc` on the stick as its deployment and runs the agent once.
    let run_with = |doc: &str| {
        std::fs::write(stick.join("deployment.yaml"), doc).unwrap();
        device.run_once()
    };
    std::fs::create_dir_all(stick.join("packages")).unwrap();
    std::fs::create_dir_all(stick.join("keys")).unwrap();
    let gpg = Gpg::new(&dir, "vendor");
    std::fs::write(stick.join("keys/vendor.asc"), gpg.public_key()).unwrap();
    let image = format!("localhost/margo-e2e/airgap-{}:v1", std::process::id());
    let archive = image_archive(&dir, &image);
    let port = free_port();
    let good = app(&compose(&image, port), &archive);
    std::fs::write(
        stick.join("packages/web.tar.gz"),
        wrapper(&dir, &gpg, &good, false),
    )
    .unwrap();
    let doc = url_deployment("airgap-1", "packages/web.tar.gz", Some("keys/vendor.asc"));
    std::fs::write(stick.join("deployment.yaml"), &doc).unwrap();
    let source = format!(
        "desired_state:\n  directory: {}\n  poll_interval: 1s\n  poll_jitter: 0s\n  retry_max: 2s\n",
        stick.display()
    );
    let config = std::fs::read_to_string(&device.config).unwrap();
    let mut kept = Vec::new();
    let mut skipping = false;
    for line in config.lines() {
        if line.starts_with("desired_state:") {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("  ") {
            continue;
        }
        skipping = false;
        kept.push(line);
    }
    std::fs::write(
        &device.config,
        format!(
            "{}\n{source}signatures:\n  policy: require\n",
            kept.join("\n")
        ),
    )
    .unwrap();

    let stopped = RegistriesStopped::now();
    let started = std::time::Instant::now();
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "air-gapped apply:\n{log}");
    assert!(log.contains("signature verified"), "{log}");
    assert!(log.contains("image archive"), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "no network wait expected"
    );
    assert!(
        http_get(port, "/", Duration::from_secs(20))
            .unwrap_or_default()
            .contains("margo test bed")
    );
    let status = device.status();
    assert_eq!(
        status["deployments"]["airgap-1"]["phase"], "Installed",
        "{status}"
    );
    assert!(
        status["source"]["reference"]
            .as_str()
            .unwrap_or_default()
            .starts_with("dir:"),
        "{status}"
    );
    // Unchanged directory: nothing to do.
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "{log}");
    assert!(!log.contains("desired state changed"), "{log}");

    // A tampered package on the stick: refused like from a registry, the workload stays.
    let before = device.container_ids();
    let evil = app(&compose(&image, free_port()), &archive);
    let sig = {
        let p = dir.join("poc.app");
        std::fs::write(&p, &good).unwrap();
        gpg.sign(&p, false)
    };
    std::fs::write(
        stick.join("packages/web2.tar.gz"),
        tar_gz(&[("poc.app", &evil), ("poc.app.sig", &sig)]),
    )
    .unwrap();
    let (rc, log) = run_with(&doc.replace("packages/web.tar.gz", "packages/web2.tar.gz"));
    assert_eq!(rc, 1, "{log}");
    let status = device.status();
    let dep = &status["deployments"]["airgap-1"];
    assert_eq!(dep["phase"], "Failed", "{status}");
    assert_eq!(dep["error"]["code"], "ERR_SIGNATURE", "{status}");
    assert_eq!(device.container_ids(), before);

    // A SUP-01 package from an OCI image layout on the stick (oci/<registry>/<repository>/,
    // as `oras copy --to-oci-layout` writes it), signed with a signature layer and verified
    // with signatures.trusted_keys; the document names a registry nobody can reach.
    let port3 = free_port();
    let layer = tar_gz(&[("web/compose.yaml", compose(&image, port3).as_bytes())]);
    let layer_file = dir.join("layer.tar.gz");
    std::fs::write(&layer_file, &layer).unwrap();
    let layer_sig = gpg.sign(&layer_file, false);
    let layout = stick.join("oci/registry.example.invalid/apps/web3");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let config_digest = put(b"{}");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.org.margo.component.compose+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": 2},
        "layers": [
            {"mediaType": "application/vnd.org.margo.component.compose.tar+gzip", "digest": put(&layer), "size": layer.len()},
            {"mediaType": "application/vnd.margo.app.v1+sig", "digest": put(&layer_sig), "size": layer_sig.len()},
        ],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put(&manifest_bytes),
            "size": manifest_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1.0.0"},
        }],
    });
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        stick.join("deployment.yaml"),
        common::deployment(
            "airgap-1",
            "web",
            "oci://registry.example.invalid/apps/web3",
            "1.0.0",
        ),
    )
    .unwrap();
    let config = std::fs::read_to_string(&device.config).unwrap();
    std::fs::write(
        &device.config,
        config.replace(
            "signatures:\n  policy: require\n",
            &format!(
                "signatures:\n  policy: require\n  trusted_keys: [{}]\n",
                stick.join("keys/vendor.asc").display()
            ),
        ),
    )
    .unwrap();
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "SUP-01 package from an OCI layout:\n{log}");
    assert!(log.contains("signature verified"), "{log}");
    assert!(
        http_get(port3, "/", Duration::from_secs(20))
            .unwrap_or_default()
            .contains("margo test bed")
    );
    let before = device.container_ids();

    // The same layout with the compose layer's bytes changed on the stick: refused.
    let layer_blob = blobs.join(&sha256(&layer)[7..]);
    let mut tampered = layer.clone();
    let n = tampered.len() - 10;
    tampered[n] ^= 0x01;
    std::fs::write(&layer_blob, &tampered).unwrap();
    let _ = std::fs::remove_dir_all(device.dir.join("work/packages"));
    let (rc, log) = run_with(
        &common::deployment(
            "airgap-1",
            "web",
            "oci://registry.example.invalid/apps/web3",
            "1.0.0",
        )
        .replace("timeout: 60s", "timeout: 61s"),
    );
    assert_eq!(rc, 1, "{log}");
    assert!(log.contains("ERR_DIGEST_MISMATCH"), "{log}");
    assert_eq!(device.container_ids(), before);

    // A location leading out of the directory: the revision is refused by validation.
    let (rc, log) = run_with(&doc.replace("packages/web.tar.gz", "../outside.tar.gz"));
    assert_eq!(rc, 5, "{log}");
    assert!(log.contains("contains .."), "{log}");
    assert_eq!(device.container_ids(), before);
    drop(stopped);
    device.cleanup();
}
