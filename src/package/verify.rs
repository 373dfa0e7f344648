//! From a fetched package to the archive that is unpacked, signatures checked first.
//!
//! Three shapes arrive (conventions in `docs/packages.md`):
//!
//! - **Proof-of-concept wrapper** (`packageLocation`): an outer tar.gz holding `<name>.app` (a
//!   tar.gz with the compose file and image archives) and its detached signature
//!   `<name>.app.sig` (binary or armored), at the root or in one top directory, nothing else.
//!   The two files are copied out of the wrapper (regular files only, capped, nothing else
//!   extracted), the `.app` is verified, and only then unpacked.
//! - **Plain tarball** (`packageLocation`): the archive itself holds the compose file. Its
//!   detached signature is looked for at `<packageLocation>.sig` (a 404 means unsigned), except
//!   for registry blob URLs, which cannot have a sibling.
//! - **SUP-01 OCI package**: the compose layer, verified by digest from the manifest down; a
//!   signature is a second layer of media type `application/vnd.margo.app.v1+sig` (or
//!   `application/pgp-signature`) over the compose layer's bytes (see [`super::fetch`]).
//!
//! The key is the deployment's `keyLocation` (fetched, cached by digest under `<work>/keys/`,
//! checked against `signatures.allowed_fingerprints`), else the device's `trusted_keys`, else
//! a key layer of the OCI package whose fingerprint `allowed_fingerprints` lists.

use super::fetch::{Fetched, InBand};
use super::signature::{
    KEY_MAX_BYTES, PublicKey, SIGNATURE_MAX_BYTES, TempFiles, TrustPolicy, read_capped,
};
use crate::digest::Digest;
use crate::model::{Component, PackageSource};
use crate::oci::OciClient;
use flate2::read::GzDecoder;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Most entries a proof-of-concept wrapper may have (its two files and a directory or two).
const WRAPPER_MAX_ENTRIES: usize = 8;
/// Largest `.app` copied out of a wrapper (uncompressed tar.gz bytes).
pub const APP_MAX_BYTES: u64 = super::unpack::UNPACK_MAX_TOTAL_BYTES;

/// A package ready to unpack.
#[derive(Debug)]
pub struct Verified {
    /// The tar.gz to unpack: the `.app` of a wrapper, else the fetched archive.
    pub archive: PathBuf,
    /// Fingerprint of the key that verified the signature; `None`: unsigned, and allowed.
    pub signer: Option<String>,
    /// Whether the package was a proof-of-concept wrapper.
    pub wrapper: bool,
    /// Temporary files (the `.app` copied out of a wrapper); removed when dropped.
    pub temp: TempFiles,
}

/// Why a package was refused before unpacking.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct VerifyError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: String) -> VerifyError {
    VerifyError { code, message }
}

fn sig_err(component: &str, e: impl std::fmt::Display) -> VerifyError {
    err(
        super::signature::ERR_SIGNATURE,
        format!("component {component:?}: {e}; nothing of this package is applied"),
    )
}

