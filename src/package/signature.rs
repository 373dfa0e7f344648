//! OpenPGP verification of Compose packages: detached signatures checked against the key a
//! deployment names (`keyLocation`) or keys the device trusts, under the configured trust
//! policy ([`TrustPolicy`], config section `signatures`, `docs/packages.md`).
//!
//! A signature is verified over the package file as it is on disk, streamed through the
//! signature's hash in fixed-size reads: a 50 MB package never sits in memory. Keys and
//! signatures are small and read whole, capped ([`KEY_MAX_BYTES`], [`SIGNATURE_MAX_BYTES`]).
//!
//! A key is accepted only when it parses as an OpenPGP public key (armored or binary) whose
//! self-signatures verify; a signature only when it is a binary or text document signature
//! made by that key's primary key or one of its signing subkeys, and when its hash is strong
//! enough (SHA-256 or stronger). The OpenPGP reading itself is [`super::openpgp`]. When `allowed_fingerprints` is set, a key
//! fetched from `keyLocation` must have one of those primary fingerprints: otherwise anyone
//! who can publish a desired state could sign with a key of their own.

use super::openpgp::{self, Cert, CertError, DataHasher, SIG_BINARY, SIG_TEXT};
use crate::journal::KeepAlive;
use crate::units::unix_now;
use serde::Deserialize;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Stable code for every signature refusal.
pub const ERR_SIGNATURE: &str = "ERR_SIGNATURE";
/// Largest public key read (an RSA-4096 key with many user ids is a few tens of KiB).
pub const KEY_MAX_BYTES: u64 = 256 * 1024;
/// Largest detached signature read (one signature packet is under 1 KiB; armored a bit more).
pub const SIGNATURE_MAX_BYTES: u64 = 64 * 1024;
/// Read size while hashing the signed file.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// `signatures.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignaturePolicy {
    /// Unsigned packages are refused.
    Require,
    /// Signatures that are present (or expected through `keyLocation`) are verified; packages
    /// without one are accepted.
    #[default]
    IfPresent,
}

/// The config section `signatures` (`docs/packages.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signatures {
    /// `require` or `if-present` (default).
    pub policy: SignaturePolicy,
    /// Primary-key fingerprints (hex, spaces allowed) a `keyLocation` key must have; empty:
    /// any key the deployment names.
    pub allowed_fingerprints: Vec<String>,
    /// Armored public key files the device trusts, used for packages that name no
    /// `keyLocation` (SUP-01 OCI packages).
    pub trusted_keys: Vec<PathBuf>,
}

impl Signatures {
    /// The first invalid value, as (key, reason).
    pub fn problem(&self) -> Option<(String, String)> {
        for (i, f) in self.allowed_fingerprints.iter().enumerate() {
            if normalise_fingerprint(f).is_none() {
                return Some((
                    format!("signatures.allowed_fingerprints[{i}]"),
                    format!("{f:?} is not a 40- or 64-digit hex OpenPGP fingerprint"),
                ));
            }
        }
        for (i, p) in self.trusted_keys.iter().enumerate() {
            if let Err(e) = PublicKey::from_file(p) {
                return Some((format!("signatures.trusted_keys[{i}]"), e.to_string()));
            }
        }
        None
    }
}

/// Why a package's signature was not accepted. Every message names the file or key and says
/// what was wrong; the caller adds the component and what happens next.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("{0}")]
    Refused(String),
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        ERR_SIGNATURE
    }
}

fn refused(msg: impl Into<String>) -> SignatureError {
    SignatureError::Refused(msg.into())
}

/// A parsed, self-signature-checked public key and where it came from.
#[derive(Debug, Clone)]
pub struct PublicKey {
    cert: Cert,
    /// Upper-case hex fingerprint of the primary key.
    pub fingerprint: String,
    /// Where the key came from, for messages (`keyLocation` URL or config file).
    pub origin: String,
}

