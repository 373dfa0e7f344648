//! Registry authentication, the pure half: `WWW-Authenticate` challenges, token-service
//! replies, and the token cache.
//!
//! Owns: [`parse_challenges`] (RFC 7235 syntax: several challenges per header, scheme names
//! case-insensitive, comma-separated `key=value` or `key="quoted, \"escaped\" value"`),
//! [`parse_token_response`] (`token` or `access_token`, `expires_in`) and [`TokenCache`].
//!
//! Refuses: nothing loudly. A challenge header is outside input from any server the agent
//! talks to, so the parser never panics and never errors: what it cannot read it skips, and a
//! Bearer challenge without a `realm` is dropped (there is nowhere to ask for a token).
//! Schemes other than Basic and Bearer (Digest, Negotiate, …) are ignored.
//!
//! Time: the cache takes `now` as an argument and uses [`Instant`], not the wall clock. Devices
//! often boot without a real-time clock and jump years when NTP syncs, so a token's lifetime
//! is measured from when we received it; `issued_at` is ignored.
//!
//! The network half (asking the realm for a token, retrying) lives in `request.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lifetime assumed when a token reply has no `expires_in` (distribution's token spec default).
pub const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// A token is dropped this long before it expires, so a request never leaves with a token
/// that dies in flight. Short-lived tokens lose at most half their lifetime to it.
pub const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Longest lifetime honoured: a token claiming more is refreshed after a day anyway.
pub const TOKEN_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Tokens kept at once; a device talks to a handful of repositories.
pub const TOKEN_CACHE_MAX_ENTRIES: usize = 32;

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`: send username and password with every request.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: ask `realm` for a token.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses one `WWW-Authenticate` header value into the challenges margo-agent can answer.
/// Never panics; unreadable parts are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut raw: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Separators between challenges and parameters.
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start {
            i += 1; // not a token: skip one byte so the loop always advances
            continue;
        }
        let name = lossy(&b[start..i]);
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' {
            // `name=value`: a parameter of the current challenge.
            j += 1;
            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                j += 1;
            }
            let (value, next) = if j < b.len() && b[j] == b'"' {
                quoted(b, j + 1)
            } else {
                // Unquoted: a token by the RFC, but registries write bare URLs (with `?`, `=`),
                // so read up to the next separator.
                let s = j;
                while j < b.len() && b[j] != b',' && !b[j].is_ascii_whitespace() {
                    j += 1;
                }
                (lossy(&b[s..j]), j)
            };
            if let Some((_, params)) = raw.last_mut() {
                params.push((name.to_ascii_lowercase(), value));
            }
            i = next;
        } else {
            // A bare token: the scheme of a new challenge.
            raw.push((name.to_ascii_lowercase(), Vec::new()));
            i = j;
        }
    }
    raw.into_iter()
        .filter_map(|(scheme, params)| {
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            match scheme.as_str() {
                "basic" => Some(Challenge::Basic),
                "bearer" => Some(Challenge::Bearer {
                    realm: get("realm").filter(|r| !r.is_empty())?,
                    service: get("service"),
                    scope: get("scope").filter(|s| !s.is_empty()),
                }),
                _ => None,
            }
        })
        .collect()
}

/// RFC 7230 `tchar`, plus `/` and `:` so that an unquoted scheme or name never splits a URL.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads a quoted string starting after its opening quote; returns the unescaped value and
/// the index after the closing quote (or the end, when unterminated).
fn quoted(b: &[u8], mut i: usize) -> (String, usize) {
    let mut out = Vec::new();
    while i < b.len() {
        match b[i] {
            b'"' => return (lossy(&out), i + 1),
            b'\\' if i + 1 < b.len() => {
                out.push(b[i + 1]);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (lossy(&out), i)
}

/// Where a token is valid: the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub realm: String,
    pub service: String,
    pub scope: String,
}

/// A token-service reply, reduced to what the agent uses.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub token: String,
    pub lifetime: Duration,
}

impl std::fmt::Debug for TokenGrant {
    // The token is a credential: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenGrant {{ token: <redacted>, lifetime: {:?} }}",
            self.lifetime
        )
    }
}

#[derive(serde::Deserialize)]
struct TokenReply {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    // `issued_at` is deliberately not read: see the module docs.
}

/// Parses a token-service reply (`{"token": …}` or `{"access_token": …}`, optional
/// `expires_in` seconds). Returns a reason on failure, never the token text.
pub fn parse_token_response(body: &[u8]) -> Result<TokenGrant, String> {
    let reply: TokenReply = serde_json::from_slice(body)
        .map_err(|e| format!("token reply is not the expected JSON ({e})"))?;
    let token = reply
        .token
        .filter(|t| !t.is_empty())
        .or(reply.access_token.filter(|t| !t.is_empty()))
        .ok_or("token reply has neither a token nor an access_token")?;
    // Header values must be visible ASCII; anything else would fail when sent.
    if !token.bytes().all(|c| c.is_ascii_graphic()) {
        return Err("token reply holds a token with characters not allowed in a header".into());
    }
    let lifetime = reply
        .expires_in
        .as_ref()
        .and_then(serde_json::Value::as_f64)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(TOKEN_MAX_LIFETIME.as_secs_f64())))
        .unwrap_or(TOKEN_DEFAULT_LIFETIME);
    Ok(TokenGrant { token, lifetime })
}

struct CachedToken {
    token: String,
    usable_until: Instant,
}

/// Bearer tokens by (realm, service, scope), each usable until its lifetime minus
/// [`TOKEN_EXPIRY_MARGIN`].
#[derive(Default)]
pub struct TokenCache {
    entries: HashMap<TokenKey, CachedToken>,
}

impl TokenCache {
    pub fn new() -> TokenCache {
        TokenCache::default()
    }

    /// The token for `key` if it is still usable at `now`.
    pub fn get(&self, key: &TokenKey, now: Instant) -> Option<&str> {
        self.entries
            .get(key)
            .filter(|c| now < c.usable_until)
            .map(|c| c.token.as_str())
    }

    /// Stores a grant received at `now`. When full, expired entries go first, then the one
    /// that expires soonest.
    pub fn insert(&mut self, key: TokenKey, grant: TokenGrant, now: Instant) {
        let margin = TOKEN_EXPIRY_MARGIN.min(grant.lifetime / 2);
        let usable = grant.lifetime.saturating_sub(margin);
        let usable_until = now.checked_add(usable).unwrap_or(now);
        if self.entries.len() >= TOKEN_CACHE_MAX_ENTRIES && !self.entries.contains_key(&key) {
            self.entries.retain(|_, c| now < c.usable_until);
            if self.entries.len() >= TOKEN_CACHE_MAX_ENTRIES {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, c)| c.usable_until)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            key,
            CachedToken {
                token: grant.token,
                usable_until,
            },
        );
    }

    /// Forgets a token the registry refused.
    pub fn remove(&mut self, key: &TokenKey) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        }
    }

    #[test]
    fn parses_distribution_bearer_challenge() {
        let h = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:fleet/app:pull""#;
        assert_eq!(
            parse_challenges(h),
            vec![bearer(
                "https://auth.example.com/token",
                Some("registry.example.com"),
                Some("repository:fleet/app:pull")
            )]
        );
    }

    #[test]
    fn scheme_is_case_insensitive_and_params_may_be_unquoted() {
        let h = "BEARER Realm=https://a/t , SERVICE=reg";
        assert_eq!(
            parse_challenges(h),
            vec![bearer("https://a/t", Some("reg"), None)]
        );
        assert_eq!(parse_challenges("basic"), vec![Challenge::Basic]);
    }

    #[test]
    fn quoted_values_keep_commas_and_unescape() {
        let h = r#"Bearer realm="https://a/t",scope="repository:a:pull,push",service="x\"y\\z""#;
        assert_eq!(
            parse_challenges(h),
            vec![bearer(
                "https://a/t",
                Some("x\"y\\z"),
                Some("repository:a:pull,push")
            )]
        );
    }

    #[test]
    fn several_challenges_in_one_header() {
        let h = r#"Digest realm="x", nonce="n, m", Basic realm="registry", Bearer realm="https://a/t",service="s""#;
        assert_eq!(
            parse_challenges(h),
            vec![Challenge::Basic, bearer("https://a/t", Some("s"), None)]
        );
    }

    #[test]
    fn bearer_without_realm_is_dropped() {
        assert!(parse_challenges(r#"Bearer service="s""#).is_empty());
        assert!(parse_challenges(r#"Bearer realm="""#).is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let nasty = [
            "",
            ",",
            "=",
            "==,,==",
            "\"",
            "Bearer realm=\"unterminated",
            "Bearer realm=\"ends in backslash\\",
            "Bearer realm=",
            "Bearer ,,, realm = \"a\" ,",
            "Basic dXNlcjpwYXNz==",
            "realm=\"no scheme\"",
            "Bearer realm=\"ü\u{0}\u{7f}\", service=\u{1F600}",
            "\u{feff}Bearer realm=x",
            "Bearer\trealm\t=\t\"tab\"",
            &"a=".repeat(5000),
            &"\"\\".repeat(3000),
            &"Bearer ".repeat(1000),
        ];
        for h in nasty {
            let _ = parse_challenges(h);
        }
        assert_eq!(
            parse_challenges("Bearer realm=\"unterminated"),
            vec![bearer("unterminated", None, None)]
        );
        assert_eq!(
            parse_challenges("Bearer\trealm\t=\t\"tab\""),
            vec![bearer("tab", None, None)]
        );
    }

    #[test]
    fn token_reply_takes_token_or_access_token_with_default_lifetime() {
        let g = parse_token_response(br#"{"token":"abc"}"#).unwrap();
        assert_eq!(
            (g.token.as_str(), g.lifetime),
            ("abc", TOKEN_DEFAULT_LIFETIME)
        );
        let g = parse_token_response(
            br#"{"access_token":"xyz","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (g.token.as_str(), g.lifetime),
            ("xyz", Duration::from_secs(300))
        );
        let g = parse_token_response(br#"{"token":"t","expires_in":1e12}"#).unwrap();
        assert_eq!(g.lifetime, TOKEN_MAX_LIFETIME);
        let g = parse_token_response(br#"{"token":"t","expires_in":-5}"#).unwrap();
        assert_eq!(g.lifetime, TOKEN_DEFAULT_LIFETIME);
    }

    #[test]
    fn token_reply_errors_never_echo_the_token() {
        for bad in [
            &br#"{}"#[..],
            br#"{"token":""}"#,
            br#"{"token":"a b\nc"}"#,
            b"<html>",
        ] {
            let err = parse_token_response(bad).unwrap_err();
            assert!(!err.contains("a b"), "{err}");
        }
        let g = parse_token_response(br#"{"token":"s3cr3t"}"#).unwrap();
        assert!(!format!("{g:?}").contains("s3cr3t"));
    }

    fn key(scope: &str) -> TokenKey {
        TokenKey {
            realm: "https://a/t".into(),
            service: "reg".into(),
            scope: scope.into(),
        }
    }

    fn grant(token: &str, secs: u64) -> TokenGrant {
        TokenGrant {
            token: token.into(),
            lifetime: Duration::from_secs(secs),
        }
    }

    #[test]
    fn cached_token_expires_a_margin_before_its_lifetime() {
        let t0 = Instant::now();
        let mut c = TokenCache::new();
        c.insert(key("s"), grant("tok", 60), t0);
        assert_eq!(c.get(&key("s"), t0), Some("tok"));
        assert_eq!(c.get(&key("s"), t0 + Duration::from_secs(49)), Some("tok"));
        assert_eq!(c.get(&key("s"), t0 + Duration::from_secs(50)), None);
        assert_eq!(c.get(&key("other"), t0), None);
    }

    #[test]
    fn short_lived_token_keeps_half_its_lifetime() {
        let t0 = Instant::now();
        let mut c = TokenCache::new();
        c.insert(key("s"), grant("tok", 4), t0);
        assert_eq!(c.get(&key("s"), t0 + Duration::from_secs(1)), Some("tok"));
        assert_eq!(c.get(&key("s"), t0 + Duration::from_secs(2)), None);
    }

    #[test]
    fn full_cache_evicts_the_soonest_expiring_token() {
        let t0 = Instant::now();
        let mut c = TokenCache::new();
        for i in 0..TOKEN_CACHE_MAX_ENTRIES {
            c.insert(key(&i.to_string()), grant("t", 100 + i as u64), t0);
        }
        c.insert(key("new"), grant("n", 100), t0);
        assert_eq!(c.len(), TOKEN_CACHE_MAX_ENTRIES);
        assert_eq!(c.get(&key("0"), t0), None);
        assert_eq!(c.get(&key("new"), t0), Some("n"));
        c.remove(&key("new"));
        assert_eq!(c.get(&key("new"), t0), None);
    }
}
