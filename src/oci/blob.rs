//! Blob downloads: registry blobs by descriptor, and package URLs that may or may not be
//! registry blob URLs.
//!
//! A blob never sits whole in memory (layers and image archives are far larger than the
//! agent's memory budget): it streams through SHA-256 into a temp file in the destination's
//! directory, reading at most one byte past the declared size, and only a file whose size
//! and digest match is fsynced and renamed into place. Any failure removes the temp file, so
//! a destination path holds either nothing new or verified content. Small blobs (configs,
//! YAML layers) can be read into memory with [`OciClient::fetch_blob_bytes`], capped.
//!
//! Refuses before any request: a descriptor whose size is over the caller's cap, and a URL
//! whose digest contradicts the expected one.

use super::client::OciClient;
use super::error::{OciError, Target};
use super::manifest::Descriptor;
use super::reference::Reference;
use super::request::{Actions, Call, Method, Payload, authority_of, header};
use crate::digest::{Digest, HashingWriter};
use crate::http::TRANSFER_TIMEOUT;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use ureq::Body;
use ureq::http::{Response, Uri};

/// Size of the copy buffer between the socket and the file.
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// What the copied bytes must match (see [`copy_to_file`]).
pub(crate) struct Expect<'a> {
    pub digest: Option<&'a Digest>,
    /// Declared size: exactly this many bytes must arrive.
    pub size: Option<u64>,
    /// Cap when no size is declared.
    pub cap: u64,
}

impl OciClient {
    /// Downloads the blob `desc` of `r`'s repository to `dest`, verifying size and digest
    /// while streaming (see the module docs). Refused without a request when `desc.size`
    /// exceeds `max_bytes`. Inline `data` in the descriptor is used instead of a request.
    pub fn fetch_blob_to_file(
        &mut self,
        r: &Reference,
        desc: &Descriptor,
        max_bytes: u64,
        dest: &Path,
    ) -> Result<(), OciError> {
        let routed = self.route(r);
        let r = &routed;
        let (url, at) = self.blob_target(r, &desc.digest);
        check_declared(desc, max_bytes, &at)?;
        if let Some(data) = inline(desc, &at)? {
            return write_file(dest, &data, &at);
        }
        let call = Call::api(Method::Get, url, r, &at).transfer();
        let resp = self.execute(&call, Payload::None)?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp, &at));
        }
        let expect = Expect {
            digest: Some(&desc.digest),
            size: Some(desc.size),
            cap: max_bytes,
        };
        stream_to_file(resp, dest, &expect, &at).map(|_| ())
    }

    /// Reads the blob `desc` into memory; for small blobs only (the cap is `max_bytes`).
    /// Size and digest are verified.
    pub fn fetch_blob_bytes(
        &mut self,
        r: &Reference,
        desc: &Descriptor,
        max_bytes: u64,
    ) -> Result<Vec<u8>, OciError> {
        let routed = self.route(r);
        let r = &routed;
        let (url, at) = self.blob_target(r, &desc.digest);
        check_declared(desc, max_bytes, &at)?;
        if let Some(data) = inline(desc, &at)? {
            return Ok(data);
        }
        let call = Call::api(Method::Get, url, r, &at).transfer();
        let mut resp = self.execute(&call, Payload::None)?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp, &at));
        }
        let mut buf = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(desc.size.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| OciError::interrupted(at.clone(), &e))?;
        verify(
            &at,
            desc.size,
            buf.len() as u64,
            &desc.digest,
            &Digest::of(&buf),
        )?;
        Ok(buf)
    }

    /// Downloads an `http(s)://` URL to `dest` with the registry auth dance of its host (a
    /// `packageLocation` is often a registry blob URL, `https://host/v2/<repo>/blobs/<digest>`,
    /// whose digest is then verified too). At most `max_bytes` are read. Returns the digest of
    /// what was stored. `http://` is refused unless the host is configured `plain_http`.
    pub fn fetch_url_to_file(
        &mut self,
        url: &str,
        expected: Option<&Digest>,
        max_bytes: u64,
        dest: &Path,
    ) -> Result<Digest, OciError> {
        let routed = self.route_url(url);
        let url = routed.as_str();
        let host = authority_of(url).unwrap_or_default();
        let at_url = Target::new(&host, "", "download of".into(), url);
        let uri: Uri = url.parse().map_err(|_| OciError::NotAllowed {
            at: at_url.clone(),
            reason: "not a valid URL".into(),
        })?;
        match uri.scheme_str() {
            Some("https") if !host.is_empty() => {}
            Some("http") if !host.is_empty() && self.access(&host).plain_http => {}
            Some("http") => {
                return Err(OciError::NotAllowed {
                    at: at_url,
                    reason: format!(
                        "plain HTTP is only used for hosts configured plain_http, and {host:?} \
                         is not"
                    ),
                });
            }
            _ => {
                return Err(OciError::NotAllowed {
                    at: at_url,
                    reason: "only http(s) URLs with a host are fetched".into(),
                });
            }
        }
        let blob = registry_blob_path(uri.path());
        let expected = match (expected, blob.as_ref().map(|(_, d)| d)) {
            (Some(e), Some(d)) if e != d => {
                return Err(OciError::NotAllowed {
                    at: at_url,
                    reason: format!("the URL names blob {d} but {e} is expected"),
                });
            }
            (Some(e), _) => Some(e.clone()),
            (None, d) => d.cloned(),
        };
        let (repository, at) = match &blob {
            Some((repo, d)) => (
                repo.as_str(),
                Target::new(&host, repo, format!("blob {d}"), url),
            ),
            None => ("", at_url),
        };
        let call = Call {
            method: Method::Get,
            url: url.to_string(),
            host: &host,
            repository,
            actions: Actions::Pull,
            accept: None,
            content_type: None,
            timeout: TRANSFER_TIMEOUT,
            at: &at,
        };
        let resp = self.execute(&call, Payload::None)?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp, &at));
        }
        let expect = Expect {
            digest: expected.as_ref(),
            size: None,
            cap: max_bytes,
        };
        stream_to_file(resp, dest, &expect, &at).map(|(d, _)| d)
    }

    fn blob_target(&self, r: &Reference, digest: &Digest) -> (String, Box<Target>) {
        let url = self.url(r, "blobs", digest.as_str());
        let at = Target::new(&r.registry, &r.repository, format!("blob {digest}"), &url);
        (url, at)
    }
}

