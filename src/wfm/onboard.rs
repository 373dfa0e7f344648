//! Onboarding: `GET {wfm}/onboarding/certificate` (the WFM root CA, trusted through the
//! device's trust store this once, then pinned), `POST {wfm}/onboarding` with the device id
//! and public key (signed), answered with the client id, client secret, token URL and
//! optionally the desired-state location. Results go to `wfm.data_dir`:
//!
//! - `ca.pem` — the pinned WFM CA: every later WFM call trusts this CA and nothing else;
//! - `onboarding.json` — client id, token URL, desired-state reference (no secrets);
//! - `secrets.json` — client secret and registry password, mode 0600, never logged.
//!
//! A device onboards once; `margo-agent onboard --force` onboards again.

use super::client::{self, CallError};
use super::config::WfmConfig;
use crate::identity::{DeviceKey, pem_decode, pem_encode, write_private};
use crate::oci::authority_of;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use ureq::tls::Certificate;

pub const CA_FILE: &str = "ca.pem";
pub const RECORD_FILE: &str = "onboarding.json";
pub const SECRETS_FILE: &str = "secrets.json";

/// `onboarding.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub url: String,
    pub device_id: String,
    pub client_id: String,
    pub token_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_username: Option<String>,
    pub onboarded_at: u64,
}

/// `secrets.json` (0600).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secrets {
    pub client_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_password: Option<String>,
}

/// An onboarded device: its record, secrets and the pinned clients.
pub struct Onboarded {
    pub record: Record,
    pub secrets: Secrets,
    /// Trusts only the pinned CA.
    pub agent: ureq::Agent,
    /// For the token URL: the pinned client when it is on the WFM's host, else the device's
    /// trust store (an identity provider elsewhere).
    pub token_agent: ureq::Agent,
}

/// Whether two URLs name the same `host[:port]` (host names compare case-insensitively).
fn same_authority(a: &str, b: &str) -> bool {
    matches!((authority_of(a), authority_of(b)), (Some(x), Some(y)) if x == y)
}

fn pinned_roots(pem: &[u8], origin: &str) -> Result<Arc<Vec<Certificate<'static>>>, String> {
    let certs =
        crate::http::pem_certs(pem).map_err(|e| format!("{origin}: not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{origin}: holds no certificate"));
    }
    Ok(Arc::new(certs))
}

impl Onboarded {
    fn build(
        cfg: &WfmConfig,
        record: Record,
        secrets: Secrets,
        ca_pem: &[u8],
        device_roots: &Arc<Vec<Certificate<'static>>>,
    ) -> Result<Onboarded, String> {
        let roots = pinned_roots(ca_pem, &cfg.data_dir.join(CA_FILE).display().to_string())?;
        let agent = client::agent(roots.clone(), cfg.call_timeout);
        let token_agent = if same_authority(&record.token_url, &record.url) {
            agent.clone()
        } else {
            client::agent(device_roots.clone(), cfg.call_timeout)
        };
        Ok(Onboarded {
            record,
            secrets,
            agent,
            token_agent,
        })
    }

    /// Loads the onboarding result; `Ok(None)` when the device was never onboarded.
    pub fn load(
        cfg: &WfmConfig,
        device_roots: &Arc<Vec<Certificate<'static>>>,
    ) -> Result<Option<Onboarded>, String> {
        let dir = &cfg.data_dir;
        let rec_path = dir.join(RECORD_FILE);
        let text = match std::fs::read(&rec_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "cannot read the onboarding record {} ({e}); make it readable by the agent, or onboard again with `margo-agent onboard --force`",
                    rec_path.display()
                ));
            }
        };
        let bad = |p: &Path, e: &dyn std::fmt::Display| {
            format!(
                "{} is unreadable ({e}); onboard again with `margo-agent onboard --force`",
                p.display()
            )
        };
        let record: Record = serde_json::from_slice(&text).map_err(|e| bad(&rec_path, &e))?;
        let sec_path = dir.join(SECRETS_FILE);
        let secrets: Secrets = std::fs::read(&sec_path)
            .map_err(|e| bad(&sec_path, &e))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| bad(&sec_path, &e)))?;
        let ca_path = dir.join(CA_FILE);
        let ca = std::fs::read(&ca_path).map_err(|e| bad(&ca_path, &e))?;
        Onboarded::build(cfg, record, secrets, &ca, device_roots)
            .map(Some)
            .map_err(|e| {
                format!("the pinned WFM CA {e}; onboard again with `margo-agent onboard --force`")
            })
    }

    /// The desired-state location handed out at onboarding fills an empty
    /// `desired_state.reference`, with its registry credentials unless the config has some.
    pub fn apply_desired_state(&self, config: &mut crate::config::Config) {
        let Some(reference) = &self.record.desired_state else {
            return;
        };
        if !config.desired_state.reference.is_empty() {
            return;
        }
        config.desired_state.reference = reference.clone();
        let Ok(r) = crate::oci::reference::Reference::parse(reference) else {
            return;
        };
        if config.registry(&r.registry).is_none()
            && let Some(user) = &self.record.registry_username
        {
            config.registries.push(crate::config::Registry {
                host: r.registry,
                username: Some(user.clone()),
                password: self.secrets.registry_password.clone(),
                ..crate::config::Registry::default()
            });
        }
    }
}

fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| v.get(*n).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// Runs the onboarding exchange and writes its results. `roots`: the device's trust store,
/// used only for the certificate download.
pub fn onboard(
    cfg: &WfmConfig,
    device_id: &str,
    key: &DeviceKey,
    roots: Arc<Vec<Certificate<'static>>>,
) -> Result<Onboarded, String> {
    let base = cfg.url.trim_end_matches('/');
    let first = client::agent(roots.clone(), cfg.call_timeout);
    let cert_url = format!("{base}/onboarding/certificate");
    let answer = client::call(
        &first,
        "GET",
        &cert_url,
        &[("Accept", "application/json")],
        None,
    )
    .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&answer.body).map_err(|e| {
        format!(
            "{cert_url}: answer is not JSON ({e}): {}",
            client::quote(&answer.body)
        )
    })?;
    let b64 = field(&v, &["certificate"])
        .ok_or_else(|| format!("{cert_url}: answer has no \"certificate\""))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("{cert_url}: \"certificate\" is not base64: {e}"))?;
    // The draft says base64; WFMs send either a PEM file or the DER certificate.
    let ca_pem = if raw.starts_with(b"-----BEGIN") {
        raw
    } else {
        pem_encode(&raw, "CERTIFICATE").into_bytes()
    };
    if pem_decode(&ca_pem, "CERTIFICATE").is_none() {
        return Err(format!("{cert_url}: \"certificate\" holds no certificate"));
    }
    let pinned = client::agent(pinned_roots(&ca_pem, &cert_url)?, cfg.call_timeout);
    let b64 = &base64::engine::general_purpose::STANDARD;
    let request = serde_json::json!({
        "apiVersion": "onboarding.margo/v1",
        "kind": "OnboardingRequest",
        "deviceId": device_id,
        "publicKey": b64.encode(key.public_key_der()),
    });
    let url = format!("{base}/onboarding");
    let answer = client::signed_json(
        &pinned,
        key,
        "POST",
        &url,
        None,
        request.to_string().as_bytes(),
    )
    .map_err(|e| match e {
        CallError::Refused { reason: r, .. } | CallError::Unauthorized(r) => {
            format!("{r}; the device is not onboarded")
        }
        CallError::Retry { reason, .. } => reason,
    })?;
    let v: Value = serde_json::from_slice(&answer.body).map_err(|e| {
        format!(
            "{url}: answer is not JSON ({e}): {}",
            client::quote(&answer.body)
        )
    })?;
    let client_id = field(&v, &["clientId", "client_id"]);
    let client_secret = field(&v, &["clientSecret", "client_secret"]);
    let token_url = field(
        &v,
        &["tokenEndpointUrl", "tokenUrl", "token_url", "tokenEndpoint"],
    );
    let missing: Vec<&str> = [
        ("clientId", client_id.is_none()),
        ("clientSecret", client_secret.is_none()),
        ("tokenEndpointUrl", token_url.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(n, _)| *n)
    .collect();
    let (Some(client_id), Some(client_secret), Some(token_url)) =
        (client_id, client_secret, token_url)
    else {
        return Err(format!(
            "{url}: the onboarding answer lacks {}; nothing was stored",
            missing.join(", ")
        ));
    };
    if !token_url.starts_with("https://") {
        return Err(format!(
            "{url}: token URL {token_url:?} is not https://; nothing was stored"
        ));
    }
    let ds = v.get("desiredState");
    let record = Record {
        url: cfg.url.clone(),
        device_id: device_id.to_string(),
        client_id: client_id.to_string(),
        token_url: token_url.to_string(),
        desired_state: ds
            .and_then(|d| field(d, &["reference", "url"]))
            .map(str::to_string),
        registry_username: ds.and_then(|d| field(d, &["username"])).map(str::to_string),
        onboarded_at: crate::units::unix_now(),
    };
    let secrets = Secrets {
        client_secret: client_secret.to_string(),
        registry_password: ds
            .and_then(|d| field(d, &["password", "token"]))
            .map(str::to_string),
    };
    let dir = &cfg.data_dir;
    let io = |p: &Path, e: std::io::Error| {
        format!(
            "cannot write {} ({e}); wfm.data_dir must be writable by the agent, the device is not onboarded",
            p.display()
        )
    };
    let sec_json = serde_json::to_vec_pretty(&secrets).map_err(|e| e.to_string())?;
    write_private(&dir.join(SECRETS_FILE), &sec_json)
        .map_err(|e| io(&dir.join(SECRETS_FILE), e))?;
    crate::state::write_atomically(&dir.join(CA_FILE), &ca_pem)
        .map_err(|e| io(&dir.join(CA_FILE), e))?;
    let rec_json = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
    // Written last: its presence means onboarding is complete.
    crate::state::write_atomically(&dir.join(RECORD_FILE), &rec_json)
        .map_err(|e| io(&dir.join(RECORD_FILE), e))?;
    Onboarded::build(cfg, record, secrets, &ca_pem, &roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_url_on_the_wfm_host_is_recognised_whatever_the_case() {
        assert!(same_authority(
            "https://WFM.example:8443/oauth/token",
            "https://wfm.example:8443/api/v1"
        ));
        assert!(!same_authority(
            "https://idp.example/oauth/token",
            "https://wfm.example/api/v1"
        ));
        assert!(!same_authority(
            "https://wfm.example:9443/token",
            "https://wfm.example:8443/api/v1"
        ));
    }

    #[test]
    fn a_ca_answer_without_a_certificate_is_refused_naming_its_origin() {
        for pem in [
            &b"not PEM at all"[..],
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ] {
            let e = pinned_roots(pem, "https://wfm.example/onboarding/certificate").unwrap_err();
            assert!(
                e.starts_with("https://wfm.example/onboarding/certificate: "),
                "{e}"
            );
        }
    }
}
