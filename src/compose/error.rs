//! The compose engine's one error type, and the warnings it hands back beside a result.
//!
//! Every variant carries where in the project the problem is: a dotted path into the
//! compose file (`services.web.ports[0]`), a service and key, or a file and line. The
//! messages are written to be read in the journal by someone who has the compose file in
//! front of them; [`ComposeError::code`] gives the stable code that goes into the Margo
//! `DeploymentStatus`.

use std::fmt;
use std::path::PathBuf;

/// Why a compose project could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// A file of the package (compose file, `.env`, `env_file`) could not be read.
    #[error("cannot read {}: {reason}", file.display())]
    Read { file: PathBuf, reason: String },

    /// A file is over its size cap (the cap is in the message, see the `*_MAX_BYTES` consts).
    #[error("{} is {size} bytes, over the {max}-byte cap for {what}", file.display())]
    TooLarge {
        file: PathBuf,
        what: &'static str,
        size: u64,
        max: u64,
    },

    /// The compose file is not well-formed YAML, or not one single document.
    #[error("{} is not a valid compose file: {reason}", file.display())]
    Yaml { file: PathBuf, reason: String },

    /// A `.env` or `env_file` line could not be parsed.
    #[error("{} line {line}: {reason}", file.display())]
    EnvFile {
        file: PathBuf,
        line: usize,
        reason: String,
    },

    /// `${VAR:?message}` found the variable missing, or a `$` expression is malformed.
    #[error("{path}: {reason}")]
    Interpolation {
        path: String,
        /// The variable named in the expression, when the expression got that far.
        variable: Option<String>,
        reason: String,
    },

    /// A value has the wrong YAML type (`ports: 80` where a list is needed).
    #[error("{path}: expected {expected}, found {found}")]
    Type {
        path: String,
        expected: &'static str,
        found: &'static str,
    },

    /// A value has the right type but is not acceptable (port 70000, `../` escaping the
    /// project directory, `depends_on` naming an unknown service, …).
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },

    /// A key the compose specification knows but margo-agent refuses (with the reason), or a
    /// key that is in no specification.
    #[error("{}key {key:?} is not supported: {reason}", service_prefix(service))]
    Unsupported {
        service: Option<String>,
        key: String,
        reason: String,
    },

    /// `depends_on` (or `network_mode: service:`) forms a cycle, named in order.
    #[error("services depend on each other in a cycle: {}", cycle.join(" -> "))]
    DependencyCycle { cycle: Vec<String> },
}

fn service_prefix(service: &Option<String>) -> String {
    match service {
        Some(s) => format!("service {s:?}: "),
        None => String::new(),
    }
}

impl ComposeError {
    /// The stable code reported in the Margo deployment status for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            ComposeError::Read { .. } => "ERR_COMPOSE_READ",
            ComposeError::Interpolation { .. } => "ERR_COMPOSE_INTERPOLATION",
            ComposeError::Unsupported { .. } => "ERR_COMPOSE_UNSUPPORTED",
            ComposeError::TooLarge { .. }
            | ComposeError::Yaml { .. }
            | ComposeError::EnvFile { .. }
            | ComposeError::Type { .. }
            | ComposeError::Invalid { .. }
            | ComposeError::DependencyCycle { .. } => "ERR_COMPOSE_INVALID",
        }
    }

    pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> ComposeError {
        ComposeError::Invalid {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(
        service: Option<&str>,
        key: &str,
        reason: impl Into<String>,
    ) -> ComposeError {
        ComposeError::Unsupported {
            service: service.map(str::to_string),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// Something the engine accepted but the operator should know about. Returned beside a
/// successfully loaded project; the caller logs each one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Warning {
    /// `$VAR` or `${VAR}` without a default, and `VAR` is not set: the value became empty.
    UnsetVariable { variable: String, path: String },
    /// A key that has no effect on a single Podman host (swarm-only settings and the like).
    Ignored { path: String, reason: &'static str },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnsetVariable { variable, path } => write!(
                f,
                "{path}: variable {variable:?} is not set; using an empty string"
            ),
            Warning::Ignored { path, reason } => write!(f, "{path}: ignored: {reason}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn unsupported_key_message_names_service_key_and_reason() {
        let e = ComposeError::unsupported(
            Some("web"),
            "build",
            "margo-agent runs prebuilt images only",
        );
        assert_eq!(
            e.to_string(),
            "service \"web\": key \"build\" is not supported: margo-agent runs prebuilt images only"
        );
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
    }

    #[test]
    fn cycle_message_lists_the_services_in_order() {
        let e = ComposeError::DependencyCycle {
            cycle: vec!["a".into(), "b".into(), "a".into()],
        };
        assert_eq!(
            e.to_string(),
            "services depend on each other in a cycle: a -> b -> a"
        );
        assert_eq!(e.code(), "ERR_COMPOSE_INVALID");
    }
}
