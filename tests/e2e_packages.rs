#![allow(clippy::unwrap_used)]
//! Signed proof-of-concept packages, image archives and OCI package signatures end to end: the
//! real binary against the bed's real registry and Podman, packages built and signed in the
//! test with GnuPG (Debian `gnupg`).
//!
//! The PoC flow is reproduced as the proof of concept publishes it: an `.app` (tar.gz of
//! `docker-compose.yaml` plus a `docker save` archive of the image), `gpg --detach-sign`
//! → `.app.sig`, both in a wrapper tar.gz; the wrapper and the armored public key are pushed
//! as blobs of one artifact (`application/vnd.margo.package.v1`), and the desired state names
//! their raw blob URLs as `packageLocation` and `keyLocation`. The image is in no registry: it
//! runs only because the archive was loaded.
//!
//! Every refusal is checked the same way: `run --once` exits 1, the deployment is Failed with
//! the expected code, the workload of the previous revision runs on unchanged (same container
//! ID, still answering), and no temporary `.app` is left in the work directory.
mod common;
#[path = "../benches/common/file_server.rs"]
mod file_server;

use common::pkg::{Gpg, app, compose, image_archive, tar_gz, url_deployment, wrapper};
use common::raw_push::{descriptor, push_blob, push_manifest, sha256};
use common::{Bed, Device, free_port, http_get};
use file_server::FileServer;
use std::path::PathBuf;
use std::time::Duration;

const WEB_PAGE: &str = "margo test bed";

/// Pushes blobs the way the proof of concept does (one artifact holding the wrapper and the
/// key); returns their blob URLs.
fn publish_poc(repo: &str, wrapper: &[u8], key: &[u8]) -> (String, String) {
    let plain = Bed::get().plain();
    let w = push_blob(repo, wrapper);
    let k = push_blob(repo, key);
    push_manifest(
        repo,
        &w[7..19],
        "application/vnd.margo.package.v1",
        &[
            descriptor("application/vnd.margo.package.v1", &w, wrapper.len() as u64),
            descriptor("application/pgp-keys", &k, key.len() as u64),
        ],
        &[],
    );
    (
        format!("http://{plain}/v2/{repo}/blobs/{w}"),
        format!("http://{plain}/v2/{repo}/blobs/{k}"),
    )
}

fn web_container(device: &Device) -> (String, String) {
    let ids = device.container_ids();
    assert_eq!(ids.len(), 1, "one container expected: {ids:?}");
    ids.into_iter().next().unwrap()
}

