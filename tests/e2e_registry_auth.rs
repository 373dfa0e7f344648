//! Registry authentication and TLS end to end, against the test bed's real CNCF distribution
//! registries: the desired state and the Compose package on the htpasswd (BASIC) and bearer
//! token (TOKEN) registries over HTTPS with the bed's test CA, an image pulled by Podman from
//! BASIC with the agent's credentials, an older-form `packageLocation` registry blob URL, and
//! a TLS registry whose CA the agent was not given.
mod common;

use common::{Bed, Device, binary, deployment, free_port, http_get};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn basic() -> &'static str {
    Bed::get().var("MARGO_TB_REG_BASIC")
}

fn token() -> &'static str {
    Bed::get().var("MARGO_TB_REG_TOKEN")
}

/// A device whose desired state lives at `<host>/e2e/<name>/desired:latest`; its config
/// carries the bed's credentials for BASIC and TOKEN and the test CA (see `common`).
fn device_on(name: &str, host: &str) -> Device {
    let mut dev = Device::new(name);
    dev.reference = format!("{host}/e2e/{name}/desired:latest");
    dev.write_config("");
    dev.cleanup();
    dev
}

/// Rewrites the device's config file through `edit`, checking that it changed something.
fn edit_config(dev: &Device, edit: impl Fn(&str) -> String) {
    let before = std::fs::read_to_string(&dev.config).expect("read config");
    let after = edit(&before);
    assert_ne!(before, after, "config edit matched nothing:\n{before}");
    std::fs::write(&dev.config, after).expect("write config");
}

fn publish_desired_ok(dev: &Device, docs: &[&str]) {
    let out = dev.publish_desired(docs, &[]);
    assert!(
        out.status.success(),
        "publish of the desired state to {} failed: {}",
        dev.reference,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sleeper_compose(image: &str) -> String {
    format!(
        "services:\n\
         \x20 main:\n\
         \x20   image: {image}\n\
         \x20   command: [\"sleep\", \"3600\"]\n"
    )
}

fn web_compose(image: &str, port: u16, greeting: &str) -> String {
    format!(
        "services:\n\
         \x20 web:\n\
         \x20   image: {image}\n\
         \x20   command: [\"sh\", \"-c\", \"mkdir -p /www && echo {greeting} > /www/index.html && exec httpd -f -p 80 -h /www\"]\n\
         \x20   ports:\n\
         \x20     - \"127.0.0.1:{port}:80\"\n"
    )
}

/// Names → state of the device's containers.
fn running(dev: &Device) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Bed::get()
        .containers("org.margo.device-id", &dev.name)
        .into_iter()
        .map(|c| {
            (
                c["Names"][0].as_str().unwrap_or_default().to_string(),
                c["State"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn assert_all_running(dev: &Device, expected: usize) {
    let cs = running(dev);
    assert_eq!(cs.len(), expected, "{cs:?}");
    assert!(cs.iter().all(|(_, s)| s == "running"), "{cs:?}");
}

/// Access-log lines (`127.0.0.1 - - [...] "METHOD /v2/... HTTP/1.1" STATUS ...`) of one of the
/// bed's registries (`plain`, `basic`, `token`) whose request path contains `needle`.
fn registry_requests(which: &str, needle: &str) -> Vec<String> {
    let path = Path::new(Bed::get().var("MARGO_TB_DIR")).join(format!("logs/registry-{which}.log"));
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("127.0.0.1 - ") && l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Token-server requests whose scopes name a repository under `prefix`.
fn token_requests(prefix: &str) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(Bed::get().var("MARGO_TB_TOKEN_LOG")).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["scopes"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.contains(prefix)))
            })
        })
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[test]
fn basic_registry_over_tls_serves_desired_state_and_package() {
    let dev = device_on("auth-basic", basic());
    let port = free_port();
    let repo = dev.publish_package_to(
        basic(),
        "auth-basic-web",
        &web_compose(Bed::get().image(), port, "basic-ok"),
        "1.0.0",
    );
    publish_desired_ok(
        &dev,
        &[&deployment(
            "auth-basic-d1",
            "auth-basic-web",
            &repo,
            "1.0.0",
        )],
    );
    // Both really are behind htpasswd: anonymous reads are refused.
    let anon = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(Bed::get().var("MARGO_TB_CA"))
        .arg(format!(
            "https://{}/v2/e2e/auth-basic/desired/manifests/latest",
            basic()
        ))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&anon.stdout), "401");

    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "converge from BASIC failed:\n{log}");
    assert_eq!(
        http_get(port, "/", Duration::from_secs(20))
            .as_deref()
            .map(str::trim),
        Some("basic-ok")
    );
    assert_all_running(&dev, 1);
    assert_eq!(
        dev.status()["deployments"]["auth-basic-d1"]["phase"],
        "Installed"
    );

    // An unchanged poll: one HEAD of the tag (Basic credentials sent after the 401), nothing
    // else.
    let before = registry_requests("basic", "/v2/e2e/auth-basic/").len();
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    let after = registry_requests("basic", "/v2/e2e/auth-basic/");
    let new = &after[before..];
    assert!(
        new.iter()
            .all(|l| l.contains("\"HEAD /v2/e2e/auth-basic/desired/manifests/latest")),
        "unchanged poll made more than HEADs: {new:#?}"
    );
    assert!(
        new.iter().filter(|l| l.contains("\" 200 ")).count() == 1 && new.len() <= 2,
        "unchanged poll: expected one successful HEAD (after at most one 401): {new:#?}"
    );

    // Wrong password: the source is unreachable (exit 4), the reason says credentials, and
    // the workload keeps running.
    let pass = Bed::get().var("MARGO_TB_PASS");
    edit_config(&dev, |c| {
        c.replacen(
            &format!("\"{}\"\n    username: margo\n    password: {pass}", basic()),
            &format!("\"{}\"\n    username: margo\n    password: wrong", basic()),
            1,
        )
    });
    // `publish` with the same config is refused too.
    let out = dev.publish_desired(&[], &[]);
    assert!(
        !out.status.success(),
        "publish with a wrong password must fail"
    );
    let (code, log) = dev.run_once();
    assert_eq!(code, 4, "wrong credentials must exit 4:\n{log}");
    assert!(
        log.contains("401") || log.to_lowercase().contains("credential"),
        "{log}"
    );
    assert_all_running(&dev, 1);
    dev.cleanup();
}

