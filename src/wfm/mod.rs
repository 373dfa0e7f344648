//! The Fleet Manager's Device API (Margo 2025 draft): onboarding, OAuth2 client-credentials
//! tokens, device capabilities, and deployment status delivered from a persistent outbox.
//! `docs/wfm-api.md` is the reference for what goes over the wire.
//!
//! The daemon calls [`Wfm::tick`] as a timed job; every call has the `wfm.call_timeout`
//! deadline and a tick makes a bounded number of calls, so the WFM being slow or away never
//! holds up convergence. Reports are queued by [`report`] from the reconcile's phase changes
//! and wait in the state file until the WFM takes them.

pub mod client;
pub mod config;
pub mod onboard;
pub mod outbox;
pub mod schedule;

use crate::config::Config;
use crate::identity::DeviceKey;
use crate::journal;
use crate::state::{Phase, State};
use client::{CallError, Token};
use onboard::Onboarded;
use schedule::{Hold, Schedule};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub use outbox::WfmState;

/// Reports delivered per tick at most (the rest follow on the next tick, at once).
const DELIVERIES_PER_TICK: usize = 50;
/// A tick starts no new delivery after this long, so a slow WFM delays the loop's other jobs
/// (polls, observation, watchdog) by at most this plus one call's deadline.
const TICK_BUDGET: Duration = Duration::from_secs(10);
/// An error message in a report is cut to this many bytes.
const REPORT_MESSAGE_MAX: usize = 1024;

/// The `DeploymentStatus` body of deployment `id` as the state file has it; `removed` reports
/// its removal (every component `Removed`).
pub fn status_body(state: &State, id: &str, removed: bool) -> Option<(String, Value)> {
    let r = state.deployments.get(id)?;
    let phase = if removed { Phase::Removed } else { r.phase };
    let err = |f: &Option<crate::state::Failure>| {
        f.as_ref()
            .map(|f| json!({"code": f.code, "message": journal::ellipsize(&f.message, REPORT_MESSAGE_MAX)}))
    };
    let mut status = json!({"state": phase.as_str()});
    if let (Some(e), false) = (err(&r.error), removed) {
        status["error"] = e;
    }
    let components: Vec<Value> = r
        .components
        .iter()
        .map(|(name, c)| {
            let cp = if removed { Phase::Removed } else { c.phase };
            let mut v = json!({"name": name, "state": cp.as_str()});
            if let (Some(e), false) = (err(&c.error), removed) {
                v["error"] = e;
            }
            v
        })
        .collect();
    Some((
        phase.as_str().to_string(),
        json!({
            "apiVersion": "deployment.margo/v1",
            "kind": "DeploymentStatus",
            "deploymentId": id,
            "status": status,
            "components": components,
        }),
    ))
}

/// Queues a report of deployment `id`'s current phase (the reconcile's hook). No-op in
/// registry-only mode.
pub fn report(config: &Config, state: &mut State, id: &str, removed: bool) {
    if !config.wfm.enabled() {
        return;
    }
    let Some((phase, body)) = status_body(state, id, removed) else {
        return;
    };
    let r = outbox::enqueue(
        &mut state.wfm,
        id,
        &phase,
        body,
        crate::units::unix_now(),
        config.wfm.outbox_max,
    );
    if r.coalesced > 0 {
        journal::notice(
            &format!(
                "status outbox full ({} entries): {} superseded intermediate report(s) dropped; terminal reports are kept",
                config.wfm.outbox_max, r.coalesced
            ),
            &[("DEPLOYMENT_ID", id)],
        );
    }
    if r.over_bound {
        journal::warn(
            &format!(
                "status outbox holds {} reports, over its bound of {}: only terminal or latest reports remain, none is dropped",
                state.wfm.outbox.len(),
                config.wfm.outbox_max
            ),
            &[("DEPLOYMENT_ID", id)],
        );
    }
}

/// The backoff after `failures` consecutive failed calls: `min` doubling up to `max`, the
/// same doubling as the desired-state poll's retries ([`crate::daemon::next_poll_delay`]).
/// The job waits half of it plus a random part up to the other half.
pub fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    crate::daemon::next_poll_delay(min, max, failures)
}

