//! [`OciClient`]: what it is built from (a ureq agent and per-host [`RegistryAccess`]), how
//! it names URLs, and the manifest operations a poll uses: HEAD a tag, GET a manifest.
//!
//! Shape: blocking, one request at a time, `&mut self` (the client owns its token cache and
//! what it learnt about each host). The request core and its authentication are in
//! `request.rs`, blob downloads in `blob.rs`, uploads in `push.rs`; all add methods here.
//!
//! Manifests are read with the full Accept list (OCI and Docker v2 manifest and index),
//! capped at [`MANIFEST_MAX_BYTES`], and hashed before they are parsed: a manifest whose
//! bytes do not match the digest asked for, or the `Docker-Content-Digest` served with it,
//! is refused without being looked at.

use super::auth::TokenCache;
use super::error::{OciError, Target};
use super::manifest::{MANIFEST_ACCEPT, MANIFEST_MAX_BYTES, Manifest, essence, parse_manifest};
use super::reference::Reference;
use super::request::{Call, HostScheme, Method, Payload, api_host, header, read_capped};
use crate::config::Config;
use crate::digest::Digest;
use std::collections::HashMap;
use std::fmt;

/// How to talk to one registry host.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAccess {
    /// Speak `http://` instead of `https://` (explicitly insecure local registries only).
    pub plain_http: bool,
    /// Username and password, for Basic auth or for the token service.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for RegistryAccess {
    // The password never reaches a log line, even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.credentials.as_ref().map(|(u, _)| u.as_str());
        write!(
            f,
            "RegistryAccess {{ plain_http: {}, username: {user:?}, password: <redacted> }}",
            self.plain_http
        )
    }
}

/// What a HEAD on a manifest told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// A manifest whose bytes were verified, then parsed.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// The raw bytes, exactly as served.
    pub bytes: Vec<u8>,
    /// The media type (document, else `Content-Type`).
    pub media_type: Option<String>,
    pub manifest: Manifest,
}

/// A blocking OCI registry client. See the module docs.
pub struct OciClient {
    pub(super) agent: ureq::Agent,
    access: HashMap<String, RegistryAccess>,
    /// What each host accepted last (see `request.rs`).
    pub(super) schemes: HashMap<String, HostScheme>,
    pub(super) tokens: TokenCache,
    /// Mirror rules applied to every read (`crate::mirror`); never to pushes.
    mirrors: crate::mirror::Mirrors,
}

impl OciClient {
    /// A client with no per-host settings: every host is HTTPS and anonymous.
    /// `agent` should come from [`crate::http::client`] (timeouts, trust roots, status codes
    /// not turned into errors).
    pub fn new(agent: ureq::Agent) -> OciClient {
        OciClient {
            agent,
            access: HashMap::new(),
            schemes: HashMap::new(),
            tokens: TokenCache::new(),
            mirrors: crate::mirror::Mirrors::default(),
        }
    }

    /// A client with the `registries` entries of the config (reads password files now).
    pub fn from_config(agent: ureq::Agent, config: &Config) -> Result<OciClient, OciError> {
        let mut client = OciClient::new(agent);
        for r in &config.registries {
            let credentials =
                config
                    .credentials(&r.host)
                    .map_err(|reason| OciError::Credentials {
                        registry: r.host.clone(),
                        reason,
                    })?;
            client.set_access(
                &r.host,
                RegistryAccess {
                    plain_http: r.plain_http,
                    credentials,
                },
            );
        }
        Ok(client)
    }

    /// Sets the mirror rules reads are routed through.
    pub fn set_mirrors(&mut self, mirrors: crate::mirror::Mirrors) {
        self.mirrors = mirrors;
    }

    /// `r` as it is read: through its mirror when a rule applies.
    pub(crate) fn route(&self, r: &Reference) -> Reference {
        self.mirrors.reference(r).unwrap_or_else(|| r.clone())
    }

    /// A URL as it is read: through its mirror when a rule applies.
    pub(crate) fn route_url(&self, url: &str) -> String {
        self.mirrors.url(url).unwrap_or_else(|| url.to_string())
    }

    /// Sets how to talk to `host` (`host` or `host:port`, as in references).
    pub fn set_access(&mut self, host: &str, access: RegistryAccess) {
        self.schemes.remove(host);
        self.access.insert(host.to_ascii_lowercase(), access);
    }

