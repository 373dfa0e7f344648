//! The compose file's string mini-languages: port specs, volume specs, `command` strings,
//! signal names and `extra_hosts` entries.
//!
//! Each parser takes the string as written and returns either the typed value or a reason;
//! the caller adds the path. Kept apart from the key-by-key service reader so that each
//! grammar can be tested on its own.

use serde::Serialize;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(format!("protocol {s:?} is not tcp, udp or sctp")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One published (or only exposed-to-a-random-host-port) port range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Port {
    /// Host address to bind, `None` for all addresses.
    pub host_ip: Option<String>,
    /// First host port; `None` lets Podman choose.
    pub published: Option<u16>,
    /// First container port.
    pub target: u16,
    /// How many consecutive ports, at least 1.
    pub range: u16,
    pub protocol: Protocol,
}

/// Parses a port number or `start-end` range; returns (start, count).
pub fn port_range(s: &str) -> Result<(u16, u16), String> {
    let number = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(u16::try_from(n).unwrap_or(u16::MAX)),
            Ok(n) => Err(format!("port {n} is out of range 1-65535")),
            Err(_) => Err(format!("{p:?} is not a port number")),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (start, end) = (number(a)?, number(b)?);
            if end < start {
                return Err(format!("port range {s:?} ends before it starts"));
            }
            Ok((start, end - start + 1))
        }
        None => Ok((number(s)?, 1)),
    }
}

/// Parses the short port syntax: `[[host_ip:][published]:]target[/protocol]`, where
/// `published` and `target` may be ranges of equal length and an IPv6 `host_ip` is written
/// in brackets (`[::1]:8080:80`).
pub fn short_port(spec: &str) -> Result<Port, String> {
    let (addr, protocol) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, Protocol::parse(p)?),
        None => (spec, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(bracketed) = addr.strip_prefix('[') {
        let (ip, rest) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{spec:?}: IPv6 address is missing its closing ']'"))?;
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("{spec:?}: expected ':' after the IPv6 address"))?;
        (Some(ip.to_string()), rest)
    } else {
        match addr.matches(':').count() {
            0 | 1 => (None, addr),
            2 => {
                let (ip, rest) = addr.split_once(':').unwrap_or(("", addr));
                (Some(ip.to_string()), rest)
            }
            _ => {
                return Err(format!(
                    "{spec:?} has too many ':'; write an IPv6 host address in brackets"
                ));
            }
        }
    };
    let (published, target) = match rest.split_once(':') {
        Some((p, t)) => (Some(p), t),
        None => (None, rest),
    };
    let (target, range) = port_range(target).map_err(|e| format!("{spec:?}: {e}"))?;
    let published = match published.filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => {
            let (start, count) = port_range(p).map_err(|e| format!("{spec:?}: {e}"))?;
            if count != range {
                return Err(format!(
                    "{spec:?}: the published range has {count} ports but the container range has {range}"
                ));
            }
            Some(start)
        }
    };
    Ok(Port {
        host_ip: host_ip.filter(|ip| !ip.is_empty()),
        published,
        target,
        range,
        protocol,
    })
}

/// What the short volume syntax `source:target[:mode]` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortVolume {
    /// `None` for an anonymous volume (`- /data`).
    pub source: Option<String>,
    pub target: String,
    /// A host path (`/abs`, `./rel`, `../rel`, `.`) rather than a named volume.
    pub is_bind: bool,
    pub read_only: bool,
    /// SELinux relabelling (`z` or `Z`).
    pub selinux: Option<String>,
    /// Bind propagation (`rshared`, `slave`, …).
    pub propagation: Option<String>,
    pub nocopy: bool,
}

/// Whether a short-syntax volume source is a host path rather than a volume name.
pub fn is_host_path(source: &str) -> bool {
    source.starts_with('/')
        || source.starts_with("./")
        || source.starts_with("../")
        || source == "."
        || source == ".."
        || source.starts_with('~')
}

/// Parses `[source:]target[:mode,mode…]`.
pub fn short_volume(spec: &str) -> Result<ShortVolume, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, modes) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, modes] => (Some(*source), *target, *modes),
        _ => return Err(format!("{spec:?} is not source:target[:mode]")),
    };
    if !target.starts_with('/') {
        return Err(format!(
            "{spec:?}: the container path {target:?} must be absolute"
        ));
    }
    if source.is_some_and(str::is_empty) {
        return Err(format!("{spec:?} has an empty source"));
    }
    let is_bind = source.is_some_and(is_host_path);
    let mut v = ShortVolume {
        source: source.map(str::to_string),
        target: target.to_string(),
        is_bind,
        read_only: false,
        selinux: None,
        propagation: None,
        nocopy: false,
    };
    for mode in modes.split(',').filter(|m| !m.is_empty()) {
        match mode {
            "ro" => v.read_only = true,
            "rw" => v.read_only = false,
            m if SELINUX_LABELS.contains(&m) => v.selinux = Some(mode.to_string()),
            m if is_bind && PROPAGATIONS.contains(&m) => {
                v.propagation = Some(mode.to_string());
            }
            "nocopy" if !is_bind => v.nocopy = true,
            // macOS file-sharing consistency hints: meaningless on Linux.
            "cached" | "delegated" | "consistent" => {}
            _ => return Err(format!("{spec:?}: unknown or misplaced mode {mode:?}")),
        }
    }
    Ok(v)
}

