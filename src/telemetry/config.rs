//! Telemetry settings: the `telemetry:` section of the config file and the standard
//! OpenTelemetry environment variables, resolved once into [`Settings`].
//!
//! Precedence, per setting: the metrics-specific variable (`OTEL_EXPORTER_OTLP_METRICS_*`),
//! then the generic one (`OTEL_EXPORTER_OTLP_*`), then the config file's `metrics_*` key (only
//! `metrics_endpoint` has one), then its generic key, then the OpenTelemetry default. The
//! environment wins over the file because it is the interface OpenTelemetry standardises: a
//! device owner who runs the collector sets it in a systemd drop-in without editing the
//! agent's config. An empty variable counts as unset (as the specification says).
//!
//! Export starts only when an endpoint is named (variable or file) and the SDK is not
//! disabled: a device without a collector sends nothing and logs nothing.

use crate::units::parse_duration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The `telemetry:` section (every key optional; `docs/metrics.md` lists them with defaults).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `OTEL_SDK_DISABLED`.
    pub disabled: bool,
    /// Base URL of the collector's OTLP/HTTP receiver (`OTEL_EXPORTER_OTLP_ENDPOINT`);
    /// `v1/metrics` is appended.
    pub endpoint: Option<String>,
    /// Full URL for metrics, used as-is (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`).
    pub metrics_endpoint: Option<String>,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: BTreeMap<String, String>,
    /// `http/protobuf` (default) or `http/json`.
    pub protocol: Option<String>,
    /// `gzip` or `none` (default).
    pub compression: Option<String>,
    /// Deadline of one export, e.g. `10s` (default 10s).
    pub timeout: Option<String>,
    /// PEM file of the CA(s) that sign the collector's certificate (added to the trust store).
    pub certificate: Option<PathBuf>,
    /// PEM client certificate chain and key, for a collector that wants mTLS.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Time between exports, e.g. `60s` (`OTEL_METRIC_EXPORT_INTERVAL`, default 60s).
    pub export_interval: Option<String>,
    /// `service.name` (`OTEL_SERVICE_NAME`, default `margo-agent`).
    pub service_name: Option<String>,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource_attributes: BTreeMap<String, String>,
    /// What workload containers are told about the collector.
    pub workloads: WorkloadTelemetry,
}

/// The Margo collector variables injected into every workload container.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadTelemetry {
    /// `HTTP_OTEL_EXPORTER_OTLP_ENDPOINT`; default: the agent's own base endpoint. Containers
    /// do not share the host's loopback: name an address they reach.
    pub http_endpoint: Option<String>,
    /// `GRPC_OTEL_EXPORTER_OTLP_ENDPOINT`; not injected unless set.
    pub grpc_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` for workloads; not injected unless set.
    pub protocol: Option<String>,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`: a path as seen inside the containers; not injected
    /// unless set.
    pub certificate: Option<String>,
}

/// Request body encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Protobuf,
    Json,
}

impl Protocol {
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::Protobuf => "application/x-protobuf",
            Protocol::Json => "application/json",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Protobuf => "http/protobuf",
            Protocol::Json => "http/json",
        }
    }
}

/// Everything the exporter needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Export runs (an endpoint is named and the SDK is not disabled).
    pub enabled: bool,
    /// The metrics URL (`…/v1/metrics`).
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub protocol: Protocol,
    pub gzip: bool,
    pub timeout: Duration,
    pub certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub interval: Duration,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    /// Environment injected into every workload container (empty when nothing is configured).
    pub workload_env: BTreeMap<String, String>,
    /// Values that were ignored (with the reason), for the journal.
    pub warnings: Vec<String>,
}

pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(60_000);
/// Shortest export interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest export deadline accepted: a stuck collector must not hold the loop longer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// A setting that cannot be used: `source` is the variable or config key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingError {
    pub setting: String,
    pub reason: String,
}

fn err(source: &str, reason: impl Into<String>) -> SettingError {
    SettingError {
        setting: source.to_string(),
        reason: reason.into(),
    }
}

const PREFIX: &str = "OTEL_EXPORTER_OTLP_";
const METRICS_PREFIX: &str = "OTEL_EXPORTER_OTLP_METRICS_";

