//! Safe extraction of a Compose package (tar+gzip) into a fresh directory.
//!
//! The archive is on disk and its digest was verified by the caller. That proves where it
//! came from, not that it is harmless, and the agent runs as root, so every entry is checked
//! before anything is written for it:
//!
//! - paths must be relative, without `..`, each name at most
//!   [`NAME_MAX_BYTES`](super::paths::NAME_MAX_BYTES), the whole at most
//!   [`UnpackLimits::max_path_bytes`] (rules in [`super::paths`]);
//! - nothing is written through a symlink: every parent directory of an entry must be a real
//!   directory this extraction created, and files are created with `O_EXCL` so an existing
//!   name (even a symlink) is refused, never followed or replaced;
//! - a symlink's target must be relative and stay inside the destination, resolved from the
//!   link's own directory. `..` is accepted only as a leading run (`../lib/x`): after a name,
//!   the name could itself be a symlink and `..` would then climb from wherever it points,
//!   which a lexical check cannot see;
//! - a hard link must name a regular file already extracted from this archive;
//! - device, FIFO and sparse entries are refused; extended attributes, owners and times are
//!   not applied;
//! - setuid, setgid and sticky bits are dropped and group/other write is removed: files keep
//!   `mode & 0o755 | 0o600`, directories get `0o755`;
//! - the entry count, each file's size and the total are capped, counting the bytes actually
//!   written rather than trusting headers, and the archive streams through a fixed buffer;
//! - the tar metadata between two entries (headers, GNU long names, PAX records, skipped
//!   data) is capped at [`UNPACK_MAX_HEADER_BYTES`], because the `tar` crate buffers long
//!   names and PAX records in memory.
//!
//! On any refusal or error the destination is removed entirely, so the caller never sees a
//! half-extracted package. `tar::Archive::unpack` is not used: it would replace symlinks,
//! follow existing ones for parent directories and keep permissions we do not want.
//!
//! Not defended: another process changing the destination while we write. It lives under
//! the agent's private state directory, which nothing else writes.

use super::PackageError;
use super::paths::{Refusal, file_mode, printable, relative_path, symlink_target};
use flate2::read::GzDecoder;
use std::cell::Cell;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tar::EntryType;

/// Default entry cap: a Compose package is a compose file, env files and a few image
/// archives; 20 000 leaves room for a bundled static web root while bounding the work a
/// hostile archive can cause.
pub const UNPACK_MAX_ENTRIES: u64 = 20_000;
/// Default cap on uncompressed content: 2 GiB covers a package with `docker save` image
/// archives while keeping a decompression bomb from filling the device's storage.
pub const UNPACK_MAX_TOTAL_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default cap on one file: 1 GiB, the largest single image archive we expect.
pub const UNPACK_MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;
/// Default cap on an entry's path: 1024 bytes leaves the destination prefix room under
/// Linux's 4096-byte `PATH_MAX`.
pub const UNPACK_MAX_PATH_BYTES: usize = 1024;
/// Most tar metadata read between two entries: headers, padding, GNU long names and PAX
/// records. Real archives need a few KiB; the cap stops a multi-GiB "long name" that the
/// `tar` crate would otherwise buffer whole.
pub const UNPACK_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Copy buffer; the only per-file memory extraction uses.
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// Caps for one extraction; [`Default`] gives the named defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most entries (files, directories, links) in the archive.
    pub max_entries: u64,
    /// Most uncompressed bytes written, all files together.
    pub max_total_bytes: u64,
    /// Most uncompressed bytes in one file.
    pub max_file_bytes: u64,
    /// Longest entry path, in bytes.
    pub max_path_bytes: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_entries: UNPACK_MAX_ENTRIES,
            max_total_bytes: UNPACK_MAX_TOTAL_BYTES,
            max_file_bytes: UNPACK_MAX_FILE_BYTES,
            max_path_bytes: UNPACK_MAX_PATH_BYTES,
        }
    }
}

/// What an extraction produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub dest: PathBuf,
    /// Entries read from the archive, including PAX global headers.
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    /// Symbolic and hard links.
    pub links: u64,
    /// Uncompressed bytes written.
    pub bytes: u64,
}

