//! The device key: an ECDSA P-256 key pair that signs every request body sent to the Fleet
//! Manager (`X-Payload-Signature`, see `docs/wfm-api.md`) and whose public key the device
//! presents at onboarding.
//!
//! Storage: a PKCS#8 `PRIVATE KEY` PEM file (default `/var/lib/margo-agent/wfm/device-key.pem`),
//! generated on first start with mode 0600, or provided by the operator (PEM or DER PKCS#8, as
//! `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes it). A key file
//! readable by group or others is refused.
//!
//! With the cargo feature `tpm` and `wfm.key_store: tpm`, the key is created and used inside a
//! TPM 2.0 instead (module `tpm`); the wire format is the same.
//!
//! Signatures are ASN.1 DER (`ECDSA-Sig-Value`), the form OpenSSL, Python's `cryptography`
//! and Go's `ecdsa.VerifyASN1` take without conversion; the public key travels as DER
//! SubjectPublicKeyInfo.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[cfg(feature = "tpm")]
pub mod tpm;

/// The DER SubjectPublicKeyInfo prefix of an uncompressed P-256 point
/// (id-ecPublicKey, prime256v1, BIT STRING of 66 bytes).
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// A key file larger than this is not a P-256 key.
const KEY_MAX_BYTES: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read device key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write device key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "device key {path} is readable by group or others (mode {mode:o}); refusing to use it: run chmod 600 on it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("device key {path} is not a PKCS#8 ECDSA P-256 private key: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("signing with the device key failed")]
    Sign,
    #[error("TPM device key: {0}")]
    Tpm(String),
}

/// Where the private key lives.
enum Signer {
    File(EcdsaKeyPair, SystemRandom),
    #[cfg(feature = "tpm")]
    Tpm(tpm::TpmKey),
}

/// The device's signing key.
pub struct DeviceKey {
    signer: Signer,
    spki: Vec<u8>,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half.
        write!(f, "DeviceKey({})", self.fingerprint())
    }
}