/// Checks `fetched` under `policy` and returns what to unpack. Nothing is unpacked here.
/// `base`: the desired-state directory relative locations are resolved in (`dir` source).
pub fn verify(
    oci: &mut OciClient,
    component: &Component,
    fetched: &Fetched,
    policy: &TrustPolicy,
    work: &Path,
    base: Option<&Path>,
) -> Result<Verified, VerifyError> {
    let name = component.name.as_str();
    match &component.source {
        PackageSource::Oci { .. } => {
            let what = format!("package {}", fetched.digest.short());
            let in_band_key = match &fetched.in_band {
                InBand {
                    key: Some(bytes),
                    signature: Some(_),
                } if policy.trusted_keys.is_empty() => {
                    let key = PublicKey::parse(bytes, "in the package's key layer")
                        .map_err(|e| sig_err(name, e))?;
                    if policy.allowed_fingerprints.is_empty() {
                        return Err(sig_err(
                            name,
                            format!(
                                "{what} carries its own key ({}); a key shipped with the package is trusted only when signatures.allowed_fingerprints lists it",
                                key.fingerprint
                            ),
                        ));
                    }
                    policy.admit_key(&key).map_err(|e| sig_err(name, e))?;
                    Some(key)
                }
                _ => None,
            };
            let signer = policy
                .decide(
                    &what,
                    &fetched.archive,
                    fetched.in_band.signature.as_deref(),
                    in_band_key.as_ref(),
                )
                .map_err(|e| sig_err(name, e))?;
            Ok(Verified {
                archive: fetched.archive.clone(),
                signer,
                wrapper: false,
                temp: TempFiles::default(),
            })
        }
        PackageSource::Url { location, key } => {
            let key = match key {
                Some(url) => {
                    let k = match url.relative_path() {
                        Some(rel) => super::fetch::local_file(base, rel)
                            .map_err(|e| format!("keyLocation {}: {e}", url.as_str()))
                            .and_then(|p| PublicKey::from_file(&p).map_err(|e| e.to_string())),
                        None => fetch_key(oci, url.as_str(), work),
                    }
                    .map_err(|e| sig_err(name, e))?;
                    policy.admit_key(&k).map_err(|e| sig_err(name, e))?;
                    Some(k)
                }
                None => None,
            };
            let scratch = work.join("packages");
            let mut temp = TempFiles::default();
            let wrapper = open_wrapper(&fetched.archive, &fetched.digest, &scratch, &mut temp)
                .map_err(|e| {
                    err(
                        super::ERR_PACKAGE_INVALID,
                        format!(
                            "component {name:?}: package {} ({}): {e}",
                            location.as_str(),
                            fetched.digest.short()
                        ),
                    )
                })?;
            match wrapper {
                Some((app, sig)) => {
                    let what = format!("package {} (its .app)", location.as_str());
                    let signer = policy
                        .decide(&what, &app, sig.as_deref(), key.as_ref())
                        .map_err(|e| sig_err(name, e))?;
                    Ok(Verified {
                        archive: app,
                        signer,
                        wrapper: true,
                        temp,
                    })
                }
                None => {
                    let sig = if let Some(rel) = location.relative_path() {
                        local_sibling_signature(base, rel).map_err(|e| sig_err(name, e))?
                    } else if is_blob_url(location.as_str()) {
                        None
                    } else {
                        fetch_sibling_signature(oci, location.as_str(), &scratch)
                            .map_err(|e| sig_err(name, e))?
                    };
                    let what = format!("package {}", location.as_str());
                    let signer = policy
                        .decide(&what, &fetched.archive, sig.as_deref(), key.as_ref())
                        .map_err(|e| sig_err(name, e))?;
                    Ok(Verified {
                        archive: fetched.archive.clone(),
                        signer,
                        wrapper: false,
                        temp,
                    })
                }
            }
        }
    }
}

fn is_blob_url(url: &str) -> bool {
    url.parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| crate::oci::registry_blob_path(u.path()))
        .is_some()
}

/// Fetches a `keyLocation`, caching it by digest: a registry blob URL whose digest is cached
/// is not fetched again.
pub fn fetch_key(oci: &mut OciClient, url: &str, work: &Path) -> Result<PublicKey, String> {
    let dir = work.join("keys");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cached = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| crate::oci::registry_blob_path(u.path()))
        .map(|(_, d)| dir.join(format!("{}.key", d.hex())));
    if let Some(path) = &cached
        && path.is_file()
    {
        let bytes = read_capped(path, KEY_MAX_BYTES)
            .map_err(|e| format!("cannot read cached key {}: {e}", path.display()))?;
        return PublicKey::parse(&bytes, url).map_err(|e| e.to_string());
    }
    let partial = dir.join(format!("download-{}.partial", std::process::id()));
    let digest = oci
        .fetch_url_to_file(url, None, KEY_MAX_BYTES, &partial)
        .map_err(|e| {
            let _ = fs::remove_file(&partial);
            format!("key {url} could not be fetched ({e})")
        })?;
    let bytes = read_capped(&partial, KEY_MAX_BYTES);
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(format!(
                "cannot read downloaded key {}: {e}",
                partial.display()
            ));
        }
    };
    let key = PublicKey::parse(&bytes, url);
    match &key {
        Ok(_) => {
            let dest = dir.join(format!("{}.key", digest.hex()));
            if fs::rename(&partial, &dest).is_err() {
                let _ = fs::remove_file(&partial);
            }
        }
        Err(_) => {
            let _ = fs::remove_file(&partial);
        }
    }
    key.map_err(|e| e.to_string())
}

