//! The one place HTTP clients are made: every agent margo-agent uses for registries, package
//! URLs and (later) the Fleet Manager comes from [`client`], so every call has a connect timeout,
//! a per-read stall timeout and an overall deadline, status codes are returned rather than
//! turned into errors (a 401's `WWW-Authenticate` must stay readable), and redirects never carry
//! `Authorization` to another host (ureq's default `RedirectAuthHeaders::Never`).
//!
//! Trust: the device's CA bundle (a file, default `/etc/ssl/certs/ca-certificates.crt`) plus any
//! extra CA files from the config. No roots are compiled in; a device without a CA bundle
//! trusts only what its config names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Time allowed to establish a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence tolerated while reading a response; a stalled registry fails after this.
pub const READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Overall deadline for small API calls (manifests, tokens, HEADs).
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Overall deadline for a blob or package transfer (large layers on slow links).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Redirects followed per request (registries redirect blobs to object storage once).
pub const MAX_REDIRECTS: u32 = 5;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot read CA file {path}: {source}")]
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {path} holds no PEM certificate")]
    CaEmpty { path: PathBuf },
    #[error("CA file {path} is not valid PEM: {reason}")]
    CaInvalid { path: PathBuf, reason: String },
}

/// Installs ring as the process-wide rustls provider. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads every certificate of a PEM file.
pub fn load_pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>, HttpError> {
    let bytes = std::fs::read(path).map_err(|source| HttpError::CaRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(HttpError::CaInvalid {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(HttpError::CaEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The trust store: the system bundle when it exists (a missing bundle is not an error: a
/// device may trust only its configured CAs) plus each extra CA file (which must exist).
pub fn trust_roots(
    system_bundle: Option<&Path>,
    extra: &[PathBuf],
) -> Result<Arc<Vec<Certificate<'static>>>, HttpError> {
    let mut roots = Vec::new();
    if let Some(bundle) = system_bundle
        && bundle.exists()
    {
        roots.extend(load_pem_certs(bundle)?);
    }
    for path in extra {
        roots.extend(load_pem_certs(path)?);
    }
    Ok(Arc::new(roots))
}

/// A blocking client with margo-agent's timeouts and the given trust roots. Per-request
/// deadlines are set by callers with `timeout_global` ([`API_CALL_TIMEOUT`] or
/// [`TRANSFER_TIMEOUT`]).
pub fn client(roots: &Arc<Vec<Certificate<'static>>>) -> ureq::Agent {
    install_crypto_provider();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(roots.clone()))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(MAX_REDIRECTS)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_STALL_TIMEOUT))
        .timeout_global(Some(API_CALL_TIMEOUT))
        .user_agent(concat!("margo-agent/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .new_agent()
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters pass through).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_escape_keeps_unreserved_and_encodes_rest() {
        assert_eq!(query_escape("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            query_escape("repository:fleet/app:pull"),
            "repository%3Afleet%2Fapp%3Apull"
        );
    }

    #[test]
    fn missing_extra_ca_is_an_error_but_missing_system_bundle_is_not() {
        let roots = trust_roots(Some(Path::new("/nonexistent/bundle.pem")), &[]).unwrap();
        assert!(roots.is_empty());
        let err = trust_roots(None, &[PathBuf::from("/nonexistent/ca.pem")]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }
}
