//! HTTP to the Fleet Manager: signed JSON requests with a bearer token, answers capped and
//! classified (delivered / retry later / refused for good).

use crate::identity::DeviceKey;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::tls::Certificate;

/// Largest answer read from the WFM (tokens, onboarding, problem bodies); a bigger one is an
/// error and is not read further.
pub const ANSWER_MAX_BYTES: u64 = 64 * 1024;
/// Part of an error body quoted in a journal line.
const QUOTE_MAX: usize = 512;

/// A WFM call's outcome that is not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not reached, timed out, 5xx, 408, 429, or a TLS failure: try again later
    /// (`retry_after` from the answer, if any).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401 (token rejected or expired).
    Unauthorized(String),
    /// Any other 4xx, or an answer that cannot be what was asked for: not worth retrying.
    /// `status`: the HTTP status the WFM answered, when it answered.
    Refused { reason: String, status: Option<u16> },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Retry { reason, .. }
            | CallError::Unauthorized(reason)
            | CallError::Refused { reason, .. } => f.write_str(reason),
        }
    }
}

/// A client trusting only `roots` (the pinned WFM CA, or the device's trust store for the
/// first onboarding call): [`crate::http::client_config`]'s settings, but the WFM call
/// deadline (`wfm.call_timeout`) instead of the registry one, and no redirects — a signed
/// request with a bearer token goes to the WFM it was made for or nowhere.
pub fn agent(roots: Arc<Vec<Certificate<'static>>>, timeout: Duration) -> ureq::Agent {
    crate::http::client_config(&roots)
        .max_redirects(0)
        .timeout_connect(Some(timeout.min(crate::http::CONNECT_TIMEOUT)))
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

/// A 2xx answer's body (capped).
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

fn transport_error(url: &str, e: &ureq::Error) -> CallError {
    let text = e.to_string();
    let reason = match e {
        ureq::Error::Timeout(_) => format!("{url}: no answer within the deadline"),
        _ if text.contains("certificate") || matches!(e, ureq::Error::Tls(_)) => format!(
            "{url}: TLS failed ({text}); the WFM's certificate must be issued by the CA pinned at onboarding"
        ),
        _ => format!("{url} not reachable: {text}"),
    };
    CallError::Retry {
        reason,
        retry_after: None,
    }
}

/// Sends one request; classifies the answer.
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Answer, CallError> {
    let started = Instant::now();
    let result = match (method, body) {
        ("GET", _) => {
            let mut rb = agent.get(url);
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            rb.call()
        }
        (m, b) => {
            let mut rb = if m == "PUT" {
                agent.put(url)
            } else {
                agent.post(url)
            };
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            rb.send(b.unwrap_or_default())
        }
    };
    let mut resp = result.map_err(|e| transport_error(url, &e))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::http::parse_retry_after(v, std::time::SystemTime::now()));
    let body = resp
        .body_mut()
        .with_config()
        .limit(ANSWER_MAX_BYTES)
        .read_to_vec();
    let body = match body {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(_)) => {
            let reason = format!(
                "{url} answered {status} with a body over the {ANSWER_MAX_BYTES}-byte cap; answer ignored"
            );
            return Err(if (200..300).contains(&status) {
                CallError::Refused {
                    reason,
                    status: Some(status),
                }
            } else {
                CallError::Retry {
                    reason,
                    retry_after,
                }
            });
        }
        Err(e) => return Err(transport_error(url, &e)),
    };
    crate::journal::debug(
        &format!(
            "WFM {method} {url}: {status} in {} ms",
            started.elapsed().as_millis()
        ),
        &[],
    );
    let quoted = || quote(&body);
    match status {
        200..=299 => Ok(Answer {
            status,
            content_type,
            body,
        }),
        401 => Err(CallError::Unauthorized(format!(
            "{url} answered 401 Unauthorized: {}",
            quoted()
        ))),
        408 | 429 | 500..=599 => Err(CallError::Retry {
            reason: format!("{url} answered {status}: {}", quoted()),
            retry_after,
        }),
        _ => Err(CallError::Refused {
            reason: format!("{url} answered {status}: {}", quoted()),
            status: Some(status),
        }),
    }
}

