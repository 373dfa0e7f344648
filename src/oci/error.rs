//! The registry client's errors: one enum, one variant per way a registry exchange fails, each
//! carrying what it was about (a [`Target`]) so the message reads as *what failed, on what,
//! why* in the journal.
//!
//! Callers match variants to choose between retrying later ([`OciError::is_transient`]) and
//! marking a deployment Failed; [`OciError::code`] gives the stable code for the status report.
//! Messages never hold credentials or tokens: URLs are shown without their query string or
//! user info (a presigned or SAS URL carries its signature there), and registry error bodies
//! are reduced to `CODE: message`.

use super::manifest::ManifestError;
use crate::digest::Digest;
use std::fmt;
use std::path::PathBuf;

/// Longest error-body excerpt put into a message.
const ERROR_TEXT_MAX_CHARS: usize = 300;

/// What a failed request was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` of the registry (for plain URLs: of the URL).
    pub registry: String,
    /// Repository path; empty for plain URLs and token requests.
    pub repository: String,
    /// The object: `manifest latest`, `blob sha256:…`, `upload of blob sha256:…`; for targets
    /// outside a repository it is followed by the URL (`download of`, `token for … from`).
    pub object: String,
    /// The URL requested, without query string or user info.
    pub url: String,
}

impl Target {
    pub fn new(registry: &str, repository: &str, object: String, url: &str) -> Box<Target> {
        Box::new(Target {
            registry: registry.to_string(),
            repository: repository.to_string(),
            object,
            url: display_url(url),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.repository.is_empty() {
            write!(f, "{} {}", self.object, self.url)
        } else {
            write!(
                f,
                "{} of {}/{}",
                self.object, self.registry, self.repository
            )
        }
    }
}

/// Why a registry (or package URL) exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Connect, DNS, TLS, timeout or a transfer cut short: the network, not the content.
    #[error("cannot reach {registry} for {at}{}: {reason}", url_suffix(at), registry = at.registry)]
    Unreachable { at: Box<Target>, reason: String },
    /// The registry or its token service refused us (401/403 after authenticating).
    #[error("{registry} refused access to {at}: {reason}", registry = at.registry)]
    Unauthorized { at: Box<Target>, reason: String },
    /// 404: the tag, manifest, blob or repository does not exist.
    #[error("{at} does not exist{}", suffix(detail))]
    NotFound { at: Box<Target>, detail: String },
    /// The bytes received hash to something else than what was asked for.
    #[error(
        "{at} has digest {actual}, expected {expected}: the content is corrupt or was replaced"
    )]
    DigestMismatch {
        at: Box<Target>,
        expected: Digest,
        actual: Digest,
    },
    /// The bytes received are more or fewer than the descriptor declares.
    #[error("{at} {}", size_mismatch(*declared, *received))]
    SizeMismatch {
        at: Box<Target>,
        declared: u64,
        /// Bytes received; `declared + 1` when the transfer was cut off for running past it.
        received: u64,
    },
    /// Over a cap, before or while reading. `size` is `None` when only "more than the cap"
    /// is known (no Content-Length).
    #[error("{at} {}", too_large(*size, *cap))]
    TooLarge {
        at: Box<Target>,
        size: Option<u64>,
        cap: u64,
    },
    /// Verified bytes that are not a manifest margo-agent can use.
    #[error("{at} is not a usable manifest: {reason}")]
    InvalidManifest {
        at: Box<Target>,
        reason: ManifestError,
    },
    /// An HTTP status the operation does not expect (5xx, 429, 400, …).
    #[error("{registry} answered HTTP {status} for {at}{}", suffix(detail), registry = at.registry)]
    Status {
        at: Box<Target>,
        status: u16,
        detail: String,
    },
    /// A reply that breaks the protocol: missing `Location`, unreadable token reply, …
    #[error("{registry} sent an invalid reply for {at}: {reason}", registry = at.registry)]
    Protocol { at: Box<Target>, reason: String },
    /// margo-agent refused to send the request (e.g. credentials over plain HTTP).
    #[error("refusing to request {at}: {reason}")]
    NotAllowed { at: Box<Target>, reason: String },
    /// A local file could not be written, synced or renamed.
    #[error("cannot store {at} in {}: {source}", path.display())]
    File {
        at: Box<Target>,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The configured credentials could not be read (e.g. a missing password file).
    #[error("credentials for registry {registry} cannot be read: {reason}")]
    Credentials { registry: String, reason: String },
}

