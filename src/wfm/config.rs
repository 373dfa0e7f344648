//! The `wfm:` section of the config: where the Fleet Manager is, where onboarding results
//! live, and when the agent may talk (polling hours, downtime windows). Every key and its
//! default is documented in `docs/wfm-api.md` and `examples/config.yaml`.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WfmConfig {
    /// Base URL of the Fleet Manager's Device API, path prefix included
    /// (`https://wfm.example/api/v1`). Empty: registry-only mode, no WFM traffic at all.
    pub url: String,
    /// Onboarding results, the pinned CA and (by default) the device key.
    pub data_dir: PathBuf,
    /// A provided device key (PKCS#8 PEM or DER, mode 0600); default `<data_dir>/device-key.pem`,
    /// generated on first start.
    pub key_file: Option<PathBuf>,
    /// `file` (default: `key_file`), or `tpm`: the key is created and used inside the TPM
    /// (needs a build with the cargo feature `tpm`).
    pub key_store: String,
    /// How the TPM is reached (a tpm2-tss TCTI string).
    pub tpm_tcti: String,
    /// Deadline of one WFM call (connect, TLS, request, answer).
    #[serde(deserialize_with = "crate::config::duration")]
    pub call_timeout: Duration,
    /// How often queued status reports are looked at while the WFM answers.
    #[serde(deserialize_with = "crate::config::duration")]
    pub report_interval: Duration,
    /// How often capabilities are detected again (sent only when they changed).
    #[serde(deserialize_with = "crate::config::duration")]
    pub capabilities_interval: Duration,
    /// First retry delay after a failed delivery; doubles up to `retry_max`, with jitter.
    #[serde(deserialize_with = "crate::config::duration")]
    pub retry_min: Duration,
    #[serde(deserialize_with = "crate::config::duration")]
    pub retry_max: Duration,
    /// Bound of the status outbox (see docs/wfm-api.md for the coalescing rule).
    pub outbox_max: usize,
    /// Hours of the day (UTC, `HH:MM-HH:MM`, may wrap midnight) in which the agent polls the
    /// desired state and talks to the WFM. Default: all day.
    pub polling_hours: String,
    /// Windows in which the network is expected to be down: no polls, no WFM calls, no
    /// retries, no error lines until the window ends.
    pub downtime: Vec<Downtime>,
    /// Capability values that cannot be detected, or that the board profile fixes.
    pub capabilities: CapabilityOverrides,
}

impl Default for WfmConfig {
    fn default() -> Self {
        WfmConfig {
            url: String::new(),
            data_dir: PathBuf::from("/var/lib/margo-agent/wfm"),
            key_file: None,
            key_store: "file".into(),
            tpm_tcti: "device:/dev/tpmrm0".into(),
            call_timeout: Duration::from_secs(15),
            report_interval: Duration::from_secs(30),
            capabilities_interval: Duration::from_secs(3600),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            outbox_max: 256,
            polling_hours: "00:00-24:00".into(),
            downtime: Vec::new(),
            capabilities: CapabilityOverrides::default(),
        }
    }
}

/// One downtime window: `daily: "HH:MM-HH:MM"` (UTC), or a one-off
/// `from: 2026-12-24T18:00:00Z` / `until: 2026-12-27T06:00:00Z`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Downtime {
    pub daily: Option<String>,
    pub from: Option<String>,
    pub until: Option<String>,
}

/// Overrides of detected capabilities (board profile values).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilityOverrides {
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// Extra peripherals (`{type: gpu, manufacturer: …, model: …}`), added to detected ones.
    pub peripherals: Vec<Peripheral>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields, default)]
pub struct Peripheral {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl WfmConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The device key as configured; `true` when a key file was generated now.
    pub fn device_key(&self) -> Result<(crate::identity::DeviceKey, bool), String> {
        #[cfg(feature = "tpm")]
        if self.key_store == "tpm" {
            return crate::identity::DeviceKey::tpm(&self.tpm_tcti)
                .map(|k| (k, false))
                .map_err(|e| e.to_string());
        }
        crate::identity::DeviceKey::load_or_create(&self.key_path()).map_err(|e| e.to_string())
    }

    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("device-key.pem"))
    }

    /// The first invalid value, as (key, reason).
    pub fn problem(&self) -> Option<(String, String)> {
        if self.enabled() {
            if !self.url.starts_with("https://") {
                return Some((
                    "wfm.url".into(),
                    format!("{:?} must be an https:// URL", self.url),
                ));
            }
            if self.url["https://".len()..]
                .split('/')
                .next()
                .unwrap_or("")
                .is_empty()
            {
                return Some(("wfm.url".into(), "has no host".into()));
            }
        }
        match self.key_store.as_str() {
            "file" => {}
            "tpm" if cfg!(feature = "tpm") => {}
            "tpm" => {
                return Some((
                    "wfm.key_store".into(),
                    "tpm needs a margo-agent built with the cargo feature `tpm`".into(),
                ));
            }
            other => {
                return Some((
                    "wfm.key_store".into(),
                    format!("{other:?} is not file or tpm"),
                ));
            }
        }
        if self.call_timeout < Duration::from_secs(1) {
            return Some(("wfm.call_timeout".into(), "must be at least 1s".into()));
        }
        if self.report_interval < Duration::from_secs(1) || self.retry_min.is_zero() {
            return Some((
                "wfm.report_interval".into(),
                "report_interval and retry_min must be at least 1s".into(),
            ));
        }
        if self.outbox_max < 8 {
            return Some(("wfm.outbox_max".into(), "must be at least 8".into()));
        }
        if let Err(e) = super::schedule::parse_range(&self.polling_hours) {
            return Some(("wfm.polling_hours".into(), e));
        }
        for (i, w) in self.downtime.iter().enumerate() {
            if let Err(e) = super::schedule::Window::from_config(w) {
                return Some((format!("wfm.downtime[{i}]"), e));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn durations_take_the_config_spellings() {
        let c = Config::from_yaml(
            Path::new("c.yaml"),
            "wfm:\n  call_timeout: 1m30s\n  retry_min: 500ms\n  retry_max: 10\n",
        )
        .unwrap();
        assert_eq!(c.wfm.call_timeout, Duration::from_secs(90));
        assert_eq!(c.wfm.retry_min, Duration::from_millis(500));
        assert_eq!(c.wfm.retry_max, Duration::from_secs(10));
        let e = Config::from_yaml(Path::new("c.yaml"), "wfm:\n  call_timeout: 10x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown unit"), "{e}");
    }
}
