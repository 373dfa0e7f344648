//! margo-agent as a systemd service, without systemd: the watchdog cadence from WATCHDOG_USEC,
//! the STATUS= line a field engineer reads, a state directory that cannot be written (exit 7,
//! one clear line), a missing config (exit 3, one line), the unit file's settings, and a
//! clock far in the past against the bed's TLS registry (the others need no bed).
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure
mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(dir: &Path, state_dir: &Path, port: u16) -> std::path::PathBuf {
    common::offline_config(dir, state_dir, "service-test", port, "2s")
}

#[test]
fn watchdog_pings_every_half_interval_and_status_says_what_and_when() {
    let dir = common::fresh_dir("service-watchdog");
    let port = common::free_port();
    let config = config(&dir, &dir, port);
    let notify = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    let mut child = Command::new(common::binary())
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        // 400 ms: a ping at least every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env("MARGO_AGENT_LOG", "stderr")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut pings = Vec::new();
    let mut statuses = Vec::new();
    let mut buf = vec![0u8; 65536];
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = notify.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains("WATCHDOG=1") {
                pings.push(start.elapsed());
            }
            if let Some(s) = m.lines().find_map(|l| l.strip_prefix("STATUS=")) {
                statuses.push(s.to_string());
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // 3 s at one ping per 200 ms: about 15; never a gap longer than the interval itself.
    assert!(pings.len() >= 10, "{pings:?}");
    for w in pings.windows(2) {
        assert!(
            w[1] - w[0] < Duration::from_millis(400),
            "gap between pings: {pings:?}"
        );
    }
    let unreachable = statuses
        .iter()
        .find(|s| s.starts_with("desired-state source unreachable, retry in "))
        .unwrap_or_else(|| panic!("{statuses:?}"));
    assert!(
        unreachable.contains(&format!("127.0.0.1:{port}")),
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| s.len() <= 204), "{statuses:?}");
}

/// A read-only tmpfs when this process may mount one, else a plain file where the directory
/// should be. Returns the state directory and whether it is a mount to undo.
fn unwritable_dir(dir: &Path) -> (std::path::PathBuf, bool) {
    let ro = dir.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
        .arg(&ro)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        return (ro.join("state"), true);
    }
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    (file, false)
}

#[test]
fn unwritable_state_directory_exits_7_with_one_clear_line() {
    let dir = common::fresh_dir("service-ro-state");
    let (state_dir, mounted) = unwritable_dir(&dir);
    let config = config(&dir, &state_dir, common::free_port());
    let out = Command::new(common::binary())
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("MARGO_AGENT_LOG", "stderr")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    if mounted {
        let _ = Command::new("umount").arg(dir.join("ro")).status();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("<3>state directory "), "{err}");
    assert!(lines[0].contains("is not writable"), "{err}");
    assert!(lines[0].contains("ERR_STATE_UNWRITABLE"), "{err}");
    if mounted {
        assert!(lines[0].contains("read-only file system"), "{err}");
    }
}

#[test]
fn missing_config_exits_3_with_one_line() {
    let dir = common::fresh_dir("service-no-config");
    let out = Command::new(common::binary())
        .args(["--config", dir.join("absent.yaml").to_str().unwrap(), "run"])
        .env("MARGO_AGENT_LOG", "stderr")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("absent.yaml"), "{err}");
}

/// The unit file: the settings the agent's behaviour relies on.
#[test]
fn unit_file_matches_the_agent_exit_codes_and_notify_protocol() {
    let unit = std::fs::read_to_string(common::repo().join("examples/systemd/margo-agent.service"))
        .unwrap();
    let get = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert!(!get("WatchdogSec").is_empty());
    // Exit codes that a restart cannot fix (src/daemon.rs `exit`): usage, config, state.
    let prevent = get("RestartPreventExitStatus").join(" ");
    for code in [
        margo_agent::daemon::exit::USAGE,
        margo_agent::daemon::exit::CONFIG,
        margo_agent::daemon::exit::STATE,
    ] {
        assert!(
            prevent.split(' ').any(|c| c == code.to_string()),
            "{prevent}"
        );
    }
    assert_eq!(get("StateDirectory"), ["margo-agent"]);
    assert_eq!(get("ConfigurationDirectory"), ["margo-agent"]);
    let after = get("After").join(" ");
    assert!(after.contains("podman.socket") && after.contains("network-online.target"));
    let families = get("RestrictAddressFamilies").join(" ");
    for f in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.contains(f), "{families}");
    }
    // The default config's paths are inside the directories the unit makes writable.
    let c = margo_agent::config::Config::default();
    assert!(c.state_file.starts_with("/var/lib/margo-agent"));
    assert!(c.work_dir.starts_with("/var/lib/margo-agent"));
}

/// A device without RTC: the wall clock in 2001 (libfaketime). The TLS registry's certificate
/// is "not valid yet"; the agent says the clock is the cause, that it retries, and exits 4
/// (source unreachable) from `run --once` — nothing is marked failed.
#[test]
fn clock_far_in_the_past_names_the_clock_for_tls_failures() {
    let bed = common::Bed::get();
    let dir = common::fresh_dir("service-clock");
    let reg = bed.var("MARGO_TB_REG_BASIC");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "desired_state:\n  reference: {reg}/fleet/clock/desired:latest\n\
             registries:\n  - host: \"{reg}\"\n    username: {u}\n    password: {p}\n\
             tls:\n  extra_ca: [{ca}]\n\
             podman:\n  socket: {d}/no-podman.sock\n\
             state_file: {d}/state.json\nwork_dir: {d}/work\n",
            u = bed.var("MARGO_TB_USER"),
            p = bed.var("MARGO_TB_PASS"),
            ca = bed.var("MARGO_TB_CA"),
            d = dir.display()
        ),
    )
    .unwrap();
    let out = Command::new("faketime")
        .arg("2001-01-01 00:00:00")
        .arg(common::binary())
        .args(["--config", config.to_str().unwrap(), "run", "--once"])
        .env("MARGO_AGENT_LOG", "stderr")
        .output()
        .expect("faketime (Debian package faketime, installed by tests/bed/install.sh)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("system clock reads 2001-01-01"), "{err}");
    assert!(err.contains("ERR_CLOCK_UNSET"), "{err}");
    assert!(
        err.contains("certificate is not valid yet by this device's clock"),
        "{err}"
    );
    // The same config with the real clock gets past TLS (the tag does not exist: not a TLS error).
    let out = Command::new(common::binary())
        .args(["--config", config.to_str().unwrap(), "run", "--once"])
        .env("MARGO_AGENT_LOG", "stderr")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("TLS failed"), "{err}");
    assert!(!err.contains("ERR_CLOCK_UNSET"), "{err}");
}
