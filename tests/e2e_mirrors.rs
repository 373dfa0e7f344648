#![allow(clippy::unwrap_used)]
//! One-endpoint operation end to end: a device whose documents name registries that do not
//! exist (`*.example.invalid`) converges everything through `mirrors`: the desired state, a
//! SUP-01 package and its container image from the bed's BASIC registry (TLS, the bed CA, its
//! own credentials), and a proof-of-concept package and key (raw blob URLs) from the PLAIN
//! registry over plain HTTP. A mirror answering a blob URL with other bytes is refused with
//! `ERR_DIGEST_MISMATCH`, and the running workload stays as it is.
mod common;

use common::pkg::{Gpg, compose, tar_gz, url_deployment, wrapper};
use common::raw_push::{descriptor, push_blob, push_manifest, sha256};
use common::{Bed, Device, deployment, free_port, http_get};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

const ORIGIN: &str = "origin.example.invalid";
const POC_ORIGIN: &str = "poc.example.invalid";
const LIAR_ORIGIN: &str = "liar.example.invalid";

/// A server that answers every request with the same wrong bytes (a mirror that lies); one
/// thread, stopped when the test process ends.
fn lying_mirror() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = b"these are not the bytes you asked for";
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    port
}

#[test]
fn a_device_reaching_only_its_mirrors_converges_documents_naming_other_hosts() {
    let bed = Bed::get();
    let device = Device::new("mirror-only");
    device.cleanup();
    let basic = bed.var("MARGO_TB_REG_BASIC");
    let port = free_port();
    // The name the compose file uses must not be in Podman yet (an earlier run tagged it).
    let _ = bed.podman(&["rmi", &format!("{ORIGIN}/library/busybox:1.35")]);

    // The desired state, package and image live on BASIC; the documents name ORIGIN.
    let compose_text = compose(&format!("{ORIGIN}/library/busybox:1.35"), port);
    let pkg = device.publish_package_to(basic, "web", &compose_text, "1.0.0");
    let pkg_origin = pkg.replace(basic, ORIGIN);
    let doc = deployment("mirror-1", "web", &pkg_origin, "1.0.0");
    let on_mirror = format!("{basic}/e2e/{}/desired:latest", device.name);
    // Publishes `docs` as the desired state on the mirror and runs the agent once.
    let publish_and_run = |docs: &[&str]| {
        let out = device.publish_desired_to(&on_mirror, docs, &[]);
        assert!(out.status.success(), "publish desired state");
        device.run_once()
    };
    let out = device.publish_desired_to(&on_mirror, &[&doc], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let liar = lying_mirror();
    let mirrors = format!(
        "mirrors:\n\
         \x20 - host: {ORIGIN}\n    endpoint: \"{basic}\"\n    username: {user}\n    password: {pass}\n    ca: {ca}\n\
         \x20 - host: {POC_ORIGIN}\n    endpoint: \"{plain}\"\n    plain_http: true\n\
         \x20 - host: {LIAR_ORIGIN}\n    endpoint: \"127.0.0.1:{liar}\"\n    plain_http: true\n",
        user = bed.var("MARGO_TB_USER"),
        pass = bed.var("MARGO_TB_PASS"),
        ca = bed.var("MARGO_TB_CA"),
        plain = bed.plain(),
    );
    let reference = format!("{ORIGIN}/e2e/{}/desired:latest", device.name);
    device.write_config_with(&common::ConfigChanges {
        reference: Some(&reference),
        extra: &mirrors,
        ..Default::default()
    });
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "through the mirror:\n{log}");
    assert!(
        log.contains(&format!("through mirror \"{basic}/library/busybox:1.35\"")),
        "image pulled through the mirror:\n{log}"
    );
    assert!(
        http_get(port, "/", Duration::from_secs(20))
            .unwrap_or_default()
            .contains("margo test bed")
    );
    let c = &device.container_ids();
    assert_eq!(c.len(), 1);
    let name = c.keys().next().unwrap();
    assert_eq!(
        bed.inspect(name)["ImageName"].as_str().unwrap_or_default(),
        format!("{ORIGIN}/library/busybox:1.35"),
        "the container runs the image under the name the compose file uses"
    );

    // A proof-of-concept package and its key as raw blob URLs on POC_ORIGIN (→ PLAIN).
    let dir = device.dir.clone();
    let gpg = Gpg::new(&dir, "mirror");
    let port2 = free_port();
    let app = tar_gz(&[(
        "docker-compose.yaml",
        compose(&format!("{ORIGIN}/library/busybox:1.35"), port2).as_bytes(),
    )]);
    let wrapped = wrapper(&dir, &gpg, &app, true);
    let repo = format!("e2e/{}/poc", device.name);
    let w = push_blob(&repo, &wrapped);
    let k = push_blob(&repo, &gpg.public_key());
    push_manifest(
        &repo,
        "1",
        "application/vnd.margo.package.v1",
        &[
            descriptor("application/vnd.margo.package.v1", &w, wrapped.len() as u64),
            descriptor("application/pgp-keys", &k, gpg.public_key().len() as u64),
        ],
        &[],
    );
    let poc = url_deployment(
        "mirror-2",
        &format!("https://{POC_ORIGIN}/v2/{repo}/blobs/{w}"),
        Some(&format!("https://{POC_ORIGIN}/v2/{repo}/blobs/{k}")),
    );
    let (rc, log) = publish_and_run(&[&doc, &poc]);
    assert_eq!(rc, 0, "PoC package through the mirror:\n{log}");
    assert!(log.contains("signature verified"), "{log}");
    assert!(
        http_get(port2, "/", Duration::from_secs(20))
            .unwrap_or_default()
            .contains("margo test bed")
    );

    // A mirror that answers with other bytes than the digest the document names.
    let before = device.container_ids();
    let lie = url_deployment(
        "mirror-2",
        &format!("https://{LIAR_ORIGIN}/v2/{repo}/blobs/{}", sha256(&wrapped)),
        Some(&format!("https://{POC_ORIGIN}/v2/{repo}/blobs/{k}")),
    );
    let (rc, log) = publish_and_run(&[&doc, &lie]);
    assert_eq!(rc, 1, "{log}");
    let status = device.status();
    let dep = &status["deployments"]["mirror-2"];
    assert_eq!(dep["phase"], "Failed", "{status}");
    assert_eq!(dep["error"]["code"], "ERR_DIGEST_MISMATCH", "{status}");
    assert_eq!(device.container_ids(), before, "workloads untouched");
    assert!(
        http_get(port2, "/", Duration::from_secs(10))
            .unwrap_or_default()
            .contains("margo test bed")
    );
    device.cleanup();
}
