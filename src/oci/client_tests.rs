//! Network behaviour of [`OciClient`] against scripted registries on 127.0.0.1 (see
//! `test_server.rs`). Each test's handler is the registry's side of the exchange it exercises;
//! the real-registry checks live in the end-to-end tests.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use super::client::{OciClient, RegistryAccess};
use super::error::OciError;
use super::manifest::{
    Descriptor, ImageManifest, MANIFEST_MAX_BYTES, MEDIA_TYPE_OCI_MANIFEST, Manifest,
};
use super::push::BlobSource;
use super::reference::Reference;
use super::test_server::{Reply, Request, TestServer};
use crate::digest::Digest;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

const REPO: &str = "fleet/desired";

fn client(host: &str, credentials: Option<(&str, &str)>) -> OciClient {
    let agent = crate::http::client(&Arc::new(Vec::new()));
    let mut c = OciClient::new(agent);
    c.set_access(
        host,
        RegistryAccess {
            plain_http: true,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        },
    );
    c
}

fn reference(host: &str) -> Reference {
    Reference::parse(&format!("{host}/{REPO}:latest")).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A one-layer desired-state artifact manifest and its digest.
fn artifact() -> (Vec<u8>, Digest) {
    let layer = Descriptor::new(
        "application/vnd.margo.desired-state.v1+yaml",
        Digest::of(b"x"),
        1,
    );
    let bytes =
        ImageManifest::artifact("application/vnd.test", vec![layer], BTreeMap::new()).to_bytes();
    let digest = Digest::of(&bytes);
    (bytes, digest)
}

fn manifest_reply(bytes: &[u8], digest: &Digest) -> Reply {
    Reply::new(200)
        .header("Content-Type", MEDIA_TYPE_OCI_MANIFEST)
        .header("Docker-Content-Digest", digest.as_str())
        .body(bytes.to_vec())
}

/// A fresh directory for downloads, removed by the test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("margo-oci-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn dir_is_empty(dir: &PathBuf) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn bearer_flow_sends_basic_to_token_service_then_bearer_to_registry() {
    let (bytes, digest) = artifact();
    let (b2, d2) = (bytes.clone(), digest.clone());
    let server = TestServer::start(move |host| {
        move |req: &Request| {
            if req.path() == "/token" {
                return if req.header("authorization") == Some(basic("alice", "s3cret").as_str()) {
                    Reply::new(200).body(r#"{"token":"T0K3N","expires_in":300}"#)
                } else {
                    Reply::new(401)
                };
            }
            if req.header("authorization") != Some("Bearer T0K3N") {
                let challenge = format!(
                    r#"Bearer realm="http://{host}/token",service="test-registry",scope="repository:{REPO}:pull""#
                );
                return Reply::new(401).header("WWW-Authenticate", &challenge).body(
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                );
            }
            manifest_reply(&b2, &d2)
        }
    });
    let mut c = client(&server.host(), Some(("alice", "s3cret")));
    let r = reference(&server.host());

    let fetched = c.get_manifest(&r, "latest").unwrap();
    assert_eq!(fetched.digest, digest);
    assert!(matches!(fetched.manifest, Manifest::Image(_)));
    // The next request sends the cached token straight away: no second challenge.
    let head = c.head_manifest(&r).unwrap().unwrap();
    assert_eq!(head.digest, digest);

    let reqs = server.requests();
    let summary: Vec<(&str, &str, Option<&str>)> = reqs
        .iter()
        .map(|q| (q.method.as_str(), q.path(), q.header("authorization")))
        .collect();
    let basic_creds = basic("alice", "s3cret");
    assert_eq!(
        summary,
        vec![
            ("GET", "/v2/fleet/desired/manifests/latest", None),
            ("GET", "/token", Some(basic_creds.as_str())),
            (
                "GET",
                "/v2/fleet/desired/manifests/latest",
                Some("Bearer T0K3N")
            ),
            (
                "HEAD",
                "/v2/fleet/desired/manifests/latest",
                Some("Bearer T0K3N")
            ),
        ]
    );
    assert!(
        reqs[1]
            .target
            .ends_with("?service=test-registry&scope=repository%3Afleet%2Fdesired%3Apull"),
        "{}",
        reqs[1].target
    );
    assert!(
        reqs[0]
            .header("accept")
            .unwrap()
            .contains(MEDIA_TYPE_OCI_MANIFEST)
    );
}

#[test]
fn refused_basic_credentials_are_unauthorized_after_one_retry() {
    let server = TestServer::start(|_| {
        |req: &Request| {
            if req.header("authorization") == Some(basic("alice", "right").as_str()) {
                Reply::new(200)
            } else {
                Reply::new(401)
                    .header("WWW-Authenticate", r#"Basic realm="registry""#)
                    .body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"access to the requested resource is not authorized"}]}"#)
            }
        }
    });
    let mut c = client(&server.host(), Some(("alice", "pa55-w0rd-XYZ")));
    let err = c
        .get_manifest(&reference(&server.host()), "latest")
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&server.host()) && msg.contains("refused"),
        "{msg}"
    );
    assert!(msg.contains("UNAUTHORIZED"), "{msg}");
    assert!(!msg.contains("pa55-w0rd-XYZ"), "{msg}");
    assert!(!format!("{err:?}").contains("pa55-w0rd-XYZ"));
    // Anonymous, then once with the credentials: no loop.
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn token_service_refusing_credentials_is_unauthorized() {
    let server = TestServer::start(|host| {
        move |req: &Request| {
            if req.path() == "/token" {
                return Reply::new(401)
                    .body(r#"{"errors":[{"code":"DENIED","message":"bad password"}]}"#);
            }
            Reply::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="http://{host}/token",service="s""#),
            )
        }
    });
    let mut c = client(&server.host(), Some(("alice", "wrong")));
    let err = c
        .get_manifest(&reference(&server.host()), "latest")
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("DENIED: bad password"), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn basic_challenge_without_configured_credentials_says_so() {
    let server = TestServer::start(|_| {
        |_: &Request| Reply::new(401).header("WWW-Authenticate", r#"Basic realm="r""#)
    });
    let mut c = client(&server.host(), None);
    let err = c.head_manifest(&reference(&server.host())).unwrap_err();
    assert!(err.to_string().contains("none are configured"), "{err}");
}

#[test]
fn rejects_blob_with_wrong_digest_and_leaves_no_file() {
    let server = TestServer::start(|_| |_: &Request| Reply::new(200).body("evil"));
    let mut c = client(&server.host(), None);
    let desc = Descriptor::new("application/octet-stream", Digest::of(b"good"), 4);
    let dir = scratch("digest");
    let dest = dir.join("layer");
    let err = c
        .fetch_blob_to_file(&reference(&server.host()), &desc, 1024, &dest)
        .unwrap_err();
    match &err {
        OciError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &desc.digest);
            assert_eq!(actual, &Digest::of(b"evil"));
        }
        other => panic!("expected DigestMismatch, got {other}"),
    }
    assert!(dir_is_empty(&dir), "a partial or bad file was left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn blob_longer_than_declared_size_is_refused() {
    // Without Content-Length the overrun is only seen while streaming; with it, up front.
    for chunked_like in [true, false] {
        let server = TestServer::start(move |_| {
            move |_: &Request| {
                let r = Reply::new(200).body("good and then some more");
                if chunked_like { r.without_length() } else { r }
            }
        });
        let mut c = client(&server.host(), None);
        let desc = Descriptor::new("application/octet-stream", Digest::of(b"good"), 4);
        let dir = scratch(&format!("size-{chunked_like}"));
        let err = c
            .fetch_blob_to_file(&reference(&server.host()), &desc, 1024, &dir.join("layer"))
            .unwrap_err();
        assert!(
            matches!(err, OciError::SizeMismatch { declared: 4, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("more than the declared 4 bytes"),
            "{err}"
        );
        assert!(dir_is_empty(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn blob_over_the_callers_cap_is_refused_before_any_request() {
    let server = TestServer::start(|_| |_: &Request| Reply::new(500));
    let mut c = client(&server.host(), None);
    let desc = Descriptor::new("application/octet-stream", Digest::of(b"x"), 10 << 20);
    let err = c
        .fetch_blob_bytes(&reference(&server.host()), &desc, 1 << 20)
        .unwrap_err();
    assert!(matches!(err, OciError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("over the 1 MiB cap"), "{err}");
    assert!(server.requests().is_empty());
}

#[test]
fn good_blob_is_stored_and_small_blob_read_to_memory() {
    let server = TestServer::start(|_| |_: &Request| Reply::new(200).body("good"));
    let mut c = client(&server.host(), None);
    let r = reference(&server.host());
    let desc = Descriptor::new("application/octet-stream", Digest::of(b"good"), 4);
    let dir = scratch("good");
    let dest = dir.join("layer");
    c.fetch_blob_to_file(&r, &desc, 1024, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"good");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "temp file left"
    );
    assert_eq!(c.fetch_blob_bytes(&r, &desc, 1024).unwrap(), b"good");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn manifest_over_the_cap_is_too_large() {
    let big = vec![b' '; (MANIFEST_MAX_BYTES + 1) as usize];
    for streamed in [false, true] {
        let body = big.clone();
        let server = TestServer::start(move |_| {
            move |_: &Request| {
                let r = Reply::new(200)
                    .header("Content-Type", MEDIA_TYPE_OCI_MANIFEST)
                    .body(body.clone());
                if streamed { r.without_length() } else { r }
            }
        });
        let mut c = client(&server.host(), None);
        let err = c
            .get_manifest(&reference(&server.host()), "latest")
            .unwrap_err();
        match err {
            OciError::TooLarge { size, cap, .. } => {
                assert_eq!(cap, MANIFEST_MAX_BYTES);
                assert_eq!(size.is_some(), !streamed);
            }
            other => panic!("expected TooLarge, got {other}"),
        }
    }
}

#[test]
fn manifest_not_matching_the_requested_digest_is_refused_before_parsing() {
    let (bytes, _) = artifact();
    let server = TestServer::start(move |_| move |_: &Request| Reply::new(200).body(bytes.clone()));
    let mut c = client(&server.host(), None);
    let wanted = Digest::of(b"something else");
    let err = c
        .get_manifest(&reference(&server.host()), wanted.as_str())
        .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
}

#[test]
fn missing_manifest_is_none_on_head_and_not_found_on_get() {
    let server = TestServer::start(|_| {
        |_: &Request| {
            Reply::new(404)
                .body(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#)
        }
    });
    let mut c = client(&server.host(), None);
    let r = reference(&server.host());
    assert_eq!(c.head_manifest(&r).unwrap(), None);
    let err = c.get_manifest(&r, "latest").unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("MANIFEST_UNKNOWN: manifest unknown"),
        "{err}"
    );
}

#[test]
fn head_without_docker_content_digest_falls_back_to_get_and_hash() {
    let (bytes, digest) = artifact();
    let server = TestServer::start(move |_| {
        move |_: &Request| {
            Reply::new(200)
                .header("Content-Type", MEDIA_TYPE_OCI_MANIFEST)
                .body(bytes.clone())
        }
    });
    let mut c = client(&server.host(), None);
    let head = c
        .head_manifest(&reference(&server.host()))
        .unwrap()
        .unwrap();
    assert_eq!(head.digest, digest);
    let methods: Vec<String> = server.requests().into_iter().map(|q| q.method).collect();
    assert_eq!(methods, ["HEAD", "GET"]);
}

#[test]
fn redirect_to_another_port_does_not_carry_authorization() {
    let storage = TestServer::start(|_| |_: &Request| Reply::new(200).body("good"));
    let storage_host = storage.host();
    let registry = TestServer::start(move |_| {
        move |req: &Request| {
            if req.header("authorization") != Some(basic("alice", "s3cret").as_str()) {
                return Reply::new(401).header("WWW-Authenticate", r#"Basic realm="r""#);
            }
            Reply::new(307).header(
                "Location",
                &format!("http://{storage_host}/objects/abc?signature=xyz"),
            )
        }
    });
    let mut c = client(&registry.host(), Some(("alice", "s3cret")));
    let desc = Descriptor::new("application/octet-stream", Digest::of(b"good"), 4);
    let dir = scratch("redirect");
    let dest = dir.join("layer");
    c.fetch_blob_to_file(&reference(&registry.host()), &desc, 1024, &dest)
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"good");
    let at_storage = storage.requests();
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].target, "/objects/abc?signature=xyz");
    assert_eq!(at_storage[0].header("authorization"), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fetches_registry_blob_url_and_verifies_its_digest() {
    let server = TestServer::start(|_| |_: &Request| Reply::new(200).body("evil"));
    let mut c = client(&server.host(), None);
    let good = Digest::of(b"good");
    let url = format!("http://{}/v2/{REPO}/blobs/{good}", server.host());
    let dir = scratch("url");
    let err = c
        .fetch_url_to_file(&url, None, 1024, &dir.join("pkg"))
        .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert!(dir_is_empty(&dir));
    // A plain URL without an expected digest is stored and its digest returned.
    let plain = format!("http://{}/files/pkg.tar.gz", server.host());
    let got = c
        .fetch_url_to_file(&plain, None, 1024, &dir.join("pkg"))
        .unwrap();
    assert_eq!(got, Digest::of(b"evil"));
    // Over the cap, without a declared size.
    let err = c
        .fetch_url_to_file(&plain, None, 3, &dir.join("pkg2"))
        .unwrap_err();
    assert!(matches!(err, OciError::TooLarge { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plain_http_url_is_refused_for_hosts_not_configured_for_it() {
    let agent = crate::http::client(&Arc::new(Vec::new()));
    let mut c = OciClient::new(agent);
    let dir = scratch("insecure");
    let err = c
        .fetch_url_to_file("http://127.0.0.1:9/pkg.tgz", None, 1024, &dir.join("p"))
        .unwrap_err();
    assert!(matches!(err, OciError::NotAllowed { .. }), "{err}");
    let err = c
        .fetch_url_to_file("ftp://example.com/pkg.tgz", None, 1024, &dir.join("p"))
        .unwrap_err();
    assert!(matches!(err, OciError::NotAllowed { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreachable_registry_is_transient() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let mut c = client(&host, None);
    let err = c.head_manifest(&reference(&host)).unwrap_err();
    assert!(err.is_unreachable() && err.is_transient(), "{err}");
    assert!(
        err.to_string().starts_with(&format!("cannot reach {host}")),
        "{err}"
    );
}

#[test]
fn pushes_blobs_and_manifest_through_post_then_put() {
    let server = TestServer::start(|_| {
        |req: &Request| match (req.method.as_str(), req.path()) {
            ("HEAD", p) if p.contains("/blobs/") => Reply::new(404),
            ("POST", "/v2/fleet/desired/blobs/uploads/") => {
                Reply::new(202).header("Location", "/v2/fleet/desired/blobs/uploads/u1?_state=abc")
            }
            ("PUT", "/v2/fleet/desired/blobs/uploads/u1") => {
                let digest = Digest::of(&req.body);
                let q = format!("_state=abc&digest=sha256%3A{}", digest.hex());
                if !req.target.ends_with(&q)
                    || req.header("content-type") != Some("application/octet-stream")
                {
                    return Reply::new(400);
                }
                Reply::new(201).header("Docker-Content-Digest", digest.as_str())
            }
            ("PUT", "/v2/fleet/desired/manifests/v1") => {
                if req.header("content-type") != Some(MEDIA_TYPE_OCI_MANIFEST) {
                    return Reply::new(400);
                }
                Reply::new(201).header("Docker-Content-Digest", Digest::of(&req.body).as_str())
            }
            _ => Reply::new(405),
        }
    });
    let mut c = client(&server.host(), None);
    let r = reference(&server.host());
    let layer = b"kind: ApplicationDeployment\n";
    let d = Digest::of(layer);
    assert!(
        c.push_blob(&r, BlobSource::Bytes(layer), &d, layer.len() as u64)
            .unwrap()
    );
    let mut reader: &[u8] = b"{}";
    assert!(
        c.push_blob(&r, BlobSource::Reader(&mut reader), &Digest::of(b"{}"), 2)
            .unwrap()
    );
    let (bytes, digest) = artifact();
    let pushed = c
        .push_manifest(&r, "v1", &bytes, MEDIA_TYPE_OCI_MANIFEST)
        .unwrap();
    assert_eq!(pushed, digest);
    // A blob whose bytes do not match the digest never leaves the device.
    let before = server.requests().len();
    let err = c
        .push_blob(&r, BlobSource::Bytes(b"abc"), &d, 3)
        .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert_eq!(server.requests().len(), before);
}

#[test]
fn push_skips_blobs_the_registry_has_and_checks_the_returned_manifest_digest() {
    let server = TestServer::start(|_| {
        |req: &Request| match req.method.as_str() {
            "HEAD" => Reply::new(200),
            _ => Reply::new(201).header("Docker-Content-Digest", Digest::of(b"other").as_str()),
        }
    });
    let mut c = client(&server.host(), None);
    let r = reference(&server.host());
    assert!(
        !c.push_blob(&r, BlobSource::Bytes(b"{}"), &Digest::of(b"{}"), 2)
            .unwrap()
    );
    let err = c
        .push_manifest(&r, "v1", b"{}", MEDIA_TYPE_OCI_MANIFEST)
        .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
}

#[test]
fn refused_cached_token_is_renewed_once_then_given_up() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The token service hands out T1, T2, T3, …; the registry accepts only the token named in
    // `accepted` (0 = none), so a test can revoke the cached one.
    let issued = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(1));
    let (i2, a2) = (issued.clone(), accepted.clone());
    let server = TestServer::start(move |host| {
        move |req: &Request| {
            if req.path() == "/token" {
                let n = i2.fetch_add(1, Ordering::SeqCst) + 1;
                return Reply::new(200).body(format!(r#"{{"token":"T{n}"}}"#));
            }
            let ok = format!("Bearer T{}", a2.load(Ordering::SeqCst));
            if req.header("authorization") == Some(ok.as_str()) {
                return Reply::new(200).header("Docker-Content-Digest", Digest::of(b"m").as_str());
            }
            Reply::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="http://{host}/token",service="s""#),
            )
        }
    });
    let mut c = client(&server.host(), None);
    let r = reference(&server.host());
    assert!(c.head_manifest(&r).unwrap().is_some()); // anonymous → 401 → T1 → 200
    accepted.store(2, Ordering::SeqCst); // T1 revoked
    assert!(c.head_manifest(&r).unwrap().is_some()); // T1 → 401 → T2 → 200
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    accepted.store(0, Ordering::SeqCst); // nothing works any more
    let err = c.head_manifest(&r).unwrap_err(); // T2 → 401 → T3 → 401 → give up
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert_eq!(issued.load(Ordering::SeqCst), 3);
    let auths: Vec<Option<String>> = server
        .requests()
        .iter()
        .filter(|q| q.path() != "/token")
        .map(|q| q.header("authorization").map(str::to_string))
        .collect();
    let b = |t: &str| Some(format!("Bearer {t}"));
    assert_eq!(
        auths,
        vec![None, b("T1"), b("T1"), b("T2"), b("T2"), b("T3")]
    );
}
