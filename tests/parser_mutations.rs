//! Every parser of outside bytes, fed thousands of deterministic mutations of the real fixtures
//! in `tests/data/` (bit flips, truncations, splices, repeated and deleted runs, inserted YAML
//! and JSON punctuation). Each must return a value or an error — never panic, never hang.
//!
//! This is the always-on smoke version of fuzzing: coverage-guided fuzzing (cargo-fuzz) needs a
//! nightly toolchain these build machines do not have. The seed is fixed so a failure
//! reproduces; `MARGO_MUTATIONS=N` runs more rounds.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use margo_agent::compose;
use margo_agent::model;
use margo_agent::oci;
use margo_agent::source::layer::{self, LayerForm};
use std::path::Path;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"---\n",
    b"- ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!binary ",
    b"${",
    b"$$",
    b"${X:?}",
    b"\n  ",
    b"\t",
    b"\0",
    b"\xff\xfe",
    b"..",
    b"/",
    b"sha256:",
    b"%YAML 1.2\n",
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(rng.below(len + 1)),
            2 => {
                let i = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(i..i, t.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                v.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(32)).min(len);
                let run = v[a..b].to_vec();
                for _ in 0..rng.below(8) {
                    v.splice(a..a, run.iter().copied());
                }
            }
            5 if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + rng.below(128)).min(other.len());
                let i = rng.below(len + 1);
                v.splice(i..i, other[a..b].iter().copied());
            }
            _ => {}
        }
    }
    v
}

fn fixtures(dir: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir);
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(std::fs::read(&p).unwrap());
            }
        }
    }
    assert!(!out.is_empty(), "no fixtures under tests/data/{dir}");
    out
}

fn rounds() -> usize {
    std::env::var("MARGO_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

fn run(seeds: &[Vec<u8>], salt: u64, mut f: impl FnMut(&[u8])) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ salt);
    for s in seeds {
        f(s);
    }
    for _ in 0..rounds() {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        f(&mutate(&mut rng, a, b));
    }
}

#[test]
fn deployment_documents_never_panic() {
    run(&fixtures("deployments"), 1, |b| {
        let _ = model::parse_documents(b);
    });
}

#[test]
fn compose_files_never_panic() {
    let file = Path::new("/nonexistent/compose.yaml");
    run(&fixtures("compose"), 2, |b| {
        let text = String::from_utf8_lossy(b);
        let lookup = |k: &str| (k == "SET").then(|| "value".to_string());
        let mut warnings = Vec::new();
        let _ = compose::file::parse(&text, file, &lookup, &mut warnings);
        let _ = compose::dotenv::parse(&text, file, &lookup, &mut warnings);
    });
}

#[test]
fn manifests_and_auth_headers_never_panic() {
    let manifest = oci::manifest::ImageManifest::artifact(
        layer::ARTIFACT_TYPE,
        vec![oci::Descriptor::new(
            layer::MEDIA_TYPE_YAML,
            margo_agent::digest::Digest::of(b"x"),
            1,
        )],
        Default::default(),
    );
    let seeds = vec![
        manifest.to_bytes(),
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec(),
        br#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull""#.to_vec(),
        br#"Basic realm="registry", Bearer realm="x""#.to_vec(),
        br#"{"token":"abc","expires_in":300,"issued_at":"2026-01-01T00:00:00Z"}"#.to_vec(),
    ];
    run(&seeds, 3, |b| {
        let _ = oci::parse_manifest(b, Some("application/vnd.oci.image.manifest.v1+json"));
        let _ = oci::parse_manifest(b, None);
        let s = String::from_utf8_lossy(b);
        let _ = oci::auth::parse_challenges(&s);
        let _ = oci::auth::parse_token_response(b);
        let _ = oci::Reference::parse(&s);
    });
}

#[test]
fn desired_state_layers_never_panic() {
    let files: Vec<layer::YamlFile> = fixtures("deployments")
        .into_iter()
        .enumerate()
        .map(|(i, b)| layer::YamlFile {
            name: format!("{i}.yaml"),
            text: String::from_utf8_lossy(&b).into_owned(),
        })
        .collect();
    let seeds = vec![layer::encode(LayerForm::TarGzip, &files).unwrap()];
    run(&seeds, 4, |b| {
        let _ = layer::decode(LayerForm::TarGzip, b);
        let _ = layer::decode(LayerForm::Yaml, b);
    });
}

#[test]
fn openpgp_keys_and_signatures_never_panic() {
    use margo_agent::package::{openpgp, signature};
    let mut seeds = fixtures("pgp");
    // The binary forms too, so mutations reach the packet parser and not only the armor.
    let binary: Vec<Vec<u8>> = seeds
        .iter()
        .filter_map(|s| openpgp::dearmor(s).ok().map(|(_, b)| b))
        .collect();
    seeds.extend(binary);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pgp");
    let key_a = std::fs::read(dir.join("key-a.asc")).unwrap();
    let rsa = std::fs::read(dir.join("key-rsa2048.asc")).unwrap();
    let keys = [
        signature::PublicKey::parse(&key_a, "a").unwrap(),
        signature::PublicKey::parse(&rsa, "rsa").unwrap(),
    ];
    let refs: Vec<&signature::PublicKey> = keys.iter().collect();
    let data = dir.join("data.txt");
    run(&seeds, 6, |b| {
        let _ = signature::PublicKey::parse(b, "mutant");
        let _ = signature::verify_detached("mutant", &data, b, &refs);
    });
}

#[test]
fn state_files_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e/state-mutations");
    std::fs::create_dir_all(&dir).unwrap();
    let seed = br#"{"schema":1,"source":{"reference":"r/x:latest","applied":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","applied_version":3},"deployments":{"d":{"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","phase":"Installed","components":{"c":{"phase":"Installed","project":"c-d"}}}}}"#;
    let path = dir.join("state.json");
    let mut n = 0u64;
    run(&[seed.to_vec()], 5, |b| {
        std::fs::write(&path, b).unwrap();
        let _ = margo_agent::state::read(&path);
        n += 1;
        if n.is_multiple_of(100) {
            // The loading path too: a corrupt file is moved aside, never a panic.
            let _ = margo_agent::state::StateFile::open(&path, n);
        }
    });
}
