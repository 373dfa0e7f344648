//! The compose engine: a compose package directory in, a validated [`Project`] and a
//! [`Plan`] against Podman's containers out.
//!
//! margo-agent runs Compose projects itself over libpod's REST API; there is no compose CLI
//! on the device. This module is the pure part of that engine (the only I/O is reading the
//! compose file, `.env` and `env_file`s inside the package directory), except `apply`, which
//! executes a plan through `podman::` and waits for the result.
//!
//! Data flow, one file per step:
//!
//! | step | file | |
//! |---|---|---|
//! | YAML → tree, caps, merge keys | [`tree`] | one document, [`COMPOSE_FILE_MAX_BYTES`] |
//! | `$VAR` interpolation | [`interpolate`] | values only, path in every error |
//! | `.env` / `env_file` | [`dotenv`] | |
//! | top level, networks, volumes | [`mod@file`] | `x-*` dropped before interpolation |
//! | one service, key by key | [`service`], [`mounts`], [`lifecycle`], [`isolation`] | |
//! | ports, volume strings, commands, signals | [`syntax`] | |
//! | names, env merge, references, validation | [`project`] | |
//! | relative paths kept inside the package | [`paths`] | |
//! | dependency order and cycles | [`order`] | |
//! | what may reach the host (device policy), bind sources | [`policy`] | `ERR_POLICY` |
//! | libpod bodies, labels, config hash | [`libpod`] | |
//! | desired vs actual | [`mod@plan`] | |
//!
//! # Supported
//! Top level: `name`, `version` (ignored), `services`, `networks` (`driver: bridge`,
//! `internal`, `external`, `name`, `labels`, `enable_ipv6`, `ipam.config` subnet/gateway),
//! `volumes` (`driver: local`, `driver_opts`, `external`, `name`, `labels`), `secrets` and
//! `configs` from a `file:` in the package, `x-*`, YAML anchors and merge keys.
//!
//! Service keys: see [`service::SUPPORTED_SERVICE_KEYS`] and `docs/compose.md`. `deploy`
//! supports `resources.limits` (`cpus`, `memory`, `pids`), `resources.reservations.memory`,
//! `restart_policy` (`condition`, `max_attempts`), `replicas` (also `scale`; containers
//! `<project>-<service>-<n>`) and `mode: replicated`;
//! swarm-only `deploy` keys and CPU reservations are ignored with a [`Warning`].
//!
//! # Refused
//! Anything else is an error naming the key and the service, with a reason
//! ([`service::REFUSED_SERVICE_KEYS`]): `build`, `develop`, `extends`, `include`,
//! `deploy.mode: global`, `runtime`, `volumes_from`, `userns_mode`,
//! `cgroup_parent`, Windows-only keys, … Refusing is deliberate: a device that silently
//! ignores a key runs something other than what was deployed.
//!
//! # Design choices
//! - **Paths resolve at load, not at create.** Relative bind sources and `env_file`s are made
//!   absolute (and confined to the package directory) while loading, so an escape is an
//!   error before anything runs and the config hash sees the real source. The project
//!   directory therefore lives in [`Project`]/[`ServiceSpec`], not in [`CreateContext`].
//! - **The plan takes the [`CreateContext`].** What the agent injects (OTEL environment, its
//!   labels) reaches the container, so it is part of the config hash; a plan without it
//!   could not notice a changed collector endpoint.
//! - **Networks and volumes are ensured only alongside a container create.** Creation is
//!   idempotent (ignore-if-exists), and skipping it when nothing is created keeps a second
//!   plan on unchanged state empty without listing networks and volumes.

pub mod apply;
pub mod dotenv;
pub mod error;
pub mod file;
pub mod health;
pub mod interpolate;
pub mod isolation;
pub mod libpod;
pub mod lifecycle;
pub mod mounts;
pub mod observe;
pub mod order;
pub mod paths;
pub mod plan;
pub mod policy;
pub mod project;
pub mod service;
pub mod syntax;
pub mod tree;