/// The WFM job.
pub struct Wfm {
    cfg: config::WfmConfig,
    device_id: String,
    key: DeviceKey,
    /// The device's trust store: for the first onboarding call, and a token URL that is
    /// not on the WFM's host.
    device_roots: std::sync::Arc<Vec<ureq::tls::Certificate<'static>>>,
    onboarded: Option<Onboarded>,
    token: Option<Token>,
    schedule: Schedule,
    failures: u32,
    next_due: Instant,
    next_capabilities: Instant,
    /// The reason of the current outage, logged once.
    outage: Option<String>,
    held: bool,
    /// The onboarding result on disk is unreadable: re-onboarding is explicit, so the job
    /// waits for `margo-agent onboard --force` rather than onboarding on its own.
    onboarding_unreadable: bool,
}

impl Wfm {
    /// Sets up the WFM side from the config: loads or creates the device key, loads the
    /// onboarding result or onboards now (first start), and applies the desired-state
    /// location the WFM handed out when the config names none. `Ok(None)`: registry-only.
    pub fn start(config: &mut Config) -> Result<Option<Wfm>, String> {
        Self::start_with(config, false)
    }

    /// `start`, or with `explicit` (`margo-agent onboard --force`): onboard now, whatever
    /// is recorded and whatever the schedule says. The previous result stays in place until
    /// the new one is written.
    fn start_with(config: &mut Config, explicit: bool) -> Result<Option<Wfm>, String> {
        if !config.wfm.enabled() {
            return Ok(None);
        }
        let key_path = config.wfm.key_path();
        let (key, created) = config.wfm.device_key()?;
        if key.in_tpm() {
            journal::info(
                &format!(
                    "device key in the TPM at {} ({})",
                    config.wfm.tpm_tcti,
                    key.fingerprint()
                ),
                &[],
            );
        }
        if created {
            journal::notice(
                &format!(
                    "device key generated at {} ({})",
                    key_path.display(),
                    key.fingerprint()
                ),
                &[],
            );
        }
        let device_roots =
            crate::http::trust_roots(Some(&config.tls.ca_bundle), &config.tls.extra_ca)
                .map_err(|e| e.to_string())?;
        let mut wfm = Wfm {
            cfg: config.wfm.clone(),
            device_id: config.device_id(),
            key,
            device_roots,
            onboarded: None,
            token: None,
            schedule: Schedule::from_config(&config.wfm),
            failures: 0,
            next_due: Instant::now(),
            next_capabilities: Instant::now(),
            outage: None,
            held: false,
            onboarding_unreadable: false,
        };
        let loaded = if explicit {
            Ok(None)
        } else {
            Onboarded::load(&config.wfm, &wfm.device_roots)
        };
        match loaded {
            Ok(Some(o)) => {
                if o.record.url != config.wfm.url {
                    journal::warn(
                        &format!(
                            "wfm.url is {} but the device was onboarded at {}; the onboarded WFM is used until `margo-agent onboard --force`",
                            config.wfm.url, o.record.url
                        ),
                        &[],
                    );
                }
                if o.record.device_id != wfm.device_id {
                    journal::warn(
                        &format!(
                            "the device id is now {:?} but the device was onboarded as {:?}; the WFM may refuse its reports until `margo-agent onboard --force`",
                            wfm.device_id, o.record.device_id
                        ),
                        &[],
                    );
                }
                wfm.onboarded = Some(o);
            }
            Ok(None) => {
                if explicit || wfm.schedule.hold(crate::units::unix_now()).is_none() {
                    wfm.try_onboard();
                }
            }
            Err(e) => {
                // Convergence never waits for the WFM: the agent runs, reports stay queued.
                journal::error(
                    &format!(
                        "{e}; status reports stay queued and the WFM is not contacted until then; workloads still converge"
                    ),
                    &[("ERROR_CODE", "ERR_WFM_REFUSED")],
                );
                wfm.onboarding_unreadable = true;
            }
        }
        if let Some(o) = &wfm.onboarded {
            o.apply_desired_state(config);
        }
        Ok(Some(wfm))
    }

    /// The device key (for `margo-agent onboard`).
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    pub fn is_onboarded(&self) -> bool {
        self.onboarded.is_some()
    }

    /// When the job wants to run next.
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// New reports were queued: deliver them now rather than at the next interval, unless
    /// the job is backing off from a failure.
    pub fn nudge(&mut self) {
        if self.failures == 0 {
            self.next_due = self.next_due.min(Instant::now());
        }
    }

    /// Whether polling and WFM calls are held back now (polling hours, downtime windows).
    pub fn hold(&self) -> Option<Hold> {
        self.schedule.hold(crate::units::unix_now())
    }

