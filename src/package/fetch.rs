//! Fetches a component's Compose package to disk, verified, before anything is unpacked.
//!
//! - `repository: oci://…` + `revision`: the manifest (by tag = revision, `+` as `_`, or by
//!   digest) is fetched and verified, its compose layer streamed to disk through SHA-256.
//! - `packageLocation`: an `https://` URL (a registry blob URL gets the registry's auth and
//!   its digest checked), streamed to disk with a size cap; `http://` only for hosts the
//!   config marks `plain_http`.
//!
//! Archives are stored by digest under `<work>/packages/`: an OCI package whose layer digest is
//! already there is not downloaded again. A URL package names no digest up front, so it is
//! downloaded on every apply (applies happen only when the desired state changed).

use super::layout::PackageLayout;
use crate::digest::Digest;
use crate::model::{Component, PackageSource};
use crate::oci::{Manifest, OciClient, OciError, Reference};
use std::path::{Path, PathBuf};

/// Largest Compose package downloaded: packages may carry `docker save` image archives, so
/// this is sized for a few images, not for a compose file.
pub const PACKAGE_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Layer media types of a detached OpenPGP signature over the compose layer.
pub const SIGNATURE_LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.margo.app.v1+sig",
    "application/pgp-signature",
];
/// Layer media type of an OpenPGP public key shipped with a package.
pub const KEY_LAYER_MEDIA_TYPE: &str = "application/pgp-keys";

/// Layer media types of a SUP-01 Compose package (and the earlier WG proposal's spelling).
pub const COMPOSE_LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.org.margo.component.compose.tar+gzip",
    "application/vnd.org.margo.component.compose.v1.tar.gzip",
    "application/vnd.org.margo.component.compose.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
];

/// A package on disk.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub archive: PathBuf,
    pub digest: Digest,
    pub layout: PackageLayout,
    /// Signature and key layers of an OCI package.
    pub in_band: InBand,
}

/// What an OCI package's manifest carries beside the compose layer.
#[derive(Debug, Clone, Default)]
pub struct InBand {
    /// A detached signature over the compose layer.
    pub signature: Option<Vec<u8>>,
    /// An OpenPGP public key.
    pub key: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("component {component:?}: fetching its package failed: {source}")]
    Oci { component: String, source: OciError },
    #[error("component {component:?}: package {location}: {reason}")]
    Invalid {
        component: String,
        location: String,
        reason: String,
    },
    #[error("component {component:?}: package {location}: {reason}")]
    Local {
        component: String,
        location: String,
        reason: String,
        code: &'static str,
    },
    #[error("component {component:?}: cannot write under {}: {source}", dir.display())]
    Io {
        component: String,
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Oci { source, .. } => match source.code() {
                "ERR_DIGEST_MISMATCH" => "ERR_DIGEST_MISMATCH",
                "ERR_TOO_LARGE" => "ERR_PACKAGE_TOO_LARGE",
                _ => "ERR_PACKAGE_FETCH",
            },
            FetchError::Invalid { .. } => "ERR_PACKAGE_INVALID",
            FetchError::Local { code, .. } => code,
            FetchError::Io { .. } => "ERR_LOCAL_IO",
        }
    }
}

