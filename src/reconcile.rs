//! One reconcile pass: source → model → plan → apply → report.
//!
//! 1. Poll the source. Unchanged: the pass ends after one HEAD request, with no disk write and
//!    no Podman call. Unreachable: nothing changes, the daemon retries with backoff. While a
//!    deployment is not Installed (a failed update), the applied revision is not "unchanged":
//!    a tag moved back to it is applied again, which repairs what the failed update touched.
//! 2. Parse and validate every document. Anything invalid refuses the whole revision
//!    (`ERR_DESIRED_STATE_INVALID`, …): it is recorded as rejected, logged once, and the
//!    running workloads stay exactly as they were.
//! 3. Per deployment: new → install, changed (canonical digest differs, or it had failed) →
//!    update, unchanged → nothing, missing → remove. Deployments move Pending → Installing →
//!    Installed | Failed, each transition written to the state file and the journal.
//! 4. The revision is recorded as applied only when every deployment converged; otherwise the
//!    next poll tries again (an idempotent apply makes no Podman writes for what converged).
//!
//! Containers are also found by their labels (`org.margo.device-id`, `org.margo.deployment-id`),
//! so a lost or corrupt state file does not orphan workloads: deployments Podman runs that the
//! desired state no longer names are removed all the same.

use crate::compose::apply::{self, ImageAccess};
use crate::compose::libpod::CreateContext;
use crate::compose::observe::Observer;
use crate::compose::policy::DevicePolicy;
use crate::config::Config;
use crate::daemon::exit;
use crate::digest::Digest;
use crate::journal;
use crate::model::{self, ApplicationDeployment};
use crate::oci::OciClient;
use crate::package::{self, fetch};
use crate::podman::{Podman, PullAuth, Timeouts};
use crate::source::Source;
use crate::source::oci::Known;
use crate::source::{Polled, SourceError};
use crate::state::{ComponentRecord, DeploymentRecord, Failure, Loaded, Phase, State, StateFile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const LABEL_DEPLOYMENT: &str = "org.margo.deployment-id";
pub const LABEL_COMPONENT: &str = "org.margo.component";
pub const LABEL_DEVICE: &str = "org.margo.device-id";
pub const LABEL_MANAGED_BY: &str = "org.margo.managed-by";
pub const MANAGED_BY: &str = "margo-agent";

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Converged { changed: usize },
    Invalid(Failure),
    ApplyFailed { failed: usize },
    SourceUnreachable(String),
    PodmanUnavailable(String),
    State(String),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Unchanged | Outcome::Converged { .. } => exit::OK,
            Outcome::ApplyFailed { .. } => exit::APPLY_FAILED,
            Outcome::Invalid(_) => exit::INVALID_DESIRED_STATE,
            Outcome::SourceUnreachable(_) => exit::SOURCE_UNREACHABLE,
            Outcome::PodmanUnavailable(_) => exit::PODMAN_UNAVAILABLE,
            Outcome::State(_) => exit::STATE,
        }
    }

    /// One line for `systemctl status` (sd_notify STATUS=).
    pub fn summary(&self) -> String {
        match self {
            Outcome::Unchanged => "desired state unchanged; workloads converged".into(),
            Outcome::Converged { changed } => format!("converged ({changed} deployments changed)"),
            Outcome::Invalid(f) => format!("desired state refused: {}", f.code),
            Outcome::ApplyFailed { failed } => format!("{failed} deployments failed"),
            Outcome::SourceUnreachable(_) => "desired-state source unreachable; retrying".into(),
            Outcome::PodmanUnavailable(_) => "Podman unavailable; retrying".into(),
            Outcome::State(_) => "state file not writable".into(),
        }
    }
}

/// Pull credentials and TLS for Podman from the config's `registries`.
struct ConfigImageAccess<'a>(&'a Config);

impl ImageAccess for ConfigImageAccess<'_> {
    fn pull_auth(&self, registry: &str) -> Option<PullAuth> {
        let (username, password) = match self.0.mirrors.endpoint(registry) {
            Some(m) => m.credentials().ok().flatten()?,
            None => self.0.credentials(registry).ok().flatten()?,
        };
        Some(PullAuth {
            username,
            password,
            server: registry.to_string(),
        })
    }
    fn tls_verify(&self, registry: &str) -> bool {
        match self.0.mirrors.endpoint(registry) {
            Some(m) => !m.plain_http,
            None => !self.0.plain_http(registry),
        }
    }
    fn pull_source(&self, image: &str) -> Option<String> {
        self.0.mirrors.image(image)
    }
}