    fn try_onboard(&mut self) -> bool {
        match onboard::onboard(
            &self.cfg,
            &self.device_id,
            &self.key,
            self.device_roots.clone(),
        ) {
            Ok(o) => {
                journal::notice(
                    &format!(
                        "onboarded at {} as client {} (WFM CA pinned in {})",
                        o.record.url,
                        o.record.client_id,
                        self.cfg.data_dir.join(onboard::CA_FILE).display()
                    ),
                    &[],
                );
                self.onboarded = Some(o);
                self.token = None;
                true
            }
            Err(e) => {
                self.note_failure(&format!("onboarding at {} failed: {e}", self.cfg.url), None);
                false
            }
        }
    }

    fn note_failure(&mut self, msg: &str, retry_after: Option<Duration>) {
        self.failures = self.failures.saturating_add(1);
        let backoff = backoff(self.cfg.retry_min, self.cfg.retry_max, self.failures);
        // Half fixed, half random: a fleet coming back does not retry in step.
        // Retry-After is honoured (the parser caps it at an hour), but never below retry_min:
        // 0 would hammer the WFM.
        let delay = retry_after.map_or_else(
            || backoff / 2 + crate::daemon::jitter(backoff / 2),
            |d| d.max(self.cfg.retry_min),
        );
        self.next_due = Instant::now() + delay;
        let line = format!(
            "{msg}; reports stay queued, next try in {}",
            crate::units::format_duration(Duration::from_secs(delay.as_secs().max(1)))
        );
        if self.outage.as_deref() != Some(msg) {
            journal::error(&line, &[("ERROR_CODE", "ERR_WFM_UNREACHABLE")]);
            self.outage = Some(msg.to_string());
        } else {
            journal::debug(&line, &[]);
        }
    }

    fn note_success(&mut self) {
        self.failures = 0;
        if self.outage.take().is_some() {
            journal::notice(&format!("WFM {} reachable again", self.cfg.url), &[]);
        }
    }

    /// A bearer token, fetched when there is none or it is about to expire.
    fn token(&mut self) -> Result<String, CallError> {
        if let Some(t) = &self.token
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let Some(o) = &self.onboarded else {
            return Err(CallError::Refused {
                reason: "the device is not onboarded with the WFM yet".into(),
                status: None,
            });
        };
        let t = client::fetch_token(
            &o.token_agent,
            &o.record.token_url,
            &o.record.client_id,
            &o.secrets.client_secret,
        )?;
        journal::debug("WFM access token fetched", &[]);
        self.token = Some(t.clone());
        Ok(t.value)
    }