impl PublicKey {
    /// Parses an armored or binary OpenPGP public key; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<PublicKey, SignatureError> {
        if bytes.len() as u64 > KEY_MAX_BYTES {
            return Err(refused(format!(
                "key {origin} is larger than {KEY_MAX_BYTES} bytes; not an OpenPGP public key"
            )));
        }
        let cert = Cert::parse(bytes).map_err(|e| match e {
            CertError::Private => refused(format!(
                "key {origin} is a PRIVATE key; a device needs only the public key (and the private key must not be published)"
            )),
            CertError::Unusable(why) => refused(format!("key {origin} cannot be used: {why}")),
            CertError::Malformed(why) => {
                refused(format!("key {origin} is not an OpenPGP public key ({why})"))
            }
        })?;
        let fingerprint = cert.primary.fingerprint_hex();
        if cert.revoked {
            return Err(refused(format!(
                "key {origin} ({fingerprint}) is revoked by its owner"
            )));
        }
        if let Some(end) = cert.expires_at.filter(|&end| unix_now() >= end) {
            return Err(refused(format!(
                "key {origin} ({fingerprint}) expired at Unix time {end}"
            )));
        }
        if cert.signers.is_empty() {
            let why: Vec<String> = cert
                .unusable
                .iter()
                .map(|(k, why)| format!("{}: {why}", k.fingerprint_hex()))
                .collect();
            return Err(refused(format!(
                "key {origin} ({fingerprint}) has no key that can verify signatures here ({})",
                why.join("; ")
            )));
        }
        Ok(PublicKey {
            cert,
            fingerprint,
            origin: origin.to_string(),
        })
    }

    /// Reads and parses a key file.
    pub fn from_file(path: &Path) -> Result<PublicKey, SignatureError> {
        let bytes = read_capped(path, KEY_MAX_BYTES)
            .map_err(|e| refused(format!("cannot read key {}: {e}", path.display())))?;
        PublicKey::parse(&bytes, &path.display().to_string())
    }
}

/// Normalises a configured fingerprint: hex digits only, upper case (spaces and `0x`
/// allowed in the config, as gpg prints them).
pub fn normalise_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let ok = (hex.len() == 40 || hex.len() == 64) && hex.chars().all(|c| c.is_ascii_hexdigit());
    ok.then(|| hex.to_ascii_uppercase())
}

/// The trust policy, with the device's own trusted keys loaded.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub require: bool,
    /// Upper-case hex primary fingerprints; empty: any `keyLocation` key.
    pub allowed_fingerprints: Vec<String>,
    /// Keys from the config (`signatures.trusted_keys`): trusted without a fingerprint check,
    /// used when a package names no `keyLocation` (OCI packages).
    pub trusted_keys: Vec<PublicKey>,
}

impl TrustPolicy {
    /// Builds the policy from the config, reading the trusted key files.
    pub fn from_config(s: &Signatures) -> Result<TrustPolicy, SignatureError> {
        let mut trusted_keys = Vec::new();
        for p in &s.trusted_keys {
            trusted_keys.push(PublicKey::from_file(p)?);
        }
        Ok(TrustPolicy {
            require: s.policy == SignaturePolicy::Require,
            allowed_fingerprints: s
                .allowed_fingerprints
                .iter()
                .filter_map(|f| normalise_fingerprint(f))
                .collect(),
            trusted_keys,
        })
    }

    /// Checks a key fetched from a deployment's `keyLocation` against `allowed_fingerprints`.
    pub fn admit_key(&self, key: &PublicKey) -> Result<(), SignatureError> {
        if self.allowed_fingerprints.is_empty()
            || self.allowed_fingerprints.contains(&key.fingerprint)
        {
            return Ok(());
        }
        Err(refused(format!(
            "key {} has fingerprint {}, which is not in signatures.allowed_fingerprints",
            key.origin, key.fingerprint
        )))
    }

    /// Decides for a package with the given signature and keys. `what` names the package.
    /// Returns the signer's fingerprint, or `None` for an unsigned package the policy allows.
    /// `keys`: the package's own `keyLocation` key (already admitted) or, when it names none,
    /// the device's trusted keys are used.
    pub fn decide(
        &self,
        what: &str,
        data: &Path,
        signature: Option<&[u8]>,
        key: Option<&PublicKey>,
    ) -> Result<Option<String>, SignatureError> {
        let keys: Vec<&PublicKey> = match key {
            Some(k) => vec![k],
            None => self.trusted_keys.iter().collect(),
        };
        match signature {
            None if key.is_some() => Err(refused(format!(
                "{what} has no detached signature, but the deployment names a keyLocation"
            ))),
            None if self.require => Err(refused(format!(
                "{what} is not signed and signatures.policy is require"
            ))),
            None => Ok(None),
            Some(_) if keys.is_empty() => Err(refused(format!(
                "{what} is signed but there is no key to verify it (no keyLocation and no signatures.trusted_keys)"
            ))),
            Some(sig) => verify_detached(what, data, sig, &keys).map(Some),
        }
    }
}

