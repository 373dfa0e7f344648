//! Memory of the package path with a 50 MB image archive, on a real Podman (the test bed):
//!
//! 1. peak RSS (VmHWM) of a process that only verifies a GnuPG detached signature over a
//!    50 MB package file (`package::signature::verify_detached`), against the same process
//!    doing nothing: the file must stream through the hash, never sit in memory;
//! 2. peak RSS of a process that only streams a 50 MB `docker save` archive into Podman
//!    (`Podman::load_image`, `POST /libpod/images/load`);
//! 3. peak RSS of the whole agent (`margo-agent run --once`, release build of this bench)
//!    applying a signed proof-of-concept package of that size: download, signature check,
//!    unpack, image load, container start.
//!
//! Each measurement is a fresh process (this bench re-executes itself), so one peak does not
//! hide another. Needs root, `gpg` (Debian gnupg) and a bed:
//! `tests/bed/up.sh /tmp/bed && MARGO_TESTBED=/tmp/bed/env cargo bench --bench packages`
//! Knob: `BENCH_MB` (default 50; 5 when `cargo test --all-targets` runs it as a smoke test).
//! Figures in `docs/bench.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::file_server::FileServer;
use common::{bed, proc_status, status_kib};
use margo_agent::package::signature::{PublicKey, verify_detached};
use margo_agent::podman::{Podman, Timeouts};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// VmHWM of this process, KiB.
fn hwm_kib() -> u64 {
    status_kib(&proc_status("self"), "VmHWM:")
}