/// Files left in the package download directory: URL packages are removed once unpacked or
/// refused, so none should stay (OCI packages are kept, by digest, as a download cache).
fn leftover_apps(device: &Device) -> Vec<PathBuf> {
    let dir = device.dir.join("work/packages");
    std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

/// Publishes `doc` as the device's desired state, runs once, and checks the refusal.
fn assert_refused(device: &Device, case: &str, doc: &str, code: &str, needle: &str, port: u16) {
    let before = web_container(device);
    let out = device.publish_desired(&[doc], &[]);
    assert!(out.status.success(), "{case}: publish failed");
    let (rc, log) = device.run_once();
    assert!(!log.contains("panicked"), "{case}: panic:\n{log}");
    assert_eq!(rc, 1, "{case}: exit code:\n{log}");
    let status = device.status();
    let deps = status["deployments"].as_object().unwrap();
    let failed: Vec<_> = deps
        .values()
        .filter(|d| d["phase"] == "Failed" || d["state"] == "Failed")
        .collect();
    assert_eq!(failed.len(), 1, "{case}: one Failed deployment: {status}");
    let err = failed[0]["error"].to_string();
    assert!(err.contains(code), "{case}: code {code} in {err}");
    assert!(err.contains(needle), "{case}: {needle:?} in {err}");
    assert_eq!(web_container(device), before, "{case}: workload replaced");
    assert!(
        http_get(port, "/", Duration::from_secs(10))
            .unwrap_or_default()
            .contains(WEB_PAGE),
        "{case}: the previous workload must still answer"
    );
    assert!(
        leftover_apps(device).is_empty(),
        "{case}: temporary files left: {:?}",
        leftover_apps(device)
    );
}

#[test]
fn poc_signed_package_converges_from_its_image_archive_and_bad_signatures_are_refused() {
    let device = Device::new("pkg-poc");
    device.cleanup();
    let dir = device.dir.clone();
    let gpg = Gpg::new(&dir, "signer");
    let other = Gpg::new(&dir, "other");
    let image = format!("localhost/margo-e2e/poc-{}:v1", std::process::id());
    let archive = image_archive(&dir, &image);
    let port = free_port();
    let repo = format!("e2e/{}/poc-package", device.name);
    let good_app = app(&compose(&image, port), &archive);
    let (pkg, key) = publish_poc(
        &repo,
        &wrapper(&dir, &gpg, &good_app, false),
        &gpg.public_key(),
    );

    // Converge: signature verified, archive loaded, no registry holds the image.
    let doc = url_deployment("poc-1", &pkg, Some(&key));
    assert!(device.publish_desired(&[&doc], &[]).status.success());
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "first apply:\n{log}");
    assert!(log.contains("signature verified"), "{log}");
    assert!(log.contains(&gpg.fingerprint), "signer named:\n{log}");
    assert!(log.contains("image archive image.tar loaded"), "{log}");
    assert!(
        http_get(port, "/", Duration::from_secs(20))
            .unwrap_or_default()
            .contains(WEB_PAGE)
    );
    assert!(leftover_apps(&device).is_empty());
    assert!(
        device
            .dir
            .join("work/keys")
            .join(format!("{}.key", &sha256(&gpg.public_key())[7..]))
            .is_file(),
        "key cached by digest"
    );

    // Tampered: a changed .app under the old signature.
    let port2 = free_port();
    let evil_app = app(&compose(&image, port2), &archive);
    let good_sig = {
        let p = dir.join("poc.app");
        std::fs::write(&p, &good_app).unwrap();
        gpg.sign(&p, false)
    };
    let tampered = tar_gz(&[("poc.app", &evil_app), ("poc.app.sig", &good_sig)]);
    let (pkg_t, _) = publish_poc(&repo, &tampered, &gpg.public_key());
    assert_refused(
        &device,
        "tampered .app",
        &url_deployment("poc-1", &pkg_t, Some(&key)),
        "ERR_SIGNATURE",
        "does not verify",
        port,
    );

    // Signed by a different key than keyLocation names (armored signature this time).
    let (pkg_o, _) = publish_poc(
        &repo,
        &wrapper(&dir, &other, &evil_app, true),
        &gpg.public_key(),
    );
    assert_refused(
        &device,
        "other signer",
        &url_deployment("poc-1", &pkg_o, Some(&key)),
        "ERR_SIGNATURE",
        "not the expected one",
        port,
    );

    // Corrupted signature bytes.
    let mut bad_sig = gpg.sign(&dir.join("poc.app"), false);
    let last = bad_sig.len() - 5;
    bad_sig[last] ^= 0xff;
    let corrupt = tar_gz(&[("poc.app", &good_app), ("poc.app.sig", &bad_sig)]);
    let (pkg_c, _) = publish_poc(&repo, &corrupt, &gpg.public_key());
    assert_refused(
        &device,
        "corrupt signature",
        &url_deployment("poc-1", &pkg_c, Some(&key)),
        "ERR_SIGNATURE",
        "signature",
        port,
    );

    // Missing .sig while keyLocation is named.
    let unsigned = tar_gz(&[("poc.app", &evil_app)]);
    let (pkg_u, _) = publish_poc(&repo, &unsigned, &gpg.public_key());
    assert_refused(
        &device,
        "missing .sig",
        &url_deployment("poc-1", &pkg_u, Some(&key)),
        "ERR_SIGNATURE",
        "no detached signature",
        port,
    );

    // Key URL unreachable (no such blob) and not a public key.
    let plain = Bed::get().plain();
    let missing_key = format!("http://{plain}/v2/{repo}/blobs/{}", sha256(b"no such key"));
    let good_wrapper = wrapper(&dir, &gpg, &evil_app, false);
    let (pkg_g, _) = publish_poc(&repo, &good_wrapper, &gpg.public_key());
    assert_refused(
        &device,
        "key unreachable",
        &url_deployment("poc-1", &pkg_g, Some(&missing_key)),
        "ERR_SIGNATURE",
        "could not be fetched",
        port,
    );
    let (_, not_a_key) = publish_poc(&repo, &good_wrapper, b"<html>hello</html>");
    assert_refused(
        &device,
        "not a key",
        &url_deployment("poc-1", &pkg_g, Some(&not_a_key)),
        "ERR_SIGNATURE",
        "not an OpenPGP public key",
        port,
    );

    // Fingerprint not allowed.
    device.write_config(&format!(
        "signatures:\n  allowed_fingerprints: [\"{}\"]\n",
        other.fingerprint
    ));
    assert_refused(
        &device,
        "fingerprint not allowed",
        &url_deployment("poc-1", &pkg_g, Some(&key)),
        "ERR_SIGNATURE",
        "not in signatures.allowed_fingerprints",
        port,
    );

    // Allowed: the same package converges to the new port.
    device.write_config(&format!(
        "signatures:\n  policy: require\n  allowed_fingerprints: [\"{}\"]\n",
        gpg.fingerprint
    ));
    let doc = url_deployment("poc-1", &pkg_g, Some(&key));
    assert!(device.publish_desired(&[&doc], &[]).status.success());
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "allowed signer:\n{log}");
    assert!(
        http_get(port2, "/", Duration::from_secs(20))
            .unwrap_or_default()
            .contains(WEB_PAGE)
    );
    device.cleanup();
}

