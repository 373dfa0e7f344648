//! The OCI desired-state source: a tag in a registry, polled with HEAD.
//!
//! An unchanged manifest digest ends the poll after one HEAD request: no GET, no disk write,
//! nothing for Podman. A new digest is fetched by digest (verified before parsing), must be an
//! image manifest with exactly one layer of a known desired-state media type, may carry the
//! version annotation (which must then increase), and its layer is downloaded (size-capped,
//! digest-verified) and decoded into YAML files. A revision refused once is remembered by the
//! caller and not fetched again until the tag moves on.
//!
//! The applied revision counts as unchanged only while its workloads are converged. After a
//! failed update the workloads may no longer match it (a container may already be replaced),
//! so a tag moved back to the applied revision is fetched and applied again; going back to it
//! is not a rollback, so its version is not compared with itself.

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
    /// Every deployment is Installed as the applied revision says: only then is the applied
    /// revision an unchanged one (see the module docs).
    pub applied_converged: bool,
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
        let is_applied = Some(&head.digest) == known.applied;
        if (is_applied && known.applied_converged) || Some(&head.digest) == known.rejected {
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
        if !is_applied {
            check_version(version, known.applied_version).map_err(|m| {
                invalid(
                    ERR_VERSION_ROLLBACK,
                    format!("desired state {r}@{}: {m}", digest.short()),
                )
            })?;
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::oci::manifest::MEDIA_TYPE_OCI_MANIFEST;
    use crate::oci::test_server::{Reply, Request, TestServer};
    use crate::oci::{Descriptor, ImageManifest, RegistryAccess};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    const DOC: &[u8] = b"kind: ApplicationDeployment\n";

    /// A registry serving one desired state, version 2, at `fleet/desired:latest`.
    fn registry() -> (TestServer, OciClient, OciSource, Digest) {
        let layer = Descriptor::new(layer::MEDIA_TYPE_YAML, Digest::of(DOC), DOC.len() as u64);
        let annotations = BTreeMap::from([(VERSION_ANNOTATION.to_string(), "2".to_string())]);
        let bytes =
            ImageManifest::artifact(layer::ARTIFACT_TYPE, vec![layer], annotations).to_bytes();
        let digest = Digest::of(&bytes);
        let d = digest.clone();
        let server = TestServer::start(move |_| {
            move |q: &Request| {
                if q.path().contains("/manifests/") {
                    Reply::new(200)
                        .header("Content-Type", MEDIA_TYPE_OCI_MANIFEST)
                        .header("Docker-Content-Digest", d.as_str())
                        .body(bytes.clone())
                } else if q.path().contains("/blobs/") {
                    Reply::new(200).body(DOC)
                } else {
                    Reply::new(404)
                }
            }
        });
        let mut client = OciClient::new(crate::http::client(&Arc::new(Vec::new())));
        let access = RegistryAccess {
            plain_http: true,
            credentials: None,
        };
        client.set_access(&server.host(), access);
        let r = Reference::parse(&format!("{}/fleet/desired:latest", server.host())).unwrap();
        (server, client, OciSource::new(r), digest)
    }

    #[test]
    fn applied_revision_is_unchanged_after_one_head_while_converged() {
        let (server, mut client, source, digest) = registry();
        let known = Known {
            applied: Some(&digest),
            applied_converged: true,
            rejected: None,
            applied_version: Some(2),
        };
        assert!(matches!(
            source.poll(&mut client, known),
            Ok(Polled::Unchanged)
        ));
        assert_eq!(server.requests().len(), 1);
    }

    #[test]
    fn applied_revision_is_fetched_again_after_a_failed_update() {
        // A tag moved back to the applied revision after an update failed: applied again,
        // and its own version is no rollback.
        let (_server, mut client, source, digest) = registry();
        let known = Known {
            applied: Some(&digest),
            applied_converged: false,
            rejected: None,
            applied_version: Some(2),
        };
        match source.poll(&mut client, known) {
            Ok(Polled::Changed { revision, files }) => {
                assert_eq!(revision.digest, digest);
                assert_eq!(revision.version, Some(2));
                assert_eq!(files[0].text.as_bytes(), DOC);
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[test]
    fn another_revision_with_an_equal_version_is_a_rollback() {
        let (_server, mut client, source, _) = registry();
        let other = Digest::of(b"another revision");
        let known = Known {
            applied: Some(&other),
            applied_converged: false,
            rejected: None,
            applied_version: Some(2),
        };
        match source.poll(&mut client, known) {
            Err(SourceError::Invalid { code, .. }) => assert_eq!(code, ERR_VERSION_ROLLBACK),
            other => panic!("expected a rollback refusal, got {other:?}"),
        }
    }
}