fn podman_cli(bed: &BTreeMap<String, String>, args: &[&str]) {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{repo}/tests/bed/podman.sh"))
        .args(args)
        .env("MARGO_TB_DIR", &bed["MARGO_TB_DIR"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gpg(home: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
        .args(args)
        .output()
        .expect("gpg (Debian gnupg)");
    assert!(out.status.success(), "gpg {args:?}");
    out.stdout
}

/// Child modes: run one step, print `<mode> <VmHWM KiB> <ms>`.
fn child(mode: &str, dir: &Path) {
    let t = Instant::now();
    match mode {
        "idle" => {}
        "verify" => {
            let key = PublicKey::from_file(&dir.join("key.asc")).unwrap();
            let sig = std::fs::read(dir.join("poc.app.sig")).unwrap();
            verify_detached("bench package", &dir.join("poc.app"), &sig, &[&key]).unwrap();
        }
        "load" => {
            let bed = bed();
            let timeouts = Timeouts {
                call: Duration::from_secs(60),
                pull: Duration::from_secs(600),
                stop: Duration::from_secs(5),
            };
            let mut p = Podman::connect(Path::new(&bed["MARGO_TB_PODMAN_SOCK"]), timeouts).unwrap();
            let names = p.load_image(&dir.join("image.tar")).unwrap();
            assert!(!names.is_empty());
        }
        other => panic!("unknown mode {other}"),
    }
    println!("{mode} {} {}", hwm_kib(), t.elapsed().as_millis());
}

fn run_child(mode: &str, dir: &Path) -> (u64, u128) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", mode])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with(mode)).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

fn tar_gz(out: &Path, files: &[(&str, &Path)]) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::fast(),
    ));
    for (name, path) in files {
        b.append_path_with_name(path, name).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    let bed = bed();
    let mb: usize = std::env::var("BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        // `cargo test --all-targets` runs this without `--bench`: a quick 5 MB smoke run.
        .unwrap_or(if args.iter().any(|a| a == "--bench") {
            50
        } else {
            5
        });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-packages");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // A ~50 MB image: the bed's busybox plus one layer of random bytes (incompressible),
    // saved as docker-archive.
    let image = format!("localhost/margo-bench/big:{}", std::process::id());
    {
        let mut data = vec![0u8; mb * 1024 * 1024];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(dir.join("blob.bin"), &data).unwrap();
        std::fs::write(
            dir.join("Containerfile"),
            format!("FROM {}\nCOPY blob.bin /blob.bin\n", bed["MARGO_TB_IMAGE"]),
        )
        .unwrap();
    }
    podman_cli(
        &bed,
        &[
            "build",
            "--pull=never",
            "-t",
            &image,
            "-f",
            dir.join("Containerfile").to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
    );
    let archive = dir.join("image.tar");
    podman_cli(
        &bed,
        &[
            "save",
            "--format",
            "docker-archive",
            "-o",
            archive.to_str().unwrap(),
            &image,
        ],
    );
    podman_cli(&bed, &["rmi", &image]);
    let compose = dir.join("docker-compose.yaml");
    std::fs::write(
        &compose,
        format!("services:\n  big:\n    image: {image}\n    command: [\"sleep\", \"300\"]\n"),
    )
    .unwrap();
    let app = dir.join("poc.app");
    tar_gz(
        &app,
        &[("docker-compose.yaml", &compose), ("image.tar", &archive)],
    );
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    gpg(
        &home,
        &[
            "--passphrase",
            "",
            "--quick-gen-key",
            "Bench <bench@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    std::fs::write(dir.join("key.asc"), gpg(&home, &["--armor", "--export"])).unwrap();
    gpg(
        &home,
        &[
            "--detach-sign",
            "--output",
            dir.join("poc.app.sig").to_str().unwrap(),
            app.to_str().unwrap(),
        ],
    );
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / 1048576.0;
    println!(
        "image archive {:.1} MiB, package .app {:.1} MiB",
        size(&archive),
        size(&app)
    );

    let (idle, _) = run_child("idle", &dir);
    let (verify, verify_ms) = run_child("verify", &dir);
    println!("idle process (same binary, nothing done): VmHWM {idle} KiB");
    println!(
        "verify signature over {:.1} MiB: VmHWM {verify} KiB (+{} KiB over idle), {verify_ms} ms",
        size(&app),
        verify.saturating_sub(idle)
    );
    let (load, load_ms) = run_child("load", &dir);
    println!(
        "load {:.1} MiB image archive into Podman: VmHWM {load} KiB (+{} KiB over idle), {load_ms} ms",
        size(&archive),
        load.saturating_sub(idle)
    );
    podman_cli(&bed, &["rmi", &image]);

    // The whole agent: a wrapper (.app + .sig) served over plain HTTP, applied once.
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    tar_gz(
        &www.join("pkg.tar.gz"),
        &[("poc.app", &app), ("poc.app.sig", &dir.join("poc.app.sig"))],
    );
    std::fs::copy(dir.join("key.asc"), www.join("key.asc")).unwrap();
    let server = FileServer::start(&www);
    let port = server.port();
    let stick = dir.join("desired");
    std::fs::create_dir_all(&stick).unwrap();
    std::fs::write(
        stick.join("deployment.yaml"),
        format!(
            "apiVersion: application.margo.org/v1alpha1\nkind: ApplicationDeployment\n\
             metadata:\n  name: bench-big\n  annotations:\n    id: bench-big\n    applicationId: bench\n\
             spec:\n  deploymentProfile:\n    type: docker-compose\n    components:\n\
             \x20     - name: big\n        properties:\n          packageLocation: http://127.0.0.1:{port}/pkg.tar.gz\n          keyLocation: http://127.0.0.1:{port}/key.asc\n"
        ),
    )
    .unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "device_id: bench-packages\ndesired_state:\n  directory: {}\nregistries:\n  - host: \"127.0.0.1:{port}\"\n    plain_http: true\n\
             podman:\n  socket: {}\nstate_file: {}/state.json\nwork_dir: {}/work\nsignatures:\n  policy: require\n",
            stick.display(),
            bed["MARGO_TB_PODMAN_SOCK"],
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_margo-agent"))
        .arg("--config")
        .arg(&config)
        .args(["run", "--once"])
        .env("MARGO_AGENT_LOG", "stderr")
        .output()
        .unwrap();
    let wall = t.elapsed().as_millis();
    drop(server);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("signature verified") && err.contains("image archive image.tar loaded"),
        "{err}"
    );
    let rss = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    println!(
        "margo-agent run --once, signed {:.1} MiB PoC package (download, verify, unpack, load, create): peak RSS {rss} KiB, {wall} ms",
        size(&www.join("pkg.tar.gz"))
    );
    // Leave nothing behind in the bed's Podman.
    let _ = Command::new(env!("CARGO_BIN_EXE_margo-agent"))
        .arg("--config")
        .arg(&config)
        .args(["status"])
        .output();
    let _ = Command::new(format!(
        "{}/tests/bed/podman.sh",
        env!("CARGO_MANIFEST_DIR")
    ))
    .args([
        "rm",
        "-f",
        "--filter",
        "label=org.margo.device-id=bench-packages",
    ])
    .env("MARGO_TB_DIR", &bed["MARGO_TB_DIR"])
    .output();
    let _ = Command::new(format!(
        "{}/tests/bed/podman.sh",
        env!("CARGO_MANIFEST_DIR")
    ))
    .args(["rmi", "-f", &image])
    .env("MARGO_TB_DIR", &bed["MARGO_TB_DIR"])
    .output();
}