/// Verifies the detached signature `sig` (armored or binary) over the file `data` with one of
/// `keys` (primary keys and signing subkeys are tried). Returns the primary fingerprint of the
/// key that verified.
pub fn verify_detached(
    what: &str,
    data: &Path,
    sig: &[u8],
    keys: &[&PublicKey],
) -> Result<String, SignatureError> {
    if sig.len() as u64 > SIGNATURE_MAX_BYTES {
        return Err(refused(format!(
            "the signature of {what} is larger than {SIGNATURE_MAX_BYTES} bytes; not a detached signature"
        )));
    }
    let signatures = openpgp::parse_signatures(sig).map_err(|e| {
        refused(format!(
            "the signature of {what} is not an OpenPGP signature ({e})"
        ))
    })?;
    let mut last_error = None;
    // The package hashed once per digest algorithm and mode (binary or text), whatever the
    // number of signature packets and candidate keys: a signature file of thousands of
    // packets must not make the device read a large package thousands of times.
    let mut hashed: Vec<((u8, u8), DataHasher)> = Vec::new();
    for signature in &signatures {
        if signature.typ != SIG_BINARY && signature.typ != SIG_TEXT {
            return Err(refused(format!(
                "the signature of {what} is of type 0x{:02x}, not a document signature",
                signature.typ
            )));
        }
        for key in keys {
            if let Some((k, why)) = key.cert.unusable_for(signature) {
                return Err(refused(format!(
                    "{what} was signed by {} of key {} ({}), which cannot be used: {why}",
                    k.fingerprint_hex(),
                    key.fingerprint,
                    key.origin
                )));
            }
            for signer in key.cert.signers_for(signature) {
                if let Some(end) = signer.expires_at.filter(|&end| unix_now() >= end) {
                    return Err(refused(format!(
                        "{what} was signed by {} of key {} ({}), which expired at Unix time {end}",
                        signer.key.fingerprint_hex(),
                        key.fingerprint,
                        key.origin
                    )));
                }
                let kind = signature.data_hashing();
                let hasher = match hashed.iter().find(|(k, _)| *k == kind) {
                    Some((_, h)) => h.clone(),
                    None => {
                        let mut h = DataHasher::new(signature).map_err(|e| {
                            refused(format!("the signature of {what} is refused: {e}"))
                        })?;
                        hash_file(data, &mut h)?;
                        hashed.push((kind, h.clone()));
                        h
                    }
                };
                match hasher.verify(signature, &signer.key) {
                    Ok(()) => {
                        if let Some(end) = signature.expires_at().filter(|&end| unix_now() >= end) {
                            return Err(refused(format!(
                                "the signature of {what} expired at Unix time {end}"
                            )));
                        }
                        return Ok(key.fingerprint.clone());
                    }
                    Err(e) => last_error = Some(e),
                }
            }
        }
    }
    match last_error {
        Some(e) => Err(refused(format!(
            "the signature of {what} does not verify ({e}): the content was changed or the signature is corrupt"
        ))),
        None => {
            let names: Vec<String> = keys
                .iter()
                .map(|k| format!("{} ({})", k.fingerprint, k.origin))
                .collect();
            Err(refused(format!(
                "{what} was signed by a key that is not the expected one; expected {}",
                names.join(" or ")
            )))
        }
    }
}

