//! Where desired state comes from.
//!
//! A source answers one question per poll: has the desired state changed since the revision
//! last applied, and if so, what are its YAML documents? Today's source is an OCI artifact
//! polled by tag ([`oci`]); the Margo State Manifest API and a local directory for air-gapped
//! devices will sit behind the same [`Polled`] answer, so validation and everything after it
//! never depend on where the documents came from.

pub mod dir;
pub mod layer;
pub mod oci;

use crate::digest::Digest;
use std::path::Path;

/// The configured source of desired state.
#[derive(Debug, Clone)]
pub enum Source {
    /// `desired_state.reference`: an OCI artifact polled by tag.
    Oci(oci::OciSource),
    /// `desired_state.directory`: a local directory (air-gapped devices).
    Dir(dir::DirSource),
}

impl Source {
    /// The source the config names: `directory` when set, else `reference`.
    pub fn from_config(config: &crate::config::Config) -> Result<Source, String> {
        match &config.desired_state.directory {
            Some(d) => Ok(Source::Dir(dir::DirSource::new(d.clone()))),
            None => config
                .source_reference()
                .map(|r| Source::Oci(oci::OciSource::new(r))),
        }
    }

    /// One poll.
    pub fn poll(
        &self,
        client: &mut crate::oci::OciClient,
        known: oci::Known,
    ) -> Result<Polled, SourceError> {
        match self {
            Source::Oci(s) => s.poll(client, known),
            Source::Dir(s) => s.poll(known),
        }
    }

    /// The directory relative package and key locations are resolved in (dir source only).
    pub fn base_dir(&self) -> Option<&Path> {
        match self {
            Source::Oci(_) => None,
            Source::Dir(d) => Some(&d.dir),
        }
    }

    /// How the source is named in the journal and the state file.
    pub fn describe(&self) -> String {
        match self {
            Source::Oci(s) => s.reference.to_string(),
            Source::Dir(d) => format!("dir:{}", d.dir.display()),
        }
    }
}

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
