//! Bad input end to end: the real binary against the test bed's real registries and Podman.
//!
//! Every case starts from a device that already runs a good deployment (busybox httpd serving
//! the image's page on a free loopback port), publishes one bad thing, runs `run --once` and
//! checks five things: the exit code (README: 1 apply failed, 4 source unreachable, 5 desired
//! state invalid, 6 Podman unavailable); exactly one warning-or-error journal line, naming what
//! failed; the status `status --json` shows (a Failed deployment, or `source.rejected` with
//! `source.rejected_error.code` for a refused revision); no panic; and the running workload
//! exactly as it was (same container IDs and start times, still answering HTTP).
//!
//! Bad artifacts the agent's own `publish` would never build are pushed raw
//! (`common::raw_push`). Device names start with `bad-`, so these tests share the bed's Podman
//! with the other end-to-end tests.
mod common;

use common::raw_push::{descriptor, push_blob, push_manifest};
use common::{
    Bed, ConfigChanges, Device, assert_one_problem, deployment, free_port, http_get, repo,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the bed image's `/www/index.html` says.
const WEB_PAGE: &str = "margo test bed";
const DESIRED_ARTIFACT: &str = "application/vnd.margo.desired-state.v1";
const DESIRED_YAML: &str = "application/vnd.margo.desired-state.v1+yaml";
const PACKAGE_ARTIFACT: &str = "application/vnd.org.margo.component.compose+json";
const PACKAGE_LAYER: &str = "application/vnd.org.margo.component.compose.tar+gzip";

/// Fixture: one busybox httpd serving the image's page on `127.0.0.1:port`.
fn web_compose(port: u16) -> String {
    web_compose_with(port, "", "")
}

/// [`web_compose`] with `image` replaced when not empty and `extra` lines added to the
/// service (indented for it).
fn web_compose_with(port: u16, image: &str, extra: &str) -> String {
    let image = if image.is_empty() {
        Bed::get().image()
    } else {
        image
    };
    format!(
        "services:\n\
         \x20 web:\n\
         \x20   image: {image}\n\
         \x20   command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n\
         \x20   ports:\n\
         \x20     - \"127.0.0.1:{port}:80\"\n\
         {extra}"
    )
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/data/deployments").join(name)
}

/// Container name → (ID, state, start time): what "untouched" compares.
type Snapshot = BTreeMap<String, (String, String, i64)>;

/// The containers of deployment `dep_id`.
fn snapshot(dep_id: &str) -> Snapshot {
    Bed::get()
        .containers("org.margo.deployment-id", dep_id)
        .into_iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (
                c["Names"][0].as_str().unwrap_or_default().to_string(),
                (s("Id"), s("State"), c["StartedAt"].as_i64().unwrap_or(0)),
            )
        })
        .collect()
}

/// A device running one good deployment: what every bad input must leave alone.
struct Running {
    dev: Device,
    dep_id: String,
    component: String,
    /// `oci://…` repository of the good package (revision 1.0.0).
    package: String,
    port: u16,
    before: Snapshot,
}

impl Running {
    /// Converges deployment `<device>-d1` (component `component`), published with
    /// `desired_args` (e.g. `--version 2`).
    fn start(device: &str, component: &str, desired_args: &[&str]) -> Running {
        let dev = Device::new(device);
        dev.cleanup();
        let port = free_port();
        let package = dev.publish_package(component, &web_compose(port), "1.0.0");
        let mut run = Running {
            dep_id: format!("{device}-d1"),
            component: component.to_string(),
            package,
            port,
            before: Snapshot::new(),
            dev,
        };
        run.publish(&[&run.good_doc()], desired_args);
        let (code, log) = run.dev.run_once();
        assert_eq!(
            code, 0,
            "{device}: the good deployment did not converge:\n{log}"
        );
        assert_eq!(run.page(Duration::from_secs(20)).as_deref(), Some(WEB_PAGE));
        let before = snapshot(&run.dep_id);
        assert_eq!(before.len(), 1, "{before:?}");
        assert!(before.values().all(|(_, state, _)| state == "running"));
        run.before = before;
        run
    }