#[test]
fn image_archives_that_do_not_load_and_images_nowhere_fail_before_any_container_changes() {
    let device = Device::new("pkg-images");
    device.cleanup();
    let dir = device.dir.clone();
    let image = format!("localhost/margo-e2e/img-{}:v1", std::process::id());
    let archive = image_archive(&dir, &image);
    let port = free_port();
    let repo = format!("e2e/{}/pkg", device.name);
    let plain_pkg = |compose_text: &str, archive: &[u8]| {
        let (pkg, _) = publish_poc(&repo, &app(compose_text, archive), b"unused");
        pkg
    };
    let pkg = plain_pkg(&compose(&image, port), &archive);
    assert!(
        device
            .publish_desired(&[&url_deployment("img-1", &pkg, None)], &[])
            .status
            .success()
    );
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "unsigned package under if-present:\n{log}");

    let port2 = free_port();
    let truncated = plain_pkg(&compose(&image, port2), &archive[..archive.len() / 2]);
    assert_refused(
        &device,
        "truncated archive",
        &url_deployment("img-1", &truncated, None),
        "ERR_IMAGE_LOAD",
        "image.tar",
        port,
    );
    let not_image = plain_pkg(
        &compose(&image, port2),
        &tar_gz(&[("hello.txt", b"hello")])[..],
    );
    assert_refused(
        &device,
        "not an image",
        &url_deployment("img-1", &not_image, None),
        "ERR_IMAGE_LOAD",
        "not a loadable image",
        port,
    );
    let nowhere = format!("localhost/margo-e2e/nowhere-{}:v1", std::process::id());
    let missing = plain_pkg(&compose(&nowhere, port2), &archive);
    assert_refused(
        &device,
        "image neither loaded nor pullable",
        &url_deployment("img-1", &missing, None),
        "ERR_IMAGE_PULL",
        &nowhere,
        port,
    );

    // An .app whose entries escape the unpack directory (a symlink, then a hard link, out of
    // it): refused by the same unpacker as every package.
    for (case, kind) in [
        ("symlink escape", tar::EntryType::Symlink),
        ("hardlink escape", tar::EntryType::Link),
    ] {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let text = compose(&image, port2);
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "docker-compose.yaml", text.as_bytes())
            .unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(kind);
        l.set_size(0);
        l.set_mode(0o777);
        b.append_link(&mut l, "escape", "../../../../etc/passwd")
            .unwrap();
        let evil = b.into_inner().unwrap().finish().unwrap();
        let (pkg, _) = publish_poc(&repo, &evil, b"unused");
        assert_refused(
            &device,
            case,
            &url_deployment("img-1", &pkg, None),
            "ERR_PACKAGE_UNSAFE",
            "escape",
            port,
        );
    }

    // `require`: an unsigned package is refused.
    device.write_config("signatures:\n  policy: require\n");
    let pkg2 = plain_pkg(&compose(&image, port2), &archive);
    assert_refused(
        &device,
        "unsigned under require",
        &url_deployment("img-1", &pkg2, None),
        "ERR_SIGNATURE",
        "not signed",
        port,
    );

    // Pruning: once no deployment runs the loaded image, it is removed; the bed image, which
    // the agent did not bring, stays.
    device.write_config("");
    let bed = Bed::get();
    assert!(bed.podman(&["image", "exists", &image]).status.success());
    let pkg3 = plain_pkg(&compose(bed.image(), port2), &archive[..0]);
    let doc = url_deployment("img-1", &pkg3, None);
    assert!(device.publish_desired(&[&doc], &[]).status.success());
    let (rc, log) = device.run_once();
    assert!(!log.contains("ERR_"), "{log}");
    assert_eq!(rc, 0, "{log}");
    assert!(log.contains("pruned"), "{log}");
    assert!(
        !bed.podman(&["image", "exists", &image]).status.success(),
        "the loaded image no deployment uses is pruned"
    );
    assert!(
        bed.podman(&["image", "exists", bed.image()])
            .status
            .success()
    );
    device.cleanup();
}

/// Adds a plain-HTTP host to the device's `registries`.
fn allow_plain_http(device: &Device, host: &str, extra: &str) {
    device.write_config(extra);
    let text = std::fs::read_to_string(&device.config).unwrap();
    let text = text.replacen(
        "registries:\n",
        &format!("registries:\n  - host: \"{host}\"\n    plain_http: true\n"),
        1,
    );
    std::fs::write(&device.config, text).unwrap();
}

