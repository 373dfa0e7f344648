//! The one flat state file (default `/var/lib/margo-agent/state.json`).
//!
//! It holds what margo-agent has applied — the source revision (manifest digest, version
//! annotation), each deployment with its per-component states and last error — so that after a
//! restart the agent knows what it did, and `margo-agent status` can show it.
//!
//! Writes are crash-safe and rare: the new content goes to a temp file in the same directory,
//! is fsynced, renamed over the old file, and the directory is fsynced, so a power cut leaves
//! either the old or the new file, never half of one. A write happens only when the serialized
//! content differs from what was last written (flash wear: an unchanged poll writes nothing).
//!
//! A file that cannot be parsed is moved aside (`state.json.corrupt-<unix time>`) with a journal
//! entry and the agent starts from an empty state; the containers' labels in Podman then tell
//! the reconcile what exists, so nothing is lost that Podman still runs.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version of the file's schema; a newer one is refused (never silently downgraded).
pub const STATE_SCHEMA: u32 = 1;
/// A state file larger than this is treated as corrupt.
pub const STATE_MAX_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot write state file {path}: {source}; the agent keeps running with the state in memory and retries on the next change"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state file {path} has schema {found}, newer than this agent's {STATE_SCHEMA}; refusing to overwrite it"
    )]
    TooNew { path: PathBuf, found: u32 },
}

/// Lifecycle of a deployment (and of each component), as the Margo status API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Installing,
    Installed,
    Failed,
    Removing,
    Removed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Installing => "Installing",
            Phase::Installed => "Installed",
            Phase::Failed => "Failed",
            Phase::Removing => "Removing",
            Phase::Removed => "Removed",
        }
    }
}

/// A failure with its stable code (`ERR_…`) and a message for a field engineer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Failure {
        Failure {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// What was applied from the source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// The reference polled (`registry/repository:tag`).
    #[serde(default)]
    pub reference: String,
    /// Manifest digest of the desired state that was applied completely.
    #[serde(default)]
    pub applied: Option<Digest>,
    /// `org.margo.ApplicationDeployment.version` of the applied revision, if it had one.
    #[serde(default)]
    pub applied_version: Option<u64>,
    /// The newest valid revision the source offered, recorded before it is applied (so
    /// `status` shows what the device should run even while Podman is out of reach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Digest>,
    /// `org.margo.ApplicationDeployment.version` of `desired`, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_version: Option<u64>,
    /// A revision that was refused as invalid (not retried until the tag moves on).
    #[serde(default)]
    pub rejected: Option<Digest>,
    /// Why `rejected` was refused.
    #[serde(default)]
    pub rejected_error: Option<Failure>,
}

/// One component (one Compose project) of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRecord {
    pub phase: Phase,
    /// Compose project name its containers carry.
    pub project: String,
    #[serde(default)]
    pub error: Option<Failure>,
    /// What the observation tick last saw wrong with its running containers
    /// (`service "db": unhealthy`, `service "job": exited with code 1`); empty when healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Images its services run, recorded after a successful apply (image pruning keeps
    /// these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// One ApplicationDeployment as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    #[serde(default)]
    pub application_id: String,
    #[serde(default)]
    pub name: String,
    /// Digest of the document's canonical form: a different digest means "changed".
    pub digest: Digest,
    pub phase: Phase,
    #[serde(default)]
    pub error: Option<Failure>,
    #[serde(default)]
    pub components: BTreeMap<String, ComponentRecord>,
    /// Unix seconds of the last phase change.
    #[serde(default)]
    pub since: u64,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub schema: u32,
    #[serde(default)]
    pub source: SourceState,
    /// Keyed by deployment id.
    #[serde(default)]
    pub deployments: BTreeMap<String, DeploymentRecord>,
    /// The kernel's boot id when the agent last ran: a different one means the device
    /// rebooted, and containers are restored as the engine's restart logic would.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    /// Fleet Manager bookkeeping: the status outbox, the capabilities last accepted.
    #[serde(default, skip_serializing_if = "crate::wfm::WfmState::is_empty")]
    pub wfm: crate::wfm::WfmState,
    /// Images the agent pulled or loaded from package archives: the only ones image pruning
    /// may remove.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub images: std::collections::BTreeSet<String>,
}

impl Default for State {
    fn default() -> Self {
        State {
            schema: STATE_SCHEMA,
            source: SourceState::default(),
            deployments: BTreeMap::new(),
            boot_id: String::new(),
            wfm: crate::wfm::WfmState::default(),
            images: Default::default(),
        }
    }
}

