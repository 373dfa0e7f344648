//! Logging for the systemd journal, and sd_notify.
//!
//! One event is one line with structured fields (`DEPLOYMENT_ID`, `COMPONENT`, `DIGEST`,
//! `MARGO_STATE`, `ERROR_CODE`, …) so a field engineer can run
//! `journalctl -u margo-agent DEPLOYMENT_ID=…`. Where the journal's native socket exists the
//! fields travel as real journal fields; otherwise lines go to stderr with the `<N>` priority
//! prefix journald understands (`SyslogLevelPrefix=`), the fields appended as `KEY="value"` so
//! nothing is lost. On a terminal the prefix is spelled out (`error:`) for humans.
//!
//! The journal protocol is a datagram of `KEY=value\n` pairs (binary-safe form for values
//! holding a newline); it needs no library. Messages longer than [`MESSAGE_MAX_BYTES`] are cut,
//! so a runaway error text (a registry's HTML page) cannot flood the journal.

use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// journald's native protocol socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Longest message text sent; longer texts are cut with a marker.
pub const MESSAGE_MAX_BYTES: usize = 8 * 1024;

/// Syslog severities used by margo-agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// Parses `error|warning|notice|info|debug`.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "error" => Level::Error,
            "warning" | "warn" => Level::Warning,
            "notice" => Level::Notice,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The journal when its socket exists, else stderr.
    Auto,
    Journal,
    Stderr,
}

enum Sink {
    Journal(UnixDatagram),
    Stderr { tty: bool },
}

static SINK: OnceLock<Sink> = OnceLock::new();
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Chooses the sink once per process. Later calls change only the level.
pub fn init(target: Target, level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
    let _ = SINK.get_or_init(|| open_sink(target));
}

/// Changes the most verbose level logged (config reload).
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

fn open_sink(target: Target) -> Sink {
    let stderr = || Sink::Stderr {
        tty: std::io::stderr().is_terminal(),
    };
    let forced = std::env::var("MARGO_AGENT_LOG").ok();
    let target = match forced.as_deref() {
        Some("stderr") => Target::Stderr,
        Some("journal") => Target::Journal,
        _ => target,
    };
    if target == Target::Stderr {
        return stderr();
    }
    // `MARGO_AGENT_JOURNAL_SOCKET` points tests at a socket of their own.
    let path =
        std::env::var("MARGO_AGENT_JOURNAL_SOCKET").unwrap_or_else(|_| JOURNAL_SOCKET.into());
    match UnixDatagram::unbound().and_then(|s| s.connect(&path).map(|()| s)) {
        Ok(sock) => Sink::Journal(sock),
        Err(_) => stderr(),
    }
}

/// Logs one event. `fields` are journal field names (uppercase, digits, `_`) with values.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    if level as u8 > MAX_LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let message = cut(message);
    let sink = SINK.get_or_init(|| open_sink(Target::Auto));
    match sink {
        Sink::Journal(sock) => {
            let dgram = journal_datagram(level, message, fields);
            if sock.send(&dgram).is_err() {
                write_stderr(level, message, fields, false);
            }
        }
        Sink::Stderr { tty } => write_stderr(level, message, fields, *tty),
    }
}

pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warning, message, fields);
}
pub fn notice(message: &str, fields: &[(&str, &str)]) {
    log(Level::Notice, message, fields);
}
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

fn cut(message: &str) -> &str {
    prefix_within(message, MESSAGE_MAX_BYTES)
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub fn prefix_within(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` appended when cut.
pub fn ellipsize(s: &str, max: usize) -> String {
    let kept = prefix_within(s, max);
    if kept.len() == s.len() {
        s.to_string()
    } else {
        format!("{kept}…")
    }
}

/// Builds a native-protocol datagram.
fn journal_datagram(level: Level, message: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut d = Vec::with_capacity(message.len() + 128);
    push_field(&mut d, "MESSAGE", message);
    push_field(&mut d, "PRIORITY", &(level as u8).to_string());
    push_field(&mut d, "SYSLOG_IDENTIFIER", "margo-agent");
    for (k, v) in fields {
        if valid_field_name(k) {
            push_field(&mut d, k, cut(v));
        }
    }
    d
}

fn push_field(d: &mut Vec<u8>, key: &str, value: &str) {
    d.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        d.push(b'\n');
        d.extend_from_slice(&(value.len() as u64).to_le_bytes());
        d.extend_from_slice(value.as_bytes());
    } else {
        d.push(b'=');
        d.extend_from_slice(value.as_bytes());
    }
    d.push(b'\n');
}

fn valid_field_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && !k.starts_with('_')
        && k.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn write_stderr(level: Level, message: &str, fields: &[(&str, &str)], tty: bool) {
    let mut line = if tty {
        format!("{}: {message}", level.word())
    } else {
        format!("<{}>{message}", level as u8)
    };
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v:?}"));
    }
    line = line.replace('\n', " ");
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Sends an sd_notify message (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`) when
/// `NOTIFY_SOCKET` is set. Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr).is_ok(),
            Err(_) => false,
        }
    } else {
        sock.send_to(state.as_bytes(), &path).is_ok()
    }
}