    /// The good deployment document, as converged.
    fn good_doc(&self) -> String {
        self.doc("1.0.0")
    }

    fn doc(&self, revision: &str) -> String {
        deployment(&self.dep_id, &self.component, &self.package, revision)
    }

    fn publish(&self, docs: &[&str], args: &[&str]) {
        let out = self.dev.publish_desired(docs, args);
        assert!(
            out.status.success(),
            "publish failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publishes one desired-state file as it is on disk.
    fn publish_file(&self, path: &Path) {
        let out = self.dev.cmd(&[
            "publish",
            "--to",
            &self.dev.reference,
            path.to_str().expect("utf8"),
        ]);
        assert!(
            out.status.success(),
            "publish {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Repository path of the device's desired state on the plain registry.
    fn desired_repo(&self) -> String {
        format!("e2e/{}/desired", self.dev.name)
    }

    fn page(&self, timeout: Duration) -> Option<String> {
        http_get(self.port, "/", timeout).map(|b| b.trim().to_string())
    }

    fn assert_untouched(&self, check: &str) {
        assert_eq!(
            snapshot(&self.dep_id),
            self.before,
            "{check}: the running workload was touched"
        );
        assert_eq!(
            self.page(Duration::from_secs(5)).as_deref(),
            Some(WEB_PAGE),
            "{check}: the running workload stopped answering"
        );
    }

    /// `run --once` refuses the published revision with exit 5 and `code`, records it as
    /// rejected, keeps the deployment Installed and the workload untouched.
    fn expect_refused(&self, check: &str, code: &str, needles: &[&str]) {
        let (exit, log) = self.dev.run_once();
        let mut all = vec![code];
        all.extend_from_slice(needles);
        assert_one_problem(check, (exit, &log), 5, &all);
        let status = self.dev.status();
        assert!(
            status["source"]["rejected"].is_string(),
            "{check}: no rejected revision in {status}"
        );
        assert_eq!(
            status["source"]["rejected_error"]["code"], code,
            "{check}: {status}"
        );
        assert_eq!(
            status["deployments"][&self.dep_id]["phase"], "Installed",
            "{check}: {status}"
        );
        self.assert_untouched(check);
    }

    /// `run --once` fails the deployment `dep_id` with exit 1 and `code`.
    fn expect_failed(&self, check: &str, dep_id: &str, code: &str, needles: &[&str]) -> Value {
        let (exit, log) = self.dev.run_once();
        // The journal line also says what the agent does next; the status holds the failure.
        let mut all = vec![code, dep_id, "retried on the next poll"];
        all.extend_from_slice(needles);
        assert_one_problem(check, (exit, &log), 1, &all);
        let status = self.dev.status();
        let dep = &status["deployments"][dep_id];
        assert_eq!(dep["phase"], "Failed", "{check}: {status}");
        assert_eq!(dep["error"]["code"], code, "{check}: {status}");
        for n in needles {
            let message = dep["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(n),
                "{check}: {n:?} not in status {message:?}"
            );
        }
        self.assert_untouched(check);
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.dev.cleanup();
    }
}

#[test]
fn refuses_documents_that_are_not_valid_deployments() {
    let run = Running::start("bad-docs", "gate", &[]);

    // Fixture: an ApplicationDeployment followed by a DeviceCapabilities document. Its
    // deployment is not the running one, so accepting it would also remove the workload.
    run.publish_file(&fixture("bad-wrong-kind.yaml"));
    run.expect_refused(
        "document of another kind",
        "ERR_DESIRED_STATE_INVALID",
        &["document 2 is a DeviceCapabilities"],
    );

    // Fixture: two documents of one file claim the same deployment id.
    run.publish_file(&fixture("bad-duplicate-id.yaml"));
    run.expect_refused(
        "deployment id repeated within one file",
        "ERR_DESIRED_STATE_INVALID",
        &["0f83e682-a35b-4533-ae93-ff3810095f31"],
    );

    // The running deployment's id in two files of a tar+gzip layer, each file valid alone.
    let twin = run.good_doc().replace("name: gate\n", "name: gate-twin\n");
    run.publish(&[&run.good_doc(), &twin], &["--form", "tar-gzip"]);
    run.expect_refused(
        "deployment id repeated across files",
        "ERR_DESIRED_STATE_INVALID",
        &["\"bad-docs-d1\" appears twice"],
    );
}

#[test]
fn refuses_a_version_rollback_then_applies_a_newer_version() {
    let run = Running::start("bad-version", "ledger", &["--version", "2"]);
    assert_eq!(run.dev.status()["source"]["applied_version"], 2);

    run.publish(&[&run.good_doc()], &["--version", "1"]);
    run.expect_refused(
        "older version",
        "ERR_VERSION_ROLLBACK",
        &["version 1 is not greater than the applied version 2"],
    );

    // Same documents as another layer form: a new revision that claims the applied version.
    run.publish(
        &[&run.good_doc()],
        &["--version", "2", "--form", "tar-gzip"],
    );
    run.expect_refused(
        "equal version",
        "ERR_VERSION_ROLLBACK",
        &["version 2 is not greater than the applied version 2"],
    );

    run.publish(&[&run.good_doc()], &["--version", "3"]);
    let (code, log) = run.dev.run_once();
    assert_eq!(code, 0, "version 3 must apply:\n{log}");
    let status = run.dev.status();
    assert_eq!(status["source"]["applied_version"], 3, "{status}");
    assert!(status["source"]["rejected"].is_null(), "{status}");
    run.assert_untouched("newer version with unchanged deployments");
}

#[test]
fn refuses_malformed_desired_state_artifacts() {
    let run = Running::start("bad-artifact", "beacon", &[]);
    let repo = run.desired_repo();
    let good = run.good_doc();
    let good_digest = push_blob(&repo, good.as_bytes());
    let good_layer = descriptor(DESIRED_YAML, &good_digest, good.len() as u64);
    let push = |layers: &[Value], tag_note: &str| {
        // A distinct annotation per case, so each manifest is a new revision.
        push_manifest(
            &repo,
            "latest",
            DESIRED_ARTIFACT,
            layers,
            &[("org.example.case", tag_note)],
        );
    };

    push(&[], "no layer");
    run.expect_refused(
        "manifest with no layer",
        "ERR_DESIRED_STATE_INVALID",
        &["has 0 layers; exactly one is required"],
    );

    let other = "# another file\n";
    let other_layer = descriptor(
        DESIRED_YAML,
        &push_blob(&repo, other.as_bytes()),
        other.len() as u64,
    );
    push(&[good_layer.clone(), other_layer], "two layers");
    run.expect_refused(
        "manifest with two layers",
        "ERR_DESIRED_STATE_INVALID",
        &["has 2 layers; exactly one is required"],
    );

    let tar_layer = "application/vnd.oci.image.layer.v1.tar";
    push(
        &[descriptor(tar_layer, &good_digest, good.len() as u64)],
        "unknown media type",
    );
    run.expect_refused(
        "layer of an unknown media type",
        "ERR_DESIRED_STATE_INVALID",
        &[tar_layer],
    );

    // 5 MiB of valid YAML (the good document padded with comments), over the 4 MiB cap.
    let mut big = good.clone();
    let pad = "# padding to push the layer over its cap\n";
    while big.len() < 5 * 1024 * 1024 {
        big.push_str(pad);
    }
    let big_layer = descriptor(
        DESIRED_YAML,
        &push_blob(&repo, big.as_bytes()),
        big.len() as u64,
    );
    push(&[big_layer], "5 MiB layer");
    run.expect_refused(
        "5 MiB layer",
        "ERR_TOO_LARGE",
        &[&format!("is {} bytes, over the 4 MiB cap", big.len())],
    );

    // The small good blob, declared as 5 MiB: refused before any download.
    push(
        &[descriptor(DESIRED_YAML, &good_digest, 5 * 1024 * 1024)],
        "declared 5 MiB",
    );
    run.expect_refused(
        "layer declared over the cap",
        "ERR_TOO_LARGE",
        &["over the 4 MiB cap"],
    );

    // The registry serves the blob whole; its descriptor says one byte less, then one more.
    let size = good.len() as u64;
    push(
        &[descriptor(DESIRED_YAML, &good_digest, size - 1)],
        "size too small",
    );
    run.expect_refused(
        "layer size declared too small",
        "ERR_DIGEST_MISMATCH",
        &[&format!(
            "delivered more than the declared {} bytes",
            size - 1
        )],
    );
    push(
        &[descriptor(DESIRED_YAML, &good_digest, size + 1)],
        "size too large",
    );
    run.expect_refused(
        "layer size declared too large",
        "ERR_DIGEST_MISMATCH",
        &[&format!(
            "delivered {size} of the declared {} bytes",
            size + 1
        )],
    );
}

/// One entry of a hand-built package archive.
enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A tar.gz written header by header with names copied verbatim: the `tar` crate's path
/// setters refuse `..` and absolute link targets, which is what these fixtures are made of.
fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for e in entries {
        let (name, kind, data, link) = match e {
            Entry::Dir(n) => (n, tar::EntryType::Directory, &[][..], ""),
            Entry::File(n, d) => (n, tar::EntryType::Regular, *d, ""),
            Entry::Symlink(n, l) => (n, tar::EntryType::Symlink, &[][..], *l),
        };
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data).expect("append tar entry");
    }
    b.into_inner()
        .and_then(|gz| gz.finish())
        .expect("finish tar.gz")
}

/// Pushes `archive` as a SUP-01 Compose package `e2e/<device>/<component>:1.0.0` on the plain
/// registry; returns the deployment document that installs it.
fn publish_raw_package(dev: &Device, dep_id: &str, component: &str, archive: &[u8]) -> String {
    let repo = format!("e2e/{}/{component}", dev.name);
    let layer = descriptor(
        PACKAGE_LAYER,
        &push_blob(&repo, archive),
        archive.len() as u64,
    );
    push_manifest(&repo, "1.0.0", PACKAGE_ARTIFACT, &[layer], &[]);
    let oci = format!("oci://{}/{repo}", Bed::get().plain());
    deployment(dep_id, component, &oci, "1.0.0")
}

/// Every path below `dir` whose last component is `name`.
fn find_named(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let p = entry.path();
        if entry.file_name() == name {
            found.push(p.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find_named(&p, name, found);
        }
    }
}

/// The bad deployment left nothing in Podman: no container, no network of its project.
fn assert_nothing_in_podman(check: &str, dep_id: &str, component: &str) {
    let bed = Bed::get();
    let containers = bed.containers("org.margo.deployment-id", dep_id);
    assert!(containers.is_empty(), "{check}: containers {containers:?}");
    let nets = bed.podman(&["network", "ls", "--format", "{{.Name}}"]);
    let nets = String::from_utf8_lossy(&nets.stdout);
    assert!(
        !nets
            .lines()
            .any(|n| n.starts_with(&format!("{component}-"))),
        "{check}: network created: {nets}"
    );
}

#[test]
fn fails_unsafe_packages_without_writing_outside_their_directory() {
    let run = Running::start("bad-unsafe", "vault", &[]);
    let dev = &run.dev;
    let compose = format!(
        "services:\n  app:\n    image: {}\n    command: [\"sleep\", \"3600\"]\n",
        Bed::get().image()
    );

    // An entry that climbs out of the package directory, after a valid compose file.
    let dotdot = tar_gz(&[
        Entry::Dir("pkg/"),
        Entry::File("pkg/compose.yaml", compose.as_bytes()),
        Entry::File("../x", b"escaped\n"),
    ]);
    let doc = publish_raw_package(dev, "bad-unsafe-dotdot", "dotdot", &dotdot);
    run.publish(&[&run.good_doc(), &doc], &[]);
    run.expect_failed(
        "package entry ../x",
        "bad-unsafe-dotdot",
        "ERR_PACKAGE_UNSAFE",
        &["\"../x\""],
    );
    assert_nothing_in_podman("package entry ../x", "bad-unsafe-dotdot", "dotdot");
    let mut escaped = Vec::new();
    find_named(&dev.dir, "x", &mut escaped);
    find_named(&repo().join("target/e2e"), "x", &mut escaped);
    assert!(escaped.is_empty(), "../x was written: {escaped:?}");

    // A symlink to `/`, then a file written through it into /tmp.
    let marker = format!("margo-e2e-bad-unsafe-{}", std::process::id());
    let through = format!("pkg/root/tmp/{marker}");
    let rootlink = tar_gz(&[
        Entry::Dir("pkg/"),
        Entry::File("pkg/compose.yaml", compose.as_bytes()),
        Entry::Symlink("pkg/root", "/"),
        Entry::File(&through, b"escaped\n"),
    ]);
    let doc = publish_raw_package(dev, "bad-unsafe-rootlink", "rootlink", &rootlink);
    run.publish(&[&run.good_doc(), &doc], &[]);
    let status = run.expect_failed(
        "package symlink to /",
        "bad-unsafe-rootlink",
        "ERR_PACKAGE_UNSAFE",
        &["\"pkg/root\""],
    );
    assert!(
        status["deployments"]["bad-unsafe-dotdot"].is_null(),
        "the dropped deployment must be gone: {status}"
    );
    assert_nothing_in_podman("package symlink to /", "bad-unsafe-rootlink", "rootlink");
    let written = Path::new("/tmp").join(&marker);
    let leaked = written.exists();
    let _ = std::fs::remove_file(&written);
    assert!(!leaked, "a file was written through the symlink to /");
    // Neither refused package left a directory (or a half-extracted one) behind.
    let projects: Vec<String> = std::fs::read_dir(dev.dir.join("work/projects"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !projects
            .iter()
            .any(|p| p.starts_with("dotdot-") || p.starts_with("rootlink-")),
        "{projects:?}"
    );
}

#[test]
fn keeps_running_containers_when_an_update_cannot_be_applied() {
    let run = Running::start("bad-compose", "kiosk", &["--version", "1"]);
    let dev = &run.dev;
    let applied = dev.status()["source"]["applied"].clone();
    let missing = format!("{}/e2e/bad-compose/no-such-image:1", Bed::get().plain());
    // Each update changes the running `web` service, so an apply would replace it.
    let cases: [(&str, &str, String, &str, Vec<&str>); 3] = [
        (
            "compose with build:",
            "2",
            web_compose_with(run.port, "", "    build: ./web\n"),
            "ERR_COMPOSE_UNSUPPORTED",
            vec!["service \"web\"", "key \"build\""],
        ),
        (
            "required variable unset",
            "3",
            web_compose_with(
                run.port,
                "",
                "    environment:\n      BAD_X: \"${BAD_X:?BAD_X must be set}\"\n",
            ),
            "ERR_COMPOSE_INTERPOLATION",
            vec!["BAD_X must be set"],
        ),
        (
            "image missing from the registry",
            "4",
            web_compose_with(run.port, &missing, ""),
            "ERR_IMAGE_PULL",
            vec![&missing],
        ),
    ];
    for (check, version, compose, code, needles) in &cases {
        let revision = format!("1.0.{version}");
        let repo = dev.publish_package(&run.component, compose, &revision);
        assert_eq!(repo, run.package);
        run.publish(&[&run.doc(&revision)], &["--version", version]);
        run.expect_failed(check, &run.dep_id, code, needles);
    }

    // The tag back on the applied revision (same bytes, version 1): applied again, which makes
    // the deployment Installed without touching the container it runs.
    run.publish(&[&run.good_doc()], &["--version", "1"]);
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "back to the applied revision:\n{log}");
    let status = dev.status();
    assert_eq!(status["source"]["applied"], applied, "{status}");
    assert_eq!(status["deployments"][&run.dep_id]["phase"], "Installed");
    run.assert_untouched("back to the applied revision");
}

#[test]
fn reports_refused_registry_credentials_without_the_password() {
    let run = Running::start("bad-creds", "relay", &[]);
    let basic = Bed::get().var("MARGO_TB_REG_BASIC");
    let reference = format!("{basic}/e2e/bad-creds/desired:latest");
    let out = run
        .dev
        .publish_desired_to(&reference, &[&run.good_doc()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let password = "wrong-pass-5b1e07";
    run.dev.write_config_with(&ConfigChanges {
        reference: Some(&reference),
        basic_password: Some(password),
        ..ConfigChanges::default()
    });
    let before = run.dev.status();

    let (code, log) = run.dev.run_once();
    let line = assert_one_problem("wrong password", (code, &log), 4, &[basic, "credentials"]);
    assert!(line.contains("refused"), "{line}");
    assert!(
        !log.contains(password),
        "the password is in the log:\n{log}"
    );
    let status = run.dev.status();
    assert!(!status.to_string().contains(password), "{status}");
    assert_eq!(status["source"]["applied"], before["source"]["applied"]);
    assert_eq!(status["deployments"][&run.dep_id]["phase"], "Installed");
    run.assert_untouched("wrong password");
}

#[test]
fn reports_an_unreachable_registry_and_keeps_workloads() {
    let run = Running::start("bad-unreach", "signal", &[]);
    let closed = free_port();
    let reference = format!("127.0.0.1:{closed}/e2e/bad-unreach/desired:latest");
    run.dev.write_config_with(&ConfigChanges {
        reference: Some(&reference),
        ..ConfigChanges::default()
    });
    let before = run.dev.status();

    let (code, log) = run.dev.run_once();
    assert_one_problem(
        "registry on a closed port",
        (code, &log),
        4,
        &[
            &format!("cannot reach 127.0.0.1:{closed}"),
            "keeping current workloads",
        ],
    );
    let status = run.dev.status();
    assert_eq!(status["source"]["applied"], before["source"]["applied"]);
    assert_eq!(status["deployments"][&run.dep_id]["phase"], "Installed");
    run.assert_untouched("registry on a closed port");
}

#[test]
fn reports_a_missing_podman_socket_and_applies_once_it_is_back() {
    let run = Running::start("bad-nopodman", "pulse", &[]);
    let socket = run.dev.dir.join("no-such-podman.sock");
    let socket = socket.to_str().expect("utf8");
    run.dev.write_config_with(&ConfigChanges {
        podman_socket: Some(socket),
        ..ConfigChanges::default()
    });
    // A new revision (same deployment, other layer form), so the pass needs Podman.
    run.publish(&[&run.good_doc()], &["--form", "tar-gzip"]);
    let before = run.dev.status();

    let (code, log) = run.dev.run_once();
    assert_one_problem(
        "Podman socket missing",
        (code, &log),
        6,
        &[socket, "ERR_PODMAN_UNAVAILABLE"],
    );
    let status = run.dev.status();
    assert_eq!(status["source"]["applied"], before["source"]["applied"]);
    assert!(status["source"]["rejected"].is_null(), "{status}");
    run.assert_untouched("Podman socket missing");

    run.dev.write_config("");
    let (code, log) = run.dev.run_once();
    assert_eq!(code, 0, "with Podman back the revision applies:\n{log}");
    assert_ne!(
        run.dev.status()["source"]["applied"],
        before["source"]["applied"]
    );
    run.assert_untouched("Podman back");
}

#[test]
fn check_config_names_an_unknown_key() {
    // Fixture: a valid config plus one key no version of the agent knows, at the top level
    // and inside a section.
    let dir = repo().join("target/e2e/bad-config");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let valid = "desired_state:\n  reference: registry.example.com/fleet/desired:latest\n";
    for (check, text, key, at) in [
        (
            "top-level key",
            format!("{valid}polling_mode: fast\n"),
            "polling_mode",
            "line 3",
        ),
        (
            "key inside a section",
            format!("{valid}podman:\n  sockett: /run/podman/podman.sock\n"),
            "sockett",
            "line 4",
        ),
    ] {
        let config = dir.join("config.yaml");
        std::fs::write(&config, &text).expect("write config");
        let out = std::process::Command::new(common::binary())
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .env("MARGO_AGENT_LOG", "stderr")
            .output()
            .expect("run check-config");
        let log = String::from_utf8_lossy(&out.stderr);
        let path = config.to_str().expect("utf8");
        let code = out.status.code().unwrap_or(-1);
        let line = assert_one_problem(check, (code, &log), 3, &[key, at, path]);
        // Named once: no source snippet flattened into the line.
        assert_eq!(line.matches(key).count(), 1, "{check}: {line}");
    }
}

/// A second deployment whose compose file fails only when it runs: the failure names the
/// service and what went wrong, the first deployment keeps running untouched.
#[test]
fn fails_compose_runtime_problems_and_leaves_other_deployments_alone() {
    let run = Running::start("bad-runtime", "kiosk", &[]);
    let dev = &run.dev;
    let image = Bed::get().image();
    let taken = run.before.keys().next().cloned().unwrap_or_default();
    let cases: [(&str, String, &str, Vec<&str>); 5] = [
        (
            "a container that exits 1 at start",
            format!(
                "services:\n  job:\n    image: {image}\n    command: [sh, -c, 'echo boom-at-start; exit 1']\n"
            ),
            "ERR_CONTAINER_EXITED",
            vec!["service \"job\"", "exited with code 1", "boom-at-start"],
        ),
        (
            "service_healthy on a service without a healthcheck",
            format!(
                "services:\n  db:\n    image: {image}\n    command: [sleep, '300']\n  app:\n    image: {image}\n    command: [sleep, '300']\n    depends_on:\n      db: {{condition: service_healthy}}\n"
            ),
            "ERR_DEPENDENCY_FAILED",
            vec!["service \"app\"", "depends_on \"db\"", "has no healthcheck"],
        ),
        (
            "a healthcheck that never passes",
            format!(
                "services:\n  db:\n    image: {image}\n    command: [sleep, '300']\n    healthcheck: {{test: [CMD, 'false'], interval: 1s, retries: 2}}\n"
            ),
            "ERR_UNHEALTHY",
            vec!["service \"db\"", "unhealthy"],
        ),
        (
            "a container name another deployment uses",
            format!(
                "services:\n  dup:\n    image: {image}\n    container_name: {taken}\n    command: [sleep, '300']\n"
            ),
            "ERR_NAME_CONFLICT",
            vec!["service \"dup\"", &taken, "bad-runtime-d1"],
        ),
        (
            "an env_file missing from the package",
            format!(
                "services:\n  app:\n    image: {image}\n    command: [sleep, '300']\n    env_file: [missing.env]\n"
            ),
            "ERR_COMPOSE_INVALID",
            vec!["services.app.env_file", "missing.env"],
        ),
    ];
    let second = "bad-runtime-d2";
    for (i, (check, compose, code, needles)) in cases.iter().enumerate() {
        let revision = format!("2.0.{i}");
        let repo = dev.publish_package("broken", compose, &revision);
        let bad =
            deployment(second, "broken", &repo, &revision).replace("timeout: 60s", "timeout: 20s");
        run.publish(&[&run.good_doc(), &bad], &[]);
        let status = run.expect_failed(check, second, code, needles);
        assert_eq!(
            status["deployments"][&run.dep_id]["phase"], "Installed",
            "{check}: {status}"
        );
    }
}