impl Settings {
    /// Resolves the process environment over `file`.
    pub fn from_process_env(file: &TelemetryConfig) -> Result<Settings, SettingError> {
        Settings::resolve(file, &|k| std::env::var(k).ok())
    }

    /// Resolves `env` over `file`. Errors name the variable or `telemetry.<key>`.
    pub fn resolve(
        file: &TelemetryConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingError> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        // (value, where it came from) of an exporter setting with both variable forms.
        let pick = |suffix: &str, file_value: Option<String>, file_key: &str| {
            let m = format!("{METRICS_PREFIX}{suffix}");
            let g = format!("{PREFIX}{suffix}");
            if let Some(v) = get(&m) {
                Some((v, m))
            } else if let Some(v) = get(&g) {
                Some((v, g))
            } else {
                file_value.map(|v| (v, format!("telemetry.{file_key}")))
            }
        };
        let mut warnings = Vec::new();

        let disabled = match get("OTEL_SDK_DISABLED") {
            Some(v) if v.trim().eq_ignore_ascii_case("true") => true,
            Some(v) if v.trim().eq_ignore_ascii_case("false") => false,
            Some(v) => {
                warnings.push(format!(
                    "OTEL_SDK_DISABLED={v:?} is neither true nor false; taken as false"
                ));
                false
            }
            None => file.disabled,
        };

        // Endpoint: the metrics-specific form is used as-is, the base form gets v1/metrics.
        let base_env = get(&format!("{PREFIX}ENDPOINT"));
        let (url, base, named) = if let Some(v) = get(&format!("{METRICS_PREFIX}ENDPOINT")) {
            let src = format!("{METRICS_PREFIX}ENDPOINT");
            (check_url(&src, &v)?, base_env.clone(), true)
        } else if let Some(v) = &base_env {
            let src = format!("{PREFIX}ENDPOINT");
            (check_url(&src, &metrics_url(v))?, Some(v.clone()), true)
        } else if let Some(v) = &file.metrics_endpoint {
            (
                check_url("telemetry.metrics_endpoint", v)?,
                file.endpoint.clone(),
                true,
            )
        } else if let Some(v) = &file.endpoint {
            (
                check_url("telemetry.endpoint", &metrics_url(v))?,
                Some(v.clone()),
                true,
            )
        } else {
            (metrics_url(DEFAULT_ENDPOINT), None, false)
        };
        if let Some(b) = &base {
            let src = if base_env.is_some() {
                format!("{PREFIX}ENDPOINT")
            } else {
                "telemetry.endpoint".into()
            };
            check_url(&src, b)?;
        }

        let headers = match pick("HEADERS", None, "headers") {
            Some((v, src)) => parse_list(&src, &v)?
                .into_iter()
                .map(|(k, v)| check_header(&src, k, v))
                .collect::<Result<Vec<_>, _>>()?,
            None => file
                .headers
                .iter()
                .map(|(k, v)| check_header("telemetry.headers", k.clone(), v.clone()))
                .collect::<Result<Vec<_>, _>>()?,
        };

        let protocol = match pick("PROTOCOL", file.protocol.clone(), "protocol") {
            None => Protocol::Protobuf,
            Some((v, src)) => match v.trim() {
                "http/protobuf" => Protocol::Protobuf,
                "http/json" => Protocol::Json,
                "grpc" => {
                    return Err(err(
                        &src,
                        "grpc is not supported: margo-agent exports over OTLP/HTTP; use http/protobuf (the default) or http/json and the collector's HTTP port (4318)",
                    ));
                }
                other => {
                    return Err(err(
                        &src,
                        format!("{other:?} is not http/protobuf or http/json"),
                    ));
                }
            },
        };

        let gzip = match pick("COMPRESSION", file.compression.clone(), "compression") {
            None => false,
            Some((v, src)) => match v.trim() {
                "gzip" => true,
                "none" => false,
                other => return Err(err(&src, format!("{other:?} is not gzip or none"))),
            },
        };

        let timeout = match pick("TIMEOUT", None, "timeout") {
            Some((v, src)) => millis(&src, &v)?,
            None => match &file.timeout {
                Some(t) => parse_duration(t).map_err(|e| err("telemetry.timeout", e))?,
                None => DEFAULT_TIMEOUT,
            },
        };
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            let src = pick("TIMEOUT", None, "timeout").map_or("telemetry.timeout".into(), |p| p.1);
            return Err(err(
                &src,
                format!(
                    "{} ms is outside 1 ms … {} ms",
                    timeout.as_millis(),
                    MAX_TIMEOUT.as_millis()
                ),
            ));
        }