/// `<path>.sig` next to a package in the desired-state directory, if there is one.
fn local_sibling_signature(base: Option<&Path>, rel: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut name = rel.as_os_str().to_owned();
    name.push(".sig");
    match super::fetch::local_file(base, Path::new(&name)) {
        Ok(p) => read_capped(&p, SIGNATURE_MAX_BYTES)
            .map(Some)
            .map_err(|e| format!("cannot read {}: {e}", p.display())),
        Err(_) if base.is_some_and(|b| !b.join(&name).exists()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `<url>.sig`, if the server has one (404: unsigned).
fn fetch_sibling_signature(
    oci: &mut OciClient,
    url: &str,
    scratch: &Path,
) -> Result<Option<Vec<u8>>, String> {
    let sig_url = format!("{url}.sig");
    let partial = scratch.join(format!("signature-{}.partial", std::process::id()));
    let _cleanup = TempFiles(vec![partial.clone()]);
    match oci.fetch_url_to_file(&sig_url, None, SIGNATURE_MAX_BYTES, &partial) {
        Ok(_) => read_capped(&partial, SIGNATURE_MAX_BYTES)
            .map(Some)
            .map_err(|e| format!("cannot read {}: {e}", partial.display())),
        Err(crate::oci::OciError::NotFound { .. }) => Ok(None),
        Err(e) => Err(format!(
            "the detached signature {sig_url} could not be fetched ({e})"
        )),
    }
}

/// Looks into `archive` for the proof-of-concept wrapper shape and copies its `.app` (and
/// `.app.sig`, into memory) out. `Ok(None)`: not a wrapper (it holds anything else). Tar
/// metadata is read raw: GNU long names and PAX records (which the `tar` crate would buffer
/// whole) make it "not a wrapper", and the safe unpacker deals with them.
#[allow(clippy::type_complexity)]
fn open_wrapper(
    archive: &Path,
    digest: &Digest,
    scratch: &Path,
    temp: &mut TempFiles,
) -> Result<Option<(PathBuf, Option<Vec<u8>>)>, String> {
    let file = File::open(archive).map_err(|e| format!("cannot open: {e}"))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let entries = tar
        .entries()
        .map_err(|e| format!("not a gzip tar: {e}"))?
        .raw(true);
    let mut app: Option<(String, PathBuf)> = None;
    let mut sig: Option<(String, Vec<u8>)> = None;
    let mut top: Option<String> = None;
    for (i, entry) in entries.enumerate() {
        if i >= WRAPPER_MAX_ENTRIES {
            return Ok(None);
        }
        let mut entry = entry.map_err(|e| format!("not a gzip tar: {e}"))?;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw).into_owned();
        let path = path.trim_start_matches("./").to_string();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Ok(None);
        }
        let (dir, file) = match path.split_once('/') {
            None => (String::new(), path.clone()),
            Some((d, f)) if !f.contains('/') && !d.is_empty() && d != ".." => {
                (d.to_string(), f.to_string())
            }
            _ => return Ok(None),
        };
        if top.get_or_insert_with(|| dir.clone()) != &dir {
            return Ok(None);
        }
        if let Some(stem) = file.strip_suffix(".app.sig") {
            if sig.is_some() || stem.is_empty() {
                return Ok(None);
            }
            let mut buf = Vec::new();
            (&mut entry)
                .take(SIGNATURE_MAX_BYTES + 1)
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading {path}: {e}"))?;
            if buf.len() as u64 > SIGNATURE_MAX_BYTES {
                return Err(format!(
                    "{path} is larger than {SIGNATURE_MAX_BYTES} bytes; not a detached signature"
                ));
            }
            sig = Some((stem.to_string(), buf));
        } else if let Some(stem) = file.strip_suffix(".app") {
            if app.is_some() || stem.is_empty() {
                return Ok(None);
            }
            fs::create_dir_all(scratch)
                .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
            let dest = scratch.join(format!("{}.{}.app", digest.hex(), std::process::id()));
            temp.0.push(dest.clone());
            copy_capped(&mut entry, &dest, APP_MAX_BYTES).map_err(|e| format!("{path}: {e}"))?;
            app = Some((stem.to_string(), dest));
        } else {
            return Ok(None);
        }
    }
    match (app, sig) {
        (Some((stem, path)), Some((sig_stem, sig))) if stem == sig_stem => {
            Ok(Some((path, Some(sig))))
        }
        (Some((stem, _)), Some((sig_stem, _))) => Err(format!(
            "holds {stem}.app and {sig_stem}.app.sig: the signature is not for that .app"
        )),
        (Some((_, path)), None) => Ok(Some((path, None))),
        (None, _) => Ok(None),
    }
}

/// Copies `from` to `dest`, refusing it past `cap` bytes ([`crate::oci::copy_to_file`]).
fn copy_capped(from: impl Read, dest: &Path, cap: u64) -> Result<u64, String> {
    use crate::oci::CopyError;
    let expect = crate::oci::Expect {
        digest: None,
        size: None,
        cap,
    };
    crate::oci::copy_to_file(from, dest, &expect)
        .map(|(_, n)| n)
        .map_err(|e| match e {
            CopyError::Read(e) => format!("copying to {}: {e}", dest.display()),
            CopyError::Write(e) => format!("writing {}: {e}", dest.display()),
            CopyError::TooLarge { .. } | CopyError::SizeMismatch { .. } => {
                format!("is larger than the {cap}-byte cap")
            }
            CopyError::DigestMismatch { expected, actual } => {
                format!("is {actual}, not {expected}")
            }
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[allow(clippy::type_complexity)]
    fn open(
        tag: &str,
        entries: &[(&str, &[u8])],
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, String> {
        let dir = std::env::temp_dir().join(format!("margo-wrapper-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("pkg.tar.gz");
        fs::write(&archive, tar_gz(entries)).unwrap();
        let mut temp = TempFiles::default();
        let r = open_wrapper(&archive, &Digest::of(b"x"), &dir, &mut temp)
            .map(|o| o.map(|(p, s)| (fs::read(p).unwrap(), s)));
        drop(temp);
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary .app removed");
        let _ = fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn wrapper_shape_is_recognised_at_root_or_in_one_directory() {
        let (app, sig) = open("root", &[("poc.app", b"APP"), ("poc.app.sig", b"SIG")])
            .unwrap()
            .unwrap();
        assert_eq!(
            (app.as_slice(), sig.as_deref()),
            (&b"APP"[..], Some(&b"SIG"[..]))
        );
        let (app, sig) = open("dir", &[("d/poc.app", b"APP")]).unwrap().unwrap();
        assert_eq!((app.as_slice(), sig), (&b"APP"[..], None));
    }

    #[test]
    fn anything_else_is_a_plain_tarball() {
        assert!(open("plain", &[("compose.yaml", b"x")]).unwrap().is_none());
        assert!(
            open("extra", &[("poc.app", b"A"), ("compose.yaml", b"x")])
                .unwrap()
                .is_none()
        );
        assert!(
            open("two-dirs", &[("a/poc.app", b"A"), ("b/poc.app.sig", b"S")])
                .unwrap()
                .is_none()
        );
        let e = open("mismatch", &[("a.app", b"A"), ("b.app.sig", b"S")]).unwrap_err();
        assert!(e.contains("not for that .app"), "{e}");
    }
}