/// A body for a journal line: one line, capped.
pub fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.is_empty() {
        return "(empty body)".into();
    }
    crate::journal::ellipsize(&one, QUOTE_MAX)
}

/// Sends a signed JSON body.
pub fn signed_json(
    agent: &ureq::Agent,
    key: &DeviceKey,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<Answer, CallError> {
    let sig = key
        .payload_signature(body)
        .map_err(|e| CallError::Refused {
            reason: format!("{url}: signing the request with the device key failed: {e}"),
            status: None,
        })?;
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
        ("X-Payload-Signature", sig.as_str()),
    ];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    call(agent, method, url, &headers, Some(body))
}

/// An OAuth2 access token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub refresh_at: Instant,
}

/// `POST` the token URL with the client credentials (form-encoded, as the draft shows).
pub fn fetch_token(
    agent: &ureq::Agent,
    token_url: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<Token, CallError> {
    use crate::http::query_escape as esc;
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        esc(client_id),
        esc(client_secret)
    );
    let answer = call(
        agent,
        "POST",
        token_url,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
        ],
        Some(form.as_bytes()),
    )
    .map_err(|e| match e {
        CallError::Unauthorized(r) => CallError::Refused {
            reason: format!(
                "{r}; the client credentials from onboarding were refused: re-onboard with `margo-agent onboard --force`"
            ),
            status: Some(401),
        },
        other => other,
    })?;
    let v: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|_| CallError::Retry {
            reason: format!(
                "token endpoint {token_url} answered {} with {} instead of a JSON token: {}",
                answer.status,
                if answer.content_type.is_empty() {
                    "no content type"
                } else {
                    &answer.content_type
                },
                quote(&answer.body)
            ),
            retry_after: None,
        })?;
    let Some(value) = v["access_token"].as_str().filter(|s| !s.is_empty()) else {
        return Err(CallError::Retry {
            reason: format!("token endpoint {token_url} answered without access_token"),
            retry_after: None,
        });
    };
    // An absurd lifetime from the token endpoint (years) is bounded to a day, so the
    // refresh time below never overflows.
    let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(300).clamp(1, 86_400));
    // Refresh a little before it expires: a quarter of its life, at most a minute.
    let margin = (lifetime / 4).min(Duration::from_secs(60));
    Ok(Token {
        value: value.to_string(),
        refresh_at: Instant::now() + lifetime - margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_answered_status() {
        use crate::oci::test_server::{Reply, Request, TestServer};
        let server = TestServer::start(|_| {
            |req: &Request| match req.path() {
                "/conflict" => Reply::new(409).body("already exists"),
                "/bad" => Reply::new(400).body("field x: 409 is not allowed"),
                _ => Reply::new(503),
            }
        });
        let agent = agent(Arc::new(Vec::new()), Duration::from_secs(5));
        let url = |p: &str| format!("http://{}{p}", server.host());
        let status = |p: &str| match call(&agent, "POST", &url(p), &[], Some(b"{}")) {
            Err(CallError::Refused { status, .. }) => status,
            other => panic!("{p}: {other:?}", other = other.map(|a| a.status)),
        };
        assert_eq!(status("/conflict"), Some(409));
        assert_eq!(status("/bad"), Some(400));
        assert!(matches!(
            call(&agent, "GET", &url("/down"), &[], None),
            Err(CallError::Retry { .. })
        ));
    }

    #[test]
    fn quote_is_one_capped_line() {
        assert_eq!(quote(b"a\n  b\tc"), "a b c");
        assert_eq!(quote(b""), "(empty body)");
        let long = "é".repeat(1000);
        let q = quote(long.as_bytes());
        assert!(q.len() <= QUOTE_MAX + 3 && q.ends_with('…'));
    }
}