pub use error::{ComposeError, Warning};
pub use interpolate::Lookup;
pub use libpod::CreateContext;
pub use plan::{Action, ActualContainer, ActualNetwork, Plan, RemoveReason, plan, plan_removal};
pub use project::{NetworkSpec, Project, ServiceNetwork, ServiceSpec, VolumeSpec};
pub use tree::COMPOSE_FILE_MAX_BYTES;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// File names looked for in a package directory, in the compose specification's order (one
/// list, owned by the package layout rules).
pub use crate::package::COMPOSE_FILE_NAMES;

/// How to load a project besides its directory.
pub struct LoadOptions<'a> {
    /// The project name the caller chose (the agent uses `<component>-<deployment[:8]>`).
    /// Falls back to the file's `name:`, then to the directory name. Normalised either way.
    pub project_name: Option<&'a str>,
    /// Variables for interpolation (the agent passes the deployment's Margo parameters only;
    /// its own process environment is not visible to workloads). The package's `.env` fills
    /// in only names this returns `None` for.
    pub variables: Lookup<'a>,
    /// Active profiles; services with `profiles` run only when one is active.
    pub profiles: &'a [String],
}

/// A loaded project and what the operator should be told about it.
#[derive(Debug)]
pub struct Loaded {
    pub project: Project,
    /// One per unset variable (its first use) and per ignored key.
    pub warnings: Vec<Warning>,
}

/// The compose file of a package directory.
pub fn find_compose_file(dir: &Path) -> Result<PathBuf, ComposeError> {
    COMPOSE_FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| ComposeError::Read {
            file: dir.to_path_buf(),
            reason: format!(
                "no compose file in the directory (looked for {})",
                COMPOSE_FILE_NAMES.join(", ")
            ),
        })
}

/// Loads the project in package directory `dir` from its compose file (see
/// [`COMPOSE_FILE_NAMES`]).
pub fn load(dir: &Path, opts: &LoadOptions<'_>) -> Result<Loaded, ComposeError> {
    load_file(&find_compose_file(dir)?, opts)
}