/// `/v2/<repo>/blobs/<digest>` → (repo, digest).
pub(crate) fn registry_blob_path(path: &str) -> Option<(String, Digest)> {
    let rest = path.strip_prefix("/v2/")?;
    let (repo, digest) = rest.rsplit_once("/blobs/")?;
    let digest = Digest::parse(digest).ok()?;
    (!repo.is_empty()).then(|| (repo.to_string(), digest))
}

fn check_declared(desc: &Descriptor, max_bytes: u64, at: &Target) -> Result<(), OciError> {
    if desc.size > max_bytes {
        return Err(OciError::TooLarge {
            at: Box::new(at.clone()),
            size: Some(desc.size),
            cap: max_bytes,
        });
    }
    Ok(())
}

fn inline(desc: &Descriptor, at: &Target) -> Result<Option<Vec<u8>>, OciError> {
    desc.inline_data()
        .map_err(|reason| OciError::InvalidManifest {
            at: Box::new(at.clone()),
            reason,
        })
}

fn verify(
    at: &Target,
    declared: u64,
    received: u64,
    expected: &Digest,
    actual: &Digest,
) -> Result<(), OciError> {
    if received != declared {
        return Err(OciError::SizeMismatch {
            at: Box::new(at.clone()),
            declared,
            received,
        });
    }
    if expected != actual {
        return Err(OciError::DigestMismatch {
            at: Box::new(at.clone()),
            expected: expected.clone(),
            actual: actual.clone(),
        });
    }
    Ok(())
}

/// A temp file next to its destination, removed on drop unless committed.
struct TempFile {
    path: PathBuf,
    committed: bool,
}