impl DeviceKey {
    /// Loads the key at `path`, generating it there (mode 0600) when the file does not
    /// exist. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(DeviceKey, bool), IdentityError> {
        match std::fs::metadata(path) {
            Ok(_) => DeviceKey::load(path).map(|k| (k, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DeviceKey::create(path).map(|k| (k, true))
            }
            Err(source) => Err(IdentityError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Loads an existing PKCS#8 key (PEM or DER).
    pub fn load(path: &Path) -> Result<DeviceKey, IdentityError> {
        let read = |source| IdentityError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > KEY_MAX_BYTES {
            return Err(IdentityError::Invalid {
                path: path.to_path_buf(),
                reason: format!("file is larger than {KEY_MAX_BYTES} bytes"),
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        let der = if bytes.starts_with(b"-----BEGIN") {
            pem_decode(&bytes, "PRIVATE KEY").ok_or_else(|| IdentityError::Invalid {
                path: path.to_path_buf(),
                reason: "no \"-----BEGIN PRIVATE KEY-----\" block (an \"EC PRIVATE KEY\" (SEC1) file converts with `openssl pkcs8 -topk8 -nocrypt`)".into(),
            })?
        } else {
            bytes
        };
        DeviceKey::from_pkcs8(&der).map_err(|reason| IdentityError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Generates a new key and writes it to `path` (0600, temp file + rename).
    pub fn create(path: &Path) -> Result<DeviceKey, IdentityError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| IdentityError::Sign)?;
        let pem = pem_encode(doc.as_ref(), "PRIVATE KEY");
        write_private(path, pem.as_bytes()).map_err(|source| IdentityError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        DeviceKey::from_pkcs8(doc.as_ref()).map_err(|reason| IdentityError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn from_pkcs8(der: &[u8]) -> Result<DeviceKey, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|e| e.to_string())?;
        let mut spki = SPKI_P256_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        Ok(DeviceKey {
            signer: Signer::File(pair, rng),
            spki,
        })
    }

    /// The key inside the TPM reached through `tcti` (feature `tpm`).
    #[cfg(feature = "tpm")]
    pub fn tpm(tcti: &str) -> Result<DeviceKey, IdentityError> {
        let (key, point) = tpm::TpmKey::open(tcti).map_err(IdentityError::Tpm)?;
        let mut spki = SPKI_P256_PREFIX.to_vec();
        spki.extend_from_slice(&point);
        Ok(DeviceKey {
            signer: Signer::Tpm(key),
            spki,
        })
    }

    /// Whether the key lives in a TPM.
    pub fn in_tpm(&self) -> bool {
        !matches!(self.signer, Signer::File(..))
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key as a `PUBLIC KEY` PEM block.
    pub fn public_key_pem(&self) -> String {
        pem_encode(&self.spki, "PUBLIC KEY")
    }

    /// `sha256:<hex>` of the SubjectPublicKeyInfo: names the key in journal lines.
    pub fn fingerprint(&self) -> String {
        crate::digest::Digest::of(&self.spki).to_string()
    }

    /// ECDSA P-256 / SHA-256 signature of `body`, ASN.1 DER.
    pub fn sign(&self, body: &[u8]) -> Result<Vec<u8>, IdentityError> {
        match &self.signer {
            Signer::File(pair, rng) => pair
                .sign(rng, body)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| IdentityError::Sign),
            #[cfg(feature = "tpm")]
            Signer::Tpm(k) => k.sign(body).map_err(IdentityError::Tpm),
        }
    }

    /// The `X-Payload-Signature` value for `body`:
    /// `base64(SPKI DER) ";" base64(DER signature over SHA-256(body))`, standard alphabet
    /// with padding (`docs/wfm-api.md`).
    pub fn payload_signature(&self, body: &[u8]) -> Result<String, IdentityError> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let sig = self.sign(body)?;
        Ok(format!("{};{}", b64.encode(&self.spki), b64.encode(sig)))
    }
}

/// Writes a secret file: mode 0600 from creation, temp file in the same directory, fsync,
/// rename, fsync the directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map_or("secret".into(), |n| n.to_string_lossy())
    ));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// PEM armour with 64-column lines.
pub fn pem_encode(der: &[u8], label: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The first PEM block with `label`, decoded.
pub fn pem_decode(text: &[u8], label: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("margo-id-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn key_is_created_0600_then_loaded_unchanged() {
        let d = temp("create");
        let p = d.join("k/device-key.pem");
        let (k1, created) = DeviceKey::load_or_create(&p).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = DeviceKey::load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(k1.public_key_der(), k2.public_key_der());
        assert_eq!(k1.public_key_der().len(), 91);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn group_readable_key_is_refused() {
        let d = temp("perm");
        let p = d.join("device-key.pem");
        DeviceKey::create(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = DeviceKey::load(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("640"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn garbage_key_is_refused_naming_the_file() {
        let d = temp("garbage");
        let p = d.join("device-key.pem");
        write_private(
            &p,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = DeviceKey::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("device-key.pem") && err.contains("PKCS#8"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn payload_signature_verifies_over_the_body() {
        let d = temp("sign");
        let k = DeviceKey::create(&d.join("k.pem")).unwrap();
        let body = br#"{"kind":"DeploymentStatus"}"#;
        let header = k.payload_signature(body).unwrap();
        let (pk, sig) = header.split_once(';').unwrap();
        let b64 = &base64::engine::general_purpose::STANDARD;
        let pk = b64.decode(pk).unwrap();
        let sig = b64.decode(sig).unwrap();
        assert_eq!(&pk[..26], &SPKI_P256_PREFIX);
        assert_eq!(sig[0], 0x30, "DER SEQUENCE");
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &pk[26..]);
        key.verify(body, &sig).unwrap();
        assert!(key.verify(b"{}", &sig).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
