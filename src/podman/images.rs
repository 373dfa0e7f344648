//! Image calls beyond pull: archive loads, listing, removal and tagging.
//!
//! A child module of `client`, so it shares the private request funnel.

use super::{PodmanError, Response};
use crate::http::query_escape;
use serde::Deserialize;
use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

/// The archive as the upload body. A read failure is kept aside, so that the failed upload
/// is reported as the archive being unreadable, not as Podman being unreachable.
struct ArchiveBody {
    file: crate::journal::KeepAlive<File>,
    failed: Rc<RefCell<Option<String>>>,
}

impl Read for ArchiveBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf).inspect_err(|e| {
            *self.failed.borrow_mut() = Some(e.to_string());
        })
    }
}

impl super::Podman {
    /// `POST /libpod/images/load`: streams a `docker save` or OCI-layout tar archive into
    /// Podman's storage (never read into memory); returns the names Podman loaded. The pull
    /// deadline applies.
    pub fn load_image(&mut self, archive: &Path) -> Result<Vec<String>, PodmanError> {
        #[derive(Deserialize)]
        struct Loaded {
            #[serde(rename = "Names", default)]
            names: Option<Vec<String>>,
        }
        let target = archive.display().to_string();
        let op = "load image archive";
        let file = File::open(archive).map_err(|e| PodmanError::Protocol {
            op,
            target: target.clone(),
            reason: format!("cannot open: {e}"),
        })?;
        self.writes += 1;
        let read_failed = Rc::new(RefCell::new(None));
        let url = self.url("/images/load");
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", "application/x-tar")
            .body(ureq::SendBody::from_owned_reader(ArchiveBody {
                file: crate::journal::KeepAlive(file),
                failed: Rc::clone(&read_failed),
            }))
            .map_err(|e| super::protocol(op, &target, e.to_string()))?;
        let timeout = self.timeouts.pull;
        let req = self
            .agent
            .configure_request(req)
            .timeout_global(Some(timeout))
            .build();
        let result = self.agent.run(req);
        if let Some(reason) = read_failed.borrow_mut().take() {
            // Whatever the upload's error says, it ended because the file could not be read.
            return Err(PodmanError::Protocol {
                op,
                target,
                reason: format!("cannot read the archive file: {reason}; the upload was cut off"),
            });
        }
        let resp: Response = result.map_err(|e| match e {
            ureq::Error::Timeout(_) => PodmanError::Timeout {
                op,
                target: target.clone(),
                timeout,
            },
            ureq::Error::Io(io) => PodmanError::Unreachable {
                socket: self.socket.clone(),
                reason: io.to_string(),
            },
            other => super::protocol(op, &target, other.to_string()),
        })?;
        let body = Self::expect(op, &target, resp, &[200])?;
        let loaded: Loaded = Self::json(op, &target, &body)?;
        Ok(loaded.names.unwrap_or_default())
    }

    /// Removes an image by ID (refused by Podman while a container uses it).
    pub fn remove_image(&mut self, id: &str) -> Result<(), PodmanError> {
        let url = self.url(&format!("/images/{}", query_escape(id)));
        let resp = self.send("remove image", id, "DELETE", &url, None)?;
        Self::expect("remove image", id, resp, &[200, 404]).map(drop)
    }

    /// Tags the local image `source` as `repo:tag`.
    pub fn tag_image(&mut self, source: &str, repo: &str, tag: &str) -> Result<(), PodmanError> {
        let url = self.url(&format!(
            "/images/{}/tag?repo={}&tag={}",
            query_escape(source),
            query_escape(repo),
            query_escape(tag)
        ));
        let resp = self.send("tag image", source, "POST", &url, None)?;
        Self::expect("tag image", source, resp, &[201, 200]).map(drop)
    }
}