        let path = |suffix: &str, f: &Option<PathBuf>, key: &str| {
            pick(suffix, f.as_ref().map(|p| p.display().to_string()), key)
                .map(|(v, _)| PathBuf::from(v))
        };
        let certificate = path("CERTIFICATE", &file.certificate, "certificate");
        let client_certificate = path(
            "CLIENT_CERTIFICATE",
            &file.client_certificate,
            "client_certificate",
        );
        let client_key = path("CLIENT_KEY", &file.client_key, "client_key");
        if client_certificate.is_some() != client_key.is_some() {
            return Err(err(
                &format!("{PREFIX}CLIENT_CERTIFICATE"),
                "a client certificate and a client key must be given together (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY, or telemetry.client_certificate and telemetry.client_key)",
            ));
        }

        let interval = match get("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => millis("OTEL_METRIC_EXPORT_INTERVAL", &v)?,
            None => match &file.export_interval {
                Some(t) => parse_duration(t).map_err(|e| err("telemetry.export_interval", e))?,
                None => DEFAULT_INTERVAL,
            },
        };
        if interval < MIN_INTERVAL {
            let src = if get("OTEL_METRIC_EXPORT_INTERVAL").is_some() {
                "OTEL_METRIC_EXPORT_INTERVAL"
            } else {
                "telemetry.export_interval"
            };
            return Err(err(
                src,
                format!("{} ms is below the 1000 ms minimum", interval.as_millis()),
            ));
        }

        let mut resource_attributes: Vec<(String, String)> = file
            .resource_attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(v) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for (k, v) in parse_list("OTEL_RESOURCE_ATTRIBUTES", &v)? {
                resource_attributes.retain(|(old, _)| *old != k);
                resource_attributes.push((k, v));
            }
        }
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| file.service_name.clone())
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "margo-agent".into());

        let workload_env = workload_env(file, base.as_deref(), &url, named)?;

        Ok(Settings {
            enabled: named && !disabled,
            url,
            headers,
            protocol,
            gzip,
            timeout,
            certificate,
            client_certificate,
            client_key,
            interval,
            service_name,
            resource_attributes,
            workload_env,
            warnings,
        })
    }
}

impl Settings {
    /// One line for `check-config`.
    pub fn summary(&self) -> String {
        let export = if self.enabled {
            format!(
                "metrics to {} every {} ms ({}{})",
                self.url,
                self.interval.as_millis(),
                self.protocol.as_str(),
                if self.gzip { ", gzip" } else { "" }
            )
        } else {
            "no export (no collector endpoint set, or OTEL_SDK_DISABLED=true)".to_string()
        };
        if self.workload_env.is_empty() {
            export
        } else {
            let vars: Vec<&str> = self.workload_env.keys().map(String::as_str).collect();
            format!("{export}; workloads get {}", vars.join(", "))
        }
    }
}

/// `base` + `v1/metrics`, with exactly one `/` between them.
pub fn metrics_url(base: &str) -> String {
    format!("{}/v1/metrics", base.trim().trim_end_matches('/'))
}