    pub(crate) fn access(&self, host: &str) -> RegistryAccess {
        self.access.get(host).cloned().unwrap_or_default()
    }

    /// `http(s)://<api host>` for a registry.
    pub(crate) fn base_url(&self, host: &str) -> String {
        let scheme = if self.access(host).plain_http {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", api_host(host))
    }

    /// `…/v2/<repository>/<kind>/<reference>`.
    pub(crate) fn url(&self, r: &Reference, kind: &str, reference: &str) -> String {
        format!(
            "{}/v2/{}/{kind}/{reference}",
            self.base_url(&r.registry),
            r.repository
        )
    }

    /// HEADs the manifest `r` names (its digest if pinned, else its tag) and returns its
    /// digest, or `None` when the registry has no such manifest (404). Sends the full Accept
    /// list. When the registry omits `Docker-Content-Digest` (it is optional), GETs the
    /// manifest and hashes it instead.
    pub fn head_manifest(&mut self, r: &Reference) -> Result<Option<ManifestHead>, OciError> {
        let routed = self.route(r);
        let r = &routed;
        let reference = r.manifest_ref();
        let url = self.url(r, "manifests", &reference);
        let at = Target::new(
            &r.registry,
            &r.repository,
            format!("manifest {reference}"),
            &url,
        );
        let call = Call::api(Method::Head, url, r, &at).accept(MANIFEST_ACCEPT);
        let resp = self.execute(&call, Payload::None)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.failure(resp, &at)),
        }
        let media_type = header(&resp, "content-type").map(|c| essence(&c));
        let size = header(&resp, "content-length").and_then(|s| s.parse().ok());
        let digest = header(&resp, "docker-content-digest").and_then(|d| Digest::parse(&d).ok());
        match digest {
            Some(digest) => {
                if let Some(expected) = &r.digest {
                    check_digest(&at, expected, &digest)?;
                }
                Ok(Some(ManifestHead {
                    digest,
                    media_type,
                    size,
                }))
            }
            None => {
                let m = self.get_manifest(r, &reference)?;
                Ok(Some(ManifestHead {
                    size: Some(m.bytes.len() as u64),
                    digest: m.digest,
                    media_type: m.media_type,
                }))
            }
        }
    }

    /// GETs the manifest `reference` (a tag or a digest) of `r`'s repository, capped at
    /// [`MANIFEST_MAX_BYTES`]. The sha256 of the raw bytes is checked against the requested
    /// digest (when a digest was requested) and against `Docker-Content-Digest` (when sent)
    /// before the bytes are parsed.
    pub fn get_manifest(
        &mut self,
        r: &Reference,
        reference: &str,
    ) -> Result<FetchedManifest, OciError> {
        let routed = self.route(r);
        let r = &routed;
        let url = self.url(r, "manifests", reference);
        let at = Target::new(
            &r.registry,
            &r.repository,
            format!("manifest {reference}"),
            &url,
        );
        // Tags cannot contain ':', so anything with one must be a digest we can verify.
        let requested = if reference.contains(':') {
            Some(Digest::parse(reference).map_err(|e| OciError::NotAllowed {
                at: at.clone(),
                reason: e.to_string(),
            })?)
        } else {
            None
        };
        let call = Call::api(Method::Get, url, r, &at).accept(MANIFEST_ACCEPT);
        let mut resp = self.execute(&call, Payload::None)?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp, &at));
        }
        let content_type = header(&resp, "content-type");
        let served_digest =
            header(&resp, "docker-content-digest").and_then(|d| Digest::parse(&d).ok());
        let bytes = read_capped(&mut resp, MANIFEST_MAX_BYTES, &at)?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = &requested {
            check_digest(&at, expected, &digest)?;
        }
        if let Some(served) = &served_digest {
            check_digest(&at, served, &digest)?;
        }
        let manifest = parse_manifest(&bytes, content_type.as_deref()).map_err(|reason| {
            OciError::InvalidManifest {
                at: at.clone(),
                reason,
            }
        })?;
        Ok(FetchedManifest {
            digest,
            bytes,
            media_type: manifest.media_type().map(str::to_string),
            manifest,
        })
    }
}

fn check_digest(at: &Target, expected: &Digest, actual: &Digest) -> Result<(), OciError> {
    if expected == actual {
        Ok(())
    } else {
        Err(OciError::DigestMismatch {
            at: Box::new(at.clone()),
            expected: expected.clone(),
            actual: actual.clone(),
        })
    }
}
