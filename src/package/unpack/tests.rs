//! Each test builds its archive with the `tar` crate, writing header names and link targets
//! raw where the builder's own checks would refuse them, so the hostile cases are exactly
//! what an attacker could ship.

use super::*;
use crate::package::{
    ERR_PACKAGE_INVALID, ERR_PACKAGE_IO, ERR_PACKAGE_UNSAFE, PackageLayout, find_compose_root,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use tar::{Builder, Header};

/// A scratch directory removed when the test ends, pass or fail.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "margo-unpack-test-{}-{n}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Char(&'a str),
    /// A PAX extended header whose `path` record overrides the next entry's name.
    PaxPath(&'a str),
    /// A regular file of `n` zero bytes, streamed (never held in memory).
    Zeros(&'a str, u64),
}

/// A GNU header with `name` written raw into the 100-byte name field.
fn raw_header(kind: EntryType, name: &str, size: u64, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    let field = &mut h.as_old_mut().name;
    assert!(name.len() < field.len(), "test names fit the old header");
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    // "<len> <key>=<value>\n", where len counts its own digits.
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

fn build(path: &Path, entries: &[E]) {
    let gz = GzEncoder::new(File::create(path).unwrap(), Compression::fast());
    let mut b = Builder::new(gz);
    for e in entries {
        match e {
            E::File(name, data, mode) => {
                let mut h = raw_header(EntryType::Regular, name, data.len() as u64, *mode);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Dir(name) => {
                let mut h = raw_header(EntryType::Directory, name, 0, 0o755);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            }
            E::Symlink(name, target) | E::HardLink(name, target) => {
                let kind = match e {
                    E::Symlink(..) => EntryType::Symlink,
                    _ => EntryType::Link,
                };
                let mut h = raw_header(kind, name, 0, 0o777);
                h.set_link_name_literal(target).unwrap();
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            }
            E::Char(name) => {
                let mut h = raw_header(EntryType::Char, name, 0, 0o666);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            }
            E::PaxPath(path) => {
                let rec = pax_record("path", path);
                let mut h = raw_header(EntryType::XHeader, "PaxHeader", rec.len() as u64, 0o644);
                h.set_cksum();
                b.append(&h, rec.as_slice()).unwrap();
            }
            E::Zeros(name, n) => {
                let mut h = raw_header(EntryType::Regular, name, *n, 0o644);
                h.set_cksum();
                b.append(&h, io::repeat(0).take(*n)).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// Builds `entries`, unpacks them into `<scratch>/dest` with `limits`, returns the result.
fn unpack_with(
    s: &Scratch,
    entries: &[E],
    limits: &UnpackLimits,
) -> Result<Unpacked, PackageError> {
    let archive = s.path("pkg.tar.gz");
    build(&archive, entries);
    unpack_tar_gz(&archive, &s.path("dest"), limits)
}

/// Unpacking must fail with `code`, leave no destination behind, and touch nothing beside it.
fn assert_refused(s: &Scratch, entries: &[E], code: &str) -> PackageError {
    let e = unpack_with(s, entries, &UnpackLimits::default()).unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    assert_nothing_left(s);
    e
}

fn assert_nothing_left(s: &Scratch) {
    assert!(!s.path("dest").exists(), "destination left behind");
    let mut names: Vec<String> = fs::read_dir(&s.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["pkg.tar.gz"],
        "something was written beside the destination"
    );
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn extracts_a_normal_package() {
    // Fixture: SUP-01 layout with an implicit parent directory, an executable, a relative
    // symlink and a hard link.
    let s = Scratch::new("normal");
    let compose = b"services:\n  web:\n    image: nginx\n";
    let u = unpack_with(
        &s,
        &[
            E::Dir("app/"),
            E::File("app/compose.yaml", compose, 0o644),
            E::File("app/bin/run.sh", b"#!/bin/sh\n", 0o755),
            E::File("app/conf/web.env", b"A=1\n", 0o640),
            E::Symlink("app/conf/current.env", "web.env"),
            E::Symlink("app/bin/compose.yaml", "../compose.yaml"),
            E::HardLink("app/compose-copy.yaml", "app/compose.yaml"),
        ],
        &UnpackLimits::default(),
    )
    .unwrap();
    let dest = s.path("dest");
    assert_eq!(fs::read(dest.join("app/compose.yaml")).unwrap(), compose);
    assert_eq!(
        fs::read(dest.join("app/compose-copy.yaml")).unwrap(),
        compose
    );
    assert_eq!(
        fs::read(dest.join("app/bin/compose.yaml")).unwrap(),
        compose
    );
    assert_eq!(
        fs::read_link(dest.join("app/conf/current.env")).unwrap(),
        Path::new("web.env")
    );
    assert_eq!(mode_of(&dest.join("app/compose.yaml")), 0o644);
    assert_eq!(mode_of(&dest.join("app/bin/run.sh")), 0o755);
    assert_eq!(mode_of(&dest.join("app/conf/web.env")), 0o640);
    assert_eq!(mode_of(&dest.join("app/bin")), 0o755);
    assert_eq!((u.files, u.dirs, u.links, u.entries), (3, 3, 3, 7));
    assert_eq!(u.bytes, (compose.len() + 10 + 4) as u64);
    let root = find_compose_root(&dest, PackageLayout::OciCompose).unwrap();
    assert_eq!(root.dir, dest.join("app"));
    assert_eq!(root.file, dest.join("app/compose.yaml"));
}

#[test]
fn unpacks_into_an_existing_empty_directory_but_not_a_full_one() {
    let s = Scratch::new("existing");
    fs::create_dir(s.path("dest")).unwrap();
    unpack_with(&s, &[E::File("a", b"1", 0o644)], &UnpackLimits::default()).unwrap();
    let archive = s.path("pkg.tar.gz");
    let e = unpack_tar_gz(&archive, &s.path("dest"), &UnpackLimits::default()).unwrap_err();
    assert_eq!(e.code(), ERR_PACKAGE_IO);
    // What was there is not ours to delete.
    assert_eq!(fs::read(s.path("dest/a")).unwrap(), b"1");
}

#[test]
fn refuses_parent_dir_entries() {
    let s = Scratch::new("dotdot");
    let e = assert_refused(
        &s,
        &[E::File("ok", b"", 0o644), E::File("../x", b"evil", 0o644)],
        ERR_PACKAGE_UNSAFE,
    );
    assert!(e.to_string().contains("\"../x\" contains '..'"), "{e}");
    let e = assert_refused(
        &s,
        &[E::File("a/../../x", b"evil", 0o644)],
        ERR_PACKAGE_UNSAFE,
    );
    assert!(e.to_string().contains("'..'"), "{e}");
}

#[test]
fn refuses_absolute_paths() {
    let s = Scratch::new("absolute");
    let e = assert_refused(&s, &[E::File("/etc/x", b"evil", 0o644)], ERR_PACKAGE_UNSAFE);
    assert!(e.to_string().contains("absolute"), "{e}");
}

#[test]
fn refuses_pax_path_that_climbs_out() {
    // The ustar name is harmless; the PAX `path` record that overrides it is not.
    let s = Scratch::new("pax");
    assert_refused(
        &s,
        &[
            E::PaxPath("../../evil"),
            E::File("harmless", b"evil", 0o644),
        ],
        ERR_PACKAGE_UNSAFE,
    );
}

#[test]
fn refuses_symlink_to_root() {
    let s = Scratch::new("symroot");
    let e = assert_refused(&s, &[E::Symlink("a", "/")], ERR_PACKAGE_UNSAFE);
    assert!(e.to_string().contains("absolute"), "{e}");
}

#[test]
fn refuses_symlinks_that_climb_out() {
    let s = Scratch::new("symclimb");
    assert_refused(&s, &[E::Symlink("a", "../../x")], ERR_PACKAGE_UNSAFE);
    assert_refused(&s, &[E::Symlink("d/a", "../../x")], ERR_PACKAGE_UNSAFE);
    // `l -> .` is inside, but `m -> l/..` would climb from wherever `l` points.
    let e = assert_refused(
        &s,
        &[E::Symlink("l", "."), E::Symlink("m", "l/..")],
        ERR_PACKAGE_UNSAFE,
    );
    assert!(e.to_string().contains("only leading '..'"), "{e}");
}

#[test]
fn refuses_hard_links_outside_or_ahead() {
    let s = Scratch::new("hardlink");
    let e = assert_refused(
        &s,
        &[E::HardLink("passwd", "/etc/passwd")],
        ERR_PACKAGE_UNSAFE,
    );
    assert!(e.to_string().contains("hard link"), "{e}");
    assert_refused(&s, &[E::HardLink("x", "../outside")], ERR_PACKAGE_UNSAFE);
    // A link to a file that only comes later in the archive.
    let e = assert_refused(
        &s,
        &[E::HardLink("early", "later"), E::File("later", b"x", 0o644)],
        ERR_PACKAGE_UNSAFE,
    );
    assert!(
        e.to_string().contains("not a file extracted earlier"),
        "{e}"
    );
    // A link to a symlink (which could point anywhere the kernel resolves later).
    assert_refused(
        &s,
        &[E::Symlink("s", "t"), E::HardLink("h", "s")],
        ERR_PACKAGE_UNSAFE,
    );
}

#[test]
fn refuses_device_nodes() {
    let s = Scratch::new("chardev");
    let e = assert_refused(&s, &[E::Char("dev/null")], ERR_PACKAGE_UNSAFE);
    assert!(e.to_string().contains("device node"), "{e}");
}

#[test]
fn strips_setuid_setgid_sticky_and_group_write() {
    let s = Scratch::new("setuid");
    unpack_with(
        &s,
        &[
            E::File("suid", b"x", 0o4755),
            E::File("sgid", b"x", 0o2777),
            E::File("sticky", b"x", 0o1666),
            E::File("private", b"x", 0o400),
        ],
        &UnpackLimits::default(),
    )
    .unwrap();
    assert_eq!(mode_of(&s.path("dest/suid")), 0o755);
    assert_eq!(mode_of(&s.path("dest/sgid")), 0o755);
    assert_eq!(mode_of(&s.path("dest/sticky")), 0o644);
    assert_eq!(mode_of(&s.path("dest/private")), 0o600);
}

#[test]
fn refuses_too_many_entries() {
    let s = Scratch::new("entries");
    let limits = UnpackLimits {
        max_entries: 3,
        ..UnpackLimits::default()
    };
    let files: Vec<E> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| E::File(n, b"", 0o644))
        .collect();
    let e = unpack_with(&s, &files, &limits).unwrap_err();
    assert!(
        matches!(e, PackageError::TooManyEntries { max: 3, .. }),
        "{e}"
    );
    assert_eq!(e.code(), ERR_PACKAGE_UNSAFE);
    assert_nothing_left(&s);
}

#[test]
fn refuses_decompression_bomb_while_streaming() {
    // 100 MiB of zeros compress to ~100 KiB; with a 10 MiB cap it must be refused.
    const MIB: u64 = 1024 * 1024;
    let s = Scratch::new("bomb");
    let limits = UnpackLimits {
        max_total_bytes: 10 * MIB,
        ..UnpackLimits::default()
    };
    let e = unpack_with(&s, &[E::Zeros("zeros", 100 * MIB)], &limits).unwrap_err();
    assert!(
        matches!(e, PackageError::TooLarge { max, .. } if max == 10 * MIB),
        "{e}"
    );
    assert_eq!(e.code(), ERR_PACKAGE_UNSAFE);
    assert_nothing_left(&s);

    // Many 1 MiB files: each passes, the running total of written bytes trips the cap.
    let s = Scratch::new("bomb-many");
    let names: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let files: Vec<E> = names.iter().map(|n| E::Zeros(n, MIB)).collect();
    let e = unpack_with(&s, &files, &limits).unwrap_err();
    assert!(e.to_string().contains("uncompressed content"), "{e}");
    assert_nothing_left(&s);
    // Memory while refusing is measured by the bench, not asserted here: the peak RSS of a
    // test binary is shared with every test running beside this one.
}

#[test]
fn refuses_single_file_over_its_cap() {
    let s = Scratch::new("bigfile");
    let limits = UnpackLimits {
        max_file_bytes: 1000,
        ..UnpackLimits::default()
    };
    let e = unpack_with(&s, &[E::Zeros("big", 1001)], &limits).unwrap_err();
    assert!(e.to_string().contains("entry \"big\""), "{e}");
    assert_nothing_left(&s);
}

#[test]
fn refuses_writing_through_a_symlink() {
    // `d -> <outside>` then `d/x`: refused at the link, and nothing appears outside.
    let s = Scratch::new("through");
    let outside = Scratch::new("through-outside");
    let target = outside.0.to_string_lossy().into_owned();
    assert_refused(
        &s,
        &[E::Symlink("d", &target), E::File("d/x", b"evil", 0o644)],
        ERR_PACKAGE_UNSAFE,
    );
    assert_eq!(fs::read_dir(&outside.0).unwrap().count(), 0);
    // Even a link that stays inside is never written through.
    let e = assert_refused(
        &s,
        &[
            E::Dir("sub/"),
            E::Symlink("d", "sub"),
            E::File("d/x", b"x", 0o644),
        ],
        ERR_PACKAGE_UNSAFE,
    );
    assert!(
        e.to_string().contains("written through the symlink \"d\""),
        "{e}"
    );
}

#[test]
fn refuses_duplicate_names_instead_of_replacing() {
    let s = Scratch::new("dup");
    assert_refused(
        &s,
        &[E::File("a", b"1", 0o644), E::File("a", b"2", 0o644)],
        ERR_PACKAGE_UNSAFE,
    );
    // A symlink first, then a file of the same name: never follow, never replace.
    assert_refused(
        &s,
        &[E::Symlink("a", "b"), E::File("a", b"2", 0o644)],
        ERR_PACKAGE_UNSAFE,
    );
}

#[test]
fn refuses_overlong_paths_and_metadata() {
    let s = Scratch::new("long");
    let limits = UnpackLimits {
        max_path_bytes: 64,
        ..UnpackLimits::default()
    };
    let long = "d/".repeat(40) + "f";
    let e = unpack_with(&s, &[E::File(&long, b"", 0o644)], &limits).unwrap_err();
    assert!(e.to_string().contains("64-byte cap"), "{e}");
    assert_nothing_left(&s);

    // A 100 KiB GNU long name: refused by the metadata cap before tar buffers it whole.
    let archive = s.path("pkg.tar.gz");
    let gz = GzEncoder::new(File::create(&archive).unwrap(), Compression::fast());
    let mut b = Builder::new(gz);
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_entry_type(EntryType::Regular);
    b.append_data(&mut h, "a/".repeat(50 * 1024) + "f", io::empty())
        .unwrap();
    b.into_inner().unwrap().finish().unwrap();
    let e = unpack_tar_gz(&archive, &s.path("dest"), &UnpackLimits::default()).unwrap_err();
    assert!(e.to_string().contains("tar metadata"), "{e}");
    assert_eq!(e.code(), ERR_PACKAGE_UNSAFE);
    assert_nothing_left(&s);
}

#[test]
fn refuses_files_that_are_not_tar_gz() {
    let s = Scratch::new("notgz");
    let archive = s.path("pkg.tar.gz");
    fs::write(&archive, b"services: {}\n").unwrap();
    let e = unpack_tar_gz(&archive, &s.path("dest"), &UnpackLimits::default()).unwrap_err();
    assert_eq!(e.code(), ERR_PACKAGE_INVALID, "{e}");
    assert_nothing_left(&s);

    // Valid gzip, but the content is not a tar archive.
    let mut gz = GzEncoder::new(File::create(&archive).unwrap(), Compression::fast());
    gz.write_all(&[b'x'; 2048]).unwrap();
    gz.finish().unwrap();
    let e = unpack_tar_gz(&archive, &s.path("dest"), &UnpackLimits::default()).unwrap_err();
    assert_eq!(e.code(), ERR_PACKAGE_INVALID, "{e}");
    assert_nothing_left(&s);
}

#[test]
fn missing_archive_is_an_io_error() {
    let s = Scratch::new("missing");
    let e = unpack_tar_gz(
        &s.path("nope.tar.gz"),
        &s.path("dest"),
        &UnpackLimits::default(),
    )
    .unwrap_err();
    assert_eq!(e.code(), ERR_PACKAGE_IO);
    assert!(!s.path("dest").exists());
}

#[test]
fn refuses_truncated_archive_without_leaving_a_short_file() {
    let s = Scratch::new("truncated");
    let archive = s.path("pkg.tar.gz");
    // Incompressible-ish content so the cut lands inside the file's body.
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    build(&archive, &[E::File("big.bin", &data, 0o644)]);
    let full = fs::read(&archive).unwrap();
    fs::write(&archive, &full[..full.len() / 2]).unwrap();
    let e = unpack_tar_gz(&archive, &s.path("dest"), &UnpackLimits::default()).unwrap_err();
    assert_eq!(e.code(), ERR_PACKAGE_INVALID, "{e}");
    assert_nothing_left(&s);

    // A complete gzip stream around a tar cut inside the body: the tar reader sees a clean
    // end of input, and only the byte count tells the file is short.
    let mut tar = Builder::new(Vec::new());
    let mut h = raw_header(EntryType::Regular, "big.bin", data.len() as u64, 0o644);
    h.set_cksum();
    tar.append(&h, data.as_slice()).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = GzEncoder::new(File::create(&archive).unwrap(), Compression::fast());
    gz.write_all(&tar[..tar.len() / 2]).unwrap();
    gz.finish().unwrap();
    let e = unpack_tar_gz(&archive, &s.path("dest"), &UnpackLimits::default()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_eq!(e.code(), ERR_PACKAGE_INVALID);
    assert_nothing_left(&s);
}
