#!/usr/bin/env python3
"""Start-to-first-poll latency of `margo-agent run`.

Usage: first_poll.py BINARY CONFIG_TEMPLATE CONFIG_OUT STATE_SEED RUNS

Each run binds a listener on 127.0.0.1 that stands in for the registry, writes the config
(CONFIG_TEMPLATE with @PORT@ replaced), copies STATE_SEED (a converged state file) to the
config's state_file path @STATE@, then takes a monotonic timestamp and starts the agent
(fork + exec through subprocess). The latency is the time until the first complete
`HEAD ... HTTP/1.1` request line arrives on the listener. The agent is stopped with SIGTERM
afterwards. Prints one line per run and a summary line `median_ms min_ms max_ms`.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time


def one_run(binary, template, config_out, state_seed):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    state_path = os.path.join(os.path.dirname(config_out), "first-poll-state.json")
    if state_seed and os.path.exists(state_seed):
        shutil.copyfile(state_seed, state_path)
    elif os.path.exists(state_path):
        os.unlink(state_path)
    with open(template) as f:
        text = f.read().replace("@PORT@", str(port)).replace("@STATE@", state_path)
    with open(config_out, "w") as f:
        f.write(text)
    env = dict(os.environ, MARGO_AGENT_LOG="stderr")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [binary, "--config", config_out, "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        conn, _ = srv.accept()
        conn.settimeout(10)
        data = b""
        while b"\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        t1 = time.monotonic()
        if not data.startswith(b"HEAD "):
            raise SystemExit(f"first request was not a HEAD: {data[:60]!r}")
        conn.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        srv.close()
    return (t1 - t0) * 1000.0


def main():
    binary, template, config_out, state_seed, runs = sys.argv[1:6]
    results = []
    for i in range(int(runs)):
        ms = one_run(binary, template, config_out, state_seed)
        results.append(ms)
        print(f"run {i + 1}: {ms:.1f} ms")
    print(
        f"summary {statistics.median(results):.1f} {min(results):.1f} {max(results):.1f}"
    )


if __name__ == "__main__":
    main()
