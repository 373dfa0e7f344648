//! Why a desired state or one of its deployments was refused.
//!
//! Two stable codes go into DeploymentStatus reports: `ERR_DESIRED_STATE_INVALID` when the
//! set of documents as a whole cannot be used (not YAML, too large, a document of another
//! kind, two documents claiming one deployment id), and `ERR_DEPLOYMENT_INVALID` when one
//! `ApplicationDeployment` parses but fails validation; that variant names the deployment
//! so the caller can report it as Failed. The messages say what was refused and why; the
//! caller adds what it does next (keep the current workloads).

/// Stable code: the desired state as a whole is unusable.
pub const ERR_DESIRED_STATE_INVALID: &str = "ERR_DESIRED_STATE_INVALID";
/// Stable code: one deployment document fails validation.
pub const ERR_DEPLOYMENT_INVALID: &str = "ERR_DEPLOYMENT_INVALID";

/// A refused desired state. Documents are numbered from 1 in input order, counting only
/// non-empty documents (an empty `---` section is skipped, as YAML loaders do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("desired state is {size} bytes, over the {max}-byte cap")]
    TooLarge { size: usize, max: usize },

    #[error("desired state is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },

    #[error("desired state is not valid YAML: {message}")]
    Yaml { message: String },

    #[error("desired state holds more than {max} documents")]
    TooManyDocuments { max: usize },

    #[error("document {index} is {what}, not an ApplicationDeployment")]
    WrongKind { index: usize, what: String },

    #[error("documents {first} and {second} both declare deployment id {id:?}")]
    DuplicateId {
        id: String,
        first: usize,
        second: usize,
    },

    #[error(
        "deployments {first:?} and {second:?} would share the compose project {project:?}; \
         rename a component"
    )]
    ProjectClash {
        project: String,
        first: String,
        second: String,
    },

    #[error(
        "document {index} ({}) is invalid: {}",
        describe(id.as_deref(), name.as_deref()),
        located(field, reason)
    )]
    Invalid {
        /// 1-based document number.
        index: usize,
        /// The deployment id, when the document got far enough to have one.
        id: Option<String>,
        /// `metadata.name`, when present.
        name: Option<String>,
        /// Where in the document, e.g. `spec.deploymentProfile.components[0].properties`;
        /// empty when the reason carries a line and column instead.
        field: String,
        reason: String,
    },
}

fn describe(id: Option<&str>, name: Option<&str>) -> String {
    match (id, name) {
        (Some(id), Some(name)) if id != name => format!("deployment {id:?}, name {name:?}"),
        (Some(id), _) => format!("deployment {id:?}"),
        (None, Some(name)) => format!("name {name:?}"),
        (None, None) => "no id".to_string(),
    }
}

fn located(field: &str, reason: &str) -> String {
    if field.is_empty() {
        reason.to_string()
    } else {
        format!("{field}: {reason}")
    }
}

impl ModelError {
    /// The stable code for status reports.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Invalid { .. } => ERR_DEPLOYMENT_INVALID,
            _ => ERR_DESIRED_STATE_INVALID,
        }
    }

    /// The deployment this error is about, when one is known; the caller reports that
    /// deployment as Failed with [`ModelError::code`] and this message.
    pub fn deployment_id(&self) -> Option<&str> {
        match self {
            ModelError::Invalid { id, .. } => id.as_deref(),
            ModelError::DuplicateId { id, .. } => Some(id),
            _ => None,
        }
    }
}
