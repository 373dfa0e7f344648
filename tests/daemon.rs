//! The daemon as systemd sees it: sd_notify READY/STATUS/WATCHDOG/STOPPING, signals, native
//! journal fields, and an unreachable source logged once rather than on every retry.
//! Needs no test bed: the source is a closed port on loopback.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure
mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn recv_all(sock: &UnixDatagram, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

fn wait_for(sock: &UnixDatagram, what: &str, within: Duration, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let got = recv_all(sock, Duration::from_millis(200));
        let hit = got.iter().any(|m| m.contains(what));
        seen.extend(got);
        if hit {
            return true;
        }
    }
    false
}

fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn notifies_systemd_handles_signals_and_logs_an_outage_once() {
    let dir = common::fresh_dir("daemon");
    let closed = common::free_port();
    let config = common::offline_config(&dir, &dir, "daemon-test", closed, "1s");
    let notify = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    let journal = UnixDatagram::bind(dir.join("journal.sock")).unwrap();
    let mut child = Command::new(common::binary())
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env_remove("MARGO_AGENT_LOG")
        .env("MARGO_AGENT_JOURNAL_SOCKET", dir.join("journal.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen = Vec::new();
    assert!(
        wait_for(&notify, "READY=1", Duration::from_secs(5), &mut seen),
        "{seen:?}"
    );
    assert!(
        wait_for(
            &notify,
            "STATUS=desired-state source unreachable",
            Duration::from_secs(5),
            &mut seen
        ),
        "{seen:?}"
    );
    assert!(
        wait_for(&notify, "WATCHDOG=1", Duration::from_secs(3), &mut seen),
        "{seen:?}"
    );

    // SIGUSR1 polls now; SIGHUP reloads (READY again after RELOADING).
    kill(pid, "-USR1");
    kill(pid, "-HUP");
    assert!(
        wait_for(&notify, "RELOADING=1", Duration::from_secs(5), &mut seen),
        "{seen:?}"
    );
    // Let several retries happen.
    std::thread::sleep(Duration::from_secs(3));
    kill(pid, "-TERM");
    assert!(
        wait_for(&notify, "STOPPING=1", Duration::from_secs(5), &mut seen),
        "{seen:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));

    let lines = recv_all(&journal, Duration::from_millis(300));
    let unreachable: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains("MESSAGE=")
                && l.contains(&format!("127.0.0.1:{closed}"))
                && l.contains("PRIORITY=4")
        })
        .collect();
    assert_eq!(
        unreachable.len(),
        1,
        "an outage is logged once, not per retry: {lines:#?}"
    );
    assert!(unreachable[0].contains("SYSLOG_IDENTIFIER=margo-agent"));
    assert!(
        unreachable[0].contains("MARGO_SOURCE="),
        "{}",
        unreachable[0]
    );
    assert!(
        lines.iter().any(|l| l.contains("stopping on signal")),
        "{lines:#?}"
    );
    // Nothing was applied, so nothing was written.
    assert!(!Path::new(&dir.join("state.json")).exists());
}
