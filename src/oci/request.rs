//! The request core: one registry request, sent with whatever authentication the registry
//! asks for, with a deadline, and with every body read capped.
//!
//! Authentication (distribution's token spec): a request goes out anonymously, or with what
//! worked for that host before (remembered per host, so later requests send it directly). On
//! 401 the `WWW-Authenticate` challenges decide: Bearer → ask the realm for a token (with the
//! configured username and password on that token request only) and retry once; Basic →
//! resend with the credentials. A refused cached token is renewed once and the request retried
//! once. A second 401 is final: the credentials were refused. Credentials only travel to the
//! registry's own host and the token realm it names, over HTTPS, or over plain HTTP when the
//! registry is explicitly configured `plain_http`.
//!
//! Deadlines: [`API_CALL_TIMEOUT`] for API calls and token requests, [`TRANSFER_TIMEOUT`] for
//! blobs, on top of the agent's connect and read-stall timeouts.
//!
//! Redirects (blobs often redirect to object storage) are followed by ureq, which never
//! forwards `Authorization` on a redirect (`RedirectAuthHeaders::Never`, its default): the
//! spec says credentials MUST NOT cross host boundaries, and presigned URLs reject them.

use super::auth::{Challenge, TokenKey, parse_challenges, parse_token_response};
use super::client::{OciClient, RegistryAccess};
use super::error::{OciError, Target, summarize_error_body};
use super::reference::Reference;
use crate::http::{API_CALL_TIMEOUT, TRANSFER_TIMEOUT, query_escape};
use base64::Engine as _;
use std::io::Read;
use std::time::{Duration, Instant};
use ureq::http::{Response, Uri};
use ureq::{Body, RequestBuilder, ResponseExt, SendBody};

/// Largest token-service reply read. JWTs with many claims are a few KiB.
pub const TOKEN_RESPONSE_MAX_BYTES: u64 = 64 * 1024;
/// Largest error body read to explain a failure.
pub const ERROR_BODY_MAX_BYTES: u64 = 16 * 1024;

/// The scheme a host accepted last, sent up front on later requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostScheme {
    Basic,
    Bearer { realm: String, service: String },
}

/// Which actions a token must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actions {
    Pull,
    PullPush,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Head,
    Get,
    Post,
    Put,
}

/// One request as the core sends it.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: String,
    /// `host[:port]` whose access settings and auth apply.
    pub host: &'a str,
    /// Repository for the token scope; empty when there is none.
    pub repository: &'a str,
    pub actions: Actions,
    pub accept: Option<&'static str>,
    pub content_type: Option<&'a str>,
    pub timeout: Duration,
    pub at: &'a Target,
}

/// A request body. A reader can be sent only once, so a 401 after it was sent is final.
pub(crate) enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    Reader(&'a mut dyn Read, u64),
}

impl OciClient {
    /// Sends `call`, authenticating as the registry asks. Returns every response except a
    /// final 401, which becomes [`OciError::Unauthorized`]; the caller judges the status.
    pub(crate) fn execute(
        &mut self,
        call: &Call,
        mut payload: Payload,
    ) -> Result<Response<Body>, OciError> {
        let access = self.access(call.host);
        let url_authority = authority_of(&call.url);
        // Credentials go only to the registry's own host, never to a third-party Location.
        let own_host = url_authority.as_deref() == Some(api_host(call.host).as_str());
        let (mut auth, mut used_key) = if own_host {
            self.preemptive_auth(call, &access)?
        } else {
            (None, None)
        };
        let mut answered_challenge: Option<HostScheme> = None;
        loop {
            let mut resp = self.send_once(call, auth.as_deref(), &mut payload)?;
            if resp.status().as_u16() != 401 {
                if let Some(scheme) = answered_challenge {
                    self.schemes.insert(call.host.to_string(), scheme);
                }
                return Ok(resp);
            }
            let at = Box::new(call.at.clone());
            let redirected_away = authority_of(&resp.get_uri().to_string()) != url_authority;
            if !own_host || redirected_away {
                return Err(OciError::Unauthorized {
                    at,
                    reason: "the server behind a redirect refused the request (credentials are \
                             never forwarded across hosts)"
                        .into(),
                });
            }
            if matches!(payload, Payload::Reader(..)) {
                // The upload stream is consumed; only the caller could start it again.
                return Err(OciError::Unauthorized {
                    at,
                    reason: "the registry asked to authenticate in the middle of an upload, \
                             which cannot be resent"
                        .into(),
                });
            }
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .flat_map(|v| parse_challenges(&String::from_utf8_lossy(v.as_bytes())))
                .collect();
            let detail = summarize_error_body(&read_best_effort(&mut resp));
            if answered_challenge.is_some() {
                if let Some(k) = used_key {
                    self.tokens.remove(&k);
                }
                self.schemes.remove(call.host);
                return Err(OciError::Unauthorized {
                    at,
                    reason: refused_reason(&access, &detail),
                });
            }
            // What we sent up front (a cached token, remembered Basic) was refused: forget it.
            if let Some(k) = used_key.take() {
                self.tokens.remove(&k);
            }
            let (header_value, key, scheme) = self.answer(call, &access, &challenges, &detail)?;
            auth = Some(header_value);
            used_key = key;
            answered_challenge = Some(scheme);
        }
    }

