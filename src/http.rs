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
use std::time::{Duration, SystemTime};
use ureq::config::ConfigBuilder;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::typestate::AgentScope;

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
    let certs = pem_certs(&bytes).map_err(|reason| HttpError::CaInvalid {
        path: path.to_path_buf(),
        reason,
    })?;
    if certs.is_empty() {
        return Err(HttpError::CaEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Every certificate in PEM text (other PEM items, such as keys, are skipped; none found is
/// an empty list). `Err`: the parser's reason when the PEM is malformed.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
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
    client_config(roots)
        .max_redirects(MAX_REDIRECTS)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_STALL_TIMEOUT))
        .timeout_global(Some(API_CALL_TIMEOUT))
        .build()
        .new_agent()
}

/// What every margo-agent client has in common: ring as the TLS provider, trust in `roots`
/// only, status codes returned rather than turned into errors, margo-agent's `User-Agent`.
/// A caller with its own redirect policy and deadlines (the Fleet Manager's client) adds
/// them; everyone else uses [`client`].
pub fn client_config(roots: &Arc<Vec<Certificate<'static>>>) -> ConfigBuilder<AgentScope> {
    install_crypto_provider();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(roots.clone()))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("margo-agent/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
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

/// Longest `Retry-After` honoured; a larger value is taken as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate), as a delay from `now`,
/// capped at [`MAX_RETRY_AFTER`]. `None` when unparsable.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = parse_http_date(v)?;
    let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)).min(MAX_RETRY_AFTER))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix seconds.
fn parse_http_date(v: &str) -> Option<u64> {
    let (_, rest) = v.split_once(", ")?;
    let p: Vec<&str> = rest.split_whitespace().collect();
    if p.len() != 5 || p[4] != "GMT" {
        return None;
    }
    let day: u64 = p[0].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == p[1])? as u64
        + 1;
    let year: u64 = p[2].parse().ok()?;
    let t: Vec<u64> = p[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3 || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), March-based year.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
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

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
