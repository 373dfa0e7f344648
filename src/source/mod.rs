//! Where desired state comes from.
//!
//! A source answers one question per poll: has the desired state changed since the revision
//! last applied, and if so, what are its YAML documents? Today's source is an OCI artifact
//! polled by tag ([`oci`]); the Margo State Manifest API and a local directory for air-gapped
//! devices will sit behind the same [`Polled`] answer, so validation and everything after it
//! never depend on where the documents came from.

pub mod layer;
pub mod oci;

use crate::digest::Digest;

/// The manifest annotation that carries a monotonic version (rollback protection).
pub const VERSION_ANNOTATION: &str = "org.margo.ApplicationDeployment.version";

/// An identified revision of the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// Content digest identifying the revision (the manifest digest for OCI).
    pub digest: Digest,
    /// Monotonic version, when the source carries one.
    pub version: Option<u64>,
}

/// The answer of a poll.
#[derive(Debug)]
pub enum Polled {
    /// Same revision as the one known: nothing else was fetched.
    Unchanged,
    /// A new revision with its YAML files.
    Changed {
        revision: Revision,
        files: Vec<layer::YamlFile>,
    },
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not be reached or answered with a transient failure: retry later.
    #[error("{0}")]
    Unreachable(String),
    /// The revision itself is broken (bad digest, wrong layer count or media type, oversized,
    /// version not increasing): refused; the running workloads stay as they are.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        digest: Option<Digest>,
    },
}

/// Parses the version annotation: a non-negative integer (e.g. a counter or `YYYYmmddHHMMSS`).
pub fn parse_version(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("annotation {VERSION_ANNOTATION}={s:?} is not a non-negative integer"))
}

/// Rollback protection: a revision carrying a version must be newer than the applied one.
pub fn check_version(new: Option<u64>, applied: Option<u64>) -> Result<(), String> {
    match (new, applied) {
        (Some(n), Some(a)) if n <= a => Err(format!(
            "version {n} is not greater than the applied version {a}; refusing a rollback"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_must_increase_when_present() {
        assert!(check_version(Some(3), Some(2)).is_ok());
        assert!(check_version(Some(2), Some(2)).is_err());
        assert!(check_version(Some(1), Some(2)).is_err());
        assert!(check_version(Some(1), None).is_ok());
        assert!(check_version(None, Some(5)).is_ok());
        assert_eq!(parse_version(" 20251023120000 "), Ok(20251023120000));
        assert!(parse_version("v2").is_err());
        assert!(parse_version("-1").is_err());
    }
}
