//! Harness for end-to-end tests: the real `margo-agent` binary against the test bed's real
//! Podman service and CNCF distribution registries (`tests/bed/up.sh`).
//!
//! The bed is found through `$MARGO_TESTBED` (the path of the bed's `env` file), which
//! `tests/run.sh` sets. Without it these tests fail with a message saying so: they are never
//! skipped silently.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod engine;
pub mod pkg;
pub mod raw_push;
pub mod wfm;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Bed {
    pub env: HashMap<String, String>,
}

impl Bed {
    pub fn get() -> &'static Bed {
        static BED: OnceLock<Bed> = OnceLock::new();
        BED.get_or_init(|| {
            let path = std::env::var("MARGO_TESTBED").unwrap_or_else(|_| {
                panic!(
                    "MARGO_TESTBED is not set: end-to-end tests need the test bed. \
                     Run tests/run.sh, or `tests/bed/up.sh DIR` and export MARGO_TESTBED=DIR/env"
                )
            });
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read test bed env {path}: {e}"));
            let env = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            Bed { env }
        })
    }

    pub fn var(&self, k: &str) -> &str {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("test bed env lacks {k}"))
    }

    pub fn plain(&self) -> &str {
        self.var("MARGO_TB_REG_PLAIN")
    }

    pub fn image(&self) -> &str {
        self.var("MARGO_TB_IMAGE")
    }

    /// Runs the podman CLI against the bed's storage.
    pub fn podman(&self, args: &[&str]) -> Output {
        Command::new(repo().join("tests/bed/podman.sh"))
            .args(args)
            .env("MARGO_TB_DIR", self.var("MARGO_TB_DIR"))
            .output()
            .expect("run tests/bed/podman.sh")
    }

    /// Containers (podman ps -a) whose label `key` equals `value`, as JSON objects.
    pub fn containers(&self, key: &str, value: &str) -> Vec<serde_json::Value> {
        let out = self.podman(&[
            "ps",
            "-a",
            "--format",
            "json",
            "--filter",
            &format!("label={key}={value}"),
        ]);
        assert!(
            out.status.success(),
            "podman ps failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Runs `tests/bed/podman-service.sh` on the bed: `stop`, `start`, `restart`, `reboot`.
    pub fn podman_service(&self, command: &str) {
        let out = Command::new(repo().join("tests/bed/podman-service.sh"))
            .arg(self.var("MARGO_TB_DIR"))
            .arg(command)
            .output()
            .expect("run podman-service.sh");
        assert!(
            out.status.success(),
            "podman-service.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Container name → Podman state (`running`, `created`, `exited`, …) of every container
    /// carrying label `key=value`.
    pub fn states(&self, key: &str, value: &str) -> std::collections::BTreeMap<String, String> {
        self.containers(key, value)
            .into_iter()
            .map(|c| {
                (
                    c["Names"][0].as_str().unwrap_or_default().to_string(),
                    c["State"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.podman(&["inspect", name]);
        assert!(
            out.status.success(),
            "podman inspect {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
        v[0].clone()
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_margo-agent"))
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Config settings a test changes from what [`Device::write_config`] writes.
#[derive(Default)]
pub struct ConfigChanges<'a> {
    /// `desired_state.reference` (default: the device's repository on the plain registry).
    pub reference: Option<&'a str>,
    /// Password for the BASIC registry (default: the right one).
    pub basic_password: Option<&'a str>,
    /// `podman.socket` (default: the bed's).
    pub podman_socket: Option<&'a str>,
    /// YAML appended (top-level keys).
    pub extra: &'a str,
}

/// One agent instance: its own config, state file, work dir and desired-state repository.
pub struct Device {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub reference: String,
}

impl Device {
    /// A device whose desired state lives at `<plain registry>/e2e/<name>/desired:latest`.
    pub fn new(name: &str) -> Device {
        let bed = Bed::get();
        let dir = repo().join("target/e2e").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create device dir");
        let reference = format!("{}/e2e/{name}/desired:latest", bed.plain());
        let d = Device {
            name: name.to_string(),
            config: dir.join("config.yaml"),
            dir,
            reference,
        };
        d.write_config("");
        d
    }

    /// Writes the device's config; `extra` is appended YAML (top-level keys).
    pub fn write_config(&self, extra: &str) {
        self.write_config_with(&ConfigChanges {
            extra,
            ..ConfigChanges::default()
        });
    }

    /// Writes the device's config with some settings changed from the bed's defaults.
    pub fn write_config_with(&self, changes: &ConfigChanges) {
        let bed = Bed::get();
        let text = format!(
            "device_id: {name}\n\
             desired_state:\n  reference: {reference}\n  poll_interval: 1s\n  poll_jitter: 0s\n  retry_max: 2s\n\
             registries:\n\
             \x20 - host: \"{plain}\"\n    plain_http: true\n\
             \x20 - host: \"{basic}\"\n    username: {user}\n    password: {basic_pass}\n\
             \x20 - host: \"{token}\"\n    username: {user}\n    password: {pass}\n\
             tls:\n  ca_bundle: /nonexistent\n  extra_ca: [{ca}]\n\
             podman:\n  socket: {sock}\n  call_timeout: 30s\n  stop_timeout: 2s\n\
             state_file: {dir}/state.json\nwork_dir: {dir}/work\nlog_level: debug\n{extra}",
            name = self.name,
            reference = changes.reference.unwrap_or(&self.reference),
            plain = bed.plain(),
            basic = bed.var("MARGO_TB_REG_BASIC"),
            token = bed.var("MARGO_TB_REG_TOKEN"),
            user = bed.var("MARGO_TB_USER"),
            pass = bed.var("MARGO_TB_PASS"),
            basic_pass = changes
                .basic_password
                .unwrap_or_else(|| bed.var("MARGO_TB_PASS")),
            ca = bed.var("MARGO_TB_CA"),
            sock = changes
                .podman_socket
                .unwrap_or_else(|| bed.var("MARGO_TB_PODMAN_SOCK")),
            dir = self.dir.display(),
            extra = changes.extra,
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_env(args, &[])
    }

    /// [`Device::cmd`] with extra environment variables.
    pub fn cmd_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("MARGO_AGENT_LOG", "stderr")
            .envs(env.iter().copied())
            .output()
            .expect("run margo-agent")
    }

    /// `run --once` with extra environment variables; returns (exit code, stderr text).
    pub fn run_once_env(&self, env: &[(&str, &str)]) -> (i32, String) {
        let out = self.cmd_env(&["run", "--once"], env);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- run --once ({}) ---\n{err}", self.name);
        (out.status.code().unwrap_or(-1), err)
    }

    /// `run --once`; returns (exit code, stderr text).
    pub fn run_once(&self) -> (i32, String) {
        self.run_once_env(&[])
    }

    /// Publishes a Compose project directory as a SUP-01 OCI package; returns its `oci://`
    /// repository (the revision is the tag).
    pub fn publish_package(&self, component: &str, compose_yaml: &str, revision: &str) -> String {
        self.publish_package_to(Bed::get().plain(), component, compose_yaml, revision)
    }

    /// Publishes a Compose package to the registry at `host` (credentials and CA from the
    /// device's config); returns its `oci://` repository.
    pub fn publish_package_to(
        &self,
        host: &str,
        component: &str,
        compose_yaml: &str,
        revision: &str,
    ) -> String {
        let pkg = self.dir.join("packages").join(component).join(component);
        std::fs::create_dir_all(&pkg).expect("mkdir package");
        std::fs::write(pkg.join("compose.yaml"), compose_yaml).expect("write compose");
        let repo = format!("{host}/e2e/{}/{component}", self.name);
        let out = self.cmd(&[
            "publish",
            "--package",
            pkg.to_str().expect("utf8"),
            "--to",
            &format!("{repo}:{revision}"),
        ]);
        assert!(
            out.status.success(),
            "publish --package to {host} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("oci://{repo}")
    }

    /// Publishes ApplicationDeployment documents as the device's desired state.
    pub fn publish_desired(&self, docs: &[&str], extra_args: &[&str]) -> Output {
        self.publish_desired_to(&self.reference, docs, extra_args)
    }

    /// Publishes ApplicationDeployment documents to `reference` (with this device's config,
    /// so its registry credentials).
    pub fn publish_desired_to(
        &self,
        reference: &str,
        docs: &[&str],
        extra_args: &[&str],
    ) -> Output {
        let ddir = self.dir.join("desired");
        let _ = std::fs::remove_dir_all(&ddir);
        std::fs::create_dir_all(&ddir).expect("mkdir desired");
        let mut args: Vec<String> = vec!["publish".into(), "--to".into(), reference.to_string()];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        for (i, d) in docs.iter().enumerate() {
            let p = ddir.join(format!("deployment-{i}.yaml"));
            std::fs::write(&p, d).expect("write doc");
            args.push(p.to_string_lossy().into_owned());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(&argv)
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.cmd(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// Container name → ID of every container this device's deployments run.
    pub fn container_ids(&self) -> std::collections::BTreeMap<String, String> {
        Bed::get()
            .containers("org.margo.device-id", &self.name)
            .into_iter()
            .map(|c| {
                let name = c["Names"][0].as_str().unwrap_or_default().to_string();
                (name, c["Id"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// Removes every container and network this device's deployments created.
    pub fn cleanup(&self) {
        let bed = Bed::get();
        for c in bed.containers("org.margo.device-id", &self.name) {
            if let Some(id) = c["Id"].as_str() {
                let _ = bed.podman(&["rm", "-f", "-t", "0", id]);
            }
        }
        let out = bed.podman(&[
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("label=org.margo.device-id={}", self.name),
        ]);
        for n in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = bed.podman(&["network", "rm", "-f", n.trim()]);
        }
    }
}

/// An ApplicationDeployment (newer form) with one compose component from an OCI package.
pub fn deployment(id: &str, component: &str, repository: &str, revision: &str) -> String {
    format!(
        "apiVersion: application.margo.org/v1alpha1\n\
         kind: ApplicationDeployment\n\
         metadata:\n  name: {id}\n  annotations:\n    id: {id}\n    applicationId: app-{component}\n\
         spec:\n  applicationId: app-{component}\n  deploymentProfile:\n    type: compose\n    components:\n\
         \x20     - name: {component}\n        properties:\n          repository: {repository}\n          revision: {revision}\n          wait: true\n          timeout: 60s\n"
    )
}

/// GET `http://127.0.0.1:port/path`, retrying until `timeout`; returns the body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = String::new();
                if s.read_to_string(&mut buf).is_ok()
                    && buf.starts_with("HTTP/1.")
                    && let Some((_, body)) = buf.split_once("\r\n\r\n")
                {
                    return Some(body.to_string());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

pub fn assert_file_exists(p: &Path) {
    assert!(p.exists(), "{} should exist", p.display());
}

/// Lines of an agent log at warning severity or worse (`<0>` … `<4>` prefixes).
pub fn problem_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| matches!(l.get(..3), Some("<0>" | "<1>" | "<2>" | "<3>" | "<4>")))
        .collect()
}

/// Checks one `run --once` that should fail: it exited with `expected` (not a panic) and
/// logged exactly one warning-or-worse line, which holds every needle. Returns that line.
/// `check` names the case in failure messages.
pub fn assert_one_problem<'a>(
    check: &str,
    (code, log): (i32, &'a str),
    expected: i32,
    needles: &[&str],
) -> &'a str {
    assert!(
        !log.contains("panicked"),
        "{check}: the agent panicked:\n{log}"
    );
    assert_eq!(code, expected, "{check}: wrong exit code:\n{log}");
    let lines = problem_lines(log);
    assert_eq!(
        lines.len(),
        1,
        "{check}: expected one warning/error line, got {}:\n{log}",
        lines.len()
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{check}: {n:?} missing from {:?}",
            lines[0]
        );
    }
    lines[0]
}

/// An empty directory `target/e2e/<name>` (removed first if a previous run left it).
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = repo().join("target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// Writes `dir/config.yaml` for a device without a reachable source or Podman: the source is
/// plain HTTP on loopback `port` (nothing listens there unless a test puts something there),
/// the Podman socket does not exist, polling every 1 s backing off to `retry_max`.
pub fn offline_config(
    dir: &Path,
    state_dir: &Path,
    device_id: &str,
    port: u16,
    retry_max: &str,
) -> PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "device_id: {device_id}\n\
             desired_state:\n  reference: 127.0.0.1:{port}/fleet/dev/desired:latest\n  poll_interval: 1s\n  poll_jitter: 0s\n  retry_max: {retry_max}\n\
             registries:\n  - host: \"127.0.0.1:{port}\"\n    plain_http: true\n\
             podman:\n  socket: {d}/no-podman.sock\n\
             state_file: {s}/state.json\nwork_dir: {d}/work\n",
            d = dir.display(),
            s = state_dir.display()
        ),
    )
    .expect("write the test config");
    config
}
