//! Helpers shared by the benches: the test bed's env file, `/proc` readers and a median.
//! Each bench uses a part of them.
#![allow(dead_code)]

pub mod file_server;

use std::collections::BTreeMap;

/// The test bed's env file (`MARGO_TESTBED`) as key → value.
pub fn bed() -> BTreeMap<String, String> {
    let path = std::env::var("MARGO_TESTBED").expect("set MARGO_TESTBED to a test bed's env file");
    std::fs::read_to_string(path)
        .expect("read bed env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// A `kB` field (`VmHWM:`, `VmRSS:`, `RssAnon:`, with the colon) of a `/proc/<pid>/status`
/// text, KiB.
pub fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in the process status"))
}

/// `/proc/<pid>/status` (`pid` may be `self`).
pub fn proc_status(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

/// CPU nanoseconds of the calling thread (`/proc/thread-self/schedstat`), 0 if unreadable.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