    /// The Authorization header to send before any challenge, from what worked before.
    fn preemptive_auth(
        &mut self,
        call: &Call,
        access: &RegistryAccess,
    ) -> Result<(Option<String>, Option<TokenKey>), OciError> {
        match self.schemes.get(call.host).cloned() {
            Some(HostScheme::Basic) => Ok((basic_header(call, access).ok(), None)),
            Some(HostScheme::Bearer { realm, service }) if !call.repository.is_empty() => {
                let key = TokenKey {
                    realm,
                    service,
                    scope: scope_for(call),
                };
                if let Some(t) = self.tokens.get(&key, Instant::now()) {
                    return Ok((Some(format!("Bearer {t}")), Some(key)));
                }
                let token = self.fetch_token(call, access, &key)?;
                Ok((Some(format!("Bearer {token}")), Some(key)))
            }
            _ => Ok((None, None)),
        }
    }

    /// Answers a 401's challenges: Bearer (preferred) or Basic.
    fn answer(
        &mut self,
        call: &Call,
        access: &RegistryAccess,
        challenges: &[Challenge],
        detail: &str,
    ) -> Result<(String, Option<TokenKey>, HostScheme), OciError> {
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => Some((realm, service, scope)),
            Challenge::Basic => None,
        });
        if let Some((realm, service, scope)) = bearer {
            let key = TokenKey {
                realm: realm.clone(),
                service: service.clone().unwrap_or_default(),
                scope: scope.clone().unwrap_or_else(|| scope_for(call)),
            };
            let token = self.fetch_token(call, access, &key)?;
            let scheme = HostScheme::Bearer {
                realm: key.realm.clone(),
                service: key.service.clone(),
            };
            return Ok((format!("Bearer {token}"), Some(key), scheme));
        }
        if challenges.contains(&Challenge::Basic) {
            return Ok((basic_header(call, access)?, None, HostScheme::Basic));
        }
        Err(OciError::Unauthorized {
            at: Box::new(call.at.clone()),
            reason: format!(
                "HTTP 401 without a Basic or Bearer challenge margo-agent can answer{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            ),
        })
    }

    /// Asks a token service for a token and caches it.
    fn fetch_token(
        &mut self,
        call: &Call,
        access: &RegistryAccess,
        key: &TokenKey,
    ) -> Result<String, OciError> {
        let mut url = key.realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (name, value) in [("service", &key.service), ("scope", &key.scope)] {
            if !value.is_empty() {
                url.push(sep);
                url.push_str(name);
                url.push('=');
                url.push_str(&query_escape(value));
                sep = '&';
            }
        }
        let at = Target::new(
            &call.at.registry,
            "",
            format!("token for {} from", call.at.object),
            &url,
        );
        let realm_is_https = url.starts_with("https://");
        if !realm_is_https && !url.starts_with("http://") {
            return Err(OciError::Protocol {
                at,
                reason: "the token realm is not an http(s) URL".into(),
            });
        }
        let mut rb = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(API_CALL_TIMEOUT))
            .build();
        if let Some((user, password)) = &access.credentials {
            if !realm_is_https && !access.plain_http {
                return Err(OciError::NotAllowed {
                    at,
                    reason: format!(
                        "the token service is plain HTTP and {} is not configured plain_http; \
                         credentials are only sent over HTTPS",
                        call.host
                    ),
                });
            }
            rb = rb.header("Authorization", basic_value(user, password));
        }
        let mut resp = rb.call().map_err(|e| OciError::from_ureq(e, at.clone()))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let detail = summarize_error_body(&read_best_effort(&mut resp));
            return Err(match status {
                401 | 403 => OciError::Unauthorized {
                    reason: format!(
                        "the token service {} refused {}{}",
                        at.url,
                        if access.credentials.is_some() {
                            "the configured credentials"
                        } else {
                            "anonymous access and no credentials are configured"
                        },
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(" ({detail})")
                        }
                    ),
                    at,
                },
                _ => OciError::Status { at, status, detail },
            });
        }
        let body = read_capped(&mut resp, TOKEN_RESPONSE_MAX_BYTES, &at)?;
        let grant = parse_token_response(&body).map_err(|reason| OciError::Protocol {
            at: at.clone(),
            reason,
        })?;
        let token = grant.token.clone();
        self.tokens.insert(key.clone(), grant, Instant::now());
        Ok(token)
    }

    /// One HTTP exchange, no auth logic.
    fn send_once(
        &self,
        call: &Call,
        auth: Option<&str>,
        payload: &mut Payload,
    ) -> Result<Response<Body>, OciError> {
        let at = || Box::new(call.at.clone());
        let result = match call.method {
            Method::Head => prepare(self.agent.head(&call.url), call, auth).call(),
            Method::Get => prepare(self.agent.get(&call.url), call, auth).call(),
            Method::Post | Method::Put => {
                let rb = if call.method == Method::Post {
                    self.agent.post(&call.url)
                } else {
                    self.agent.put(&call.url)
                };
                let mut rb = prepare(rb, call, auth);
                if let Some(ct) = call.content_type {
                    rb = rb.header("Content-Type", ct);
                }
                match payload {
                    Payload::None => rb.send(&[][..]),
                    Payload::Bytes(b) => rb.send(*b),
                    Payload::Reader(r, len) => rb
                        .header("Content-Length", len.to_string())
                        .send(SendBody::from_reader(&mut **r)),
                }
            }
        };
        result.map_err(|e| OciError::from_ureq(e, at()))
    }

    /// Turns an unexpected response into an error, reading a capped body for its detail.
    pub(crate) fn failure(&self, mut resp: Response<Body>, at: &Target) -> OciError {
        let status = resp.status().as_u16();
        let detail = summarize_error_body(&read_best_effort(&mut resp));
        let at = Box::new(at.clone());
        match status {
            404 => OciError::NotFound { at, detail },
            401 | 403 => OciError::Unauthorized {
                at,
                reason: if detail.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {detail}")
                },
            },
            _ => OciError::Status { at, status, detail },
        }
    }
}