/// The state file on disk plus the bytes last written, so unchanged content is never rewritten.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    last_written: Option<Vec<u8>>,
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    Fresh,
    Existing,
    /// The file was unreadable and moved to this path.
    MovedAside(PathBuf, String),
}

impl StateFile {
    /// Loads the state, moving a corrupt file aside.
    pub fn open(path: &Path, now_unix: u64) -> Result<(StateFile, State, Loaded), StateError> {
        let mut file = StateFile {
            path: path.to_path_buf(),
            last_written: None,
        };
        let bytes = match read_capped(path) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok((file, State::default(), Loaded::Fresh)),
            Err(e) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        match parse(&bytes) {
            Ok(state) if state.schema > STATE_SCHEMA => Err(StateError::TooNew {
                path: path.to_path_buf(),
                found: state.schema,
            }),
            Ok(state) => {
                file.last_written = Some(bytes);
                Ok((file, state, Loaded::Existing))
            }
            Err(reason) => {
                let aside = path.with_file_name(format!(
                    "{}.corrupt-{now_unix}",
                    path.file_name()
                        .map_or("state.json".into(), |n| n.to_string_lossy())
                ));
                fs::rename(path, &aside).map_err(|source| StateError::Write {
                    path: aside.clone(),
                    source,
                })?;
                Ok((file, State::default(), Loaded::MovedAside(aside, reason)))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `state` if its serialization differs from the last write. Returns whether it
    /// wrote.
    pub fn save(&mut self, state: &State) -> Result<bool, StateError> {
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        if self.last_written.as_deref() == Some(bytes.as_slice()) {
            return Ok(false);
        }
        write_atomically(&self.path, &bytes).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.last_written = Some(bytes);
        Ok(true)
    }
}

/// Reads the state file for `margo-agent status` without moving anything.
pub fn read(path: &Path) -> Result<Option<State>, String> {
    match read_capped(path) {
        Ok(Some(b)) => parse(&b).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn read_capped(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(m) if m.len() > STATE_MAX_BYTES => {
            // Treated as corrupt by the parser below.
            return Ok(Some(b"<oversized>".to_vec()));
        }
        Ok(_) => {}
    }
    fs::read(path).map(Some)
}

fn parse(bytes: &[u8]) -> Result<State, String> {
    serde_json::from_slice::<State>(bytes).map_err(|e| e.to_string())
}

/// temp file in the same directory, write, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map_or("state".into(), |n| n.to_string_lossy())
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("margo-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> State {
        let mut s = State::default();
        s.source.applied = Some(Digest::of(b"x"));
        s.deployments.insert(
            "dep-1".into(),
            DeploymentRecord {
                application_id: "app".into(),
                name: "n".into(),
                digest: Digest::of(b"doc"),
                phase: Phase::Installed,
                error: None,
                components: BTreeMap::new(),
                since: 1,
            },
        );
        s
    }

    #[test]
    fn writes_only_when_content_changes() {
        let dir = temp_dir("unchanged");
        let path = dir.join("state.json");
        let (mut f, state, loaded) = StateFile::open(&path, 0).unwrap();
        assert!(matches!(loaded, Loaded::Fresh));
        assert!(f.save(&state).unwrap());
        assert!(!f.save(&state).unwrap());
        let s = sample();
        assert!(f.save(&s).unwrap());
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        assert!(!f.save(&s).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        // A reopened file knows its own content and does not rewrite it either.
        let (mut f2, s2, loaded) = StateFile::open(&path, 0).unwrap();
        assert!(matches!(loaded, Loaded::Existing));
        assert_eq!(s2, s);
        assert!(!f2.save(&s2).unwrap());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_state_starts_empty() {
        let dir = temp_dir("corrupt");
        let path = dir.join("state.json");
        fs::write(&path, b"{\"schema\":1, \"deployments\": {\"x\": tru").unwrap();
        let (_f, state, loaded) = StateFile::open(&path, 42).unwrap();
        assert_eq!(state, State::default());
        match loaded {
            Loaded::MovedAside(p, reason) => {
                assert_eq!(p, dir.join("state.json.corrupt-42"));
                assert!(p.exists());
                assert!(!reason.is_empty());
            }
            other => panic!("expected MovedAside, got {other:?}"),
        }
        assert!(!path.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = temp_dir("newer");
        let path = dir.join("state.json");
        fs::write(&path, b"{\"schema\":99}").unwrap();
        assert!(matches!(
            StateFile::open(&path, 0),
            Err(StateError::TooNew { found: 99, .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = temp_dir("atomic");
        let path = dir.join("state.json");
        write_atomically(&path, b"{}").unwrap();
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let _ = fs::remove_dir_all(&dir);
    }
}