#[test]
fn token_registry_converges_and_reuses_its_token_on_unchanged_polls() {
    let dev = device_on("auth-token", token());
    let repo = dev.publish_package_to(
        token(),
        "auth-token-app",
        &sleeper_compose(Bed::get().image()),
        "1.0.0",
    );
    publish_desired_ok(
        &dev,
        &[&deployment(
            "auth-token-d1",
            "auth-token-app",
            &repo,
            "1.0.0",
        )],
    );
    // The daemon, so the token cache lives across polls (poll_interval 1s).
    let stderr = std::fs::File::create(dev.dir.join("daemon.log")).expect("log file");
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&dev.config)
        .arg("run")
        .env("MARGO_AGENT_LOG", "stderr")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start margo-agent run");
    let log = || std::fs::read_to_string(dev.dir.join("daemon.log")).unwrap_or_default();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            "the deployment to be Installed",
            Duration::from_secs(60),
            || dev.status()["deployments"]["auth-token-d1"]["phase"] == "Installed",
        );
        assert_all_running(&dev, 1);
        // The token service saw the agent's Basic credentials and granted what it asked.
        let tokens = token_requests("e2e/auth-token/");
        assert!(!tokens.is_empty());
        assert!(
            tokens
                .iter()
                .all(|t| t["user"] == "margo" && t["status"] == 200),
            "{tokens:#?}"
        );
        // Three more unchanged polls: each one HEAD with the cached token (no 401, no GET),
        // and not a single new token request.
        let head = "\"HEAD /v2/e2e/auth-token/desired/manifests/latest";
        let tokens_before = token_requests("e2e/auth-token/").len();
        let reqs_before = registry_requests("token", "/v2/e2e/auth-token/").len();
        wait_until("three unchanged polls", Duration::from_secs(20), || {
            registry_requests("token", "/v2/e2e/auth-token/")[reqs_before..]
                .iter()
                .filter(|l| l.contains(head))
                .count()
                >= 3
        });
        let new = registry_requests("token", "/v2/e2e/auth-token/")[reqs_before..].to_vec();
        assert!(
            new.iter()
                .all(|l| l.contains(head) && l.contains("\" 200 ")),
            "unchanged polls should be one authorised HEAD each: {new:#?}"
        );
        let tokens_after = token_requests("e2e/auth-token/");
        // The token of the first poll is still fresh (the bed grants 60 s; the agent renews
        // 10 s early) unless the bed was started with short-lived tokens: then at most one
        // token per poll.
        let lifetime = tokens_after
            .iter()
            .filter_map(|t| t["expires_in"].as_u64())
            .min()
            .unwrap_or(60);
        let allowed = if lifetime >= 30 { 0 } else { 3 };
        assert!(
            tokens_after.len() - tokens_before <= allowed,
            "unchanged polls must reuse the cached token: {} new token requests \
             (token lifetime {lifetime} s)",
            tokens_after.len() - tokens_before
        );
    }));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait for the daemon");
    eprintln!("--- daemon log ---\n{}", log());
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert!(status.success(), "daemon must stop cleanly on SIGTERM");

    // A fresh process knows no token: an unchanged `run --once` asks for exactly one.
    let before = token_requests("e2e/auth-token/").len();
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    let new = token_requests("e2e/auth-token/").len() - before;
    assert!(new <= 1, "{new} token requests for one unchanged poll");
    dev.cleanup();
}

