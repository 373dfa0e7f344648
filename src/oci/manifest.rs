//! OCI image manifests, image indexes and descriptors (image-spec v1.1), plus the Docker v2
//! schema 2 forms that registries still serve.
//!
//! Owns: the serde types, the media-type constants, the empty-config descriptor used by
//! artifacts, and [`parse_manifest`], which turns bytes whose digest the caller has already
//! verified into a [`Manifest`].
//!
//! Refuses: a `mediaType` that contradicts the response's `Content-Type` (a registry or proxy
//! that mislabels content is not trusted to have served the right thing), schema versions
//! other than 2, media types that are neither a manifest nor an index, and descriptors whose
//! inline `data` does not match their `digest` and `size`. Docker schema 1 is refused: it is
//! signed JSON with a different shape and no registry margo-agent talks to serves it.
//!
//! Accepts: unknown fields and unknown `artifactType`s — the spec says they MUST NOT cause
//! errors, so no type here uses `deny_unknown_fields`.

use crate::digest::Digest;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image manifest (also used for artifacts).
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2, schema 2 (read only).
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list v2 (read only).
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// The empty descriptor's media type: the config of an artifact that has none.
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Digest of the two bytes `{}`, the content of the empty descriptor.
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// The empty descriptor's content.
pub const EMPTY_CONTENT: &[u8] = b"{}";
/// The empty descriptor's content, base64, as carried in its `data` field.
pub const EMPTY_DATA_BASE64: &str = "e30=";

/// The `Accept` header sent on every manifest request. distribution 2.8 answers 404
/// MANIFEST_UNKNOWN for an OCI manifest when the OCI type is missing here, so all four are
/// always sent.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest margo-agent reads or pushes: 4 MiB, the limit the distribution spec says
/// registries SHOULD accept at least and distribution itself enforces. A desired-state
/// manifest is a few hundred bytes, so anything near this is a misbehaving registry.
pub const MANIFEST_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Why manifest bytes were refused. The caller adds where they came from.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("not a valid manifest JSON document: {0}")]
    Json(String),
    #[error("its mediaType {media_type:?} contradicts the Content-Type {content_type:?}")]
    MediaTypeMismatch {
        media_type: String,
        content_type: String,
    },
    #[error("media type {0:?} is not an OCI or Docker v2 manifest or index")]
    UnsupportedMediaType(String),
    #[error("schemaVersion is {0}, only 2 is supported")]
    SchemaVersion(u64),
    #[error("the descriptor of {digest} carries inline data that {reason}")]
    InlineData { digest: Digest, reason: String },
}

/// A content descriptor: what a manifest says about a blob or another manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The content itself, base64 (standard alphabet), for small blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Set on image-index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform of an image-index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

/// An image manifest: OCI (including artifacts) or Docker v2 schema 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    /// Required for images; artifacts SHOULD have at least one.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (or Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A parsed manifest of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    // Boxed: both are several hundred bytes; the enum moves through Results.
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

impl Manifest {
    /// The effective media type (from the document, else the Content-Type it came with).
    pub fn media_type(&self) -> Option<&str> {
        match self {
            Manifest::Image(m) => m.media_type.as_deref(),
            Manifest::Index(i) => i.media_type.as_deref(),
        }
    }

    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            Manifest::Image(m) => &m.annotations,
            Manifest::Index(i) => &i.annotations,
        }
    }
}

impl Descriptor {
    /// A descriptor with only the required fields.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            data: None,
            artifact_type: None,
            platform: None,
        }
    }

    /// The empty descriptor (`{}`, with its data inline), the config of config-less artifacts.
    pub fn empty() -> Descriptor {
        Descriptor {
            data: Some(EMPTY_DATA_BASE64.to_string()),
            ..Descriptor::new(MEDIA_TYPE_EMPTY, Digest::of(EMPTY_CONTENT), 2)
        }
    }

    /// The inline `data`, decoded and checked against `size` and `digest`; `None` when the
    /// descriptor carries no data (the content must then be fetched).
    pub fn inline_data(&self) -> Result<Option<Vec<u8>>, ManifestError> {
        let Some(b64) = &self.data else {
            return Ok(None);
        };
        let err = |reason: String| ManifestError::InlineData {
            digest: self.digest.clone(),
            reason,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| err(format!("is not valid base64 ({e})")))?;
        if bytes.len() as u64 != self.size {
            return Err(err(format!(
                "is {} bytes, the descriptor says {}",
                bytes.len(),
                self.size
            )));
        }
        let actual = Digest::of(&bytes);
        if actual != self.digest {
            return Err(err(format!("hashes to {actual}")));
        }
        Ok(Some(bytes))
    }
}

