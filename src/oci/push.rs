//! Pushing blobs and manifests, for the `publish` command (WFMs, CI and tests publish desired
//! state with it).
//!
//! Uses the spec's two-step monolithic upload: `POST /v2/<name>/blobs/uploads/` →
//! `202 Accepted` + `Location`, then `PUT <location>&digest=…` with the whole blob → `201`.
//! Chunked (`PATCH`) uploads and cross-repository mounts are left out: desired-state
//! artifacts are small, and every registry supports the monolithic form. Blobs the registry
//! already has are skipped (HEAD first). Tokens are requested with `pull,push` scope.
//!
//! Refuses: a blob whose bytes do not match the digest and size given (a caller bug caught
//! before upload), manifests over [`MANIFEST_MAX_BYTES`], and a registry that names the pushed
//! manifest with another digest than the bytes sent.

use super::client::OciClient;
use super::error::{OciError, Target};
use super::manifest::MANIFEST_MAX_BYTES;
use super::reference::Reference;
use super::request::{Call, Method, Payload, header};
use crate::digest::Digest;
use crate::http::query_escape;
use std::io::Read;
use ureq::http::Uri;

/// What to upload: bytes in memory, or a reader yielding exactly `size` bytes.
pub enum BlobSource<'a> {
    Bytes(&'a [u8]),
    Reader(&'a mut dyn Read),
}

impl OciClient {
    /// Whether `r`'s repository already holds blob `digest` (HEAD: 200 yes, 404 no).
    pub fn blob_exists(&mut self, r: &Reference, digest: &Digest) -> Result<bool, OciError> {
        let url = self.url(r, "blobs", digest.as_str());
        let at = Target::new(&r.registry, &r.repository, format!("blob {digest}"), &url);
        let call = Call::api(Method::Head, url, r, &at).push();
        let resp = self.execute(&call, Payload::None)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.failure(resp, &at)),
        }
    }

    /// Uploads blob `digest` of `size` bytes unless the repository has it already. Returns
    /// whether it was uploaded.
    pub fn push_blob(
        &mut self,
        r: &Reference,
        source: BlobSource,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, OciError> {
        if let BlobSource::Bytes(b) = &source {
            let at = Target::new(&r.registry, &r.repository, format!("blob {digest}"), "");
            if b.len() as u64 != size {
                return Err(OciError::SizeMismatch {
                    at,
                    declared: size,
                    received: b.len() as u64,
                });
            }
            let actual = Digest::of(b);
            if actual != *digest {
                return Err(OciError::DigestMismatch {
                    at,
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        if self.blob_exists(r, digest)? {
            return Ok(false);
        }
        let post_url = format!(
            "{}/v2/{}/blobs/uploads/",
            self.base_url(&r.registry),
            r.repository
        );
        let at = Target::new(
            &r.registry,
            &r.repository,
            format!("upload of blob {digest}"),
            &post_url,
        );
        let call = Call::api(Method::Post, post_url.clone(), r, &at).push();
        let resp = self.execute(&call, Payload::None)?;
        if resp.status().as_u16() != 202 {
            return Err(self.failure(resp, &at));
        }
        let location = header(&resp, "location").ok_or_else(|| OciError::Protocol {
            at: at.clone(),
            reason: "HTTP 202 without a Location header".into(),
        })?;
        let put_url =
            join_location(&post_url, &location, digest).map_err(|reason| OciError::Protocol {
                at: at.clone(),
                reason,
            })?;
        let mut call = Call::api(Method::Put, put_url, r, &at).push().transfer();
        call.content_type = Some("application/octet-stream");
        let resp = match source {
            BlobSource::Bytes(b) => self.execute(&call, Payload::Bytes(b))?,
            BlobSource::Reader(reader) => {
                let mut limited = reader.take(size);
                self.execute(&call, Payload::Reader(&mut limited, size))?
            }
        };
        if resp.status().as_u16() != 201 {
            return Err(self.failure(resp, &at));
        }
        check_returned_digest(&resp, digest, &at)?;
        Ok(true)
    }

    /// Pushes manifest `bytes` under `tag` with `Content-Type: media_type` (no parameters) and
    /// returns its digest, checked against the `Docker-Content-Digest` the registry returns.
    pub fn push_manifest(
        &mut self,
        r: &Reference,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, OciError> {
        let url = self.url(r, "manifests", tag);
        let at = Target::new(&r.registry, &r.repository, format!("manifest {tag}"), &url);
        if bytes.len() as u64 > MANIFEST_MAX_BYTES {
            return Err(OciError::TooLarge {
                at,
                size: Some(bytes.len() as u64),
                cap: MANIFEST_MAX_BYTES,
            });
        }
        let digest = Digest::of(bytes);
        let mut call = Call::api(Method::Put, url, r, &at).push();
        call.content_type = Some(media_type);
        let resp = self.execute(&call, Payload::Bytes(bytes))?;
        if resp.status().as_u16() != 201 {
            return Err(self.failure(resp, &at));
        }
        check_returned_digest(&resp, &digest, &at)?;
        Ok(digest)
    }
}

/// The spec says the registry's `Docker-Content-Digest` names what it stored; it must be what
/// we sent. An absent header is tolerated (Docker-* headers are optional).
fn check_returned_digest(
    resp: &ureq::http::Response<ureq::Body>,
    sent: &Digest,
    at: &Target,
) -> Result<(), OciError> {
    let Some(returned) = header(resp, "docker-content-digest") else {
        return Ok(());
    };
    match Digest::parse(&returned) {
        Ok(d) if d == *sent => Ok(()),
        Ok(d) => Err(OciError::DigestMismatch {
            at: Box::new(at.clone()),
            expected: sent.clone(),
            actual: d,
        }),
        Err(e) => Err(OciError::Protocol {
            at: Box::new(at.clone()),
            reason: format!("Docker-Content-Digest: {e}"),
        }),
    }
}

/// Resolves an upload `Location` (absolute, scheme-relative, absolute-path or relative) against
/// the POST URL and appends the `digest` query parameter (with `&` when it already has a
/// query, as distribution's `_state` locations do).
pub fn join_location(request_url: &str, location: &str, digest: &Digest) -> Result<String, String> {
    let location = location.trim();
    if location.is_empty() {
        return Err("the upload Location header is empty".into());
    }
    let request: Uri = request_url
        .parse()
        .map_err(|_| format!("cannot parse the request URL {request_url}"))?;
    let scheme = request.scheme_str().unwrap_or("https");
    let authority = request.authority().map(|a| a.as_str()).unwrap_or("");
    let mut url = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = request.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    };
    if url.parse::<Uri>().is_err() {
        return Err("the upload Location is not a valid URL".into());
    }
    if !url.contains('?') {
        url.push('?');
    } else if !url.ends_with('?') && !url.ends_with('&') {
        url.push('&');
    }
    url.push_str("digest=");
    url.push_str(&query_escape(digest.as_str()));
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    const POST: &str = "https://reg.example:5000/v2/fleet/desired/blobs/uploads/";

    fn d() -> (Digest, String) {
        let d = Digest::of(b"x");
        let q = format!("digest=sha256%3A{}", d.hex());
        (d, q)
    }

    #[test]
    fn joins_absolute_path_location() {
        let (d, q) = d();
        assert_eq!(
            join_location(POST, "/v2/fleet/desired/blobs/uploads/abc", &d).unwrap(),
            format!("https://reg.example:5000/v2/fleet/desired/blobs/uploads/abc?{q}")
        );
    }

    #[test]
    fn appends_digest_to_an_existing_query() {
        let (d, q) = d();
        assert_eq!(
            join_location(POST, "/v2/x/blobs/uploads/u?_state=AbC%3D", &d).unwrap(),
            format!("https://reg.example:5000/v2/x/blobs/uploads/u?_state=AbC%3D&{q}")
        );
        assert_eq!(
            join_location(POST, "/u?", &d).unwrap(),
            format!("https://reg.example:5000/u?{q}")
        );
    }

    #[test]
    fn keeps_absolute_location_and_resolves_relative_ones() {
        let (d, q) = d();
        assert_eq!(
            join_location(POST, "http://other:9000/up/1", &d).unwrap(),
            format!("http://other:9000/up/1?{q}")
        );
        assert_eq!(
            join_location(POST, "//cdn.example/up", &d).unwrap(),
            format!("https://cdn.example/up?{q}")
        );
        assert_eq!(
            join_location(POST, "abc", &d).unwrap(),
            format!("https://reg.example:5000/v2/fleet/desired/blobs/uploads/abc?{q}")
        );
    }

    #[test]
    fn rejects_empty_or_unparseable_location() {
        let (d, _) = d();
        assert!(join_location(POST, "  ", &d).is_err());
        assert!(join_location(POST, "http://bad host/x", &d).is_err());
    }
}