#[test]
fn image_is_pulled_by_podman_from_basic_registry_with_the_agents_credentials() {
    let bed = Bed::get();
    let unique = format!(
        "auth-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let image = format!("{}/library/busybox:{unique}", basic());
    let ok = |out: std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(bed.podman(&["tag", bed.image(), &image]), "podman tag");
    let creds = format!("{}:{}", bed.var("MARGO_TB_USER"), bed.var("MARGO_TB_PASS"));
    ok(
        bed.podman(&["push", "--creds", &creds, &image]),
        "podman push to BASIC",
    );
    ok(bed.podman(&["rmi", &image]), "podman rmi");
    assert!(
        !bed.podman(&["image", "exists", &image]).status.success(),
        "{image} must not be in Podman's storage before the agent runs"
    );

    // Without the right password Podman cannot pull it (the bed's auth file is empty), so
    // the credentials can only come from the agent.
    let dev = device_on("auth-pull-bad", bed.plain());
    edit_config(&dev, |c| {
        c.replacen(
            &format!(
                "\"{}\"\n    username: margo\n    password: {}",
                basic(),
                bed.var("MARGO_TB_PASS")
            ),
            &format!("\"{}\"\n    username: margo\n    password: wrong", basic()),
            1,
        )
    });
    let repo = dev.publish_package_to(
        bed.plain(),
        "auth-pull-bad",
        &sleeper_compose(&image),
        "1.0.0",
    );
    publish_desired_ok(
        &dev,
        &[&deployment(
            "auth-pull-bad-d1",
            "auth-pull-bad",
            &repo,
            "1.0.0",
        )],
    );
    let (code, log) = dev.run_once();
    assert_eq!(
        code, 1,
        "a pull with wrong credentials must fail the apply:\n{log}"
    );
    assert!(log.contains("ERR_IMAGE_PULL"), "{log}");
    assert_eq!(
        dev.status()["deployments"]["auth-pull-bad-d1"]["error"]["code"],
        "ERR_IMAGE_PULL"
    );
    assert!(!bed.podman(&["image", "exists", &image]).status.success());
    dev.cleanup();

    // With the config's credentials: desired state, package and image all on BASIC.
    let dev = device_on("auth-pull", basic());
    let repo = dev.publish_package_to(basic(), "auth-pull-app", &sleeper_compose(&image), "1.0.0");
    publish_desired_ok(
        &dev,
        &[&deployment("auth-pull-d1", "auth-pull-app", &repo, "1.0.0")],
    );
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "converge with an image from BASIC failed:\n{log}");
    assert_all_running(&dev, 1);
    assert!(bed.podman(&["image", "exists", &image]).status.success());
    let c = &Bed::get().containers("org.margo.device-id", "auth-pull")[0];
    assert_eq!(c["Image"].as_str(), Some(image.as_str()), "{c}");
    // Podman (containers/image) fetched the manifest from BASIC, authorised (anonymous
    // requests get 401 there).
    let pulls = registry_requests("basic", &format!("/v2/library/busybox/manifests/{unique}"));
    assert!(
        pulls.iter().any(|l| l.starts_with("127.0.0.1 - ")
            && l.contains("GET ")
            && l.contains("\" 200 ")
            && l.contains("containers/")),
        "{pulls:#?}"
    );
    dev.cleanup();
    let _ = bed.podman(&["rmi", &image]);
}

