//! Raw OCI pushes to the bed's plain registry, bypassing `margo-agent publish`, so tests can
//! publish what the agent's own publisher never builds: manifests with no layer or two, layer
//! descriptors that lie about their size, packages with unsafe entries.
//!
//! Plain HTTP/1.1 over a `TcpStream`, one request per connection (`Connection: close`), as
//! the distribution spec describes the upload: `POST /v2/<repo>/blobs/uploads/` → `Location`
//! → `PUT <location>?digest=…` with the bytes, then `PUT /v2/<repo>/manifests/<tag>`.

use super::Bed;
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// Longest any single registry exchange may take on loopback.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn request(method: &str, target: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
    let host = Bed::get().plain();
    let mut s = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).expect("timeout");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .unwrap_or_else(|e| panic!("{method} {target}: reading the reply: {e}"));
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: no HTTP status in {head:?}"));
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Uploads `bytes` as a blob of `repo`; returns its digest.
pub fn push_blob(repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let start = request("POST", &format!("/v2/{repo}/blobs/uploads/"), None, b"");
    assert_eq!(
        start.status, 202,
        "starting an upload to {repo}: {}",
        start.body
    );
    let location = start.header("Location").expect("upload Location");
    // distribution answers with an absolute URL; keep the path and query.
    let path = match location.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/').unwrap_or(rest.len())..],
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let done = request(
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        Some("application/octet-stream"),
        bytes,
    );
    assert_eq!(
        done.status, 201,
        "finishing the upload to {repo}: {}",
        done.body
    );
    digest
}

/// A descriptor with whatever size it is told, true or not.
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// Pushes an OCI artifact manifest (empty config) with these layers and annotations under
/// `repo:tag`; returns the manifest digest. The layers' blobs must already be in `repo`.
pub fn push_manifest(
    repo: &str,
    tag: &str,
    artifact_type: &str,
    layers: &[serde_json::Value],
    annotations: &[(&str, &str)],
) -> String {
    let config = push_blob(repo, b"{}");
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(EMPTY_CONFIG, &config, 2),
        "layers": layers,
    });
    if !annotations.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        manifest["annotations"] = serde_json::Value::Object(map);
    }
    let bytes = serde_json::to_vec(&manifest).expect("manifest json");
    let put = request(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        Some(OCI_MANIFEST),
        &bytes,
    );
    assert_eq!(
        put.status, 201,
        "pushing manifest {repo}:{tag}: {}",
        put.body
    );
    sha256(&bytes)
}