fn check_url(src: &str, v: &str) -> Result<String, SettingError> {
    let v = v.trim();
    if !(v.starts_with("http://") || v.starts_with("https://")) {
        return Err(err(
            src,
            format!("{v:?} must start with http:// or https://"),
        ));
    }
    let uri: ureq::http::Uri = v
        .parse()
        .map_err(|e| err(src, format!("{v:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(err(
                src,
                format!("{v:?} must start with http:// or https://"),
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(err(src, format!("{v:?} has no host")));
    }
    Ok(v.to_string())
}

fn millis(src: &str, v: &str) -> Result<Duration, SettingError> {
    let t = v.trim();
    t.parse::<u64>().map(Duration::from_millis).map_err(|_| {
        err(
            src,
            format!("{t:?} is not a non-negative whole number of milliseconds"),
        )
    })
}

/// A `key=value,key2=value2` list (W3C Baggage-like, as `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES` use it): items trimmed, empty items skipped, keys and values
/// percent-decoded. A malformed item refuses the whole list.
pub fn parse_list(src: &str, v: &str) -> Result<Vec<(String, String)>, SettingError> {
    let mut out = Vec::new();
    for (i, item) in v.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, val)) = item.split_once('=') else {
            return Err(err(
                src,
                format!("item {} {item:?} is not key=value", i + 1),
            ));
        };
        let k =
            percent_decode(k.trim()).map_err(|e| err(src, format!("item {} key: {e}", i + 1)))?;
        let val = percent_decode(val.trim())
            .map_err(|e| err(src, format!("item {} value: {e}", i + 1)))?;
        if k.is_empty() {
            return Err(err(
                src,
                format!("item {} {item:?} has an empty key", i + 1),
            ));
        }
        out.push((k, val));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?} has a bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

fn check_header(src: &str, k: String, v: String) -> Result<(String, String), SettingError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if k.is_empty() || !k.chars().all(token) {
        return Err(err(src, format!("{k:?} is not a valid header name")));
    }
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(err(
            src,
            format!("the value of header {k:?} contains control characters"),
        ));
    }
    Ok((k, v))
}

