#![allow(clippy::unwrap_used)]
//! Package helpers for end-to-end tests: GnuPG keys and signatures, tar.gz builders,
//! `docker save` archives, proof-of-concept `.app` wrappers and older-form deployments.

use super::Bed;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway GnuPG home with one signing key.
pub struct Gpg {
    pub home: PathBuf,
    pub fingerprint: String,
}

impl Gpg {
    pub fn new(dir: &Path, name: &str) -> Gpg {
        let home = dir.join(format!("gnupg-{name}"));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let mut perm = std::fs::metadata(&home).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o700);
        std::fs::set_permissions(&home, perm).unwrap();
        let g = Gpg {
            home,
            fingerprint: String::new(),
        };
        g.run(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("Margo Test {name} <{name}@example.invalid>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let out = g.run(&["--with-colons", "--list-keys"]);
        let fingerprint = String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|f| f.trim_end_matches(':').to_string())
            .expect("gpg fingerprint");
        Gpg { fingerprint, ..g }
    }

    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .expect("run gpg (Debian package gnupg; tests/bed/install.sh installs it)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.run(&["--armor", "--export", &self.fingerprint])
    }

    /// `gpg --detach-sign` of `file` (binary, or armored).
    pub fn sign(&self, file: &Path, armor: bool) -> Vec<u8> {
        let sig = file.with_extension("sig-out");
        let mut args = vec!["--detach-sign", "--output", sig.to_str().unwrap()];
        if armor {
            args.insert(0, "--armor");
        }
        args.push(file.to_str().unwrap());
        self.run(&args);
        let bytes = std::fs::read(&sig).unwrap();
        std::fs::remove_file(&sig).unwrap();
        bytes
    }
}

pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A `docker save` archive of the bed image under the name `name` (which is then removed
/// from Podman again, so only loading the archive brings it back).
pub fn image_archive(dir: &Path, name: &str) -> Vec<u8> {
    let bed = Bed::get();
    let path = dir.join("image.tar");
    let _ = std::fs::remove_file(&path);
    let ok = |out: std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(bed.podman(&["tag", bed.image(), name]), "podman tag");
    ok(
        bed.podman(&[
            "save",
            "--format",
            "docker-archive",
            "-o",
            path.to_str().unwrap(),
            name,
        ]),
        "podman save",
    );
    ok(bed.podman(&["rmi", name]), "podman rmi");
    std::fs::read(&path).unwrap()
}

pub fn compose(image: &str, port: u16) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    ports:\n      - \"127.0.0.1:{port}:80\"\n"
    )
}

/// An older-form ApplicationDeployment naming a package and (optionally) a key by URL.
pub fn url_deployment(id: &str, package: &str, key: Option<&str>) -> String {
    let key = key
        .map(|k| format!("          keyLocation: {k}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: application.margo.org/v1alpha1\n\
         kind: ApplicationDeployment\n\
         metadata:\n  name: {id}\n  annotations:\n    id: {id}\n    applicationId: app-{id}\n\
         spec:\n  deploymentProfile:\n    type: docker-compose\n    components:\n\
         \x20     - name: web\n        properties:\n          packageLocation: {package}\n{key}\
         \x20         wait: true\n          timeout: 60s\n"
    )
}

/// Builds the `.app` for `compose_text` with `archive` as `image.tar` (none when empty).
pub fn app(compose_text: &str, archive: &[u8]) -> Vec<u8> {
    if archive.is_empty() {
        return tar_gz(&[("docker-compose.yaml", compose_text.as_bytes())]);
    }
    tar_gz(&[
        ("docker-compose.yaml", compose_text.as_bytes()),
        ("image.tar", archive),
    ])
}

/// Signs `app_bytes` with `gpg` and wraps `.app` + `.app.sig`.
pub fn wrapper(dir: &Path, gpg: &Gpg, app_bytes: &[u8], armor: bool) -> Vec<u8> {
    let p = dir.join("poc.app");
    std::fs::write(&p, app_bytes).unwrap();
    let sig = gpg.sign(&p, armor);
    tar_gz(&[("poc.app", app_bytes), ("poc.app.sig", &sig)])
}