impl TempFile {
    fn create(dest: &Path) -> io::Result<(TempFile, File)> {
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(".part");
        let path = dest.with_file_name(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok((
            TempFile {
                path,
                committed: false,
            },
            file,
        ))
    }

    /// fsync the file, rename it over `dest`, fsync the directory.
    fn commit(mut self, file: File, dest: &Path) -> io::Result<()> {
        file.sync_all()?;
        drop(file);
        fs::rename(&self.path, dest)?;
        self.committed = true;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename durable; some filesystems refuse to sync a directory, and the
            // content itself is already on disk, so that is not worth failing the download.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn file_err(at: &Target, path: &Path, source: io::Error) -> OciError {
    OciError::File {
        at: Box::new(at.clone()),
        path: path.to_path_buf(),
        source,
    }
}

/// Writes verified in-memory content (inline descriptor data) the same durable way.
fn write_file(dest: &Path, data: &[u8], at: &Target) -> Result<(), OciError> {
    let (tmp, mut file) = TempFile::create(dest).map_err(|e| file_err(at, dest, e))?;
    file.write_all(data).map_err(|e| file_err(at, dest, e))?;
    tmp.commit(file, dest).map_err(|e| file_err(at, dest, e))
}

/// Streams a response body to `dest` (see the module docs); returns digest and size.
fn stream_to_file(
    mut resp: Response<Body>,
    dest: &Path,
    expect: &Expect,
    at: &Target,
) -> Result<(Digest, u64), OciError> {
    let length: Option<u64> = header(&resp, "content-length").and_then(|s| s.parse().ok());
    // A Content-Length that cannot match is refused before a byte is read.
    match (expect.size, length) {
        (Some(declared), Some(n)) if n != declared => {
            return Err(OciError::SizeMismatch {
                at: Box::new(at.clone()),
                declared,
                received: n,
            });
        }
        (None, Some(n)) if n > expect.cap => {
            return Err(OciError::TooLarge {
                at: Box::new(at.clone()),
                size: Some(n),
                cap: expect.cap,
            });
        }
        _ => {}
    }
    let at_box = || Box::new(at.clone());
    copy_to_file(resp.body_mut().as_reader(), dest, expect).map_err(|e| match e {
        CopyError::Read(e) => OciError::interrupted(at_box(), &e),
        CopyError::Write(e) => file_err(at, dest, e),
        CopyError::SizeMismatch { declared, received } => OciError::SizeMismatch {
            at: at_box(),
            declared,
            received,
        },
        CopyError::TooLarge { cap } => OciError::TooLarge {
            at: at_box(),
            size: None,
            cap,
        },
        CopyError::DigestMismatch { expected, actual } => OciError::DigestMismatch {
            at: at_box(),
            expected,
            actual,
        },
    })
}

/// Why [`copy_to_file`] stored nothing.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// Reading the source failed.
    Read(io::Error),
    /// Creating, writing, syncing or renaming the destination failed.
    Write(io::Error),
    /// A declared size was not what arrived.
    SizeMismatch { declared: u64, received: u64 },
    /// More than the cap arrived (no size declared).
    TooLarge { cap: u64 },
    /// The content is not the expected digest.
    DigestMismatch { expected: Digest, actual: Digest },
}

/// Copies `from` to `dest` through SHA-256, reading at most one byte past the declared size
/// (or the cap), and keeps the watchdog fed. Only content whose size and digest match
/// `expect` is fsynced and renamed onto `dest` (from a temp file beside it, removed on any
/// failure). Returns digest and size. Used for registry blobs, package URLs, local package
/// files and files copied out of archives alike.
pub(crate) fn copy_to_file(
    from: impl Read,
    dest: &Path,
    expect: &Expect,
) -> Result<(Digest, u64), CopyError> {
    let limit = expect.size.unwrap_or(expect.cap);
    let (tmp, file) = TempFile::create(dest).map_err(CopyError::Write)?;
    let mut out = HashingWriter::new(BufWriter::new(file));
    let mut body = from.take(limit.saturating_add(1));
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        crate::journal::keep_alive();
    }
    let (writer, digest, received) = out.finish();
    match expect.size {
        Some(declared) if received != declared => {
            return Err(CopyError::SizeMismatch { declared, received });
        }
        None if received > expect.cap => {
            return Err(CopyError::TooLarge { cap: expect.cap });
        }
        _ => {}
    }
    if let Some(expected) = expect.digest
        && *expected != digest
    {
        return Err(CopyError::DigestMismatch {
            expected: expected.clone(),
            actual: digest,
        });
    }
    let file = writer
        .into_inner()
        .map_err(|e| CopyError::Write(e.into_error()))?;
    tmp.commit(file, dest).map_err(CopyError::Write)?;
    Ok((digest, received))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn recognises_registry_blob_urls() {
        let d = Digest::of(b"x");
        assert_eq!(
            registry_blob_path(&format!("/v2/fleet/pkg/blobs/{d}")),
            Some(("fleet/pkg".to_string(), d.clone()))
        );
        assert_eq!(registry_blob_path("/v2/fleet/pkg/blobs/sha256:zz"), None);
        assert_eq!(registry_blob_path("/files/pkg.tar.gz"), None);
        assert_eq!(registry_blob_path(&format!("/v2//blobs/{d}")), None);
    }

    #[test]
    fn temp_file_is_removed_unless_committed() {
        let dir = std::env::temp_dir().join(format!("margo-oci-tmp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("blob");
        let (tmp, _file) = TempFile::create(&dest).unwrap();
        let tmp_path = tmp.path.clone();
        assert!(tmp_path.exists());
        drop(tmp);
        assert!(!tmp_path.exists());
        let at = Target::new("r", "p", "blob".into(), "https://r/v2/p");
        write_file(&dest, b"hello", &at).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
