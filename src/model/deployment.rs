//! A validated `ApplicationDeployment`: the types the rest of the agent works with. They are
//! built only by [`super::validate`], so holding one means every field was checked: a
//! component has exactly one package source, parameters name existing components, names
//! fit compose. The accessors here (environment of a component, its compose project name,
//! the content digest) are pure functions of that data.
use crate::digest::{Digest, sha256_hex};
use crate::oci::reference::Reference;
use std::collections::BTreeMap;
use std::time::Duration;

/// How much of the deployment id goes into a compose project name, as the Margo reference
/// agent does (`<component>-<deploymentId[:8]>`).
const PROJECT_SUFFIX_LEN: usize = 8;

/// A deployment the agent can apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationDeployment {
    /// 1-based position among the non-empty documents it came from.
    pub index: usize,
    pub api_version: String,
    /// The deployment id (see the module docs for where it comes from).
    pub id: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub device_id: Option<String>,
    pub application_id: String,
    pub profile: ProfileType,
    pub components: Vec<Component>,
    /// Parameter name → value and targets.
    pub parameters: BTreeMap<String, Parameter>,
    pub(super) canonical_json: String,
    pub(super) content_digest: Digest,
}

/// The spelling of the Compose deployment profile type, kept for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileType {
    /// `compose` (current spec, SUP-01).
    Compose,
    /// `docker-compose` (older drafts, PoC).
    DockerCompose,
    /// `compose.v1` (WG-PROPOSAL-01).
    ComposeV1,
}

impl ProfileType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileType::Compose => "compose",
            ProfileType::DockerCompose => "docker-compose",
            ProfileType::ComposeV1 => "compose.v1",
        }
    }
}

/// One component: one Compose project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub source: PackageSource,
    /// Wait until every container runs (or is healthy) before reporting Installed.
    pub wait: bool,
    /// How long installing may take; `None` leaves it to the agent's default.
    pub timeout: Option<Duration>,
}

/// Where a component's Compose package comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    /// Older form: a URL (HTTPS, or an OCI blob URL) and optionally the signer's PGP key.
    Url {
        location: PackageUrl,
        key: Option<PackageUrl>,
    },
    /// Newer form (SUP-01): an OCI artifact `repository:revision`.
    Oci {
        /// The repository, without tag or digest.
        repository: Reference,
        revision: Revision,
    },
}

impl PackageSource {
    /// For the OCI form, the reference to pull: the repository at the revision's tag
    /// (SemVer with `+` stored as `_`) or pinned digest.
    pub fn oci_reference(&self) -> Option<Reference> {
        match self {
            PackageSource::Url { .. } => None,
            PackageSource::Oci {
                repository,
                revision: Revision::Version(v),
            } => Some(repository.with_tag(&v.replace('+', "_"))),
            PackageSource::Oci {
                repository,
                revision: Revision::Digest(d),
            } => Some(Reference {
                tag: None,
                digest: Some(d.clone()),
                ..repository.clone()
            }),
        }
    }
}

/// An `http://` or `https://` URL, checked for shape only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageUrl(pub(super) String);

impl PackageUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A path relative to the desired-state directory (no scheme), for the `dir` source.
    pub fn relative_path(&self) -> Option<&std::path::Path> {
        (!self.0.contains("://")).then(|| std::path::Path::new(&self.0))
    }

    /// True for `http://`: the fetcher refuses it unless the device allows insecure sources.
    pub fn is_plain_http(&self) -> bool {
        self.0.len() >= 7 && self.0[..7].eq_ignore_ascii_case("http://")
    }
}

/// A component's `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// SemVer without `v`, as written (`1.2.3+build.5`).
    Version(String),
    /// A pinned manifest digest (`sha256:…`), as one WG proposal writes it.
    Digest(Digest),
}

impl Revision {
    pub fn as_str(&self) -> &str {
        match self {
            Revision::Version(v) => v,
            Revision::Digest(d) => d.as_str(),
        }
    }
}

/// A parameter: its value and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub value: String,
    pub targets: Vec<Target>,
}

/// One target of a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The environment variable name.
    pub pointer: String,
    /// The components that receive it; empty means all of them.
    pub components: Vec<String>,
}

impl Target {
    pub(super) fn applies_to(&self, component: &str) -> bool {
        self.components.is_empty() || self.components.iter().any(|c| c == component)
    }
}

impl ApplicationDeployment {
    /// The canonical JSON form of the document (see [`super::document`]), the input of
    /// [`ApplicationDeployment::content_digest`].
    pub fn canonical_json(&self) -> &str {
        &self.canonical_json
    }

    /// SHA-256 of [`ApplicationDeployment::canonical_json`]: equal digests mean nothing the
    /// agent acts on changed, whatever happened to the YAML's formatting.
    pub fn content_digest(&self) -> &Digest {
        &self.content_digest
    }

    /// The component named `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The environment variables the parameters give `component` (pointer → value).
    pub fn env_for_component(&self, component: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for p in self.parameters.values() {
            for t in p.targets.iter().filter(|t| t.applies_to(component)) {
                env.insert(t.pointer.clone(), p.value.clone());
            }
        }
        env
    }

    /// The compose project name of `component` in this deployment.
    pub fn project_name(&self, component: &str) -> String {
        project_name(&self.id, component)
    }
}

/// `<component>-<suffix>` normalised to compose's project-name rules
/// (`^[a-z0-9][a-z0-9_-]*$`: lowercased, other characters dropped). The suffix is the first
/// 8 characters of the deployment id when those are hex (a UUID, as the Margo reference
/// agent assumes), else the first 8 hex digits of the id's SHA-256, so that name-derived ids
/// sharing a prefix (`digitron-a`, `digitron-b`) do not share a project.
pub fn project_name(deployment_id: &str, component: &str) -> String {
    let head = deployment_id.get(..PROJECT_SUFFIX_LEN);
    let suffix = match head {
        Some(h) if h.bytes().all(|b| b.is_ascii_hexdigit()) => h.to_ascii_lowercase(),
        _ => sha256_hex(deployment_id.as_bytes())[..PROJECT_SUFFIX_LEN].to_string(),
    };
    let raw = format!("{component}-{suffix}").to_ascii_lowercase();
    let kept: String = raw
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_string()
}
