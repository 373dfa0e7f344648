//! Margo documents as plain serde types, and the validation that turns a desired state
//! (one or more `ApplicationDeployment` YAML documents) into deployments the agent can apply.
//!
//! Owns: [`parse_documents`] (multi-document YAML → validated [`ApplicationDeployment`]s),
//! the wire form of both the older (early draft / PoC: `packageLocation`, ids in
//! annotations) and the newer (SUP-01: `repository` + `revision`, `spec.applicationId`)
//! documents in [`document`], the checks in [`validate`] and [`fields`], the validated types
//! in [`deployment`], and [`ModelError`].
//!
//! Refuses, as a whole: input over [`DOCUMENTS_MAX_BYTES`] or with more than
//! [`DOCUMENTS_MAX_COUNT`] documents, text that is not UTF-8 YAML, any document that is not an
//! `ApplicationDeployment`, two documents with one deployment id, and two deployments whose
//! components would share a compose project. A desired state is applied all or nothing, so
//! one invalid deployment refuses the set; the error names that deployment so the caller can
//! report it Failed while keeping what runs.
//!
//! Shape: every source (OCI tag, State Manifest API, directory) hands its bytes here, so all
//! of them get the same validation. Unknown fields are ignored (a newer WFM may add some);
//! fields the agent acts on are checked. Parsing is two passes over the same text with
//! serde-saphyr's per-document reader: the first into untyped values, only to say what each
//! document *is* (a `DeviceCapabilities` gets "document 2 is a DeviceCapabilities", not a
//! type error); the second into [`DeploymentDocument`], whose `String` fields keep scalars as
//! written. Change detection hashes the canonical JSON of the second (see [`document`]).

pub mod deployment;
pub mod document;
pub mod error;
pub mod fields;
pub mod validate;

pub use deployment::{
    ApplicationDeployment, Component, PackageSource, PackageUrl, Parameter, ProfileType, Revision,
    Target, project_name,
};
pub use document::DeploymentDocument;
pub use error::{ERR_DEPLOYMENT_INVALID, ERR_DESIRED_STATE_INVALID, ModelError};

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Cursor;

/// Largest desired state accepted, all documents together. A device's deployments are a
/// few KiB each; 1 MiB leaves room for hundreds while keeping a malicious input from
/// costing the parser real memory.
pub const DOCUMENTS_MAX_BYTES: usize = 1024 * 1024;
/// Most non-empty documents accepted in one desired state; far more deployments than a
/// standalone device runs.
pub const DOCUMENTS_MAX_COUNT: usize = 256;

/// Parses and validates a desired state: YAML documents separated by `---`, empty ones
/// skipped. Documents are numbered from 1 among the non-empty ones in error messages.
pub fn parse_documents(bytes: &[u8]) -> Result<Vec<ApplicationDeployment>, ModelError> {
    if bytes.len() > DOCUMENTS_MAX_BYTES {
        return Err(ModelError::TooLarge {
            size: bytes.len(),
            max: DOCUMENTS_MAX_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ModelError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;

    // Pass 1: what each document is, and what it calls itself (for messages).
    let mut headers = Vec::new();
    for item in serde_saphyr::read_with_options::<_, Value>(&mut Cursor::new(text), options()) {
        let value = item.map_err(|e| ModelError::Yaml {
            message: e.to_string(),
        })?;
        headers.push(Header::of(headers.len() + 1, &value)?);
        if headers.len() > DOCUMENTS_MAX_COUNT {
            return Err(ModelError::TooManyDocuments {
                max: DOCUMENTS_MAX_COUNT,
            });
        }
    }

    // Pass 2: the typed documents, validated one by one.
    let mut out: Vec<ApplicationDeployment> = Vec::with_capacity(headers.len());
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let mut input = Cursor::new(text);
    let reader = serde_saphyr::read_with_options::<_, DeploymentDocument>(&mut input, options());
    for (i, item) in reader.enumerate() {
        let index = i + 1;
        let doc = item.map_err(|e| {
            let h = headers.get(i);
            ModelError::Invalid {
                index,
                id: h.and_then(|h| h.id.clone()),
                name: h.and_then(|h| h.name.clone()),
                field: String::new(),
                reason: e.to_string(),
            }
        })?;
        let d = validate::validate(doc, index)?;
        if let Some(first) = ids.insert(d.id.clone(), index) {
            return Err(ModelError::DuplicateId {
                id: d.id,
                first,
                second: index,
            });
        }
        out.push(d);
    }
    if out.len() != headers.len() {
        // Both passes skip the same empty documents; a mismatch means the reader disagreed
        // with itself, and guessing which document is which would be worse than refusing.
        return Err(ModelError::Yaml {
            message: format!(
                "found {} documents on one reading and {} on another",
                headers.len(),
                out.len()
            ),
        });
    }
    check_projects(&out)?;
    Ok(out)
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // Messages go to the journal: one line, no source snippet.
        with_snippet: false,
        // `value: .nan` is a string to us; never a reason to refuse the document.
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(DOCUMENTS_MAX_BYTES),
        },
    }
}

/// What a document says about itself, read leniently.
struct Header {
    id: Option<String>,
    name: Option<String>,
}

impl Header {
    fn of(index: usize, v: &Value) -> Result<Header, ModelError> {
        let Value::Object(map) = v else {
            let what = match v {
                Value::Array(_) => "a list",
                Value::String(_) => "a plain string",
                _ => "a single value",
            };
            return Err(ModelError::WrongKind {
                index,
                what: what.into(),
            });
        };
        match map.get("kind") {
            Some(Value::String(k)) if k == validate::KIND => {}
            Some(Value::String(k)) => {
                return Err(ModelError::WrongKind {
                    index,
                    what: format!("a {k}"),
                });
            }
            Some(_) => {
                return Err(ModelError::WrongKind {
                    index,
                    what: "a document whose kind is not text".into(),
                });
            }
            None => {
                return Err(ModelError::WrongKind {
                    index,
                    what: "a document without kind".into(),
                });
            }
        }
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let metadata = map.get("metadata");
        let name = text(metadata.and_then(|m| m.get("name")));
        let id = text(
            metadata
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get("id")),
        )
        .or_else(|| text(map.get("id")))
        .or_else(|| name.clone());
        Ok(Header { id, name })
    }
}

/// Two deployments whose components map to one compose project would fight over the same
/// containers; refuse rather than let the second silently take over the first.
fn check_projects(deployments: &[ApplicationDeployment]) -> Result<(), ModelError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for d in deployments {
        for c in &d.components {
            let project = d.project_name(&c.name);
            match seen.get(project.as_str()) {
                Some(first) if *first != d.id => {
                    return Err(ModelError::ProjectClash {
                        project,
                        first: (*first).to_string(),
                        second: d.id.clone(),
                    });
                }
                _ => {
                    seen.insert(project, &d.id);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests;