impl OciError {
    /// The network failed (connect, DNS, TLS, timeout, cut transfer): worth retrying later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, OciError::Unreachable { .. })
    }

    /// Likely to pass on a later attempt: unreachable, or the registry said so (408, 429,
    /// 5xx). Everything else needs a change on the registry or in the config.
    pub fn is_transient(&self) -> bool {
        match self {
            OciError::Unreachable { .. } => true,
            OciError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    /// A stable code for deployment status reports.
    pub fn code(&self) -> &'static str {
        match self {
            OciError::Unreachable { .. } | OciError::Status { .. } => "ERR_REGISTRY_UNAVAILABLE",
            OciError::Unauthorized { .. } | OciError::Credentials { .. } => "ERR_REGISTRY_AUTH",
            OciError::NotFound { .. } => "ERR_NOT_FOUND",
            OciError::DigestMismatch { .. } | OciError::SizeMismatch { .. } => {
                "ERR_DIGEST_MISMATCH"
            }
            OciError::TooLarge { .. } => "ERR_TOO_LARGE",
            OciError::InvalidManifest { .. } => "ERR_INVALID_MANIFEST",
            OciError::Protocol { .. } | OciError::NotAllowed { .. } => "ERR_REGISTRY_PROTOCOL",
            OciError::File { .. } => "ERR_LOCAL_IO",
        }
    }

    /// Maps a transport error of ureq, adding what was being requested.
    pub(crate) fn from_ureq(e: ureq::Error, at: Box<Target>) -> OciError {
        use ureq::Error as E;
        let reason = match &e {
            E::Timeout(t) => format!("timed out ({t})"),
            E::HostNotFound => "host name not found (DNS)".to_string(),
            E::ConnectionFailed => "connection refused or failed".to_string(),
            // rustls reports handshake failures (an untrusted certificate, …) through the
            // connection's io::Error, so that is where a TLS failure usually arrives.
            E::Io(io) => match io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(r) => tls_reason(r),
                None => format!("network error: {io}"),
            },
            E::Tls(m) => format!("TLS failed: {m}"),
            E::Rustls(r) => tls_reason(r),
            E::BodyStalled => "the transfer stalled".to_string(),
            // Only reachable with an agent that turns statuses into errors; see OciClient::new.
            E::StatusCode(status) => {
                return OciError::Status {
                    at,
                    status: *status,
                    detail: String::new(),
                };
            }
            other => {
                return OciError::Protocol {
                    at,
                    reason: other.to_string(),
                };
            }
        };
        OciError::Unreachable { at, reason }
    }

    /// A transfer that broke while reading the body.
    pub(crate) fn interrupted(at: Box<Target>, e: &std::io::Error) -> OciError {
        OciError::Unreachable {
            at,
            reason: format!("transfer interrupted: {e}"),
        }
    }
}

/// A TLS failure, with what to check when the server's certificate was not accepted.
fn tls_reason(r: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match r {
        // A device without RTC boots in 1970: every certificate looks "not valid yet".
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!(
                "TLS failed: the server's certificate is not valid yet by this device's clock \
                 ({r}); the system clock is probably unset (no RTC, time not synced yet); the \
                 agent retries with backoff and connects once the clock is set"
            )
        }
        rustls::Error::InvalidCertificate(_) => format!(
            "TLS failed: the server's certificate was not accepted ({r}); if the registry uses \
             a private CA, add that CA to tls.extra_ca (or the system bundle, tls.ca_bundle)"
        ),
        _ => format!("TLS failed: {r}"),
    }
}

/// ` (url)` when the target's own text does not already show the URL.
fn url_suffix(at: &Target) -> String {
    if at.repository.is_empty() || at.url.is_empty() {
        String::new()
    } else {
        format!(" ({})", at.url)
    }
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn size_mismatch(declared: u64, received: u64) -> String {
    if received > declared {
        format!("delivered more than the declared {declared} bytes; transfer aborted")
    } else {
        format!("delivered {received} of the declared {declared} bytes")
    }
}

fn too_large(size: Option<u64>, cap: u64) -> String {
    match size {
        Some(s) => format!("is {s} bytes, over the {} cap", human_bytes(cap)),
        None => format!(
            "is larger than the {} cap; transfer aborted",
            human_bytes(cap)
        ),
    }
}

/// `4 MiB`, `1.5 GiB`, `512 bytes`: caps are round numbers, so they read better this way.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{} {unit}", n / size)
            } else {
                format!("{:.1} {unit}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} bytes")
}

