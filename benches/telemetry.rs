//! OTLP metrics export figures on a real Podman (the test bed) with the ten-service project
//! (`tests/data/compose/ten`) running as managed containers:
//!
//! - bytes per export: protobuf vs JSON, gzip off/on (raw and on the wire);
//! - CPU per export in this process (collect: list + stats from Podman, `/proc/self`; encode;
//!   POST to a local sink), median of `BENCH_RUNS`;
//! - the real daemon (`margo-agent run`, the binary cargo built for this bench) with
//!   telemetry off and on (1 s interval): VmRSS and RssAnon after the same time, and its CPU
//!   per export from the difference.
//!
//! Run: `tests/bed/up.sh /tmp/bed && MARGO_TESTBED=/tmp/bed/env cargo bench --bench telemetry`
//! (knobs: `BENCH_RUNS`, default 20; `BENCH_DAEMON_SECS`, default 20). Figures in
//! `docs/bench.md`. Under `cargo test --all-targets` it runs as a quick smoke test (2 runs,
//! 3 s daemons).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../tests/common/engine.rs"]
mod engine;

use common::{bed, median, proc_status, status_kib, thread_cpu_ns};
use margo_agent::compose::apply;
use margo_agent::compose::libpod::CreateContext;
use margo_agent::reconcile::{LABEL_DEPLOYMENT, LABEL_DEVICE, LABEL_MANAGED_BY, MANAGED_BY};
use margo_agent::state::State;
use margo_agent::telemetry::{AgentMetrics, Settings, Telemetry, TelemetryConfig, View};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const DEVICE: &str = "bench-otel";

/// A collector stand-in that reads each request whole and answers 200 (keep-alive).
fn sink() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.to_ascii_lowercase();
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if w.write_all(ok).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn settings(port: u16, protocol: &str, compression: &str) -> Settings {
    let env: BTreeMap<&str, String> = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", compression.to_string()),
    ]
    .into_iter()
    .collect();
    Settings::resolve(&TelemetryConfig::default(), &|k| env.get(k).cloned()).unwrap()
}

/// (VmRSS KiB, RssAnon KiB, CPU ns) of a single-threaded process.
fn proc_figures(pid: u32) -> (u64, u64, u64) {
    let status = proc_status(&pid.to_string());
    let kib = |k: &str| status_kib(&status, k);
    // schedstat: CPU nanoseconds of the (single) thread, not 10 ms ticks.
    let cpu_ns: u64 = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (kib("VmRSS:"), kib("RssAnon:"), cpu_ns)
}

/// Runs the daemon for `secs` (telemetry to `endpoint` when given); returns its figures.
fn daemon(
    env: &BTreeMap<String, String>,
    dir: &std::path::Path,
    endpoint: Option<String>,
    secs: u64,
) -> (u64, u64, u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "device_id: {DEVICE}\ndesired_state:\n  reference: {plain}/bench/otel-none:latest\n  poll_interval: 1s\n  poll_jitter: 0s\n  retry_max: 1s\n\
             registries:\n  - host: \"{plain}\"\n    plain_http: true\n\
             tls:\n  ca_bundle: /nonexistent\n\
             podman:\n  socket: {sock}\n\
             state_file: {dir}/state.json\nwork_dir: {dir}/work\nlog_level: notice\n",
            plain = env["MARGO_TB_REG_PLAIN"],
            sock = env["MARGO_TB_PODMAN_SOCK"],
            dir = dir.display(),
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_margo-agent"));
    cmd.arg("--config").arg(&config).arg("run");
    cmd.env("MARGO_AGENT_LOG", "stderr")
        .stderr(std::fs::File::create(dir.join("log")).unwrap());
    if let Some(e) = endpoint {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", e)
            .env("OTEL_METRIC_EXPORT_INTERVAL", "1000");
    }
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(secs));
    let figures = proc_figures(child.id());
    let _ = child.kill();
    let _ = child.wait();
    figures
}