    /// A signed, authorised call; on 401 the token is fetched again and the call retried once.
    fn authorised(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(), CallError> {
        let mut retried = false;
        loop {
            // A token problem is never the report's fault: the report waits, whatever the
            // token endpoint said.
            let token = self.token().map_err(|e| match e {
                CallError::Retry { .. } => e,
                CallError::Refused { reason, .. } | CallError::Unauthorized(reason) => {
                    CallError::Retry {
                        reason,
                        retry_after: None,
                    }
                }
            })?;
            let Some(o) = &self.onboarded else {
                return Err(CallError::Refused {
                    reason: "the device is not onboarded with the WFM yet".into(),
                    status: None,
                });
            };
            let url = format!("{}{path}", o.record.url.trim_end_matches('/'));
            match client::signed_json(&o.agent, &self.key, method, &url, Some(&token), body) {
                Ok(_) => return Ok(()),
                Err(CallError::Unauthorized(r)) if !retried => {
                    journal::info(&format!("{r}; fetching a new token and retrying once"), &[]);
                    self.token = None;
                    retried = true;
                }
                Err(CallError::Unauthorized(r)) => {
                    self.token = None;
                    return Err(CallError::Retry {
                        reason: format!("{r} (also with a fresh token)"),
                        retry_after: None,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One run of the job: onboard if needed, send changed capabilities, deliver queued
    /// reports. Returns whether `state` changed (the caller saves it).
    pub fn tick(&mut self, state: &mut State) -> bool {
        let now = Instant::now();
        self.next_due = now + self.cfg.report_interval;
        let mut changed = false;
        let (_, bad) = outbox::entries(&mut state.wfm);
        for b in &bad {
            journal::error(
                &format!(
                    "state file: a status outbox entry is unreadable and was dropped ({b}); the other queued reports are kept"
                ),
                &[("ERROR_CODE", "ERR_STATE_OUTBOX")],
            );
            changed = true;
        }
        if let Some(h) = self.schedule.hold(crate::units::unix_now()) {
            if !self.held {
                journal::info(
                    &format!(
                        "{}: no WFM calls for {}; {} report(s) wait in the outbox",
                        match h {
                            Hold::Downtime(_) => "downtime window",
                            Hold::OutsidePollingHours(_) => "outside polling hours",
                        },
                        crate::units::format_duration(Duration::from_secs(h.seconds())),
                        state.wfm.outbox.len()
                    ),
                    &[],
                );
                self.held = true;
            }
            self.next_due = now + Duration::from_secs(h.seconds());
            // An outage seen before the window is not news after it.
            self.outage = None;
            self.failures = 0;
            return changed;
        }
        self.held = false;
        if self.onboarded.is_none() {
            if self.onboarding_unreadable {
                self.next_due = now + self.cfg.retry_max;
                return changed;
            }
            if !self.try_onboard() {
                return changed;
            }
        }
        if now >= self.next_capabilities {
            match self.send_capabilities(state) {
                Ok(c) => {
                    changed |= c;
                    self.next_capabilities = now + self.cfg.capabilities_interval;
                }
                Err(e) => {
                    self.fail(&e);
                    return changed;
                }
            }
        }
        changed | self.deliver(state)
    }

    fn fail(&mut self, e: &CallError) {
        let retry_after = match e {
            CallError::Retry { retry_after, .. } => *retry_after,
            _ => None,
        };
        self.note_failure(&e.to_string(), retry_after);
    }

    /// Delivers queued reports in order until the outbox is empty, the per-tick budget is
    /// used, or the WFM fails (then the job backs off).
    fn deliver(&mut self, state: &mut State) -> bool {
        let (entries, _) = outbox::entries(&mut state.wfm);
        let mut changed = false;
        let started = Instant::now();
        for e in entries.into_iter().take(DELIVERIES_PER_TICK) {
            if started.elapsed() > TICK_BUDGET {
                break;
            }
            let path = format!(
                "/device/{}/deployment/{}/status",
                crate::http::query_escape(&self.device_id),
                crate::http::query_escape(&e.deployment_id)
            );
            let body = e.body.to_string();
            let fields = [
                ("DEPLOYMENT_ID", e.deployment_id.as_str()),
                ("MARGO_STATE", e.state.as_str()),
            ];
            match self.authorised("POST", &path, body.as_bytes()) {
                Ok(()) => {
                    journal::info(
                        &format!(
                            "deployment {:?}: status {} reported to the WFM",
                            e.deployment_id, e.state
                        ),
                        &fields,
                    );
                    outbox::remove(&mut state.wfm, e.seq);
                    changed = true;
                    self.note_success();
                }
                Err(CallError::Refused { reason: r, .. }) => {
                    journal::error(
                        &format!(
                            "deployment {:?}: the WFM refused status report {} ({r}); the report is dropped, later ones are still sent",
                            e.deployment_id, e.state
                        ),
                        &[fields[0], fields[1], ("ERROR_CODE", "ERR_WFM_REFUSED")],
                    );
                    outbox::remove(&mut state.wfm, e.seq);
                    changed = true;
                }
                Err(err) => {
                    self.fail(&err);
                    return changed;
                }
            }
        }
        if !state.wfm.outbox.is_empty() {
            // Budget used: continue on the loop's next turn.
            self.next_due = Instant::now();
        }
        changed
    }

    /// Detects capabilities; sends them when they differ from what the WFM last accepted
    /// (POST the first time, PUT after).
    fn send_capabilities(&mut self, state: &mut State) -> Result<bool, CallError> {
        let doc = capabilities_document(&self.cfg, &self.device_id);
        let body = doc.to_string();
        let hash = crate::digest::Digest::of(body.as_bytes()).to_string();
        if state.wfm.capabilities.as_deref() == Some(hash.as_str()) {
            return Ok(false);
        }
        let path = format!(
            "/device/{}/capabilities",
            crate::http::query_escape(&self.device_id)
        );
        let mut method = if state.wfm.capabilities.is_none() {
            "POST"
        } else {
            "PUT"
        };
        let mut result = self.authorised(method, &path, body.as_bytes());
        if let Err(e) = &result
            && let Some(other) = capabilities_fallback(method, e)
        {
            method = other;
            result = self.authorised(method, &path, body.as_bytes());
        }
        match result {
            Ok(()) => {
                journal::notice(
                    &format!("capabilities sent to the WFM ({method} {})", &hash[..19]),
                    &[],
                );
                state.wfm.capabilities = Some(hash);
                Ok(true)
            }
            Err(CallError::Refused { reason: r, .. }) => {
                journal::error(
                    &format!(
                        "the WFM refused the capabilities document ({r}); they are not sent again until they change"
                    ),
                    &[("ERROR_CODE", "ERR_WFM_REFUSED")],
                );
                state.wfm.capabilities = Some(hash);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

/// The other method to try when the WFM refused capabilities sent with `method`: 409 to a
/// POST (they exist already: the state file was lost) or 404 to a PUT or POST (they do not:
/// the WFM was reset). Decided on the answer's status, never on its text.
fn capabilities_fallback(method: &str, e: &CallError) -> Option<&'static str> {
    match e {
        CallError::Refused {
            status: Some(404 | 409),
            ..
        } => Some(if method == "POST" { "PUT" } else { "POST" }),
        _ => None,
    }
}

/// The capabilities document of this device.
pub fn capabilities_document(cfg: &config::WfmConfig, device_id: &str) -> Value {
    let root = std::env::var_os("MARGO_AGENT_SYSROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/".into());
    let d = crate::device::detect(&root, &cfg.data_dir, &cfg.capabilities);
    crate::device::document(device_id, &d)
}

impl Wfm {
    /// Fills an empty `desired_state.reference` of a reloaded config from onboarding.
    pub fn apply_desired_state(&self, config: &mut Config) {
        if let Some(o) = &self.onboarded {
            o.apply_desired_state(config);
        }
    }
}

/// `run --once`: deliver what is queued now (a few ticks while the WFM keeps taking them).
pub fn deliver_now(w: &mut Wfm, agent: &mut crate::reconcile::Agent) {
    for _ in 0..10 {
        if w.next_due() > Instant::now() {
            break;
        }
        if w.tick(agent.state_mut()) {
            agent.persist();
        }
        if agent.state_mut().wfm.outbox.is_empty() {
            break;
        }
    }
}

/// `margo-agent onboard [--force]`.
pub fn onboard_command(mut config: Config, force: bool) -> u8 {
    use crate::daemon::exit;
    if !config.wfm.enabled() {
        journal::error(
            "wfm.url is not set: there is no Fleet Manager to onboard with",
            &[],
        );
        return exit::CONFIG;
    }
    let record = config.wfm.data_dir.join(onboard::RECORD_FILE);
    if record.exists() && !force {
        println!(
            "already onboarded ({}); `margo-agent onboard --force` onboards again",
            record.display()
        );
        return exit::OK;
    }
    match Wfm::start_with(&mut config, force) {
        Ok(Some(w)) if w.is_onboarded() => {
            println!(
                "onboarded at {} (device key {})",
                config.wfm.url,
                w.key().fingerprint()
            );
            exit::OK
        }
        Ok(_) => {
            journal::error(
                &format!(
                    "onboarding at {} did not complete (the line above says why); {}",
                    config.wfm.url,
                    if record.exists() {
                        "the previous onboarding result is kept"
                    } else {
                        "the agent onboards at its next start"
                    }
                ),
                &[],
            );
            exit::SOURCE_UNREACHABLE
        }
        Err(e) => {
            journal::error(&e, &[]);
            exit::CONFIG
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: Option<u16>, reason: &str) -> CallError {
        CallError::Refused {
            reason: reason.into(),
            status,
        }
    }

    #[test]
    fn capabilities_fall_back_on_404_and_409_status_only() {
        assert_eq!(
            capabilities_fallback("POST", &refused(Some(409), "x")),
            Some("PUT")
        );
        assert_eq!(
            capabilities_fallback("PUT", &refused(Some(404), "x")),
            Some("POST")
        );
        // A 400 whose body happens to mention 404 or 409 is a refusal, not a fallback.
        let quoted = "https://wfm/x answered 400: field foo: 409 is not a port; see 404";
        assert_eq!(
            capabilities_fallback("POST", &refused(Some(400), quoted)),
            None
        );
        assert_eq!(capabilities_fallback("PUT", &refused(None, " 404 ")), None);
        let retry = CallError::Retry {
            reason: "answered 409".into(),
            retry_after: None,
        };
        assert_eq!(capabilities_fallback("POST", &retry), None);
    }

    #[test]
    fn backoff_doubles_from_retry_min_up_to_retry_max() {
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(600));
        let secs: Vec<u64> = (0..10).map(|n| backoff(min, max, n).as_secs()).collect();
        assert_eq!(secs, [5, 5, 10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(backoff(min, max, u32::MAX), max);
        // A retry_max below retry_min: retry_min wins.
        assert_eq!(backoff(min, Duration::from_secs(1), 3), min);
    }
}
