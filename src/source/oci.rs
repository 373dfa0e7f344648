//! The OCI desired-state source: a tag in a registry, polled with HEAD.
//!
//! An unchanged manifest digest ends the poll after one HEAD request: no GET, no disk write,
//! nothing for Podman. A new digest is fetched by digest (verified before parsing), must be an
//! image manifest with exactly one layer of a known desired-state media type, may carry the
//! version annotation (which must then increase), and its layer is downloaded (size-capped,
//! digest-verified) and decoded into YAML files. A revision refused once is remembered by the
//! caller and not fetched again until the tag moves on.

use super::layer::{self, DESIRED_STATE_MAX_LAYER_BYTES, LayerForm};
use super::{Polled, Revision, SourceError, VERSION_ANNOTATION, check_version, parse_version};
use crate::digest::Digest;
use crate::oci::{Manifest, OciClient, OciError, Reference};

pub const ERR_DESIRED_STATE_INVALID: &str = "ERR_DESIRED_STATE_INVALID";
pub const ERR_VERSION_ROLLBACK: &str = "ERR_VERSION_ROLLBACK";

/// What the source compares against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// The revision applied.
    pub applied: Option<&'a Digest>,
    /// A revision refused earlier (not retried).
    pub rejected: Option<&'a Digest>,
    /// The version annotation of the applied revision.
    pub applied_version: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct OciSource {
    pub reference: Reference,
}

impl OciSource {
    pub fn new(reference: Reference) -> OciSource {
        OciSource { reference }
    }

    /// One poll. See the module docs.
    pub fn poll(&self, client: &mut OciClient, known: Known) -> Result<Polled, SourceError> {
        let r = &self.reference;
        let head = client.head_manifest(r).map_err(|e| classify(e, None))?;
        let Some(head) = head else {
            return Err(SourceError::Unreachable(format!(
                "registry {} has no desired state at {r} (manifest unknown); nothing is changed, polling again later",
                r.registry
            )));
        };
        if Some(&head.digest) == known.applied || Some(&head.digest) == known.rejected {
            return Ok(Polled::Unchanged);
        }
        let digest = head.digest.clone();
        let invalid = |code: &'static str, message: String| SourceError::Invalid {
            code,
            message,
            digest: Some(digest.clone()),
        };
        let fetched = client
            .get_manifest(r, digest.as_str())
            .map_err(|e| classify(e, Some(&digest)))?;
        let manifest = match fetched.manifest {
            Manifest::Image(m) => m,
            Manifest::Index(_) => {
                return Err(invalid(
                    ERR_DESIRED_STATE_INVALID,
                    format!(
                        "desired state {r}@{} is an image index, not a single-layer artifact manifest",
                        digest.short()
                    ),
                ));
            }
        };
        let version = match manifest.annotations.get(VERSION_ANNOTATION) {
            Some(v) => Some(parse_version(v).map_err(|m| {
                invalid(
                    ERR_DESIRED_STATE_INVALID,
                    format!("desired state {r}@{}: {m}", digest.short()),
                )
            })?),
            None => None,
        };
        check_version(version, known.applied_version).map_err(|m| {
            invalid(
                ERR_VERSION_ROLLBACK,
                format!("desired state {r}@{}: {m}", digest.short()),
            )
        })?;
        let [layer_desc] = manifest.layers.as_slice() else {
            return Err(invalid(
                ERR_DESIRED_STATE_INVALID,
                format!(
                    "desired state {r}@{} has {} layers; exactly one is required",
                    digest.short(),
                    manifest.layers.len()
                ),
            ));
        };
        let Some(form) = LayerForm::of(&layer_desc.media_type) else {
            return Err(invalid(
                ERR_DESIRED_STATE_INVALID,
                format!(
                    "desired state {r}@{} has a layer of media type {:?}; expected {} or {}",
                    digest.short(),
                    layer_desc.media_type,
                    layer::MEDIA_TYPE_YAML,
                    layer::MEDIA_TYPE_TAR_GZIP
                ),
            ));
        };
        let bytes = client
            .fetch_blob_bytes(r, layer_desc, DESIRED_STATE_MAX_LAYER_BYTES)
            .map_err(|e| classify(e, Some(&digest)))?;
        let files = layer::decode(form, &bytes).map_err(|m| {
            invalid(
                ERR_DESIRED_STATE_INVALID,
                format!("desired state {r}@{}: {m}", digest.short()),
            )
        })?;
        Ok(Polled::Changed {
            revision: Revision { digest, version },
            files,
        })
    }
}

/// Transient failures are retried; anything wrong with the content refuses the revision.
fn classify(e: OciError, digest: Option<&Digest>) -> SourceError {
    if e.is_transient() || e.is_unreachable() || e.code() == "ERR_REGISTRY_AUTH" || digest.is_none()
    {
        return SourceError::Unreachable(format!(
            "{e}; keeping current workloads, retrying with backoff"
        ));
    }
    SourceError::Invalid {
        code: e.code(),
        message: format!("{e}; keeping current workloads"),
        digest: digest.cloned(),
    }
}