/// Fetches `component`'s package into `<work>/packages/`. `base`: the desired-state
/// directory relative `packageLocation`s are resolved in (`dir` source), else `None`.
pub fn fetch(
    oci: &mut OciClient,
    component: &Component,
    work: &Path,
    base: Option<&Path>,
) -> Result<Fetched, FetchError> {
    let dir = work.join("packages");
    let io = |source| FetchError::Io {
        component: component.name.clone(),
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let oci_err = |source| FetchError::Oci {
        component: component.name.clone(),
        source,
    };
    match &component.source {
        PackageSource::Oci { .. } => {
            let Some(r) = component.source.oci_reference() else {
                return Err(FetchError::Invalid {
                    component: component.name.clone(),
                    location: String::new(),
                    reason: "no OCI reference".into(),
                });
            };
            let invalid = |reason: String| FetchError::Invalid {
                component: component.name.clone(),
                location: r.to_string(),
                reason,
            };
            // Air-gapped: an OCI image layout of the repository in the desired-state
            // directory (`oci/<registry>/<repository>/`, as `oras copy --to-oci-layout`
            // writes it) is used instead of the registry.
            let local = base
                .map(|b| b.join("oci").join(&r.registry).join(&r.repository))
                .filter(|l| l.join("index.json").is_file());
            let mut store = match &local {
                Some(l) => Store::Layout(l),
                None => Store::Registry(oci, &r),
            };
            let manifest = store
                .manifest(&r)
                .map_err(|e| e.into_fetch(component, &r))?;
            let Manifest::Image(m) = manifest else {
                return Err(invalid(
                    "is an image index, not a Compose package artifact".into(),
                ));
            };
            let extra = |types: &[&str]| {
                m.layers
                    .iter()
                    .find(|l| types.contains(&l.media_type.as_str()))
                    .cloned()
            };
            let sig_layer = extra(SIGNATURE_LAYER_MEDIA_TYPES);
            let key_layer = extra(&[KEY_LAYER_MEDIA_TYPE]);
            let mut in_band = InBand::default();
            if let Some(l) = &sig_layer {
                in_band.signature = Some(
                    store
                        .blob_bytes(l, super::signature::SIGNATURE_MAX_BYTES)
                        .map_err(|e| e.into_fetch(component, &r))?,
                );
            }
            if let Some(l) = &key_layer {
                in_band.key = Some(
                    store
                        .blob_bytes(l, super::signature::KEY_MAX_BYTES)
                        .map_err(|e| e.into_fetch(component, &r))?,
                );
            }
            let compose_layers: Vec<_> = m
                .layers
                .iter()
                .filter(|l| {
                    !SIGNATURE_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str())
                        && l.media_type != KEY_LAYER_MEDIA_TYPE
                })
                .collect();
            let layer = match compose_layers.as_slice() {
                [only] => *only,
                many => many
                    .iter()
                    .find(|l| COMPOSE_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()))
                    .copied()
                    .ok_or_else(|| {
                        invalid(format!(
                            "has {} layers and none of a Compose package media type ({})",
                            many.len(),
                            COMPOSE_LAYER_MEDIA_TYPES[0]
                        ))
                    })?,
            };
            let dest = dir.join(format!("{}.tar.gz", layer.digest.hex()));
            if !dest.exists() {
                store
                    .blob_to_file(layer, PACKAGE_MAX_BYTES, &dest)
                    .map_err(|e| e.into_fetch(component, &r))?;
            }
            Ok(Fetched {
                archive: dest,
                digest: layer.digest.clone(),
                layout: PackageLayout::OciCompose,
                in_band,
            })
        }
        PackageSource::Url { location, .. } => {
            let partial = dir.join(format!("download-{}.partial", std::process::id()));
            let digest = match location.relative_path() {
                Some(rel) => {
                    let invalid = |reason: String| FetchError::Invalid {
                        component: component.name.clone(),
                        location: location.as_str().to_string(),
                        reason,
                    };
                    let src = local_file(base, rel).map_err(invalid)?;
                    copy_hashing(&src, &partial, PACKAGE_MAX_BYTES, None)
                        .map_err(|(_, e)| invalid(e))?
                }
                None => oci
                    .fetch_url_to_file(location.as_str(), None, PACKAGE_MAX_BYTES, &partial)
                    .map_err(oci_err)?,
            };
            let dest = dir.join(format!("{}.tar.gz", digest.hex()));
            std::fs::rename(&partial, &dest).map_err(io)?;
            Ok(Fetched {
                archive: dest,
                digest,
                layout: PackageLayout::Tarball,
                in_band: InBand::default(),
            })
        }
    }
}

/// A relative location resolved in the desired-state directory `base`.
pub fn local_file(base: Option<&Path>, rel: &Path) -> Result<PathBuf, String> {
    let Some(base) = base else {
        return Err(
            "is a relative path, which only a desired-state directory (desired_state.directory) can resolve"
                .into(),
        );
    };
    crate::source::dir::resolve(base, rel)
}

/// Copies a local file to `dest` through SHA-256 ([`crate::oci::copy_to_file`]), refusing
/// it past `cap` bytes or when it is not `expected`. Errors carry their code.
fn copy_hashing(
    src: &Path,
    dest: &Path,
    cap: u64,
    expected: Option<&Digest>,
) -> Result<Digest, (&'static str, String)> {
    use crate::oci::CopyError;
    let fetch_err = |m: String| ("ERR_PACKAGE_FETCH", m);
    let file = std::fs::File::open(src)
        .map_err(|e| fetch_err(format!("cannot read {}: {e}", src.display())))?;
    let expect = crate::oci::Expect {
        digest: expected,
        size: None,
        cap,
    };
    crate::oci::copy_to_file(file, dest, &expect)
        .map(|(digest, _)| digest)
        .map_err(|e| match e {
            CopyError::Read(e) => fetch_err(format!("copying {}: {e}", src.display())),
            CopyError::Write(e) => fetch_err(format!("writing {}: {e}", dest.display())),
            CopyError::TooLarge { .. } | CopyError::SizeMismatch { .. } => fetch_err(format!(
                "{} is over the {cap}-byte package cap",
                src.display()
            )),
            CopyError::DigestMismatch { expected, actual } => (
                "ERR_DIGEST_MISMATCH",
                format!(
                    "blob {} has digest {actual}, expected {expected}",
                    src.display()
                ),
            ),
        })
}