/// A URL for messages: no user info, no query string (they may hold secrets).
pub fn display_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or("");
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_string(),
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Reduces a registry error body to `CODE: message; …` (the spec's JSON form), or to a short
/// single-line excerpt of whatever else it is. Empty when there is nothing readable.
pub fn summarize_error_body(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) if !b.errors.is_empty() => b
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.chars().count() > ERROR_TEXT_MAX_CHARS {
        let cut: String = one_line.chars().take(ERROR_TEXT_MAX_CHARS).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn at() -> Box<Target> {
        Target::new(
            "reg.example:5000",
            "fleet/desired",
            "manifest latest".into(),
            "https://u:pw@reg.example:5000/v2/fleet/desired/manifests/latest?sig=SECRET",
        )
    }

    #[test]
    fn registry_error_json_is_summarised_as_code_and_message() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"DENIED","message":""}]}"#;
        assert_eq!(
            summarize_error_body(body),
            "MANIFEST_UNKNOWN: manifest unknown; DENIED"
        );
    }

    #[test]
    fn other_error_bodies_become_one_short_line() {
        assert_eq!(
            summarize_error_body(b"<h1>Bad\r\nGateway</h1>\n"),
            "<h1>Bad Gateway</h1>"
        );
        assert_eq!(summarize_error_body(b""), "");
        let long = "x".repeat(1000);
        assert!(summarize_error_body(long.as_bytes()).chars().count() <= ERROR_TEXT_MAX_CHARS + 1);
    }

    #[test]
    fn messages_hide_query_strings_and_user_info() {
        let e = OciError::Unreachable {
            at: at(),
            reason: "timed out".into(),
        };
        let msg = e.to_string();
        assert!(!msg.contains("SECRET") && !msg.contains("pw@"), "{msg}");
        assert_eq!(
            msg,
            "cannot reach reg.example:5000 for manifest latest of reg.example:5000/fleet/desired \
             (https://reg.example:5000/v2/fleet/desired/manifests/latest): timed out"
        );
    }

    #[test]
    fn tls_failures_inside_io_errors_say_tls_and_name_the_ca_settings() {
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, cert);
        let e = OciError::from_ureq(ureq::Error::Io(io), at());
        assert!(e.is_transient());
        let m = e.to_string();
        assert!(m.contains("TLS failed"), "{m}");
        assert!(m.contains("UnknownIssuer"), "{m}");
        assert!(m.contains("tls.extra_ca"), "{m}");
        let early = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidYet);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, early);
        let e = OciError::from_ureq(ureq::Error::Io(io), at());
        assert!(e.is_transient());
        let m = e.to_string();
        assert!(m.contains("not valid yet by this device's clock"), "{m}");
        assert!(m.contains("clock is set"), "{m}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let m = OciError::from_ureq(ureq::Error::Io(plain), at()).to_string();
        assert!(m.contains("network error: reset"), "{m}");
    }

    #[test]
    fn too_large_names_size_and_cap() {
        let e = OciError::TooLarge {
            at: at(),
            size: Some(5_000_000),
            cap: 4 << 20,
        };
        assert!(
            e.to_string()
                .ends_with("is 5000000 bytes, over the 4 MiB cap"),
            "{e}"
        );
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 bytes");
    }

    #[test]
    fn transient_errors_are_network_and_server_side_ones() {
        let status = |s| OciError::Status {
            at: at(),
            status: s,
            detail: String::new(),
        };
        assert!(status(503).is_transient() && status(429).is_transient());
        assert!(!status(400).is_transient());
        let nf = OciError::NotFound {
            at: at(),
            detail: String::new(),
        };
        assert!(!nf.is_transient() && !nf.is_unreachable());
        assert_eq!(nf.code(), "ERR_NOT_FOUND");
    }
}