/// Extracts `archive` (tar+gzip) into `dest`, which must not exist or be an empty directory.
/// On error `dest` is removed.
pub fn unpack_tar_gz(
    archive: &Path,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, PackageError> {
    prepare_dest(dest)?;
    let result = Extraction::new(archive, dest, limits).run();
    if result.is_err() {
        // Best effort: the extraction error is what the caller needs to see, and a leftover
        // directory is refused by the next attempt's `prepare_dest` rather than trusted.
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn prepare_dest(dest: &Path) -> Result<(), PackageError> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(|e| io_err("read", dest, e))?;
            if entries.next().is_some() {
                return Err(PackageError::DestinationInUse {
                    dest: dest.to_path_buf(),
                });
            }
            Ok(())
        }
        Ok(_) => Err(PackageError::DestinationInUse {
            dest: dest.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .mode(0o755)
            .create(dest)
            .map_err(|e| io_err("create directory", dest, e)),
        Err(e) => Err(io_err("inspect", dest, e)),
    }
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> PackageError {
    PackageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Counts what the `tar` crate reads on its own (headers, long names, PAX records, skipped
/// bodies), as opposed to the file bodies we copy, and stops it at the cap.
#[derive(Default)]
struct Meter {
    in_body: Cell<bool>,
    header_bytes: Cell<u64>,
    breached: Cell<bool>,
}

struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.in_body.get() {
            return self.inner.read(buf);
        }
        let left = UNPACK_MAX_HEADER_BYTES.saturating_sub(self.meter.header_bytes.get());
        if left == 0 {
            self.meter.breached.set(true);
            return Err(io::Error::other("tar metadata over the cap"));
        }
        // Never hand tar more than the allowance, so the cap holds to the byte.
        let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = self.inner.read(&mut buf[..take])?;
        self.meter
            .header_bytes
            .set(self.meter.header_bytes.get() + n as u64);
        Ok(n)
    }
}

struct Extraction<'a> {
    archive: &'a Path,
    dest: &'a Path,
    limits: &'a UnpackLimits,
    meter: Rc<Meter>,
    out: Unpacked,
}

impl<'a> Extraction<'a> {
    fn new(archive: &'a Path, dest: &'a Path, limits: &'a UnpackLimits) -> Self {
        Extraction {
            archive,
            dest,
            limits,
            meter: Rc::new(Meter::default()),
            out: Unpacked {
                dest: dest.to_path_buf(),
                entries: 0,
                files: 0,
                dirs: 0,
                links: 0,
                bytes: 0,
            },
        }
    }

    fn run(mut self) -> Result<Unpacked, PackageError> {
        let file = File::open(self.archive).map_err(|e| io_err("open", self.archive, e))?;
        let reader = Metered {
            inner: GzDecoder::new(file),
            meter: Rc::clone(&self.meter),
        };
        let mut tar = tar::Archive::new(reader);
        let mut entries = tar.entries().map_err(|e| self.stream_error(&e))?;
        let mut buf = vec![0u8; COPY_BUFFER_BYTES];
        loop {
            self.meter.header_bytes.set(0);
            let entry = match entries.next() {
                None => break,
                Some(Ok(entry)) => entry,
                Some(Err(e)) => return Err(self.stream_error(&e)),
            };
            self.out.entries += 1;
            if self.out.entries > self.limits.max_entries {
                return Err(PackageError::TooManyEntries {
                    archive: self.archive.to_path_buf(),
                    max: self.limits.max_entries,
                });
            }
            self.entry(entry, &mut buf)?;
        }
        Ok(self.out)
    }

    /// An error reading the archive stream: our metadata cap, or a malformed archive.
    fn stream_error(&self, e: &io::Error) -> PackageError {
        if self.meter.breached.get() {
            PackageError::TooLarge {
                archive: self.archive.to_path_buf(),
                what: "the tar metadata before one entry (long names, PAX records)".into(),
                max: UNPACK_MAX_HEADER_BYTES,
            }
        } else {
            self.invalid(format!("not a readable tar+gzip archive: {e}"))
        }
    }

    fn invalid(&self, reason: String) -> PackageError {
        PackageError::Invalid {
            archive: self.archive.to_path_buf(),
            reason,
        }
    }

    fn refuse(&self, entry: &str, r: Refusal) -> PackageError {
        match r {
            Refusal::Unsafe(reason) => PackageError::Unsafe {
                archive: self.archive.to_path_buf(),
                entry: entry.to_string(),
                reason,
            },
            Refusal::Invalid(reason) => self.invalid(format!("entry {entry:?} {reason}")),
        }
    }

    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        buf: &mut [u8],
    ) -> Result<(), PackageError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Archive-wide PAX defaults (mtime, comments); nothing we apply.
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = printable(&raw);
        let rel =
            relative_path(&raw, self.limits.max_path_bytes).map_err(|r| self.refuse(&name, r))?;
        // Old (pre-POSIX) archives mark directories with a trailing slash only.
        let is_dir = kind.is_dir() || (kind.is_file() && raw.ends_with(b"/"));
        if is_dir {
            return self.directory(&rel, &name);
        }
        if rel.as_os_str().is_empty() {
            return Err(self.refuse(&name, Refusal::Invalid("names the package root".into())));
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => self.file(&mut entry, &rel, &name, buf),
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                self.symlink(&rel, &name, target.as_deref())
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                self.hard_link(&rel, &name, target.as_deref())
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => Err(self.refuse(
                &name,
                Refusal::Unsafe("is a device node or FIFO; packages hold only files".into()),
            )),
            EntryType::GNUSparse => Err(self.refuse(
                &name,
                Refusal::Invalid("is a sparse file, which this agent does not extract".into()),
            )),
            other => Err(self.refuse(
                &name,
                Refusal::Invalid(format!(
                    "has unsupported tar entry type {:?}",
                    other.as_byte()
                )),
            )),
        }
    }

    fn directory(&mut self, rel: &Path, name: &str) -> Result<(), PackageError> {
        if rel.as_os_str().is_empty() {
            return Ok(()); // `./`: the destination itself
        }
        self.ensure_parents(rel, name)?;
        let path = self.dest.join(rel);
        match DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => self.out.dirs += 1,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A directory implied by an earlier entry, or listed twice: fine if it is a
                // real directory, refused if the name is taken by a file or link.
                let real_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir());
                if !real_dir {
                    return Err(self.refuse(
                        name,
                        Refusal::Unsafe(
                            "is a directory, but an earlier entry already took that name".into(),
                        ),
                    ));
                }
            }
            Err(e) => return Err(io_err("create directory", &path, e)),
        }
        // Explicit, so a restrictive umask does not make the package unreadable.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| io_err("set permissions of", &path, e))
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        name: &str,
        buf: &mut [u8],
    ) -> Result<(), PackageError> {
        // Refuse early on what the header claims; the copy below counts what really arrives.
        let claimed = entry.size();
        self.check_sizes(name, claimed, self.out.bytes.saturating_add(claimed))?;
        let mode = entry
            .header()
            .mode()
            .map_err(|e| self.refuse(name, Refusal::Invalid(format!("has a bad mode: {e}"))))?;
        self.ensure_parents(rel, name)?;
        let path = self.dest.join(rel);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true) // O_EXCL: an existing name, even a symlink, is an error
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    self.refuse(
                        name,
                        Refusal::Unsafe(
                            "appears twice or replaces a link; refusing to overwrite".into(),
                        ),
                    )
                } else {
                    io_err("create", &path, e)
                }
            })?;
        let mut written: u64 = 0;
        self.meter.in_body.set(true);
        let copied = loop {
            crate::journal::keep_alive();
            let n = match entry.read(buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(self.stream_error(&e)),
            };
            written += n as u64;
            if let Err(e) = self.check_sizes(name, written, self.out.bytes + n as u64) {
                break Err(e);
            }
            if let Err(e) = out.write_all(&buf[..n]) {
                break Err(io_err("write", &path, e));
            }
            self.out.bytes += n as u64;
        };
        self.meter.in_body.set(false);
        copied?;
        if written != claimed {
            // The stream ended inside the body: a truncated archive, never a short file.
            return Err(self.refuse(
                name,
                Refusal::Invalid(format!(
                    "ends after {written} of its {claimed} bytes; the archive is truncated"
                )),
            ));
        }
        out.set_permissions(fs::Permissions::from_mode(file_mode(mode)))
            .map_err(|e| io_err("set permissions of", &path, e))?;
        self.out.files += 1;
        Ok(())
    }

    /// `file_bytes`: this file's size so far (or as claimed); `total`: all files' bytes
    /// once these are added.
    fn check_sizes(&self, name: &str, file_bytes: u64, total: u64) -> Result<(), PackageError> {
        if file_bytes > self.limits.max_file_bytes {
            return Err(PackageError::TooLarge {
                archive: self.archive.to_path_buf(),
                what: format!("entry {name:?}"),
                max: self.limits.max_file_bytes,
            });
        }
        if total > self.limits.max_total_bytes {
            return Err(PackageError::TooLarge {
                archive: self.archive.to_path_buf(),
                what: "the uncompressed content".into(),
                max: self.limits.max_total_bytes,
            });
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        rel: &Path,
        name: &str,
        target: Option<&[u8]>,
    ) -> Result<(), PackageError> {
        let Some(target) = target.filter(|t| !t.is_empty()) else {
            return Err(self.refuse(
                name,
                Refusal::Invalid("is a symlink without a target".into()),
            ));
        };
        let target = symlink_target(rel, target, self.limits.max_path_bytes)
            .map_err(|r| self.refuse(name, r))?;
        self.ensure_parents(rel, name)?;
        let path = self.dest.join(rel);
        std::os::unix::fs::symlink(&target, &path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                self.refuse(
                    name,
                    Refusal::Unsafe("appears twice; refusing to replace it".into()),
                )
            } else {
                io_err("create symlink", &path, e)
            }
        })?;
        self.out.links += 1;
        Ok(())
    }

    fn hard_link(
        &mut self,
        rel: &Path,
        name: &str,
        target: Option<&[u8]>,
    ) -> Result<(), PackageError> {
        let Some(target) = target.filter(|t| !t.is_empty()) else {
            return Err(self.refuse(
                name,
                Refusal::Invalid("is a hard link without a target".into()),
            ));
        };
        // Hard link targets are archive paths, not relative to the link.
        let source_rel = relative_path(target, self.limits.max_path_bytes).map_err(|r| {
            self.refuse(
                name,
                match r {
                    Refusal::Unsafe(why) => {
                        Refusal::Unsafe(format!("is a hard link whose target {why}"))
                    }
                    other => other,
                },
            )
        })?;
        let source = self.dest.join(&source_rel);
        let is_extracted_file = !source_rel.as_os_str().is_empty()
            && self.real_parents(&source_rel)
            && fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_file());
        if !is_extracted_file {
            return Err(self.refuse(name, Refusal::Unsafe(format!(
                "is a hard link to {:?}, which is not a file extracted earlier from this package",
                printable(target)
            ))));
        }
        self.ensure_parents(rel, name)?;
        let path = self.dest.join(rel);
        fs::hard_link(&source, &path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                self.refuse(
                    name,
                    Refusal::Unsafe("appears twice; refusing to replace it".into()),
                )
            } else {
                io_err("create hard link", &path, e)
            }
        })?;
        self.out.links += 1;
        Ok(())
    }

    /// Creates the missing parent directories of `rel`, refusing to pass through anything
    /// but a real directory.
    fn ensure_parents(&mut self, rel: &Path, name: &str) -> Result<(), PackageError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut path = self.dest.to_path_buf();
        for c in parent.components() {
            path.push(c);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    let link = path.strip_prefix(self.dest).unwrap_or(&path);
                    return Err(self.refuse(
                        name,
                        Refusal::Unsafe(format!(
                            "would be written through the symlink {:?}",
                            link.display().to_string()
                        )),
                    ));
                }
                Ok(_) => {
                    return Err(self.refuse(
                        name,
                        Refusal::Invalid("lies under a name an earlier entry made a file".into()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(|e| io_err("create directory", &path, e))?;
                    self.out.dirs += 1;
                }
                Err(e) => return Err(io_err("inspect", &path, e)),
            }
        }
        Ok(())
    }

    /// True when every parent of `rel` inside the destination is a real directory.
    fn real_parents(&self, rel: &Path) -> bool {
        let mut path = self.dest.to_path_buf();
        let Some(parent) = rel.parent() else {
            return true;
        };
        parent.components().all(|c| {
            path.push(c);
            fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests;
