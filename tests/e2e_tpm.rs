#![allow(clippy::unwrap_used)]
#![cfg(feature = "tpm")]
//! Feature `tpm`: the device key inside a TPM — here a real software TPM, `swtpm` — signs
//! payloads that ring (in-process) and the test WFM's Python `cryptography` (through a real
//! onboarding and capabilities exchange of the agent binary) both verify.
//! Run with `cargo test --features tpm --test e2e_tpm` (tests/run.sh does).

mod common;

use common::wfm::TestWfm;
use common::{binary, free_port, repo};
use margo_agent::identity::DeviceKey;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Swtpm {
    child: Child,
    tcti: String,
}

impl Swtpm {
    fn start(name: &str) -> Swtpm {
        let dir = repo().join("target/e2e").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The swtpm TCTI finds the control channel at port + 1.
        let port = loop {
            let p = free_port();
            if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break p;
            }
        };
        let ctrl = port + 1;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (Debian package swtpm) must be installed: tests/bed/install.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "swtpm did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Swtpm {
            child,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tpm_key_signs_verifiably_and_is_stable() {
    use base64::Engine as _;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
    let tpm = Swtpm::start("tpm-lib");
    let k = DeviceKey::tpm(&tpm.tcti).unwrap();
    assert!(k.in_tpm());
    let body = br#"{"kind":"DeploymentStatus","deploymentId":"x"}"#;
    for _ in 0..5 {
        let header = k.payload_signature(body).unwrap();
        let (pk, sig) = header.split_once(';').unwrap();
        let b64 = &base64::engine::general_purpose::STANDARD;
        let pk = b64.decode(pk).unwrap();
        let sig = b64.decode(sig).unwrap();
        assert_eq!(pk, k.public_key_der());
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &pk[26..]);
        key.verify(body, &sig).unwrap();
        assert!(key.verify(b"{}", &sig).is_err());
    }
    // The same key again from the TPM (derived from its seed, never exported).
    let pk = k.public_key_der().to_vec();
    drop(k);
    assert_eq!(DeviceKey::tpm(&tpm.tcti).unwrap().public_key_der(), pk);
    // An unreachable TPM is a clear error.
    let err = DeviceKey::tpm("swtpm:host=127.0.0.1,port=1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("TPM"), "{err}");
}

#[test]
fn agent_onboards_with_the_tpm_key_verified_by_the_wfm() {
    let tpm = Swtpm::start("tpm-agent");
    let wfm = TestWfm::start(repo().join("target/e2e/tpm-agent-srv"), 3600);
    let dir = repo().join("target/e2e/tpm-agent");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "device_id: tpm-agent\nstate_file: {d}/state.json\nwork_dir: {d}/work\ntls:\n  ca_bundle: /nonexistent\n  extra_ca: [{ca}]\nwfm:\n  url: {url}\n  data_dir: {d}/wfm\n  key_store: tpm\n  tpm_tcti: \"{tcti}\"\n  call_timeout: 5s\n",
            d = dir.display(),
            ca = wfm.ca().display(),
            url = wfm.url(),
            tcti = tpm.tcti
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("onboard")
        .env("MARGO_AGENT_LOG", "stderr")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("device key in the TPM"), "{err}");
    assert!(
        !dir.join("wfm/device-key.pem").exists(),
        "no key file with a TPM key"
    );
    assert_eq!(wfm.count("POST", "/onboarding"), 1);
    let bad = wfm.invalid();
    assert!(bad.is_empty(), "{bad:#?}");
}