/// The Margo collector variables for workloads; empty when no collector is configured.
fn workload_env(
    file: &TelemetryConfig,
    base: Option<&str>,
    url: &str,
    named: bool,
) -> Result<BTreeMap<String, String>, SettingError> {
    let w = &file.workloads;
    let mut env = BTreeMap::new();
    let http = match &w.http_endpoint {
        Some(v) => Some(check_url("telemetry.workloads.http_endpoint", v)?),
        None if named => Some(
            base.map(|b| b.trim().to_string())
                .unwrap_or_else(|| url.trim_end_matches("/v1/metrics").to_string()),
        ),
        None => None,
    };
    if let Some(h) = http {
        env.insert("HTTP_OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), h);
    }
    if let Some(g) = &w.grpc_endpoint {
        env.insert(
            "GRPC_OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            check_url("telemetry.workloads.grpc_endpoint", g)?,
        );
    }
    if let Some(p) = &w.protocol {
        if !matches!(p.as_str(), "grpc" | "http/protobuf" | "http/json") {
            return Err(err(
                "telemetry.workloads.protocol",
                format!("{p:?} is not grpc, http/protobuf or http/json"),
            ));
        }
        env.insert("OTEL_EXPORTER_OTLP_PROTOCOL".to_string(), p.clone());
    }
    if let Some(c) = &w.certificate {
        env.insert("OTEL_EXPORTER_OTLP_CERTIFICATE".to_string(), c.clone());
    }
    Ok(env)
}

impl TelemetryConfig {
    /// The first problem of the file's own values, as (key, reason); the environment is
    /// checked when the agent starts.
    pub fn problem(&self) -> Option<(String, String)> {
        Settings::resolve(self, &|_| None)
            .err()
            .map(|e| (e.setting, e.reason))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn resolve(env: &[(&str, &str)], file: &TelemetryConfig) -> Result<Settings, SettingError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(file, &|k| env.get(k).cloned())
    }

    #[test]
    fn nothing_configured_means_no_export_and_no_injection() {
        let s = resolve(&[], &TelemetryConfig::default()).unwrap();
        assert!(!s.enabled);
        assert!(s.workload_env.is_empty());
        assert_eq!(s.url, "http://localhost:4318/v1/metrics");
        assert_eq!(s.protocol, Protocol::Protobuf);
        assert!(!s.gzip);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.interval, Duration::from_secs(60));
        assert_eq!(s.service_name, "margo-agent");
    }

    #[test]
    fn signal_specific_endpoint_is_used_as_is_and_wins() {
        let s = resolve(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://m:9/custom"),
            ],
            &TelemetryConfig::default(),
        )
        .unwrap();
        assert!(s.enabled);
        assert_eq!(s.url, "https://m:9/custom");
        assert_eq!(
            s.workload_env["HTTP_OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://c:4318/"
        );
        let s = resolve(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")],
            &TelemetryConfig::default(),
        )
        .unwrap();
        assert_eq!(s.url, "http://c:4318/base/v1/metrics");
    }

    #[test]
    fn environment_overrides_the_file() {
        let file = TelemetryConfig {
            endpoint: Some("http://file:4318".into()),
            protocol: Some("http/json".into()),
            compression: Some("gzip".into()),
            export_interval: Some("5s".into()),
            ..Default::default()
        };
        let s = resolve(&[], &file).unwrap();
        assert_eq!(s.url, "http://file:4318/v1/metrics");
        assert_eq!(
            (s.protocol, s.gzip, s.interval),
            (Protocol::Json, true, Duration::from_secs(5))
        );
        let s = resolve(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "2500"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ],
            &file,
        )
        .unwrap();
        assert_eq!(s.url, "http://env:4318/v1/metrics");
        assert_eq!(s.protocol, Protocol::Protobuf);
        assert!(
            !s.gzip,
            "the metrics-specific variable wins over the generic one"
        );
        assert_eq!(s.interval, Duration::from_millis(2500));
        assert_eq!(s.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn headers_and_resource_attributes_are_percent_decoded() {
        let s = resolve(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "api-key=a%20b%2Cc , x-tenant=t1,",
                ),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=plant%204,service.name=from-attrs",
                ),
            ],
            &TelemetryConfig::default(),
        )
        .unwrap();
        assert_eq!(
            s.headers,
            [
                ("api-key".to_string(), "a b,c".to_string()),
                ("x-tenant".into(), "t1".into())
            ]
        );
        assert!(
            s.resource_attributes
                .contains(&("deployment.environment".into(), "plant 4".into()))
        );
        assert_eq!(s.service_name, "from-attrs");
        let s = resolve(
            &[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
                ("OTEL_SERVICE_NAME", "b"),
            ],
            &TelemetryConfig::default(),
        )
        .unwrap();
        assert_eq!(s.service_name, "b", "OTEL_SERVICE_NAME wins");
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (var, value, needle) in [
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "key=value"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=%zz", "percent"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=1", "header name"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "a=b%0Ac", "control"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/xml", "http/xml"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                "grpc",
                "not supported",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "zstd"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0", "outside"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "-5", "milliseconds"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "10", "minimum"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "http"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "ftp://x/", "http"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=1,b", "key=value"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem", "together"),
        ] {
            let e = resolve(&[(var, value)], &TelemetryConfig::default()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(needle), "{var}={value}: {msg}");
            if var != "OTEL_EXPORTER_OTLP_CLIENT_KEY" {
                assert_eq!(e.setting, var, "{msg}");
            }
        }
    }

    #[test]
    fn sdk_disabled_stops_export_but_invalid_boolean_only_warns() {
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        let s = resolve(
            &[on[0], ("OTEL_SDK_DISABLED", "TRUE")],
            &TelemetryConfig::default(),
        )
        .unwrap();
        assert!(!s.enabled);
        let s = resolve(
            &[on[0], ("OTEL_SDK_DISABLED", "yes")],
            &TelemetryConfig::default(),
        )
        .unwrap();
        assert!(s.enabled);
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn workload_variables_come_from_the_config() {
        let file = TelemetryConfig {
            endpoint: Some("http://127.0.0.1:4318".into()),
            workloads: WorkloadTelemetry {
                http_endpoint: Some("http://host.containers.internal:4318".into()),
                grpc_endpoint: Some("http://host.containers.internal:4317".into()),
                protocol: Some("grpc".into()),
                certificate: Some("/etc/otel/ca.pem".into()),
            },
            ..Default::default()
        };
        let env = resolve(&[], &file).unwrap().workload_env;
        assert_eq!(env.len(), 4);
        assert_eq!(
            env["HTTP_OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://host.containers.internal:4318"
        );
        assert_eq!(env["OTEL_EXPORTER_OTLP_PROTOCOL"], "grpc");
        let bad = TelemetryConfig {
            workloads: WorkloadTelemetry {
                protocol: Some("udp".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(bad.problem().unwrap().0, "telemetry.workloads.protocol");
    }
}