impl<'a> Call<'a> {
    /// An API call on `r`'s repository with [`API_CALL_TIMEOUT`].
    pub(crate) fn api(method: Method, url: String, r: &'a Reference, at: &'a Target) -> Self {
        Call {
            method,
            url,
            host: &r.registry,
            repository: &r.repository,
            actions: Actions::Pull,
            accept: None,
            content_type: None,
            timeout: API_CALL_TIMEOUT,
            at,
        }
    }

    pub(crate) fn accept(mut self, accept: &'static str) -> Self {
        self.accept = Some(accept);
        self
    }

    /// A blob transfer: [`TRANSFER_TIMEOUT`] instead of the API deadline.
    pub(crate) fn transfer(mut self) -> Self {
        self.timeout = TRANSFER_TIMEOUT;
        self
    }

    /// For publishing: tokens must allow `pull,push`.
    pub(crate) fn push(mut self) -> Self {
        self.actions = Actions::PullPush;
        self
    }
}

fn prepare<B>(rb: RequestBuilder<B>, call: &Call, auth: Option<&str>) -> RequestBuilder<B> {
    let mut rb = rb.config().timeout_global(Some(call.timeout)).build();
    if let Some(a) = call.accept {
        rb = rb.header("Accept", a);
    }
    if let Some(a) = auth {
        rb = rb.header("Authorization", a);
    }
    rb
}

/// Docker Hub's API lives on another host than its name.
pub(crate) fn api_host(host: &str) -> String {
    if host == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        host.to_string()
    }
}

/// `host[:port]` of a URL, lowercased.
pub(crate) fn authority_of(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    uri.authority().map(|a| a.as_str().to_ascii_lowercase())
}