#[test]
fn older_form_package_location_blob_url_on_basic_registry_converges() {
    let bed = Bed::get();
    let dev = device_on("auth-older", basic());
    let port = free_port();
    // The package is a registry blob: publish it as a SUP-01 artifact, then point a
    // packageLocation at its layer's blob URL.
    let repo = dev.publish_package_to(
        basic(),
        "auth-older-web",
        &web_compose(bed.image(), port, "older-ok"),
        "1.0.0",
    );
    let repo_path = repo
        .trim_start_matches("oci://")
        .trim_start_matches(basic())
        .trim_start_matches('/');
    let out = Command::new("curl")
        .args(["-sf", "--cacert", bed.var("MARGO_TB_CA"), "-u"])
        .arg(format!(
            "{}:{}",
            bed.var("MARGO_TB_USER"),
            bed.var("MARGO_TB_PASS")
        ))
        .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
        .arg(format!(
            "https://{}/v2/{repo_path}/manifests/1.0.0",
            basic()
        ))
        .output()
        .expect("curl");
    assert!(out.status.success(), "fetching the package manifest failed");
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest json");
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    let url = format!("https://{}/v2/{repo_path}/blobs/{layer}", basic());
    let doc = format!(
        "apiVersion: application.margo.org/v1alpha1\n\
         kind: ApplicationDeployment\n\
         metadata:\n  name: auth-older-deployment\n  namespace: margo\n  annotations:\n    id: auth-older-d1\n    applicationId: auth-older-app\n\
         spec:\n  deploymentProfile:\n    type: docker-compose\n    components:\n\
         \x20     - name: auth-older-web\n        properties:\n          packageLocation: {url}\n          wait: true\n          timeout: 60s\n"
    );
    publish_desired_ok(&dev, &[&doc]);
    let (code, log) = dev.run_once();
    assert_eq!(
        code, 0,
        "older-form packageLocation converge failed:\n{log}"
    );
    assert_eq!(
        http_get(port, "/", Duration::from_secs(20))
            .as_deref()
            .map(str::trim),
        Some("older-ok")
    );
    assert_all_running(&dev, 1);
    let status = dev.status();
    assert_eq!(
        status["deployments"]["auth-older-d1"]["phase"], "Installed",
        "{status}"
    );
    assert_eq!(
        status["deployments"]["auth-older-d1"]["application_id"], "auth-older-app",
        "{status}"
    );
    // The blob really was read, authorised, from the registry by the agent.
    let gets = registry_requests("basic", &format!("GET /v2/{repo_path}/blobs/{layer}"));
    assert!(
        gets.iter()
            .any(|l| l.contains("\" 200 ") && l.contains("margo-agent")),
        "{gets:#?}"
    );
    dev.cleanup();
}

#[test]
fn tls_registry_without_its_ca_is_unreachable_with_a_tls_error() {
    let dev = device_on("auth-noca", basic());
    // Published with the CA so the artifact exists; only the agent lacks the CA.
    publish_desired_ok(&dev, &[]);
    let ca = Bed::get().var("MARGO_TB_CA");
    edit_config(&dev, |c| {
        c.replacen(&format!("extra_ca: [{ca}]"), "extra_ca: []", 1)
    });
    let (code, log) = dev.run_once();
    assert_eq!(code, 4, "an untrusted TLS registry must exit 4:\n{log}");
    let l = log.to_lowercase();
    assert!(
        log.contains("TLS failed"),
        "the message must say TLS: {log}"
    );
    assert!(
        log.contains("tls.extra_ca"),
        "the message must name the CA setting: {log}"
    );
    assert!(l.contains("certificate") || l.contains("issuer"), "{log}");
    // Nothing was recorded as applied.
    assert!(dev.status()["source"]["applied"].is_null());
    dev.cleanup();
}