/// Watchdog keep-alive period in milliseconds (half of `WATCHDOG_USEC`); 0 = no watchdog.
static WATCHDOG_PERIOD_MS: AtomicU64 = AtomicU64::new(0);
/// When the last `WATCHDOG=1` went out, in milliseconds since [`MONO_START`].
static WATCHDOG_LAST_MS: AtomicU64 = AtomicU64::new(0);
static MONO_START: OnceLock<Instant> = OnceLock::new();

fn mono_ms() -> u64 {
    let start = MONO_START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Arms the watchdog keep-alive from `WATCHDOG_USEC` (pings every half interval) and sends
/// the first ping. Called once by the daemon when its loop starts; returns the period.
pub fn watchdog_arm() -> Option<Duration> {
    let period = watchdog_interval()? / 2;
    let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
    WATCHDOG_PERIOD_MS.store(ms, Ordering::Relaxed);
    watchdog_ping();
    Some(period)
}

/// Sends `WATCHDOG=1` now (the daemon loop, once per healthy turn that is due).
pub fn watchdog_ping() {
    if WATCHDOG_PERIOD_MS.load(Ordering::Relaxed) == 0 {
        return;
    }
    WATCHDOG_LAST_MS.store(mono_ms(), Ordering::Relaxed);
    notify("WATCHDOG=1");
}

/// The cheap hook long operations call while they make progress (an image pull reading its
/// progress stream, a health wait between probes, a blob download between chunks): pings
/// the watchdog when half its interval has passed since the last ping, else does nothing.
/// Only code that is advancing towards a deadline calls it, so a loop that hangs stops
/// pinging and systemd restarts the agent.
pub fn keep_alive() {
    let period = WATCHDOG_PERIOD_MS.load(Ordering::Relaxed);
    if period == 0 {
        return;
    }
    let now = mono_ms();
    if now.saturating_sub(WATCHDOG_LAST_MS.load(Ordering::Relaxed)) >= period {
        watchdog_ping();
    }
}

/// A reader that feeds the watchdog (see [`keep_alive`]) on every read: long copies of
/// package files, archives and image uploads advance, so they keep the agent alive.
pub struct KeepAlive<R>(pub R);

impl<R: std::io::Read> std::io::Read for KeepAlive<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        keep_alive();
        self.0.read(buf)
    }
}

/// Sends a `STATUS=` line (what `systemctl status` shows), kept to one short line.
pub fn status(text: &str) {
    let line = ellipsize(&text.replace('\n', " "), STATUS_MAX_BYTES);
    notify(&format!("STATUS={line}"));
}

/// Longest `STATUS=` text; `systemctl status` shows one line.
pub const STATUS_MAX_BYTES: usize = 200;

/// The watchdog interval systemd expects pings within (`WATCHDOG_USEC`), when it is meant for
/// this process (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_uses_binary_form_for_multiline_values() {
        let d = journal_datagram(
            Level::Error,
            "line1\nline2",
            &[("DEPLOYMENT_ID", "abc"), ("bad-name", "x")],
        );
        let mut expect = b"MESSAGE\n".to_vec();
        expect.extend_from_slice(&11u64.to_le_bytes());
        expect.extend_from_slice(b"line1\nline2\nPRIORITY=3\nSYSLOG_IDENTIFIER=margo-agent\n");
        expect.extend_from_slice(b"DEPLOYMENT_ID=abc\n");
        assert_eq!(d, expect);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MESSAGE_MAX_BYTES);
        let c = cut(&long);
        assert!(c.len() <= MESSAGE_MAX_BYTES);
        assert!(c.chars().all(|ch| ch == 'é'));
    }

    #[test]
    fn ellipsize_marks_a_cut_and_keeps_short_text() {
        assert_eq!(ellipsize("short", 10), "short");
        assert_eq!(ellipsize("abcdef", 6), "abcdef");
        assert_eq!(ellipsize("abcdef", 4), "abcd…");
        // 'é' is two bytes: a cut at 3 bytes backs off to the boundary at 2.
        assert_eq!(ellipsize("ééé", 3), "é…");
    }

    #[test]
    fn journal_socket_receives_native_fields() {
        let dir = std::env::temp_dir().join(format!("margo-journal-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.connect(&path).unwrap();
        client
            .send(&journal_datagram(
                Level::Info,
                "hello",
                &[("DIGEST", "sha256:x")],
            ))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("MESSAGE=hello\n"));
        assert!(text.contains("DIGEST=sha256:x\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