/// The scope a request needs; empty (no scope) for URLs outside a repository.
fn scope_for(call: &Call) -> String {
    if call.repository.is_empty() {
        return String::new();
    }
    match call.actions {
        Actions::Pull => format!("repository:{}:pull", call.repository),
        Actions::PullPush => format!("repository:{}:pull,push", call.repository),
    }
}

fn basic_value(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Basic credentials for `call`, if configured and the transport allows them.
fn basic_header(call: &Call, access: &RegistryAccess) -> Result<String, OciError> {
    let at = || Box::new(call.at.clone());
    let Some((user, password)) = &access.credentials else {
        return Err(OciError::Unauthorized {
            at: at(),
            reason: format!(
                "the registry asks for a username and password and none are configured for {}",
                call.host
            ),
        });
    };
    if !call.url.starts_with("https://") && !access.plain_http {
        return Err(OciError::NotAllowed {
            at: at(),
            reason: "credentials are only sent over HTTPS or to hosts configured plain_http".into(),
        });
    }
    Ok(basic_value(user, password))
}

fn refused_reason(access: &RegistryAccess, detail: &str) -> String {
    let what = match &access.credentials {
        Some((user, _)) => format!("the credentials of user {user:?} were refused"),
        None => "anonymous access was refused and no credentials are configured".to_string(),
    };
    if detail.is_empty() {
        what
    } else {
        format!("{what} ({detail})")
    }
}
/// A response header as text, if present and readable.
pub(crate) fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// Reads a whole body of at most `cap` bytes; over it is [`OciError::TooLarge`].
pub(crate) fn read_capped(
    resp: &mut Response<Body>,
    cap: u64,
    at: &Target,
) -> Result<Vec<u8>, OciError> {
    let declared: Option<u64> = header(resp, "content-length").and_then(|s| s.parse().ok());
    if let Some(n) = declared.filter(|n| *n > cap) {
        return Err(OciError::TooLarge {
            at: Box::new(at.clone()),
            size: Some(n),
            cap,
        });
    }
    let mut buf = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| OciError::interrupted(Box::new(at.clone()), &e))?;
    if buf.len() as u64 > cap {
        return Err(OciError::TooLarge {
            at: Box::new(at.clone()),
            size: None,
            cap,
        });
    }
    Ok(buf)
}

/// Reads up to [`ERROR_BODY_MAX_BYTES`] of a body that only explains a failure; read errors
/// just shorten the explanation.
pub(crate) fn read_best_effort(resp: &mut Response<Body>) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(ERROR_BODY_MAX_BYTES)
        .read_to_end(&mut buf);
    buf
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn call<'a>(url: &str, repository: &'a str, at: &'a Target) -> Call<'a> {
        Call {
            method: Method::Get,
            url: url.to_string(),
            host: "reg.example",
            repository,
            actions: Actions::Pull,
            accept: None,
            content_type: None,
            timeout: API_CALL_TIMEOUT,
            at,
        }
    }

    #[test]
    fn scope_names_repository_and_actions_or_nothing() {
        let at = Target::new("reg.example", "a/b", "x".into(), "");
        let c = call("https://reg.example/v2/a/b/x", "a/b", &at);
        assert_eq!(scope_for(&c), "repository:a/b:pull");
        assert_eq!(scope_for(&c.push()), "repository:a/b:pull,push");
        assert_eq!(scope_for(&call("https://reg.example/pkg", "", &at)), "");
    }

    #[test]
    fn basic_credentials_never_go_over_plain_http_unless_configured() {
        let at = Target::new("reg.example", "a", "x".into(), "");
        let creds = RegistryAccess {
            plain_http: false,
            credentials: Some(("u".into(), "p".into())),
        };
        let http = call("http://reg.example/v2/a/x", "a", &at);
        let err = basic_header(&http, &creds).unwrap_err();
        assert!(matches!(err, OciError::NotAllowed { .. }), "{err}");
        let https = call("https://reg.example/v2/a/x", "a", &at);
        assert_eq!(basic_header(&https, &creds).unwrap(), "Basic dTpw");
        let insecure_ok = RegistryAccess {
            plain_http: true,
            ..creds
        };
        assert!(basic_header(&http, &insecure_ok).is_ok());
    }

    #[test]
    fn authority_is_host_and_port_lowercased() {
        assert_eq!(
            authority_of("https://Reg.Example:5000/v2/").as_deref(),
            Some("reg.example:5000")
        );
        assert_eq!(authority_of("not a url"), None);
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