/// Streams the file at `path` through `hasher`, feeding the watchdog.
fn hash_file(path: &Path, hasher: &mut DataHasher) -> Result<(), SignatureError> {
    #[cfg(test)]
    FILE_PASSES.with(|c| c.set(c.get() + 1));
    let io = |e: std::io::Error| refused(format!("cannot read {}: {e}", path.display()));
    let mut file = KeepAlive(File::open(path).map_err(io)?);
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
thread_local! {
    /// How often [`hash_file`] read a file (this thread).
    static FILE_PASSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Reads a small file whole, refusing it past `max` bytes.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// Paths removed when dropped: the temporary pieces of a package being verified.
#[derive(Debug, Default)]
pub struct TempFiles(pub Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalise_from_gpg_output() {
        assert_eq!(
            normalise_fingerprint("0x1234 5678 9abc def0 1234  5678 9ABC DEF0 1234 5678"),
            Some("123456789ABCDEF0123456789ABCDEF012345678".into())
        );
        assert_eq!(normalise_fingerprint("1234"), None);
        assert_eq!(
            normalise_fingerprint("zz34567890123456789012345678901234567890"),
            None
        );
    }

    #[test]
    fn garbage_is_not_a_key_nor_a_signature() {
        let e = PublicKey::parse(b"<html>not found</html>", "https://h/k").unwrap_err();
        assert!(e.to_string().contains("not an OpenPGP public key"), "{e}");
        let e = PublicKey::parse(
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n-----END PGP PRIVATE KEY BLOCK-----\n",
            "k",
        )
        .unwrap_err();
        assert!(e.to_string().contains("PRIVATE"), "{e}");
        let e = verify_detached("p", Path::new("/nonexistent"), b"garbage", &[]).unwrap_err();
        assert!(e.to_string().contains("not an OpenPGP signature"), "{e}");
    }

    const KEY_A: &[u8] = include_bytes!("../../tests/data/pgp/key-a.asc");
    const KEY_B: &[u8] = include_bytes!("../../tests/data/pgp/key-b.asc");
    const SIG_A: &[u8] = include_bytes!("../../tests/data/pgp/data.txt.a.sig");
    const SIG_A_ARMOR: &[u8] = include_bytes!("../../tests/data/pgp/data.txt.a.asc");
    const SIG_B: &[u8] = include_bytes!("../../tests/data/pgp/data.txt.b.sig");

    fn data() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pgp/data.txt")
    }

    #[test]
    fn gpg_signatures_verify_binary_and_armored_and_name_the_signer() {
        let a = PublicKey::parse(KEY_A, "key-a.asc").unwrap();
        assert_eq!(a.fingerprint, "7A25924E6171933983198BCC483D7982D8ADD1FE");
        assert_eq!(
            verify_detached("d", &data(), SIG_A, &[&a]).unwrap(),
            a.fingerprint
        );
        assert_eq!(
            verify_detached("d", &data(), SIG_A_ARMOR, &[&a]).unwrap(),
            a.fingerprint
        );
    }

    #[test]
    fn other_key_changed_content_and_corrupt_signatures_are_refused() {
        let a = PublicKey::parse(KEY_A, "key-a.asc").unwrap();
        let b = PublicKey::parse(KEY_B, "key-b.asc").unwrap();
        let e = verify_detached("d", &data(), SIG_B, &[&a]).unwrap_err();
        assert!(e.to_string().contains("not the expected one"), "{e}");
        assert_eq!(
            verify_detached("d", &data(), SIG_B, &[&a, &b]).unwrap(),
            b.fingerprint
        );
        let changed = std::env::temp_dir().join(format!("margo-sig-{}", std::process::id()));
        std::fs::write(&changed, b"services: {}\n").unwrap();
        let e = verify_detached("d", &changed, SIG_A, &[&a]).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        let _ = std::fs::remove_file(&changed);
        let mut corrupt = SIG_A.to_vec();
        let n = corrupt.len() - 3;
        corrupt[n] ^= 0x55;
        assert!(verify_detached("d", &data(), &corrupt, &[&a]).is_err());
        let p = TrustPolicy {
            allowed_fingerprints: vec![b.fingerprint.clone()],
            ..TrustPolicy::default()
        };
        let e = p.admit_key(&a).unwrap_err();
        assert!(e.to_string().contains("allowed_fingerprints"), "{e}");
        assert!(p.admit_key(&b).is_ok());
    }

    #[test]
    fn revoked_and_expired_keys_are_refused() {
        let e = PublicKey::parse(
            include_bytes!("../../tests/data/pgp/key-revoked.asc"),
            "key-revoked.asc",
        )
        .unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
        let e = PublicKey::parse(
            include_bytes!("../../tests/data/pgp/key-expired.asc"),
            "key-expired.asc",
        )
        .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn a_signing_subkey_verifies_until_it_is_revoked() {
        // The same key (certify-only primary, ed25519 signing subkey) before and after gpg
        // revoked the subkey; data.txt.sub.sig was made with the subkey.
        let sig = include_bytes!("../../tests/data/pgp/data.txt.sub.sig");
        let key = PublicKey::parse(
            include_bytes!("../../tests/data/pgp/key-subkey.asc"),
            "key-subkey.asc",
        )
        .unwrap();
        assert_eq!(
            verify_detached("d", &data(), sig, &[&key]).unwrap(),
            key.fingerprint
        );
        // Nothing of it can sign any more: refused when it is read.
        let e = PublicKey::parse(
            include_bytes!("../../tests/data/pgp/key-subkey-revoked.asc"),
            "key-subkey-revoked.asc",
        )
        .unwrap_err();
        assert!(e.to_string().contains("the subkey is revoked"), "{e}");
        assert!(e.to_string().contains("not marked for signing"), "{e}");

        // A key whose primary signs too: usable, but not its revoked subkey.
        let sig = include_bytes!("../../tests/data/pgp/data.txt.signer-sub.sig");
        let key = PublicKey::parse(
            include_bytes!("../../tests/data/pgp/key-signer.asc"),
            "key-signer.asc",
        )
        .unwrap();
        assert_eq!(
            verify_detached("d", &data(), sig, &[&key]).unwrap(),
            "64D73983D7C28E3CD184F0FB59F8F472FA6D2002"
        );
        let revoked = PublicKey::parse(
            include_bytes!("../../tests/data/pgp/key-signer-sub-revoked.asc"),
            "key-signer-sub-revoked.asc",
        )
        .unwrap();
        let e = verify_detached("d", &data(), sig, &[&revoked]).unwrap_err();
        assert!(
            e.to_string()
                .contains("E2F6EBBC4D728F030EB6103DDD1E452C3BCBAEDC"),
            "{e}"
        );
        assert!(e.to_string().contains("the subkey is revoked"), "{e}");
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/pgp")
                .join(name),
        )
        .unwrap()
    }

    fn key(name: &str) -> PublicKey {
        PublicKey::parse(&fixture(name), name).unwrap()
    }

    #[test]
    fn gpg_rsa_signatures_verify_for_every_size_and_digest() {
        let rsa3072 = key("key-rsa3072.asc");
        assert_eq!(
            rsa3072.fingerprint,
            "A495FCA00FB5935FBB315EB6F91DA1CF2653D649"
        );
        for sig in [
            "data.txt.rsa3072.sig",
            "data.txt.rsa3072-sha256.sig",
            "data.txt.rsa3072-sha384.asc",
            "data.txt.rsa3072-text.sig",
        ] {
            assert_eq!(
                verify_detached(sig, &data(), &fixture(sig), &[&rsa3072]).unwrap(),
                rsa3072.fingerprint,
                "{sig}"
            );
        }
        for (k, sig) in [
            ("key-rsa2048.asc", "data.txt.rsa2048.sig"),
            ("key-rsa4096.asc", "data.txt.rsa4096.sig"),
        ] {
            let k = key(k);
            assert_eq!(
                verify_detached(sig, &data(), &fixture(sig), &[&k]).unwrap(),
                k.fingerprint
            );
            // One flipped bit of the content.
            let changed = std::env::temp_dir().join(format!("margo-rsa-{}", std::process::id()));
            let mut bytes = std::fs::read(data()).unwrap();
            bytes[3] ^= 1;
            std::fs::write(&changed, bytes).unwrap();
            let e = verify_detached(sig, &changed, &fixture(sig), &[&k]).unwrap_err();
            assert!(e.to_string().contains("does not verify"), "{e}");
            let _ = std::fs::remove_file(&changed);
        }
        // Another RSA key's signature: not the expected one.
        let e = verify_detached("d", &data(), &fixture("data.txt.rsa2048.sig"), &[&rsa3072])
            .unwrap_err();
        assert!(e.to_string().contains("not the expected one"), "{e}");
    }

    #[test]
    fn text_signatures_see_crlf_line_endings() {
        // crlf.txt mixes CR LF and LF lines; gpg --textmode hashed both as CR LF.
        let k = key("key-rsa3072.asc");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pgp/crlf.txt");
        assert!(verify_detached("t", &path, &fixture("crlf.txt.text.sig"), &[&k]).is_ok());
        // A binary-mode reading of the same bytes would not verify: LF → CRLF matters.
        let lf = std::env::temp_dir().join(format!("margo-lf-{}", std::process::id()));
        std::fs::write(&lf, b"line one\nline two\nline three\n").unwrap();
        assert!(verify_detached("t", &lf, &fixture("crlf.txt.text.sig"), &[&k]).is_ok());
        std::fs::write(&lf, b"line one\nline two\nline three\n\n").unwrap();
        assert!(verify_detached("t", &lf, &fixture("crlf.txt.text.sig"), &[&k]).is_err());
        let _ = std::fs::remove_file(&lf);
    }

    #[test]
    fn text_signatures_drop_trailing_carriage_returns_as_gpg_does() {
        // gpg --textmode hashes each line without its trailing CRs (CR CR LF → CR LF, a lone CR
        // at the end of the file → nothing); lone CRs inside a line stay.
        let k = key("key-primary-expires.asc");
        let sig = fixture("cr-edges.txt.text.sig");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pgp/cr-edges.txt");
        assert_eq!(
            verify_detached("t", &path, &sig, &[&k]).unwrap(),
            k.fingerprint
        );
        let other = std::env::temp_dir().join(format!("margo-cr-{}", std::process::id()));
        std::fs::write(&other, b"a\r\nb\rc\r\n\rd \r\n\r\n").unwrap();
        assert!(verify_detached("t", &other, &sig, &[&k]).is_ok());
        // An interior CR is content.
        std::fs::write(&other, b"a\r\nbc\r\n\rd \r\n\r\n").unwrap();
        assert!(verify_detached("t", &other, &sig, &[&k]).is_err());
        let _ = std::fs::remove_file(&other);
        // Chunk boundaries anywhere give the same digest.
        let bytes = fixture("cr-edges.txt");
        let sigs = openpgp::parse_signatures(&sig).unwrap();
        for split in 0..=bytes.len() {
            let mut h = DataHasher::new(&sigs[0]).unwrap();
            h.update(&bytes[..split]);
            h.update(&[]);
            h.update(&bytes[split..]);
            h.verify(&sigs[0], &k.cert.signers[0].key).unwrap();
        }
    }

    #[test]
    fn a_subkey_does_not_outlive_its_primary_key() {
        // The signing subkey never expires, its primary does: the subkey stops with it.
        let k = key("key-primary-expires.asc");
        let primary_end = k.cert.expires_at.unwrap();
        assert_eq!(k.cert.signers.len(), 1);
        assert_eq!(k.cert.signers[0].expires_at, Some(primary_end));
    }

    #[test]
    fn a_signature_file_of_many_packets_reads_the_package_once() {
        // 300 corrupt copies of key a's signature, then the good one: each is checked, but the
        // package is hashed once per digest and mode, not once per signature packet.
        let a = PublicKey::parse(KEY_A, "key-a.asc").unwrap();
        let mut corrupt = SIG_A.to_vec();
        let n = corrupt.len() - 3;
        corrupt[n] ^= 0x55;
        let mut many = corrupt.repeat(300);
        many.extend_from_slice(SIG_A);
        FILE_PASSES.with(|c| c.set(0));
        assert_eq!(
            verify_detached("d", &data(), &many, &[&a]).unwrap(),
            a.fingerprint
        );
        assert_eq!(FILE_PASSES.with(|c| c.get()), 1);
    }

    #[test]
    fn weak_digests_small_keys_and_other_algorithms_are_refused_by_name() {
        let k = key("key-rsa3072.asc");
        let e = verify_detached("d", &data(), &fixture("data.txt.rsa3072-sha1.sig"), &[&k])
            .unwrap_err();
        assert!(e.to_string().contains("SHA-1"), "{e}");
        let e = PublicKey::parse(&fixture("key-rsa1024.asc"), "key-rsa1024.asc").unwrap_err();
        assert!(e.to_string().contains("1024 bits"), "{e}");
        let e = PublicKey::parse(&fixture("key-p256.asc"), "key-p256.asc").unwrap_err();
        assert!(
            e.to_string().contains("ECDSA keys are not supported"),
            "{e}"
        );
    }

    #[test]
    fn policy_decides_unsigned_packages() {
        let p = TrustPolicy::default();
        assert_eq!(p.decide("pkg", Path::new("/x"), None, None).unwrap(), None);
        let p = TrustPolicy {
            require: true,
            ..TrustPolicy::default()
        };
        let e = p.decide("pkg", Path::new("/x"), None, None).unwrap_err();
        assert!(e.to_string().contains("require"), "{e}");
        let e = TrustPolicy::default()
            .decide("pkg", Path::new("/x"), Some(b"sig"), None)
            .unwrap_err();
        assert!(e.to_string().contains("no key"), "{e}");
    }
}