impl ImageManifest {
    /// An OCI artifact manifest: empty config, the given layers and annotations.
    pub fn artifact(
        artifact_type: &str,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    ) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
            artifact_type: Some(artifact_type.to_string()),
            config: Descriptor::empty(),
            layers,
            subject: None,
            annotations,
        }
    }

    /// The artifact type: `artifactType`, else the config's media type (image-spec rule).
    pub fn effective_artifact_type(&self) -> &str {
        self.artifact_type
            .as_deref()
            .unwrap_or(&self.config.media_type)
    }

    /// Canonical bytes for pushing (compact JSON; its digest is what the registry will name).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Strips parameters and whitespace from a `Content-Type` value and lowercases it.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Only the fields needed to choose the shape; everything else is ignored here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u64>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// Parses manifest bytes whose digest the caller has already verified.
///
/// `content_type` is the response's `Content-Type`, if any. When both it and the document's
/// `mediaType` are present they must agree (parameters stripped); when only one is present it
/// decides the kind; when neither is, the shape does (`manifests` means an index). Every
/// descriptor's inline `data` is checked.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
    let json_err = |e: serde_json::Error| ManifestError::Json(e.to_string());
    let probe: Probe = serde_json::from_slice(bytes).map_err(json_err)?;
    let header = content_type.map(essence).filter(|c| !c.is_empty());
    let media_type = match (&probe.media_type, &header) {
        (Some(m), Some(c)) if essence(m) != *c => {
            return Err(ManifestError::MediaTypeMismatch {
                media_type: m.clone(),
                content_type: c.clone(),
            });
        }
        (Some(m), _) => essence(m),
        (None, Some(c)) => c.clone(),
        (None, None) if probe.manifests.is_some() => MEDIA_TYPE_OCI_INDEX.to_string(),
        (None, None) => MEDIA_TYPE_OCI_MANIFEST.to_string(),
    };
    match probe.schema_version {
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => return Err(ManifestError::Json("schemaVersion is missing".into())),
    }
    let manifest = match media_type.as_str() {
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => {
            let mut m: ImageManifest = serde_json::from_slice(bytes).map_err(json_err)?;
            m.media_type = Some(media_type);
            check_inline(Some(&m.config))?;
            for l in &m.layers {
                check_inline(Some(l))?;
            }
            check_inline(m.subject.as_ref())?;
            Manifest::Image(Box::new(m))
        }
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST => {
            let mut i: ImageIndex = serde_json::from_slice(bytes).map_err(json_err)?;
            i.media_type = Some(media_type);
            for m in &i.manifests {
                check_inline(Some(m))?;
            }
            check_inline(i.subject.as_ref())?;
            Manifest::Index(Box::new(i))
        }
        other => return Err(ManifestError::UnsupportedMediaType(other.to_string())),
    };
    Ok(manifest)
}