/// The agent between passes.
pub struct Agent {
    config: Config,
    device_id: String,
    oci: OciClient,
    source: Source,
    state_file: StateFile,
    state: State,
    podman: Option<Podman>,
    last_source_error: Option<String>,
    /// Set while Podman is unreachable (the outage is logged once).
    podman_outage: Option<String>,
    /// The device rebooted since the agent last ran: the first observation restores
    /// `always` containers that are stopped, as `podman-restart.service` would.
    rebooted: bool,
    observer: Observer,
    /// What the agent counts about itself for the telemetry export.
    pub metrics: crate::telemetry::AgentMetrics,
    /// Telemetry settings (resolved at start): workload collector variables, exporter.
    telemetry: crate::telemetry::Settings,
    /// The package signature trust policy (config `signatures`).
    trust: package::signature::TrustPolicy,
}

/// The kernel's id of this boot (`MARGO_AGENT_BOOT_ID` overrides it, for tests that simulate
/// a reboot).
fn boot_id() -> String {
    std::env::var("MARGO_AGENT_BOOT_ID")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Agent {
    /// Builds the agent from a validated config; the error is the process exit code (the
    /// reason is already in the journal).
    pub fn start(config: Config) -> Result<Agent, u8> {
        let source = Source::from_config(&config).map_err(|e| {
            journal::error(&format!("{e}; margo-agent cannot start"), &[]);
            exit::CONFIG
        })?;
        let oci = Self::registry_client(&config).map_err(|e| {
            journal::error(&format!("{e}; margo-agent cannot start"), &[]);
            exit::CONFIG
        })?;
        let (state_file, mut state, loaded) =
            StateFile::open(&config.state_file, crate::units::unix_now()).map_err(|e| {
                journal::error(&e.to_string(), &[]);
                exit::STATE
            })?;
        if let Loaded::MovedAside(aside, reason) = &loaded {
            journal::error(
                &format!(
                    "state file {} was unreadable ({reason}); moved to {} and starting from an empty state; running workloads are found again by their labels",
                    config.state_file.display(),
                    aside.display()
                ),
                &[],
            );
        }
        state.source.reference = source.describe();
        let boot = boot_id();
        let rebooted = !state.boot_id.is_empty() && !boot.is_empty() && state.boot_id != boot;
        if rebooted {
            journal::notice(
                "the device rebooted since margo-agent last ran; containers are restored by their restart policies",
                &[],
            );
        }
        let boot_changed = state.boot_id != boot;
        state.boot_id = boot;
        let trust =
            package::signature::TrustPolicy::from_config(&config.signatures).map_err(|e| {
                journal::error(&format!("signatures: {e}; margo-agent cannot start"), &[]);
                exit::CONFIG
            })?;
        let device_id = config.device_id();
        let telemetry =
            crate::telemetry::Settings::from_process_env(&config.telemetry).map_err(|e| {
                journal::error(
                    &format!("telemetry setting {e}; margo-agent cannot start"),
                    &[],
                );
                exit::CONFIG
            })?;
        for w in &telemetry.warnings {
            journal::warn(w, &[]);
        }
        journal::info(
            &format!(
                "margo-agent {} started: device {device_id:?}, desired state {}",
                env!("CARGO_PKG_VERSION"),
                source.describe()
            ),
            &[],
        );
        let mut agent = Agent {
            source,
            device_id,
            oci,
            state_file,
            state,
            podman: None,
            last_source_error: None,
            podman_outage: None,
            rebooted,
            observer: Observer::new(),
            metrics: Default::default(),
            telemetry,
            trust,
            config,
        };
        if boot_changed && !agent.state.deployments.is_empty() {
            // Without deployments the id is written with the first apply. A failed write is logged; the next boot then counts as a reboot again, which
            // only restores what the restart policies want running anyway.
            let _ = agent.save();
        }
        Ok(agent)
    }

    fn registry_client(config: &Config) -> Result<OciClient, String> {
        let mut extra_ca = config.tls.extra_ca.clone();
        extra_ca.extend(config.mirrors.ca_files());
        let roots = crate::http::trust_roots(Some(&config.tls.ca_bundle), &extra_ca)
            .map_err(|e| e.to_string())?;
        let mut client = OciClient::from_config(crate::http::client(&roots), config)
            .map_err(|e| e.to_string())?;
        for m in &config.mirrors.0 {
            let credentials = m.credentials()?;
            client.set_access(
                &m.endpoint,
                crate::oci::RegistryAccess {
                    plain_http: m.plain_http,
                    credentials,
                },
            );
        }
        client.set_mirrors(config.mirrors.clone());
        Ok(client)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state, for the WFM job (its outbox and capabilities hash live in it).
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// Writes the state file if it changed (a failure is logged and retried with the next
    /// change).
    pub fn persist(&mut self) {
        let _ = self.save();
    }

    /// Takes a reloaded config (SIGHUP). Settings that cannot change at runtime (state file
    /// path) keep their old value, with a journal line.
    pub fn reload(&mut self, config: Config) {
        if config.state_file != self.config.state_file {
            journal::warn(
                "state_file cannot change without a restart; keeping the old path",
                &[],
            );
        }
        let telemetry = crate::telemetry::Settings::from_process_env(&config.telemetry)
            .map_err(|e| format!("telemetry setting {e}"));
        let trust = package::signature::TrustPolicy::from_config(&config.signatures)
            .map_err(|e| format!("signatures: {e}"));
        match (
            Source::from_config(&config),
            Self::registry_client(&config),
            telemetry,
            trust,
        ) {
            (Ok(r), Ok(oci), Ok(telemetry), Ok(trust)) => {
                self.telemetry = telemetry;
                self.trust = trust;
                self.source = r;
                self.oci = oci;
                self.podman = None;
                let state_file = self.config.state_file.clone();
                self.config = config;
                self.config.state_file = state_file;
                if let Some(l) = journal::Level::parse(&self.config.log_level) {
                    journal::set_level(l);
                }
            }
            (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => {
                journal::error(
                    &format!("config reload refused: {e}; keeping the running config"),
                    &[],
                );
            }
        }
    }

    fn save(&mut self) -> Result<(), String> {
        self.state_file.save(&self.state).map(drop).map_err(|e| {
            journal::error(&e.to_string(), &[]);
            e.to_string()
        })
    }

    /// One pass. See the module docs.
    pub fn reconcile(&mut self) -> Outcome {
        let known = Known {
            applied: self.state.source.applied.as_ref(),
            applied_converged: self
                .state
                .deployments
                .values()
                .all(|r| r.phase == Phase::Installed),
            rejected: self.state.source.rejected.as_ref(),
            applied_version: self.state.source.applied_version,
        };
        let polled = self.source.poll(&mut self.oci, known);
        let (revision, files) = match polled {
            Ok(Polled::Unchanged) => {
                self.metrics.poll("unchanged", 0);
                self.note_source_ok();
                journal::debug(
                    "desired state unchanged",
                    &[("MARGO_SOURCE", &self.state.source.reference)],
                );
                return Outcome::Unchanged;
            }
            Ok(Polled::Changed { revision, files }) => {
                let bytes = files.iter().map(|f| f.text.len() as u64).sum();
                self.metrics.poll("changed", bytes);
                self.note_source_ok();
                (revision, files)
            }
            Err(SourceError::Unreachable(msg)) => {
                self.metrics.poll("unreachable", 0);
                // Logged when it starts or its reason changes, not on every retry.
                if self.last_source_error.as_deref() != Some(msg.as_str()) {
                    journal::warn(&msg, &[("MARGO_SOURCE", &self.state.source.reference)]);
                    self.last_source_error = Some(msg.clone());
                }
                return Outcome::SourceUnreachable(msg);
            }
            Err(SourceError::Invalid {
                code,
                message,
                digest,
            }) => {
                self.metrics.poll("invalid", 0);
                return self.refuse(Failure::new(code, message), digest);
            }
        };
        let line = format!(
            "desired state changed to {}{}: {} file(s)",
            revision.digest.short(),
            revision
                .version
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default(),
            files.len()
        );
        // A revision recorded but not applied yet (Podman down, say) is fetched again on every
        // poll: announced once, not on every retry.
        if self.state.source.desired.as_ref() == Some(&revision.digest) {
            journal::debug(&line, &[("DIGEST", revision.digest.as_str())]);
        } else {
            journal::notice(&line, &[("DIGEST", revision.digest.as_str())]);
        }
        let mut desired = Vec::new();
        for f in &files {
            match model::parse_documents(f.text.as_bytes()) {
                Ok(docs) => desired.extend(docs),
                Err(e) => {
                    let failure = Failure::new(
                        e.code(),
                        format!(
                            "desired state {} file {:?}: {e}; keeping current workloads",
                            revision.digest.short(),
                            f.name
                        ),
                    );
                    return self.refuse(failure, Some(revision.digest));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for d in &desired {
            if !seen.insert(d.id.clone()) {
                let failure = Failure::new(
                    model::ERR_DESIRED_STATE_INVALID,
                    format!(
                        "desired state {}: deployment id {:?} appears twice; keeping current workloads",
                        revision.digest.short(),
                        d.id
                    ),
                );
                return self.refuse(failure, Some(revision.digest));
            }
        }
        self.state.source.desired = Some(revision.digest.clone());
        self.state.source.desired_version = revision.version;
        if let Err(e) = self.save() {
            return Outcome::State(e);
        }
        if let Err(msg) = self.ensure_podman() {
            return Outcome::PodmanUnavailable(msg);
        }
        let mut changed = 0;
        let mut failed = 0;
        let mut podman_down = None;
        for dep in &desired {
            let unchanged =
                self.state.deployments.get(&dep.id).is_some_and(|r| {
                    &r.digest == dep.content_digest() && r.phase == Phase::Installed
                });
            if unchanged {
                continue;
            }
            changed += 1;
            match self.apply_deployment(dep) {
                Ok(()) => {}
                Err(e) if e.podman_unavailable => {
                    podman_down = Some(e.message);
                    self.podman = None;
                    break;
                }
                Err(_) => failed += 1,
            }
        }
        if podman_down.is_none() {
            let wanted: BTreeSet<&str> = desired.iter().map(|d| d.id.as_str()).collect();
            match self.remove_undesired(&wanted) {
                Ok(n) => changed += n,
                Err(e) if e.podman_unavailable => podman_down = Some(e.message),
                Err(_) => failed += 1,
            }
        }
        if let Some(msg) = podman_down {
            journal::warn(
                &format!("{msg}; the apply is retried on the next poll"),
                &[],
            );
            let _ = self.save();
            return Outcome::PodmanUnavailable(msg);
        }
        if failed == 0 && self.config.images.prune {
            self.prune_images();
        }
        if failed == 0 {
            self.state.source.applied = Some(revision.digest.clone());
            if revision.version.is_some() {
                self.state.source.applied_version = revision.version;
            }
            self.state.source.rejected = None;
            self.state.source.rejected_error = None;
        }
        if let Err(e) = self.save() {
            return Outcome::State(e);
        }
        if failed > 0 {
            Outcome::ApplyFailed { failed }
        } else {
            journal::notice(
                &format!(
                    "desired state {} applied: {} deployment(s) running, {changed} changed",
                    revision.digest.short(),
                    desired.len()
                ),
                &[("DIGEST", revision.digest.as_str())],
            );
            Outcome::Converged { changed }
        }
    }

    fn note_source_ok(&mut self) {
        if self.last_source_error.take().is_some() {
            journal::notice("desired-state source reachable again", &[]);
        }
    }

    fn refuse(&mut self, failure: Failure, digest: Option<Digest>) -> Outcome {
        self.metrics.error(&failure.code);
        let d = digest.as_ref().map(Digest::to_string).unwrap_or_default();
        journal::error(
            &failure.to_string(),
            &[
                ("ERROR_CODE", &failure.code),
                ("DIGEST", &d),
                ("MARGO_STATE", "Failed"),
            ],
        );
        self.state.source.rejected = digest;
        self.state.source.rejected_error = Some(failure.clone());
        match self.save() {
            Ok(()) => Outcome::Invalid(failure),
            Err(e) => Outcome::State(e),
        }
    }

    fn ensure_podman(&mut self) -> Result<(), String> {
        if self.podman.is_some() {
            return Ok(());
        }
        let p = &self.config.podman;
        let timeouts = Timeouts {
            call: p.call_timeout,
            pull: p.pull_timeout,
            stop: p.stop_timeout,
        };
        match Podman::connect(&p.socket, timeouts) {
            Ok(podman) => {
                journal::info(
                    &format!(
                        "connected to Podman at {} (libpod API {})",
                        p.socket.display(),
                        podman.api_version
                    ),
                    &[],
                );
                self.podman = Some(podman);
                if self.podman_outage.take().is_some() {
                    journal::notice("Podman reachable again", &[]);
                }
                Ok(())
            }
            Err(e) => Err(self.podman_down(&e)),
        }
    }

    /// Notes that Podman cannot be reached: logged when an outage starts or its reason
    /// changes, not on every retry of the poll or the observation tick.
    fn podman_down(&mut self, e: &crate::podman::PodmanError) -> String {
        self.podman = None;
        let msg = format!(
            "{e}; workloads are left as they are and the desired state is applied once Podman answers"
        );
        if self.podman_outage.as_deref() != Some(msg.as_str()) {
            self.metrics.error(e.code());
            journal::error(&msg, &[("ERROR_CODE", e.code())]);
            self.podman_outage = Some(msg.clone());
        }
        msg
    }

    fn set_phase(&mut self, id: &str, phase: Phase, error: Option<Failure>) {
        if let Some(r) = self.state.deployments.get_mut(id) {
            r.phase = phase;
            r.error = error.clone();
            r.since = crate::units::unix_now();
        }
        crate::wfm::report(&self.config, &mut self.state, id, false);
        let msg = match (&error, phase) {
            (Some(f), Phase::Failed) => format!(
                "deployment {id:?}: Failed — {f}; containers not yet replaced keep running, the apply is retried on the next poll"
            ),
            (Some(f), _) => format!("deployment {id:?}: {} — {f}", phase.as_str()),
            (None, _) => format!("deployment {id:?}: {}", phase.as_str()),
        };
        let code = error.as_ref().map(|f| f.code.clone()).unwrap_or_default();
        self.metrics.error(&code);
        let fields = [
            ("DEPLOYMENT_ID", id),
            ("MARGO_STATE", phase.as_str()),
            ("ERROR_CODE", code.as_str()),
        ];
        if error.is_some() {
            journal::error(&msg, &fields);
        } else {
            journal::notice(&msg, &fields[..2]);
        }
        let _ = self.save();
    }

    fn apply_deployment(&mut self, dep: &ApplicationDeployment) -> Result<(), apply::ApplyError> {
        let previous_projects: BTreeSet<String> = self
            .state
            .deployments
            .get(&dep.id)
            .map(|r| r.components.values().map(|c| c.project.clone()).collect())
            .unwrap_or_default();
        let components = dep
            .components
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ComponentRecord {
                        phase: Phase::Pending,
                        project: dep.project_name(&c.name),
                        error: None,
                        problems: Vec::new(),
                        images: Vec::new(),
                    },
                )
            })
            .collect();
        self.state.deployments.insert(
            dep.id.clone(),
            DeploymentRecord {
                application_id: dep.application_id.clone(),
                name: dep.name.clone().unwrap_or_default(),
                digest: dep.content_digest().clone(),
                phase: Phase::Pending,
                error: None,
                components,
                since: crate::units::unix_now(),
            },
        );
        crate::wfm::report(&self.config, &mut self.state, &dep.id, false);
        self.set_phase(&dep.id, Phase::Installing, None);
        for component in &dep.components {
            if let Some(r) = self.state.deployments.get_mut(&dep.id)
                && let Some(c) = r.components.get_mut(&component.name)
            {
                c.phase = Phase::Installing;
            }
            let result = self.apply_component(dep, component);
            let (phase, error) = match &result {
                Ok(()) => (Phase::Installed, None),
                Err(e) => (Phase::Failed, Some(Failure::new(e.code, e.message.clone()))),
            };
            if let Some(c) = self
                .state
                .deployments
                .get_mut(&dep.id)
                .and_then(|r| r.components.get_mut(&component.name))
            {
                c.phase = phase;
                c.error = error.clone();
            }
            if let Err(e) = result {
                if !e.podman_unavailable {
                    self.set_phase(&dep.id, Phase::Failed, error);
                } else {
                    self.set_phase(&dep.id, Phase::Pending, error);
                }
                return Err(e);
            }
        }
        // Components dropped by an update.
        let now: BTreeSet<String> = dep
            .components
            .iter()
            .map(|c| dep.project_name(&c.name))
            .collect();
        for old in previous_projects.difference(&now) {
            if let Some(podman) = self.podman.as_mut() {
                apply::remove_project(podman, old, &[("DEPLOYMENT_ID", &dep.id)])?;
            }
        }
        self.set_phase(&dep.id, Phase::Installed, None);
        Ok(())
    }

    fn apply_component(
        &mut self,
        dep: &ApplicationDeployment,
        component: &model::Component,
    ) -> Result<(), apply::ApplyError> {
        let fields = [
            ("DEPLOYMENT_ID", dep.id.as_str()),
            ("COMPONENT", component.name.as_str()),
        ];
        let fail = |code: &'static str, message: String| apply::ApplyError {
            code,
            message,
            podman_unavailable: false,
        };
        let base = self.source.base_dir().map(Path::to_path_buf);
        let fetched = fetch::fetch(
            &mut self.oci,
            component,
            &self.config.work_dir,
            base.as_deref(),
        )
        .map_err(|e| fail(e.code(), e.to_string()))?;
        journal::info(
            &format!(
                "component {:?}: package {} fetched",
                component.name,
                fetched.digest.short()
            ),
            &[fields[0], fields[1], ("DIGEST", fetched.digest.as_str())],
        );
        // Signatures are checked before anything of the package is unpacked; the `.app`
        // copied out of a proof-of-concept wrapper is removed when `verified` is dropped.
        // URL packages are downloaded again on every apply (their URL names no digest up
        // front): once unpacked or refused the archive (which may carry image archives) is
        // removed rather than kept on the device's storage twice.
        let downloaded = package::signature::TempFiles(
            matches!(component.source, model::PackageSource::Url { .. })
                .then(|| fetched.archive.clone())
                .into_iter()
                .collect(),
        );
        let verified = package::verify::verify(
            &mut self.oci,
            component,
            &fetched,
            &self.trust,
            &self.config.work_dir,
            base.as_deref(),
        )
        .map_err(|e| {
            // A refused package is not kept: nothing may pick it up later.
            let _ = std::fs::remove_file(&fetched.archive);
            fail(e.code, e.message)
        })?;
        if let Some(signer) = &verified.signer {
            journal::info(
                &format!(
                    "component {:?}: package {} signature verified (key {signer})",
                    component.name,
                    fetched.digest.short()
                ),
                &[fields[0], fields[1], ("DIGEST", fetched.digest.as_str())],
            );
        }
        let project_name = dep.project_name(&component.name);
        // A stable directory per project: the compose working directory and bind sources are
        // part of each service's config hash, so they must not move when the package does.
        let projects = self.config.work_dir.join("projects");
        let dest = projects.join(&project_name);
        let marker = projects.join(format!("{project_name}.package"));
        let current = std::fs::read_to_string(&marker).unwrap_or_default();
        if !dest.is_dir() || current.trim() != fetched.digest.as_str() {
            unpack_swap(&verified.archive, &dest).map_err(|(code, m)| fail(code, m))?;
            crate::state::write_atomically(&marker, fetched.digest.as_str().as_bytes()).map_err(
                |e| {
                    fail(
                        "ERR_LOCAL_IO",
                        format!("cannot write {}: {e}", marker.display()),
                    )
                },
            )?;
        }
        drop(verified);
        drop(downloaded);
        let root = package::find_compose_root(&dest, fetched.layout)
            .map_err(|e| fail(e.code(), e.to_string()))?;
        let project = self.load_project(dep, component, &project_name, &root)?;
        // Before any pull or create: a refused project leaves nothing behind, and the
        // containers an earlier revision runs stay as they are.
        let policy = DevicePolicy::from_config(&self.config.policy);
        policy
            .check(&project)
            .map_err(|e| fail(e.code(), format!("component {:?}: {e}", component.name)))?;
        let mut extra_labels = BTreeMap::new();
        extra_labels.insert(LABEL_DEPLOYMENT.to_string(), dep.id.clone());
        extra_labels.insert(LABEL_COMPONENT.to_string(), component.name.clone());
        extra_labels.insert(LABEL_DEVICE.to_string(), self.device_id.clone());
        extra_labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
        let ctx = CreateContext {
            extra_labels,
            extra_env: self.telemetry.workload_env.clone(),
            ..CreateContext::default()
        };
        let wait = component
            .wait
            .then(|| component.timeout.unwrap_or(apply::DEFAULT_WAIT_TIMEOUT));
        let access = ConfigImageAccess(&self.config);
        let Some(podman) = self.podman.as_mut() else {
            return Err(apply::ApplyError {
                code: "ERR_PODMAN_UNAVAILABLE",
                message: "not connected to Podman".into(),
                podman_unavailable: true,
            });
        };
        let loaded = package::images::load_archives(podman, &root.dir, &fields)?;
        let report = apply::converge(podman, &project, &ctx, &access, wait, &fields, &policy)?;
        package::images::record(
            &mut self.state,
            (&dep.id, &component.name),
            &project,
            loaded.iter().chain(&report.pulled),
        );
        journal::info(
            &format!(
                "component {:?}: project {:?} converged ({} change(s), {} image(s) pulled)",
                component.name,
                project.name,
                report.actions.len(),
                report.pulled.len()
            ),
            &fields,
        );
        Ok(())
    }

    /// Image pruning after a converged pass (see [`package::images::prune_unused`]).
    fn prune_images(&mut self) {
        if let Some(podman) = self.podman.as_mut() {
            package::images::prune_unused(podman, &mut self.state);
        }
    }

    fn load_project(
        &self,
        dep: &ApplicationDeployment,
        component: &model::Component,
        project_name: &str,
        root: &package::ComposeRoot,
    ) -> Result<crate::compose::Project, apply::ApplyError> {
        // Parameters are the variables; the package's `.env` fills only what they leave unset.
        // The agent's own process environment is deliberately not visible to workloads.
        let params = dep.env_for_component(&component.name);
        let variables = |k: &str| params.get(k).cloned();
        let opts = crate::compose::LoadOptions {
            project_name: Some(project_name),
            variables: &variables,
            profiles: &[],
        };
        let loaded =
            crate::compose::load_file(&root.file, &opts).map_err(|e| apply::ApplyError {
                code: e.code(),
                message: format!("component {:?}: {e}", component.name),
                podman_unavailable: false,
            })?;
        for w in &loaded.warnings {
            journal::warn(
                &format!("component {:?}: {w}", component.name),
                &[("DEPLOYMENT_ID", &dep.id), ("COMPONENT", &component.name)],
            );
        }
        Ok(loaded.project)
    }

    /// Removes deployments that the desired state no longer names: those in the state file
    /// and those Podman runs for this device (found by label).
    /// The observation tick (see `compose::observe`): restores containers of installed
    /// deployments after a reboot or an engine restart, runs due healthchecks, and records
    /// problems in the status. Quiet while nothing changes; a Podman outage is logged once.
    pub fn observe(&mut self) {
        if self.ensure_podman().is_err() {
            return;
        }
        // Only deployments the agent installed: the others are the apply's business.
        let installed: BTreeSet<String> = self
            .state
            .deployments
            .iter()
            .filter(|(_, r)| r.phase == Phase::Installed)
            .map(|(id, _)| id.clone())
            .collect();
        let Some(podman) = self.podman.as_mut() else {
            return;
        };
        let result = podman
            .list_containers(&[
                (LABEL_MANAGED_BY, MANAGED_BY),
                (LABEL_DEVICE, self.device_id.as_str()),
            ])
            .and_then(|all| {
                let ours: Vec<_> = all
                    .into_iter()
                    .filter(|c| {
                        c.labels
                            .get(LABEL_DEPLOYMENT)
                            .is_some_and(|d| installed.contains(d))
                    })
                    .collect();
                self.observer.observe(podman, &ours, self.rebooted)
            });
        let observation = match result {
            Ok(o) => o,
            Err(e) if e.is_unavailable() => {
                self.podman_down(&e);
                return;
            }
            Err(e) => {
                journal::warn(
                    &format!("observing workloads failed: {e}; tried again on the next tick"),
                    &[("ERROR_CODE", e.code())],
                );
                return;
            }
        };
        self.rebooted = false;
        let mut changed = false;
        for (id, record) in self.state.deployments.iter_mut() {
            if record.phase != Phase::Installed {
                continue;
            }
            for (name, c) in record.components.iter_mut() {
                let now = observation
                    .problems
                    .get(&c.project)
                    .cloned()
                    .unwrap_or_default();
                if now == c.problems {
                    continue;
                }
                let fields = [("DEPLOYMENT_ID", id.as_str()), ("COMPONENT", name.as_str())];
                if now.is_empty() {
                    journal::notice(
                        &format!("deployment {id:?} component {name:?}: workloads healthy again"),
                        &fields,
                    );
                } else {
                    journal::warn(
                        &format!("deployment {id:?} component {name:?}: {}", now.join("; ")),
                        &fields,
                    );
                }
                c.problems = now;
                changed = true;
            }
        }
        if changed {
            let _ = self.save();
        }
    }

    /// What a telemetry export reads. It does not connect to Podman itself (the
    /// observation tick and the poll do): an export never adds a connection attempt to the
    /// loop, and without a connection it sends the agent's metrics only.
    pub fn telemetry_view(&mut self) -> crate::telemetry::View<'_> {
        crate::telemetry::View {
            metrics: &self.metrics,
            state: &self.state,
            podman: self.podman.as_mut(),
            device_id: &self.device_id,
            outbox_len: self.state.wfm.outbox.len(),
        }
    }

    /// The telemetry settings in force.
    pub fn telemetry_settings(&self) -> &crate::telemetry::Settings {
        &self.telemetry
    }

    /// When the observation tick wants to run next: its interval, or earlier when a
    /// healthcheck is due.
    pub fn next_observation(&self, last: std::time::Instant) -> std::time::Instant {
        let tick = last + self.config.podman.observe_interval;
        self.observer.next_due().map_or(tick, |due| due.min(tick))
    }

    fn remove_undesired(&mut self, wanted: &BTreeSet<&str>) -> Result<usize, apply::ApplyError> {
        let mut projects: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (id, r) in &self.state.deployments {
            if !wanted.contains(id.as_str()) {
                let e = projects.entry(id.clone()).or_default();
                e.extend(r.components.values().map(|c| c.project.clone()));
            }
        }
        let Some(podman) = self.podman.as_mut() else {
            return Ok(0);
        };
        let running = podman.list_containers(&[
            (LABEL_MANAGED_BY, MANAGED_BY),
            (LABEL_DEVICE, self.device_id.as_str()),
        ])?;
        for c in running {
            let (Some(id), Some(p)) = (
                c.labels.get(LABEL_DEPLOYMENT),
                c.labels.get(crate::compose::libpod::LABEL_PROJECT),
            ) else {
                continue;
            };
            if !wanted.contains(id.as_str()) {
                projects.entry(id.clone()).or_default().insert(p.clone());
            }
        }
        let count = projects.len();
        for (id, projs) in projects {
            if self.state.deployments.contains_key(&id) {
                self.set_phase(&id, Phase::Removing, None);
            }
            for p in &projs {
                if let Some(podman) = self.podman.as_mut() {
                    apply::remove_project(podman, p, &[("DEPLOYMENT_ID", &id)])?;
                }
                let projects = self.config.work_dir.join("projects");
                let _ = std::fs::remove_dir_all(projects.join(p));
                let _ = std::fs::remove_file(projects.join(format!("{p}.package")));
            }
            journal::notice(
                &format!("deployment {id:?}: {}", Phase::Removed.as_str()),
                &[
                    ("DEPLOYMENT_ID", &id),
                    ("MARGO_STATE", Phase::Removed.as_str()),
                ],
            );
            crate::wfm::report(&self.config, &mut self.state, &id, true);
            self.state.deployments.remove(&id);
        }
        Ok(count)
    }
}

/// Unpacks `archive` beside `dest`, then swaps it in: a power cut leaves either the old or
/// the new tree at `dest`, never half of one.
fn unpack_swap(archive: &Path, dest: &Path) -> Result<(), (&'static str, String)> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        (
            "ERR_LOCAL_IO",
            format!("cannot {what} {}: {e}", p.display()),
        )
    };
    let partial = dest.with_extension("partial");
    let old = dest.with_extension("old");
    let _ = std::fs::remove_dir_all(&partial);
    let _ = std::fs::remove_dir_all(&old);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    }
    package::unpack_tar_gz(archive, &partial, &package::UnpackLimits::default())
        .map_err(|e| (e.code(), e.to_string()))?;
    if dest.exists() {
        std::fs::rename(dest, &old).map_err(|e| io("move aside", dest, e))?;
    }
    std::fs::rename(&partial, dest).map_err(|e| io("move into place", dest, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