/// Where an OCI package's manifest and blobs are read from.
enum Store<'a> {
    Registry(&'a mut OciClient, &'a Reference),
    /// An OCI image layout directory (`index.json`, `blobs/sha256/<hex>`).
    Layout(&'a Path),
}

/// A failure reading a package from either store.
enum StoreError {
    Oci(OciError),
    Local { code: &'static str, reason: String },
}

impl StoreError {
    fn into_fetch(self, component: &Component, r: &Reference) -> FetchError {
        match self {
            StoreError::Oci(source) => FetchError::Oci {
                component: component.name.clone(),
                source,
            },
            StoreError::Local { code, reason } => FetchError::Local {
                component: component.name.clone(),
                location: r.to_string(),
                reason,
                code,
            },
        }
    }
}

fn local(code: &'static str, reason: String) -> StoreError {
    StoreError::Local { code, reason }
}

impl Store<'_> {
    fn manifest(&mut self, r: &Reference) -> Result<Manifest, StoreError> {
        match self {
            Store::Registry(oci, r) => oci
                .get_manifest(r, &r.manifest_ref())
                .map(|f| f.manifest)
                .map_err(StoreError::Oci),
            Store::Layout(dir) => {
                let index_path = dir.join("index.json");
                let index = super::signature::read_capped(
                    &index_path,
                    crate::oci::manifest::MANIFEST_MAX_BYTES,
                )
                .map_err(|e| {
                    local(
                        "ERR_PACKAGE_FETCH",
                        format!("cannot read {}: {e}", index_path.display()),
                    )
                })?;
                let index: serde_json::Value = serde_json::from_slice(&index).map_err(|e| {
                    local(
                        "ERR_PACKAGE_INVALID",
                        format!("{} is not an OCI index: {e}", index_path.display()),
                    )
                })?;
                let wanted = r.manifest_ref();
                let entry = index["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| {
                        m["digest"].as_str() == Some(wanted.as_str())
                            || m["annotations"]["org.opencontainers.image.ref.name"].as_str()
                                == Some(wanted.as_str())
                    })
                    .ok_or_else(|| {
                        local(
                            "ERR_NOT_FOUND",
                            format!("{} names no manifest {wanted}", index_path.display()),
                        )
                    })?;
                let desc: crate::oci::Descriptor =
                    serde_json::from_value(entry.clone()).map_err(|e| {
                        local(
                            "ERR_PACKAGE_INVALID",
                            format!("{}: manifest entry {wanted}: {e}", index_path.display()),
                        )
                    })?;
                let bytes = self.blob_bytes(&desc, crate::oci::manifest::MANIFEST_MAX_BYTES)?;
                crate::oci::parse_manifest(&bytes, Some(&desc.media_type)).map_err(|e| {
                    local(
                        "ERR_INVALID_MANIFEST",
                        format!("manifest {}: {e}", desc.digest),
                    )
                })
            }
        }
    }

    fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
        dir.join("blobs/sha256").join(d.hex())
    }

    fn blob_bytes(
        &mut self,
        desc: &crate::oci::Descriptor,
        cap: u64,
    ) -> Result<Vec<u8>, StoreError> {
        match self {
            Store::Registry(oci, r) => oci.fetch_blob_bytes(r, desc, cap).map_err(StoreError::Oci),
            Store::Layout(dir) => {
                let path = Self::blob_path(dir, &desc.digest);
                let bytes =
                    super::signature::read_capped(&path, cap.min(desc.size)).map_err(|e| {
                        local(
                            "ERR_PACKAGE_FETCH",
                            format!("cannot read blob {}: {e}", path.display()),
                        )
                    })?;
                let actual = Digest::of(&bytes);
                if actual != desc.digest {
                    return Err(local(
                        "ERR_DIGEST_MISMATCH",
                        format!(
                            "blob {} has digest {actual}, expected {}",
                            path.display(),
                            desc.digest
                        ),
                    ));
                }
                Ok(bytes)
            }
        }
    }

    fn blob_to_file(
        &mut self,
        desc: &crate::oci::Descriptor,
        cap: u64,
        dest: &Path,
    ) -> Result<(), StoreError> {
        match self {
            Store::Registry(oci, r) => oci
                .fetch_blob_to_file(r, desc, cap, dest)
                .map_err(StoreError::Oci),
            Store::Layout(dir) => {
                let src = Self::blob_path(dir, &desc.digest);
                copy_hashing(&src, dest, cap.min(desc.size), Some(&desc.digest))
                    .map(|_| ())
                    .map_err(|(code, e)| local(code, e))
            }
        }
    }
}
