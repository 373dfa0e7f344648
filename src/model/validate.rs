//! From a parsed [`DeploymentDocument`] to an [`ApplicationDeployment`]: refuses anything the
//! agent could not apply as written and says which field is wrong, by its path in the
//! document (`spec.deploymentProfile.components[0] ("web").properties.revision`).
//!
//! What validation decides, and why:
//! - **Deployment id.** `metadata.annotations.id` (the standard place, also the State
//!   Manifest API's `deploymentId`), else a top-level `id` (a 2025 WG proposal), else
//!   `metadata.name` (PoC files without annotations; the name is unique per namespace in
//!   the WFM's store). Two of the id spellings present but different is an error, not a
//!   guess. Ids go into URL paths, container labels and file names, so they are limited
//!   to `[A-Za-z0-9._-]`.
//! - **Application id** from `spec.applicationId` (newer) or
//!   `metadata.annotations.applicationId` (older); both present and different is an error.
//! - **Profile** must be a Compose type (`compose`, `docker-compose`, `compose.v1`); a
//!   `helm.v3` deployment was sent to the wrong device and is refused as such.
//! - **Components**: at least one; names usable in container and project names and unique
//!   after compose's project-name normalisation; exactly one package source each, either
//!   `packageLocation` (+ optional `keyLocation`) or `repository` + `revision`. A
//!   `keyLocation` beside `repository` is refused rather than ignored: silently dropping a
//!   signing key would install a package its author expected to be verified. Plain `http://`
//!   locations parse here; whether they may be used is the fetcher's decision.
//! - **Parameters** become environment variables: a target's `pointer` must be a valid
//!   variable name, its `components` must exist (an empty or missing list means every
//!   component), and two parameters giving one variable of one component different values
//!   is an error. Values are the YAML scalar text; a missing value is the empty string.

use super::deployment::{
    ApplicationDeployment, Component, PackageSource, Parameter, ProfileType, Target,
};
use super::document::{ComponentDoc, DeploymentDocument, ParameterDoc};
use super::error::ModelError;
use super::fields::{
    APPLICATION_ID_MAX_LEN, DEPLOYMENT_ID_MAX_LEN, check_component_name, check_env_name,
    check_identifier, oci_repository, package_url, parse_revision,
};
use super::project_name;
use crate::digest::Digest;
use crate::units::parse_duration;
use std::collections::BTreeMap;

/// The API group every accepted `apiVersion` belongs to.
pub const API_GROUP: &str = "application.margo.org";
/// `apiVersion` values this agent reads; another version of the group is refused by name.
pub const SUPPORTED_API_VERSIONS: &[&str] =
    &["application.margo.org/v1alpha1", "application.margo.org/v1"];
/// The only `kind` this module accepts.
pub const KIND: &str = "ApplicationDeployment";

/// What validation knows about the document so far, for error messages.
struct Ctx {
    index: usize,
    id: Option<String>,
    name: Option<String>,
}

