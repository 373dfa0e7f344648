//! The `ApplicationDeployment` document as written on the wire, in both the older
//! (early-draft/PoC) and newer (SUP-01) forms, as plain serde types.
//!
//! Every field is optional and unknown fields are ignored, so a document from a newer WFM
//! still parses; deciding what is required is [`super::deployment`]'s job, where the error
//! can name the field. Scalars the agent passes on verbatim (`revision`, parameter
//! `value`) are `String`, so YAML hands over the text as written: `revision: 1.10` stays
//! `"1.10"` and `value: 030` stays `"030"`, never a float or an octal number.
//!
//! These types also define the *canonical form* used for change detection: the JSON
//! serialisation of a parsed [`DeploymentDocument`] (fields in declaration order, maps
//! sorted, absent fields omitted). It is independent of YAML formatting, comments, key
//! order and quoting, and it covers every field the agent acts on plus all annotations and
//! labels (a WFM may bump an annotation to force a redeploy). Fields the agent ignores do
//! not take part: a change the agent cannot act on is not a change.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One YAML document, as far as the agent reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDocument {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Top-level deployment id, as in a 2025 working-group proposal (see-thru gateways).
    /// `metadata.annotations.id` is the standard place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<Spec>,
}

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Newer drafts name the target device here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Older form: `id` and `applicationId` live here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, Option<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Option<String>>>,
}

/// `spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Newer form; the older one has `metadata.annotations.applicationId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_profile: Option<DeploymentProfile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, ParameterDoc>>,
}

/// `spec.deploymentProfile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct DeploymentProfile {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub profile_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<ComponentDoc>>,
}

/// One entry of `spec.deploymentProfile.components`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ComponentDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<ComponentProperties>,
}

/// A component's `properties`, union of both forms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentProperties {
    /// Older form: HTTPS (or OCI blob) URL of the package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_location: Option<String>,
    /// Older form: URL of the armored PGP public key that signed the package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_location: Option<String>,
    /// Newer form (SUP-01): `oci://registry/repository`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Newer form: SemVer without `v`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Go-style duration, `##m##s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// One entry of `spec.parameters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ParameterDoc {
    /// The scalar as written (strings, numbers and booleans all arrive as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<TargetDoc>>,
}

/// One entry of a parameter's `targets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct TargetDoc {
    /// For Compose, the name of the environment variable that receives the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
}
