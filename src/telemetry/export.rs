//! One OTLP/HTTP export: `POST <url>` with the encoded request, answered within the
//! configured timeout. The caller decides when to try again; nothing here sleeps or queues.

use super::config::{Protocol, SettingError, Settings};
use super::proto::ExportMetricsServiceResponse;
use crate::http::{load_pem_certs, trust_roots};
use prost::Message;
use std::io::Write;
use std::time::{Duration, SystemTime};
use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig};

/// Bytes of a collector's answer that are read; the rest is ignored (an OTLP response is a
/// few bytes; an HTML error page or a hostile body must not cost memory).
pub const RESPONSE_MAX_BYTES: u64 = 64 * 1024;

/// How an export ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// 2xx, everything accepted.
    Delivered,
    /// 2xx with a `partial_success`: logged, never retried.
    Partial { rejected: i64, message: String },
    /// 429/502/503/504 or no connection: try again, after `after` when the collector said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Any other answer: this export is dropped; the next regular one goes ahead.
    Dropped { reason: String },
}

/// The HTTP side of the exporter.
pub struct Exporter {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    protocol: Protocol,
    gzip: bool,
}

impl Exporter {
    /// Builds the client: the device's trust store plus the configured collector CA, and the
    /// client certificate when one is configured.
    pub fn new(s: &Settings, tls: &crate::config::Tls) -> Result<Exporter, SettingError> {
        let cert_err = |src: &str, e: String| SettingError {
            setting: src.to_string(),
            reason: e,
        };
        let mut extra = tls.extra_ca.clone();
        if let Some(c) = &s.certificate {
            extra.push(c.clone());
        }
        let roots = trust_roots(Some(&tls.ca_bundle), &extra)
            .map_err(|e| cert_err("OTEL_EXPORTER_OTLP_CERTIFICATE", e.to_string()))?;
        let mut builder = TlsConfig::builder().root_certs(RootCerts::Specific(roots.clone()));
        if let (Some(cert), Some(key)) = (&s.client_certificate, &s.client_key) {
            let chain = load_pem_certs(cert)
                .map_err(|e| cert_err("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", e.to_string()))?;
            let key_bytes = std::fs::read(key).map_err(|e| {
                cert_err(
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                    format!("cannot read {}: {e}", key.display()),
                )
            })?;
            let key = ureq::tls::parse_pem(&key_bytes)
                .find_map(|i| match i {
                    Ok(PemItem::PrivateKey(k)) => Some(k.to_owned()),
                    _ => None,
                })
                .ok_or_else(|| {
                    cert_err(
                        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                        format!("{} holds no PEM private key", key.display()),
                    )
                })?;
            // ureq would panic on a certificate rustls refuses: refuse it here, by name.
            check_client_auth(&chain, &key)
                .map_err(|e| cert_err("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", e))?;
            builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        crate::http::install_crypto_provider();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(s.timeout.min(crate::http::CONNECT_TIMEOUT)))
            .timeout_global(Some(s.timeout))
            .user_agent(concat!("margo-agent/", env!("CARGO_PKG_VERSION")))
            .tls_config(builder.build())
            .build()
            .new_agent();
        Ok(Exporter {
            agent,
            url: s.url.clone(),
            headers: s.headers.clone(),
            protocol: s.protocol,
            gzip: s.gzip,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Encodes `body` as configured (gzip or not): the bytes that go on the wire.
    pub fn wire_body(&self, body: Vec<u8>) -> Vec<u8> {
        if !self.gzip {
            return body;
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to a Vec cannot fail.
        enc.write_all(&body)
            .and_then(|()| enc.finish())
            .unwrap_or_default()
    }

    /// POSTs `wire` (already encoded by [`Exporter::wire_body`]).
    pub fn send(&self, wire: &[u8]) -> Sent {
        let mut req = self
            .agent
            .post(&self.url)
            .header("content-type", self.protocol.content_type());
        if self.gzip {
            req = req.header("content-encoding", "gzip");
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = match req.send(wire) {
            Ok(r) => r,
            Err(e) => {
                let retry = matches!(
                    e,
                    ureq::Error::Io(_)
                        | ureq::Error::Timeout(_)
                        | ureq::Error::ConnectionFailed
                        | ureq::Error::HostNotFound
                );
                let reason = format!("no answer from {}: {e}", self.url);
                return if retry {
                    Sent::Retry {
                        after: None,
                        reason,
                    }
                } else {
                    Sent::Dropped { reason }
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::http::parse_retry_after(v, SystemTime::now()));
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut resp = resp;
        let body = resp
            .body_mut()
            .with_config()
            .limit(RESPONSE_MAX_BYTES)
            .read_to_vec();
        match status {
            200..=299 => {
                let Ok(body) = body else {
                    // Delivered; the answer was unreadable or too large to look at.
                    return Sent::Delivered;
                };
                match partial_success(&body, &content_type) {
                    Some((rejected, message)) => Sent::Partial { rejected, message },
                    None => Sent::Delivered,
                }
            }
            429 | 502 | 503 | 504 => Sent::Retry {
                after: retry_after,
                reason: format!(
                    "{} answered HTTP {status}{}",
                    self.url,
                    snippet(body.ok(), &content_type)
                ),
            },
            _ => Sent::Dropped {
                reason: format!(
                    "{} answered HTTP {status}{}",
                    self.url,
                    snippet(body.ok(), &content_type)
                ),
            },
        }
    }
}

/// Whether rustls accepts `chain` and `key` as a client identity (an X.509 v3 end-entity
/// certificate whose public key matches the key), as ureq will ask it.
fn check_client_auth(
    chain: &[ureq::tls::Certificate<'static>],
    key: &ureq::tls::PrivateKey<'static>,
) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::try_from(key.der())
        .map_err(|e| format!("the private key is not usable: {e}"))?
        .clone_key();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(certs, key)
        .map(drop)
        .map_err(|e| format!("the client certificate and key are not usable: {e}"))
}

/// What an error answer says, short and on one line, for the journal: the message of an OTLP
/// `google.rpc.Status` (protobuf or JSON), else the first line of the text.
fn snippet(body: Option<Vec<u8>>, content_type: &str) -> String {
    let Some(b) = body else {
        return String::new();
    };
    let status = if content_type.contains("protobuf") {
        super::proto::Status::decode(b.as_slice())
            .ok()
            .map(|s| s.message)
    } else if content_type.contains("json") {
        serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
    } else {
        None
    };
    let text =
        status.unwrap_or_else(|| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned());
    let line: String = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line:?}")
    }
}

/// `partial_success` of a 2xx answer, in protobuf or JSON (by content type).
fn partial_success(body: &[u8], content_type: &str) -> Option<(i64, String)> {
    if body.is_empty() {
        return None;
    }
    if content_type.contains("json") {
        return super::json::partial_success(body);
    }
    let r = ExportMetricsServiceResponse::decode(body).ok()?;
    let p = r.partial_success?;
    (p.rejected_data_points != 0 || !p.error_message.is_empty())
        .then_some((p.rejected_data_points, p.error_message))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn partial_success_is_read_from_protobuf_and_json() {
        let r = ExportMetricsServiceResponse {
            partial_success: Some(super::super::proto::ExportMetricsPartialSuccess {
                rejected_data_points: 3,
                error_message: "bad unit".into(),
            }),
        };
        let pb = r.encode_to_vec();
        assert_eq!(
            partial_success(&pb, "application/x-protobuf"),
            Some((3, "bad unit".into()))
        );
        let js = br#"{"partialSuccess":{"rejectedDataPoints":"2","errorMessage":"x"}}"#;
        assert_eq!(
            partial_success(js, "application/json"),
            Some((2, "x".into()))
        );
        assert_eq!(partial_success(b"{}", "application/json"), None);
        assert_eq!(partial_success(b"", "application/x-protobuf"), None);
        assert_eq!(partial_success(b"<html>", "text/html"), None);
    }
}