#[test]
fn plain_tarball_with_a_sibling_signature_and_signed_oci_packages() {
    let device = Device::new("pkg-sig");
    device.cleanup();
    let dir = device.dir.clone();
    let gpg = Gpg::new(&dir, "signer");
    let other = Gpg::new(&dir, "other");
    let bed = Bed::get();
    let port = free_port();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let server = FileServer::start(&www);
    let host = format!("127.0.0.1:{}", server.port());
    std::fs::write(www.join("key.asc"), gpg.public_key()).unwrap();
    let key_file = dir.join("trusted.asc");
    std::fs::write(&key_file, gpg.public_key()).unwrap();

    // Plain tarball + <url>.sig (armored).
    let tarball = tar_gz(&[("app/compose.yaml", compose(bed.image(), port).as_bytes())]);
    std::fs::write(www.join("app.tar.gz"), &tarball).unwrap();
    let sig = gpg.sign(&www.join("app.tar.gz"), true);
    std::fs::write(www.join("app.tar.gz.sig"), &sig).unwrap();
    allow_plain_http(&device, &host, "signatures:\n  policy: require\n");
    let pkg = format!("http://{host}/app.tar.gz");
    let key = format!("http://{host}/key.asc");
    let doc = url_deployment("sig-1", &pkg, Some(&key));
    assert!(device.publish_desired(&[&doc], &[]).status.success());
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "{log}");
    assert!(log.contains("signature verified"), "{log}");

    // The same URL, content replaced: refused, the workload stays.
    let port2 = free_port();
    let changed = tar_gz(&[("app/compose.yaml", compose(bed.image(), port2).as_bytes())]);
    std::fs::write(www.join("app.tar.gz"), &changed).unwrap();
    let doc2 = url_deployment("sig-1", &pkg, Some(&key)).replace("timeout: 60s", "timeout: 61s");
    assert_refused(
        &device,
        "sibling signature of other content",
        &doc2,
        "ERR_SIGNATURE",
        "does not verify",
        port,
    );
    std::fs::remove_file(www.join("app.tar.gz.sig")).unwrap();
    let doc3 = doc2.replace("timeout: 61s", "timeout: 62s");
    assert_refused(
        &device,
        "sibling signature missing",
        &doc3,
        "ERR_SIGNATURE",
        "no detached signature",
        port,
    );

    // SUP-01 package with a signature layer, key from signatures.trusted_keys.
    let repo = format!("e2e/{}/oci-signed", device.name);
    let layer = tar_gz(&[("pkg/compose.yaml", compose(bed.image(), port2).as_bytes())]);
    let layer_file = dir.join("layer.tar.gz");
    std::fs::write(&layer_file, &layer).unwrap();
    let push = |revision: &str, signer: &Gpg| {
        let sig = signer.sign(&layer_file, false);
        let l = push_blob(&repo, &layer);
        let s = push_blob(&repo, &sig);
        push_manifest(
            &repo,
            revision,
            "application/vnd.org.margo.component.compose+json",
            &[
                descriptor(
                    "application/vnd.org.margo.component.compose.tar+gzip",
                    &l,
                    layer.len() as u64,
                ),
                descriptor("application/vnd.margo.app.v1+sig", &s, sig.len() as u64),
            ],
            &[],
        );
    };
    push("2.0.0", &other);
    push("1.0.0", &gpg);
    allow_plain_http(
        &device,
        &host,
        &format!(
            "signatures:\n  policy: require\n  trusted_keys: [{}]\n",
            key_file.display()
        ),
    );
    let oci_repo = format!("oci://{}/{repo}", bed.plain());
    assert_refused(
        &device,
        "OCI package signed by an untrusted key",
        &common::deployment("sig-1", "web", &oci_repo, "2.0.0"),
        "ERR_SIGNATURE",
        "not the expected one",
        port,
    );
    let doc = common::deployment("sig-1", "web", &oci_repo, "1.0.0");
    assert!(device.publish_desired(&[&doc], &[]).status.success());
    let (rc, log) = device.run_once();
    assert_eq!(rc, 0, "{log}");
    assert!(log.contains("signature verified"), "{log}");
    assert!(
        http_get(port2, "/", Duration::from_secs(20))
            .unwrap_or_default()
            .contains(WEB_PAGE)
    );
    device.cleanup();
}

#[test]
fn an_archive_that_cannot_be_read_is_reported_as_such_not_as_podman_unreachable() {
    let bed = Bed::get();
    let mut podman = common::engine::connect(bed.var("MARGO_TB_PODMAN_SOCK"));
    // A directory opens like a file, but reading it fails (EISDIR) once the upload started.
    let dir = std::env::temp_dir().join(format!("margo-unreadable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = podman.load_image(&dir).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!e.is_unavailable(), "{e}");
    assert_eq!(e.code(), "ERR_PODMAN_API", "{e}");
    let text = e.to_string();
    assert!(text.contains("cannot read the archive file"), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
}