/// Loads the project of `config_file`, whose directory is the project directory: reads the
/// file and the directory's `.env`, interpolates, validates and normalises.
pub fn load_file(config_file: &Path, opts: &LoadOptions<'_>) -> Result<Loaded, ComposeError> {
    let dir = config_file.parent().unwrap_or(Path::new("."));
    let text = dotenv::read_capped(config_file, COMPOSE_FILE_MAX_BYTES, "a compose file")?;
    let mut warnings = Vec::new();
    let dot_env_path = dir.join(".env");
    let dot_env: BTreeMap<String, String> = if dot_env_path.is_file() {
        dotenv::read_env_file(&dot_env_path, opts.variables, &mut warnings)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let lookup = |name: &str| (opts.variables)(name).or_else(|| dot_env.get(name).cloned());
    let file = file::parse(&text, config_file, &lookup, &mut warnings)?;
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = opts
        .project_name
        .map(str::to_string)
        .or_else(|| file.name.clone())
        .unwrap_or(dir_name);
    let cx = project::Context {
        project_name: &name,
        working_dir: dir,
        config_file,
        profiles: opts.profiles,
        lookup: &lookup,
    };
    let project = project::normalise(&file, &cx, &mut warnings)?;
    Ok(Loaded {
        project,
        warnings: dedup_warnings(warnings),
    })
}

/// Keeps the first warning per unset variable, so one missing variable used in ten places
/// is one journal line.
fn dedup_warnings(warnings: Vec<Warning>) -> Vec<Warning> {
    let mut seen = BTreeSet::new();
    warnings
        .into_iter()
        .filter(|w| match w {
            Warning::UnsetVariable { variable, .. } => seen.insert(variable.clone()),
            Warning::Ignored { .. } => true,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::compose::service::{Condition, Healthcheck, Mount, RestartPolicy};
    use std::time::Duration;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/compose")
    }

    fn params(name: &str) -> Option<String> {
        match name {
            "DB_PASSWORD" => Some("s3cret".into()),
            "WEB_PORT" => Some("9000".into()),
            _ => None,
        }
    }

    fn no_vars(_: &str) -> Option<String> {
        None
    }

    fn load_appstore(vars: Lookup<'_>) -> Result<Loaded, ComposeError> {
        load(
            &fixtures().join("appstore"),
            &LoadOptions {
                project_name: None,
                variables: vars,
                profiles: &[],
            },
        )
    }

    fn load_bad(name: &str) -> ComposeError {
        let opts = LoadOptions {
            project_name: Some("bad"),
            variables: &no_vars,
            profiles: &[],
        };
        match load_file(&fixtures().join("bad").join(name), &opts) {
            Ok(_) => panic!("{name} loaded but should have been refused"),
            Err(e) => e,
        }
    }

    #[test]
    fn loads_appstore_fixture_with_anchors_interpolation_and_dependencies() {
        // Fixture: web + db + cache with merge keys, .env, env_file, healthchecks and
        // depends_on conditions; DB_PASSWORD and WEB_PORT come from deployment parameters.
        let loaded = load_appstore(&params).unwrap();
        let p = &loaded.project;
        assert_eq!(p.name, "photogallery", "from .env APP_NAME, normalised");
        let order: Vec<&str> = p.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["cache", "db", "web"]);

        let web = p.service("web").unwrap();
        assert_eq!(web.container_name, "gallery-web");
        assert_eq!(web.image, "ghcr.io/example/gallery:2.4.1");
        // Merge key copied restart and stop_grace_period from x-common.
        assert_eq!(web.restart.policy, RestartPolicy::UnlessStopped);
        assert_eq!(web.stop_grace_period, Some(Duration::from_secs(90)));
        // Parameters beat .env (WEB_PORT), .env beats defaults (TZ).
        assert_eq!(web.ports[0].published, Some(9000));
        assert_eq!(web.environment["TZ"], "Europe/Berlin");
        assert_eq!(
            web.environment["DB_URL"],
            "postgres://gallery:s3cret@db:5432/gallery"
        );
        // environment beats env_file; env_file values are parsed with its quoting rules.
        assert_eq!(web.environment["LOG_LEVEL"], "info");
        assert_eq!(web.environment["SESSION_SECRET"], "not-$ecret");
        assert_eq!(web.environment["GREETING"], "Hello\nWorld");
        assert_eq!(web.environment["UPLOAD_LIMIT"], "50mb");
        assert!(
            !web.environment.contains_key("FEATURE_FLAGS"),
            "unset bare name is left out"
        );
        assert_eq!(web.depends_on["db"].condition, Condition::ServiceHealthy);
        assert!(!web.depends_on["cache"].required);
        match &web.healthcheck {
            Some(Healthcheck::Check {
                retries, interval, ..
            }) => {
                assert_eq!(*retries, 5);
                assert_eq!(*interval, Duration::from_secs(15));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(web.limits.memory, Some(512 << 20));
        assert_eq!(web.limits.cpus, Some(1.5));
        match &web.mounts[0] {
            Mount::Bind {
                source, read_only, ..
            } => {
                assert_eq!(Path::new(source), fixtures().join("appstore/config"));
                assert!(*read_only);
            }
            other => panic!("{other:?}"),
        }

        let db = p.service("db").unwrap();
        assert_eq!(db.image, "docker.io/library/postgres:16-alpine");
        assert_eq!(db.stop_signal, Some(2));
        let cache = p.service("cache").unwrap();
        assert_eq!(
            cache.command.as_deref().unwrap(),
            ["redis-server", "--save", "", "--appendonly", "no"]
        );
        assert_eq!(cache.user.as_deref(), Some("999"));
        assert_eq!(cache.healthcheck, Some(Healthcheck::Disabled));

        let nets: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nets, ["photogallery_backend", "photogallery_default"]);
        let vols: Vec<&str> = p.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(vols, ["photogallery_db-data", "photogallery_uploads"]);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn appstore_fixture_fails_without_the_required_parameter() {
        // Fixture: web's DB_URL uses ${DB_PASSWORD:?…}; no parameter sets it.
        let e = load_appstore(&no_vars).unwrap_err();
        assert_eq!(e.code(), "ERR_COMPOSE_INTERPOLATION");
        assert_eq!(
            e.to_string(),
            "services.web.environment.DB_URL: required variable DB_PASSWORD is missing a value: \
             set DB_PASSWORD in the deployment parameters"
        );
    }

    #[test]
    fn caller_project_name_overrides_the_file() {
        let loaded = load(
            &fixtures().join("appstore"),
            &LoadOptions {
                project_name: Some("Gallery-1a2b3c4d"),
                variables: &params,
                profiles: &[],
            },
        )
        .unwrap();
        assert_eq!(loaded.project.name, "gallery-1a2b3c4d");
        assert_eq!(
            loaded.project.service("db").unwrap().container_name,
            "gallery-1a2b3c4d-db-1"
        );
    }

    #[test]
    fn rejects_build_key_naming_the_service() {
        let e = load_bad("build.yaml");
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        assert_eq!(
            e.to_string(),
            "service \"web\": key \"build\" is not supported: margo-agent runs prebuilt images only"
        );
    }

    #[test]
    fn rejects_dependency_cycle_naming_its_members() {
        let e = load_bad("cycle.yaml");
        assert_eq!(e.code(), "ERR_COMPOSE_INVALID");
        assert_eq!(
            e.to_string(),
            "services depend on each other in a cycle: a -> b -> c -> a"
        );
    }

    #[test]
    fn rejects_port_out_of_range_with_its_path() {
        let e = load_bad("port-out-of-range.yaml");
        assert_eq!(
            e.to_string(),
            "services.web.ports[1]: \"70000:80\": port 70000 is out of range 1-65535"
        );
    }

    #[test]
    fn rejects_scalar_ports_as_a_type_error() {
        let e = load_bad("ports-scalar.yaml");
        assert_eq!(
            e.to_string(),
            "services.web.ports: expected a list, found a number"
        );
    }

    #[test]
    fn rejects_missing_required_variable() {
        let e = load_bad("required-variable.yaml");
        assert_eq!(e.code(), "ERR_COMPOSE_INTERPOLATION");
        assert!(
            matches!(&e, ComposeError::Interpolation { variable: Some(v), .. } if v == "API_KEY")
        );
        assert!(
            e.to_string()
                .starts_with("services.worker.environment.API_KEY: "),
            "{e}"
        );
    }

    #[test]
    fn rejects_bind_source_escaping_the_project_directory() {
        let e = load_bad("bind-escape.yaml");
        assert!(
            e.to_string()
                .starts_with("services.web.volumes[1]: \"../../etc\" leads outside"),
            "{e}"
        );
    }

    #[test]
    fn rejects_replicas_sharing_a_host_port() {
        let e = load_bad("replicas.yaml");
        assert_eq!(e.code(), "ERR_COMPOSE_INVALID");
        assert!(
            e.to_string().starts_with(
                "services.worker.ports[0]: host port 8080 can be published by one container only; 3 replicas requested"
            ),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_key_pointing_at_x_prefix() {
        let e = load_bad("unknown-key.yaml");
        assert_eq!(
            e.to_string(),
            "service \"web\": key \"colour\" is not supported: it is not a compose-spec service key \
             (custom keys must start with x-)"
        );
    }

    #[test]
    fn rejects_duplicate_container_names() {
        let e = load_bad("duplicate-container-name.yaml");
        assert_eq!(
            e.to_string(),
            "services.worker.container_name: container name \"backend\" is also used by service \"api\""
        );
    }

    #[test]
    fn rejects_depends_on_unknown_service() {
        let e = load_bad("depends-on-unknown.yaml");
        assert_eq!(
            e.to_string(),
            "services.web.depends_on: service \"database\" is not defined"
        );
    }

    #[test]
    fn reports_missing_compose_file() {
        let e = load(
            &fixtures().join("bad"),
            &LoadOptions {
                project_name: None,
                variables: &no_vars,
                profiles: &[],
            },
        )
        .unwrap_err();
        assert_eq!(e.code(), "ERR_COMPOSE_READ");
    }

    #[test]
    fn warns_once_per_unset_variable() {
        let w = dedup_warnings(vec![
            Warning::UnsetVariable {
                variable: "A".into(),
                path: "x".into(),
            },
            Warning::UnsetVariable {
                variable: "A".into(),
                path: "y".into(),
            },
            Warning::UnsetVariable {
                variable: "B".into(),
                path: "z".into(),
            },
        ]);
        assert_eq!(w.len(), 2);
    }
}