impl Ctx {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ModelError {
        ModelError::Invalid {
            index: self.index,
            id: self.id.clone(),
            name: self.name.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Validates document number `index` (1-based) into an [`ApplicationDeployment`].
pub fn validate(
    doc: DeploymentDocument,
    index: usize,
) -> Result<ApplicationDeployment, ModelError> {
    let canonical_json = serde_json::to_string(&doc).map_err(|e| ModelError::Invalid {
        index,
        id: None,
        name: None,
        field: "(document)".into(),
        reason: format!("cannot be serialised for hashing: {e}"),
    })?;
    let DeploymentDocument {
        api_version,
        kind,
        id: top_id,
        metadata,
        spec,
    } = doc;
    let metadata = metadata.unwrap_or_default();
    let spec = spec.unwrap_or_default();
    let annotations = metadata.annotations.unwrap_or_default();
    let annotation = |key: &str| annotations.get(key).cloned().flatten();
    let mut ctx = Ctx {
        index,
        id: None,
        name: metadata.name.clone(),
    };

    match kind.as_deref() {
        Some(KIND) => {}
        Some(other) => {
            return Err(ModelError::WrongKind {
                index,
                what: format!("a {other}"),
            });
        }
        None => {
            return Err(ModelError::WrongKind {
                index,
                what: "a document without kind".into(),
            });
        }
    }

    let (id_field, id) = match (annotation("id"), top_id, metadata.name.clone()) {
        (Some(a), Some(t), _) if a != t => {
            return Err(ctx.err(
                "metadata.annotations.id",
                format!("{a:?} differs from the top-level id {t:?}; which one is meant is unclear"),
            ));
        }
        (Some(a), _, _) => ("metadata.annotations.id", a),
        (None, Some(t), _) => ("id", t),
        (None, None, Some(n)) => ("metadata.name", n),
        (None, None, None) => {
            return Err(ctx.err(
                "metadata.annotations.id",
                "missing; a deployment needs an id (metadata.annotations.id, or at least metadata.name)",
            ));
        }
    };
    check_identifier(&id, DEPLOYMENT_ID_MAX_LEN).map_err(|r| ctx.err(id_field, r))?;
    ctx.id = Some(id.clone());

    let api_version = match api_version {
        None => return Err(ctx.err("apiVersion", "missing")),
        Some(v) if SUPPORTED_API_VERSIONS.contains(&v.as_str()) => v,
        Some(v) if v.starts_with(&format!("{API_GROUP}/")) => {
            return Err(ctx.err(
                "apiVersion",
                format!(
                    "{v:?} is a version this agent does not read (it reads {})",
                    SUPPORTED_API_VERSIONS.join(", ")
                ),
            ));
        }
        Some(v) => {
            return Err(ctx.err(
                "apiVersion",
                format!("{v:?} is not in the {API_GROUP} API group"),
            ));
        }
    };

    let application_id = match (spec.application_id, annotation("applicationId")) {
        (Some(s), Some(a)) if s != a => {
            return Err(ctx.err(
                "spec.applicationId",
                format!("{s:?} differs from metadata.annotations.applicationId {a:?}"),
            ));
        }
        (Some(s), _) => s,
        (None, Some(a)) => a,
        (None, None) => {
            return Err(ctx.err(
                "spec.applicationId",
                "missing (neither spec.applicationId nor metadata.annotations.applicationId is set)",
            ));
        }
    };
    check_identifier(&application_id, APPLICATION_ID_MAX_LEN)
        .map_err(|r| ctx.err("spec.applicationId", r))?;

    let profile_doc = spec
        .deployment_profile
        .ok_or_else(|| ctx.err("spec.deploymentProfile", "missing"))?;
    let profile = profile_type(profile_doc.profile_type.as_deref())
        .map_err(|r| ctx.err("spec.deploymentProfile.type", r))?;
    let component_docs = profile_doc.components.unwrap_or_default();
    if component_docs.is_empty() {
        return Err(ctx.err(
            "spec.deploymentProfile.components",
            "empty; a deployment needs at least one component",
        ));
    }
    let mut components = Vec::with_capacity(component_docs.len());
    let mut projects = BTreeMap::new();
    for (i, c) in component_docs.into_iter().enumerate() {
        let field = format!("spec.deploymentProfile.components[{i}]");
        let component = component(c, &field, &ctx)?;
        let project = project_name(&id, &component.name);
        if let Some(earlier) = projects.insert(project, component.name.clone()) {
            return Err(ctx.err(
                format!("{field}.name"),
                format!(
                    "{:?} is the same as component {earlier:?} once lowercased for compose",
                    component.name
                ),
            ));
        }
        components.push(component);
    }

    let parameters = parameters(spec.parameters.unwrap_or_default(), &components, &ctx)?;
    let content_digest = Digest::of(canonical_json.as_bytes());
    Ok(ApplicationDeployment {
        index,
        api_version,
        id,
        name: metadata.name,
        namespace: metadata.namespace,
        device_id: metadata.device_id,
        application_id,
        profile,
        components,
        parameters,
        canonical_json,
        content_digest,
    })
}

fn profile_type(t: Option<&str>) -> Result<ProfileType, String> {
    let Some(t) = t else {
        return Err("missing; this device runs type compose".into());
    };
    match t.to_ascii_lowercase().as_str() {
        "compose" => Ok(ProfileType::Compose),
        "docker-compose" => Ok(ProfileType::DockerCompose),
        "compose.v1" => Ok(ProfileType::ComposeV1),
        "helm.v3" | "helm" => Err(format!(
            "{t:?} deploys to Kubernetes clusters; this device runs Compose only \
             (compose, docker-compose, compose.v1)"
        )),
        _ => Err(format!(
            "{t:?} is not a profile type this device runs (compose, docker-compose, compose.v1)"
        )),
    }
}

fn component(c: ComponentDoc, field: &str, ctx: &Ctx) -> Result<Component, ModelError> {
    let name = c
        .name
        .ok_or_else(|| ctx.err(format!("{field}.name"), "missing"))?;
    check_component_name(&name).map_err(|r| ctx.err(format!("{field}.name"), r))?;
    let field = format!("{field} ({name:?}).properties");
    let p = c.properties.ok_or_else(|| {
        ctx.err(
            &field,
            "missing; a component names its package with packageLocation, or repository and revision",
        )
    })?;
    let source = match (p.package_location, p.repository, p.revision) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(ctx.err(
                &field,
                "has both packageLocation and repository/revision; a component names exactly one package source",
            ));
        }
        (Some(location), None, None) => PackageSource::Url {
            location: package_url(&location)
                .map_err(|r| ctx.err(format!("{field}.packageLocation"), r))?,
            key: p
                .key_location
                .map(|k| package_url(&k))
                .transpose()
                .map_err(|r| ctx.err(format!("{field}.keyLocation"), r))?,
        },
        (None, Some(repository), Some(revision)) => {
            if p.key_location.is_some() {
                return Err(ctx.err(
                    format!("{field}.keyLocation"),
                    "only applies to packageLocation; an OCI package (repository) is not verified with a PGP key",
                ));
            }
            PackageSource::Oci {
                repository: oci_repository(&repository)
                    .map_err(|r| ctx.err(format!("{field}.repository"), r))?,
                revision: parse_revision(&revision)
                    .map_err(|r| ctx.err(format!("{field}.revision"), r))?,
            }
        }
        (None, Some(_), None) => {
            return Err(ctx.err(
                format!("{field}.revision"),
                "missing; repository needs a revision",
            ));
        }
        (None, None, Some(_)) => {
            return Err(ctx.err(
                format!("{field}.repository"),
                "missing; revision needs a repository",
            ));
        }
        (None, None, None) => {
            return Err(ctx.err(
                &field,
                "names no package; set packageLocation, or repository and revision",
            ));
        }
    };
    let timeout = match p.timeout {
        None => None,
        Some(t) => match parse_duration(&t) {
            Ok(d) if d.is_zero() => {
                return Err(ctx.err(format!("{field}.timeout"), "must be longer than 0s"));
            }
            Ok(d) if d > super::fields::COMPONENT_TIMEOUT_MAX => {
                return Err(ctx.err(
                    format!("{field}.timeout"),
                    format!(
                        "{t:?} is over the {} limit",
                        crate::units::format_duration(super::fields::COMPONENT_TIMEOUT_MAX)
                    ),
                ));
            }
            Ok(d) => Some(d),
            Err(e) => return Err(ctx.err(format!("{field}.timeout"), e)),
        },
    };
    Ok(Component {
        name,
        source,
        wait: p.wait.unwrap_or(false),
        timeout,
    })
}

fn parameters(
    docs: BTreeMap<String, ParameterDoc>,
    components: &[Component],
    ctx: &Ctx,
) -> Result<BTreeMap<String, Parameter>, ModelError> {
    let mut out = BTreeMap::new();
    // (component, variable) → (parameter, value) that set it, to catch two values for one
    // variable.
    let mut assigned: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    for (pname, p) in docs {
        let value = p.value.unwrap_or_default();
        let mut targets = Vec::new();
        for (i, t) in p.targets.unwrap_or_default().into_iter().enumerate() {
            let field = format!("spec.parameters.{pname}.targets[{i}]");
            let pointer = t
                .pointer
                .ok_or_else(|| ctx.err(format!("{field}.pointer"), "missing"))?;
            check_env_name(&pointer).map_err(|r| ctx.err(format!("{field}.pointer"), r))?;
            let names = t.components.unwrap_or_default();
            for n in &names {
                if !components.iter().any(|c| &c.name == n) {
                    return Err(ctx.err(
                        format!("{field}.components"),
                        format!("names component {n:?}, which this deployment does not have"),
                    ));
                }
            }
            let target = Target {
                pointer,
                components: names,
            };
            for c in components.iter().filter(|c| target.applies_to(&c.name)) {
                let key = (c.name.clone(), target.pointer.clone());
                match assigned.get(&key) {
                    Some((other, v)) if *v != value => {
                        return Err(ctx.err(
                            format!("{field}.pointer"),
                            format!(
                                "{:?} of component {:?} is also set by parameter {other:?} to a different value",
                                target.pointer, c.name
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        assigned.insert(key, (pname.clone(), value.clone()));
                    }
                }
            }
            targets.push(target);
        }
        out.insert(pname, Parameter { value, targets });
    }
    Ok(out)
}