fn check_inline(d: Option<&Descriptor>) -> Result<(), ManifestError> {
    if let Some(d) = d {
        d.inline_data()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    /// A desired-state artifact as the WFM publishes it: empty config, one YAML layer.
    fn artifact_json(media_type_field: &str) -> String {
        let layer = Digest::of(b"kind: ApplicationDeployment\n");
        format!(
            r#"{{"schemaVersion":2,{media_type_field}"artifactType":"application/vnd.margo.desired-state.v1",
            "config":{{"mediaType":"{MEDIA_TYPE_EMPTY}","digest":"{EMPTY_DIGEST}","size":2,"data":"e30="}},
            "layers":[{{"mediaType":"application/vnd.margo.desired-state.v1+yaml","digest":"{layer}","size":28}}],
            "annotations":{{"org.margo.ApplicationDeployment.version":"7"}},
            "futureField":{{"anything":[1,2,3]}}}}"#
        )
    }

    #[test]
    fn parses_artifact_manifest_and_ignores_unknown_fields() {
        let json = artifact_json(&format!(r#""mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","#));
        let m = parse_manifest(json.as_bytes(), Some(MEDIA_TYPE_OCI_MANIFEST)).unwrap();
        let Manifest::Image(m) = m else {
            panic!("expected an image manifest")
        };
        assert_eq!(
            m.effective_artifact_type(),
            "application/vnd.margo.desired-state.v1"
        );
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.config, Descriptor::empty());
        assert_eq!(
            m.annotations["org.margo.ApplicationDeployment.version"],
            "7"
        );
    }

    #[test]
    fn content_type_parameters_are_stripped_before_comparing() {
        let json = artifact_json(&format!(r#""mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","#));
        let ct = format!("{MEDIA_TYPE_OCI_MANIFEST}; charset=utf-8");
        assert!(parse_manifest(json.as_bytes(), Some(&ct)).is_ok());
    }

    #[test]
    fn rejects_media_type_that_contradicts_content_type() {
        let json = artifact_json(&format!(r#""mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","#));
        let err = parse_manifest(json.as_bytes(), Some(MEDIA_TYPE_OCI_INDEX)).unwrap_err();
        assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }));
        assert!(err.to_string().contains(MEDIA_TYPE_OCI_INDEX), "{err}");
    }

    #[test]
    fn content_type_decides_when_the_document_has_no_media_type() {
        let json = artifact_json("");
        let m = parse_manifest(json.as_bytes(), Some(MEDIA_TYPE_OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type(), Some(MEDIA_TYPE_OCI_MANIFEST));
        let err = parse_manifest(json.as_bytes(), Some("text/html")).unwrap_err();
        assert!(matches!(err, ManifestError::UnsupportedMediaType(_)));
        // Neither present: the shape decides.
        let m = parse_manifest(json.as_bytes(), None).unwrap();
        assert!(matches!(m, Manifest::Image(_)));
    }

    #[test]
    fn parses_docker_manifest_list_as_index() {
        let d = Digest::of(b"m");
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_DOCKER_LIST}","manifests":[
            {{"mediaType":"{MEDIA_TYPE_DOCKER_MANIFEST}","digest":"{d}","size":1,
              "platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        let m = parse_manifest(json.as_bytes(), Some(MEDIA_TYPE_DOCKER_LIST)).unwrap();
        let Manifest::Index(i) = m else {
            panic!("expected an index")
        };
        let p = i.manifests[0].platform.as_ref().unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "arm64"));
    }

    #[test]
    fn rejects_schema_1_garbage_and_wrong_shapes() {
        assert!(matches!(
            parse_manifest(br#"{"schemaVersion":1,"name":"x"}"#, None),
            Err(ManifestError::SchemaVersion(1))
        ));
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"schemaVersion":2}"#,
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1}}"#,
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":-1}}"#,
        ] {
            assert!(parse_manifest(bad, None).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn rejects_inline_data_that_does_not_match_digest_or_size() {
        let wrong_digest = artifact_json("").replace(r#""data":"e30=""#, r#""data":"W10=""#);
        let err = parse_manifest(wrong_digest.as_bytes(), None).unwrap_err();
        assert!(matches!(err, ManifestError::InlineData { .. }), "{err}");
        assert!(err.to_string().contains("hashes to"), "{err}");
        let wrong_size = artifact_json("").replace(r#""data":"e30=""#, r#""data":"e30K""#);
        let err = parse_manifest(wrong_size.as_bytes(), None).unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");
        let not_b64 = artifact_json("").replace(r#""data":"e30=""#, r#""data":"%%%""#);
        let err = parse_manifest(not_b64.as_bytes(), None).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
    }

    #[test]
    fn empty_descriptor_matches_the_spec_constants() {
        let e = Descriptor::empty();
        assert_eq!(e.digest.as_str(), EMPTY_DIGEST);
        assert_eq!(e.inline_data().unwrap().as_deref(), Some(EMPTY_CONTENT));
    }

    #[test]
    fn built_artifact_round_trips_through_the_parser() {
        let layer = Descriptor::new("application/x-yaml", Digest::of(b"a: 1\n"), 5);
        let m = ImageManifest::artifact("application/vnd.test", vec![layer], BTreeMap::new());
        let bytes = m.to_bytes();
        let parsed = parse_manifest(&bytes, Some(MEDIA_TYPE_OCI_MANIFEST)).unwrap();
        assert_eq!(parsed, Manifest::Image(Box::new(m)));
        // Empty optional fields are left out of what is pushed.
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !text.contains("subject") && !text.contains("urls"),
            "{text}"
        );
    }
}