fn main() {
    let env = bed();
    let image = env["MARGO_TB_IMAGE"].clone();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let knob = |k: &str, full: u64, quick: u64| -> u64 {
        std::env::var(k)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(if smoke { quick } else { full })
    };
    let runs = knob("BENCH_RUNS", 20, 2) as usize;
    let secs = knob("BENCH_DAEMON_SECS", 20, 3);
    let mut podman = engine::connect(&env["MARGO_TB_PODMAN_SOCK"]);
    let _ = apply::remove_project(&mut podman, "bench-otel", &[]);
    let mut ctx = CreateContext::default();
    for (k, v) in [
        (LABEL_MANAGED_BY, MANAGED_BY),
        (LABEL_DEVICE, DEVICE),
        (LABEL_DEPLOYMENT, "bench-otel-dep"),
    ] {
        ctx.extra_labels.insert(k.into(), v.into());
    }
    let project = engine::load_ten(&image, "bench-otel", &[]);
    engine::converge(&mut podman, &project, &ctx, Some(Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{}: {e}", e.code));
    let running = podman
        .list_containers(&[(LABEL_DEVICE, DEVICE)])
        .unwrap()
        .iter()
        .filter(|c| c.state == "running")
        .count();
    println!("managed containers running: {running} (of 10; the one-shot migration exits)");

    let port = sink();
    let state = State::default();
    let mut metrics = AgentMetrics::default();
    for i in 0..50u64 {
        metrics.reconcile("unchanged", Duration::from_millis(3 + i % 7));
        metrics.poll("unchanged", 0);
    }
    metrics.reconcile("converged", Duration::from_millis(900));
    metrics.poll("changed", 2300);
    let tls = margo_agent::config::Tls::default();
    println!("\nbytes per export (agent + process + {running} containers):");
    println!(
        "| protocol | compression | raw bytes | wire bytes | CPU ms per export (median of {runs}) | of which collect | wall ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (protocol, compression) in [
        ("http/protobuf", "none"),
        ("http/protobuf", "gzip"),
        ("http/json", "none"),
        ("http/json", "gzip"),
    ] {
        let s = settings(port, protocol, compression);
        let mut t = Telemetry::start(&s, &tls, DEVICE).unwrap().unwrap();
        let (mut cpu, mut collect_cpu, mut wall) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let view = View {
                metrics: &metrics,
                state: &state,
                podman: Some(&mut podman),
                device_id: DEVICE,
                outbox_len: 0,
            };
            let c0 = thread_cpu_ns();
            let _ = t.collect(view);
            collect_cpu.push((thread_cpu_ns() - c0) as f64 / 1e6);
            let view = View {
                metrics: &metrics,
                state: &state,
                podman: Some(&mut podman),
                device_id: DEVICE,
                outbox_len: 0,
            };
            let c0 = thread_cpu_ns();
            let t0 = Instant::now();
            let sent = t.export(view);
            wall.push(t0.elapsed().as_secs_f64() * 1000.0);
            cpu.push((thread_cpu_ns() - c0) as f64 / 1e6);
            assert_eq!(sent, margo_agent::telemetry::export::Sent::Delivered);
        }
        println!(
            "| {protocol} | {compression} | {} | {} | {:.2} | {:.2} | {:.1} |",
            t.counts.last_raw_bytes,
            t.counts.last_wire_bytes,
            median(cpu),
            median(collect_cpu),
            median(wall)
        );
    }

    println!(
        "\nthe daemon (release binary), {secs} s, {running} managed containers, poll every 1 s:"
    );
    let dir = std::env::temp_dir().join("margo-bench-otel");
    let off = daemon(&env, &dir.join("off"), None, secs);
    let on = daemon(
        &env,
        &dir.join("on"),
        Some(format!("http://127.0.0.1:{port}")),
        secs,
    );
    let exports = secs.saturating_sub(1).max(1);
    println!("| telemetry | VmRSS KiB | RssAnon KiB | CPU ms in {secs} s |");
    println!("|---|---|---|---|");
    let ms = |ns: u64| ns as f64 / 1e6;
    println!("| off | {} | {} | {:.1} |", off.0, off.1, ms(off.2));
    println!(
        "| on (protobuf, 1 s interval, ~{exports} exports) | {} | {} | {:.1} |",
        on.0,
        on.1,
        ms(on.2)
    );
    println!(
        "RSS delta on − off: {} KiB (RssAnon {} KiB); daemon CPU per export ≈ {:.2} ms",
        on.0 as i64 - off.0 as i64,
        on.1 as i64 - off.1 as i64,
        (ms(on.2) - ms(off.2)) / exports as f64
    );
    let _ = apply::remove_project(&mut podman, "bench-otel", &[]);
}