/// Splits a `command:`/`entrypoint:` string into words the way a POSIX shell would, without
/// expanding anything: whitespace separates, single quotes are literal, double quotes allow
/// `\"` `\\` `\$` `` \` ``, a backslash outside quotes escapes the next character.
pub fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err(format!("{s:?} has an unclosed single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err(format!("{s:?} has an unclosed double quote")),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err(format!("{s:?} has an unclosed double quote")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(ch) => word.push(ch),
                    None => return Err(format!("{s:?} ends with a lone backslash")),
                }
            }
            ch => {
                in_word = true;
                word.push(ch);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Linux signal numbers, identical on x86_64, aarch64 and armv7 (the asm-generic table).
const SIGNALS: [(&str, i64); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// First and last real-time signal numbers as glibc and musl expose them.
const SIGRTMIN: i64 = 34;
const SIGRTMAX: i64 = 64;

/// Turns `SIGTERM`, `TERM`, `15` or `SIGRTMIN+3` into the signal number libpod expects.
/// SELinux relabelling modes of a mount (`z` shared, `Z` private).
pub const SELINUX_LABELS: &[&str] = &["z", "Z"];
/// Bind propagation modes Podman accepts.
pub const PROPAGATIONS: &[&str] = &[
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

pub fn signal_number(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return if (1..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is out of range 1-{SIGRTMAX}"))
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(sig, _)| *sig == name) {
        return Ok(n);
    }
    let realtime = |base: i64, rest: &str, sign: i64| -> Option<i64> {
        let offset: i64 = if rest.is_empty() {
            0
        } else {
            rest.parse().ok()?
        };
        let n = base.checked_add(sign.checked_mul(offset)?)?;
        (SIGRTMIN..=SIGRTMAX).contains(&n).then_some(n)
    };
    let rt = if let Some(rest) = name.strip_prefix("RTMIN") {
        realtime(SIGRTMIN, rest.strip_prefix('+').unwrap_or(rest), 1)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        realtime(SIGRTMAX, rest.strip_prefix('-').unwrap_or(rest), -1)
    } else {
        None
    };
    rt.ok_or_else(|| format!("{s:?} is not a signal name (SIGTERM, SIGINT, …) or number"))
}

/// Normalises an `extra_hosts` entry (`host=ip`, `host:ip`, `host:[v6]`) to the `host:ip`
/// form Podman's `hostadd` takes.
pub fn extra_host(entry: &str) -> Result<String, String> {
    let (host, ip) = entry
        .split_once('=')
        .or_else(|| entry.split_once(':'))
        .ok_or_else(|| format!("{entry:?} is not host=address"))?;
    let ip = ip.trim();
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    if host.trim().is_empty() || ip.is_empty() {
        return Err(format!("{entry:?} is not host=address"));
    }
    Ok(format!("{}:{ip}", host.trim()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn refuses_realtime_signal_offsets_that_overflow() {
        assert!(signal_number("SIGRTMIN+9223372036854775807").is_err());
        assert!(signal_number("RTMAX-9223372036854775807").is_err());
        assert!(signal_number("SIGRTMIN+1").is_ok());
    }

    fn port(
        host_ip: Option<&str>,
        published: Option<u16>,
        target: u16,
        range: u16,
        protocol: Protocol,
    ) -> Port {
        Port {
            host_ip: host_ip.map(str::to_string),
            published,
            target,
            range,
            protocol,
        }
    }

    #[test]
    fn parses_short_port_forms() {
        use Protocol::*;
        assert_eq!(short_port("80"), Ok(port(None, None, 80, 1, Tcp)));
        assert_eq!(
            short_port("8080:80"),
            Ok(port(None, Some(8080), 80, 1, Tcp))
        );
        assert_eq!(
            short_port("127.0.0.1:8080:80/udp"),
            Ok(port(Some("127.0.0.1"), Some(8080), 80, 1, Udp))
        );
        assert_eq!(
            short_port("127.0.0.1::80"),
            Ok(port(Some("127.0.0.1"), None, 80, 1, Tcp))
        );
        assert_eq!(
            short_port("8000-8001:80-81"),
            Ok(port(None, Some(8000), 80, 2, Tcp))
        );
        assert_eq!(short_port("9090-9091"), Ok(port(None, None, 9090, 2, Tcp)));
        assert_eq!(
            short_port("[::1]:5353:53/udp"),
            Ok(port(Some("::1"), Some(5353), 53, 1, Udp))
        );
        assert_eq!(short_port("53/SCTP"), Ok(port(None, None, 53, 1, Sctp)));
    }

    #[test]
    fn rejects_bad_ports() {
        for (spec, reason) in [
            ("70000", "out of range"),
            ("0:80", "out of range"),
            ("8080:0", "out of range"),
            ("http", "not a port number"),
            ("80/icmp", "not tcp, udp or sctp"),
            (
                "8000-8002:80-81",
                "has 3 ports but the container range has 2",
            ),
            ("81-80", "ends before it starts"),
            ("::1:80:80", "too many ':'"),
            ("[::1:80:80", "closing ']'"),
        ] {
            let e = short_port(spec).unwrap_err();
            assert!(e.contains(reason), "{spec}: {e}");
        }
    }

    #[test]
    fn classifies_short_volumes() {
        let v = short_volume("data:/var/lib/data").unwrap();
        assert_eq!(
            (v.source.as_deref(), v.is_bind, v.read_only),
            (Some("data"), false, false)
        );
        let v = short_volume("./conf:/etc/app:ro").unwrap();
        assert_eq!(
            (v.source.as_deref(), v.is_bind, v.read_only),
            (Some("./conf"), true, true)
        );
        let v = short_volume("/srv/x:/x:ro,Z").unwrap();
        assert!(v.is_bind && v.read_only);
        assert_eq!(v.selinux.as_deref(), Some("Z"));
        let v = short_volume("/data").unwrap();
        assert_eq!((v.source, v.is_bind), (None, false));
        let v = short_volume(".:/app:rw,cached").unwrap();
        assert!(v.is_bind && !v.read_only);
        let v = short_volume("cache:/c:nocopy").unwrap();
        assert!(v.nocopy);
    }

    #[test]
    fn rejects_bad_short_volumes() {
        for (spec, reason) in [
            ("data:relative", "must be absolute"),
            (":/x", "empty source"),
            ("a:/b:ro:extra", "not source:target"),
            ("a:/b:bogus", "unknown or misplaced mode"),
            ("data:/b:rshared", "unknown or misplaced mode"),
        ] {
            let e = short_volume(spec).unwrap_err();
            assert!(e.contains(reason), "{spec}: {e}");
        }
    }

    #[test]
    fn splits_command_strings_like_a_shell() {
        assert_eq!(
            shell_words("nginx -g 'daemon off;'").unwrap(),
            ["nginx", "-g", "daemon off;"]
        );
        assert_eq!(
            shell_words(r#"sh -c "echo \"hi\" \$HOME""#).unwrap(),
            ["sh", "-c", "echo \"hi\" $HOME"]
        );
        assert_eq!(shell_words(r"a\ b  c").unwrap(), ["a b", "c"]);
        assert_eq!(shell_words("''").unwrap(), [""]);
        assert!(shell_words("").unwrap().is_empty());
        assert!(shell_words("echo 'open").is_err());
        assert!(shell_words("echo \"open").is_err());
    }

    #[test]
    fn maps_signal_names_to_numbers() {
        assert_eq!(signal_number("SIGTERM"), Ok(15));
        assert_eq!(signal_number("term"), Ok(15));
        assert_eq!(signal_number("SIGQUIT"), Ok(3));
        assert_eq!(signal_number("9"), Ok(9));
        assert_eq!(signal_number("SIGRTMIN+3"), Ok(37));
        assert_eq!(signal_number("SIGRTMAX"), Ok(64));
        assert!(signal_number("SIGFOO").is_err());
        assert!(signal_number("0").is_err());
        assert!(signal_number("SIGRTMIN+40").is_err());
    }

    #[test]
    fn normalises_extra_hosts() {
        assert_eq!(extra_host("db=10.0.0.2"), Ok("db:10.0.0.2".into()));
        assert_eq!(extra_host("db:10.0.0.2"), Ok("db:10.0.0.2".into()));
        assert_eq!(extra_host("v6=::1"), Ok("v6:::1".into()));
        assert_eq!(extra_host("v6:[::1]"), Ok("v6:::1".into()));
        assert_eq!(
            extra_host("host.docker.internal=host-gateway"),
            Ok("host.docker.internal:host-gateway".into())
        );
        assert!(extra_host("nohost").is_err());
        assert!(extra_host("=1.2.3.4").is_err());
    }
}
