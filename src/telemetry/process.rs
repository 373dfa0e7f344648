//! The agent's own process metrics from `/proc/self`, named per the OpenTelemetry process
//! semantic conventions.

use super::instruments::{Batch, attr, int};
use super::proto::Value;

/// `USER_HZ`: the unit of the times in `/proc/<pid>/stat`, 100 on every Linux architecture
/// the agent is built for (it is part of the kernel ABI, independent of `CONFIG_HZ`).
const USER_HZ: f64 = 100.0;

/// One reading of `/proc/self`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub user_s: f64,
    pub system_s: f64,
    /// Process start, Unix nanoseconds.
    pub start_unix_nano: u64,
    pub rss_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
}

/// The system boot time (Unix seconds) from `/proc/stat`: a constant, read once when the
/// export starts. `None` when it cannot be read (no procfs).
pub fn boot_time() -> Option<u64> {
    parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The `btime` line of `/proc/stat`.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Reads `/proc/self` (`btime`: [`boot_time`]); `None` when it cannot (no procfs): the
/// process metrics are then left out.
pub fn read(btime: u64) -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    parse(&stat, &status, btime, open_fds)
}

/// Parses the two files (split out for tests).
pub fn parse(stat: &str, status: &str, btime: u64, open_fds: u64) -> Option<Reading> {
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: f[0] is field 3 (state), so field n is f[n - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let utime = field(14)?;
    let stime = field(15)?;
    let start_ticks = field(22)?;
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|v| v * 1024)
    };
    // Integer arithmetic: a start time must be identical in every export.
    let start_ns = btime
        .saturating_mul(1_000_000_000)
        .saturating_add(start_ticks.saturating_mul(1_000_000_000 / USER_HZ as u64));
    Some(Reading {
        user_s: utime as f64 / USER_HZ,
        system_s: stime as f64 / USER_HZ,
        start_unix_nano: start_ns,
        rss_bytes: kb("VmRSS:").unwrap_or(0),
        virtual_bytes: kb("VmSize:").unwrap_or(0),
        open_fds,
    })
}

/// Adds the process metrics of `r` to `b`.
pub fn record(b: &mut Batch, r: &Reading) {
    let start = r.start_unix_nano;
    b.sum(
        "process.cpu.time",
        "Total CPU seconds broken down by different CPU modes.",
        "s",
        true,
        vec![
            (attr("cpu.mode", "user"), start, Value::AsDouble(r.user_s)),
            (
                attr("cpu.mode", "system"),
                start,
                Value::AsDouble(r.system_s),
            ),
        ],
    );
    b.sum(
        "process.memory.usage",
        "The amount of physical memory in use.",
        "By",
        false,
        vec![(vec![], start, int(r.rss_bytes))],
    );
    b.sum(
        "process.memory.virtual",
        "The amount of committed virtual memory.",
        "By",
        false,
        vec![(vec![], start, int(r.virtual_bytes))],
    );
    b.sum(
        "process.unix.file_descriptor.count",
        "Number of unix file descriptors in use by the process.",
        "{file_descriptor}",
        false,
        vec![(vec![], start, int(r.open_fds))],
    );
    let uptime = b.now.saturating_sub(start) as f64 / 1e9;
    b.gauge(
        "process.uptime",
        "The time the process has been running.",
        "s",
        vec![(vec![], 0, Value::AsDouble(uptime))],
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files_with_spaces_in_the_command_name() {
        let stat = "4242 (margo agent) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 1 0 1000 12345678 900 18446744073709551615";
        let status = "Name:\tmargo-agent\nVmSize:\t   12056 kB\nVmRSS:\t    3024 kB\n";
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        let btime = parse_btime(proc_stat).unwrap();
        let r = parse(stat, status, btime, 7).unwrap();
        assert_eq!((r.user_s, r.system_s), (2.5, 0.75));
        assert_eq!(r.start_unix_nano, 1_700_000_010_000_000_000);
        assert_eq!(r.rss_bytes, 3024 * 1024);
        assert_eq!(r.virtual_bytes, 12056 * 1024);
        assert_eq!(r.open_fds, 7);
        assert!(parse("garbage", status, btime, 0).is_none());
        assert!(parse_btime("cpu  1 2 3\n").is_none());
    }

    #[test]
    fn reads_this_process() {
        let r = read(boot_time().unwrap()).unwrap();
        assert!(r.rss_bytes > 0 && r.virtual_bytes >= r.rss_bytes);
        assert!(r.open_fds >= 3);
        assert!(r.start_unix_nano > 1_600_000_000_000_000_000);
    }
}
