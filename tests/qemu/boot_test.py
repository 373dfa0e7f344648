#!/usr/bin/env python3
"""QEMU-booted tests of margo-agent (TCG; KVM hangs on these machines).

Boots the static musl binary in a busybox initramfs (tests/qemu/image.sh), with the QEMU
settings of the board profiles board/qemu-x86_64 and board/qemu-arm64, and a persistent
virtio disk for the state file; the guest reaches the host's test registry through user-mode
networking (10.0.2.2).

  boot_test.py smoke --arch x86_64 --binary B --registry 127.0.0.1:PORT
      boots with the clock at 2001 (no RTC), the agent warns about the clock, polls the
      registry, records the desired revision, says Podman's socket is missing; then the state disk is mounted read-only and the agent must refuse with
      exit code 7 and one clear line.
  boot_test.py powercut --arch x86_64 --binary B --registry 127.0.0.1:PORT --cuts N
      N cycles of: boot, the host publishes a new revision every 150 ms and the agent records
      them (poll now every 100 ms), QEMU killed at a random moment. After every reboot the
      state file must parse and hold the last committed revision or the one before; the last
      boot (no cut) must converge to the newest revision.

Prints one JSON line of figures at the end (--json FILE writes it too). Exit code 0 = pass.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEPLOYMENT = """apiVersion: application.margo.org/v1alpha1
kind: ApplicationDeployment
metadata:
  name: qemu-demo
  annotations:
    id: qemu-demo
    applicationId: app-qemu
spec:
  applicationId: app-qemu
  deploymentProfile:
    type: compose
    components:
      - name: web
        properties:
          repository: oci://10.0.2.2:5000/margo/pkg/web
          revision: 1.0.0
"""


def board_qemu(arch):
    """The QEMU launch settings of the board profile (board/qemu-*/board.yaml)."""
    import yaml
    name = {"x86_64": "qemu-x86_64", "aarch64": "qemu-arm64"}[arch]
    with open(os.path.join(REPO, "board", name, "board.yaml")) as f:
        return yaml.safe_load(f)["qemu"]


def log(msg):
    print(f"[qemu] {msg}", file=sys.stderr, flush=True)


class Guest:
    """One QEMU run; the console is collected line by line with arrival times."""

    def __init__(self, arch, image_dir, disk, cmdline, rtc=None):
        q = board_qemu(arch)
        console = q["console"]
        cmd = [q["system"], "-M", q["machine"], "-cpu", q["cpu"]]
        cmd += [
            "-accel", q["accel"], "-m", str(q["memory_mb"]), "-smp", str(q.get("smp", 1)),
            "-nographic", "-no-reboot",
            "-kernel", os.path.join(image_dir, "vmlinuz"),
            "-initrd", os.path.join(image_dir, "initrd.gz"),
            "-append", f"console={console} quiet panic=-1 {cmdline}",
            "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-drive", f"file={disk},if=none,id=d0,format=raw,cache=writeback",
            "-device", "virtio-blk-pci,drive=d0",
        ]
        if rtc:
            cmd += ["-rtc", f"base={rtc}"]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines = []  # (seconds since start, text)
        self.cv = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self.cv:
                self.lines.append((time.monotonic() - self.t0, line))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, pattern, timeout):
        """First console line matching `pattern` (regex), or None at timeout/exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cv:
            while True:
                for i in range(seen, len(self.lines)):
                    if rx.search(self.lines[i][1]):
                        return self.lines[i]
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    return None
                self.cv.wait(min(left, 0.2))

    def cut(self):
        """Power cut: SIGKILL, no shutdown of any kind."""
        self.proc.kill()
        self.proc.wait()
        self.reader.join(5)

    def finish(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.cut()
        self.reader.join(5)

    def text(self):
        with self.cv:
            return "\n".join(l for _, l in self.lines)

    def states(self):
        """JSON documents printed between MARGO-STATE-BEGIN/END, with the status exit code."""
        out, cur = [], None
        with self.cv:
            lines = [l for _, l in self.lines]
        for l in lines:
            if l.startswith("MARGO-STATE-BEGIN"):
                cur = []
            elif l.startswith("MARGO-STATE-END") and cur is not None:
                rc = int(l.split("rc=")[1]) if "rc=" in l else -1
                try:
                    doc = json.loads("\n".join(cur))
                except ValueError:
                    doc = None
                out.append((rc, doc, "\n".join(cur)))
                cur = None
            elif cur is not None:
                cur.append(l)
        return out


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_disk(path):
    sh(["truncate", "-s", "32M", path])
    sh(["mkfs.ext4", "-q", "-F", path])


def build_image(arch, binary, work):
    d = os.path.join(work, f"image-{arch}")
    r = subprocess.run([os.path.join(HERE, "image.sh"), arch, binary, d], capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"image.sh failed:\n{r.stderr}")
    return d


class Publisher:
    def __init__(self, publisher, registry, repo, work):
        self.publisher, self.registry, self.repo = publisher, registry, repo
        self.doc = os.path.join(work, "deployment.yaml")
        with open(self.doc, "w") as f:
            f.write(DEPLOYMENT)
        self.digests = {}  # version -> manifest digest

    def publish(self, version):
        r = sh([self.publisher, "publish", "--plain-http", "--to",
                f"{self.registry}/{self.repo}:latest", "--version", str(version), self.doc])
        m = re.search(r"@(sha256:[0-9a-f]{64})", r.stdout)
        if not m:
            sys.exit(f"publish printed no digest: {r.stdout}")
        self.digests[version] = m.group(1)
        return m.group(1)

    def version_of(self, digest):
        for v, d in self.digests.items():
            if d == digest:
                return v
        return None


def cmdline(args, mode, repo):
    port = args.registry.rsplit(":", 1)[1]
    reg = f"10.0.2.2:{port}"
    return f"margo.mode={mode} margo.reg={reg} margo.ref={reg}/{repo}:latest margo.interval=1s"


def smoke(args, work, image):
    repo = f"margo/qemu-{args.arch}-{os.getpid()}/desired"
    pub = Publisher(args.publisher, args.registry, repo, work)
    digest = pub.publish(1)
    disk = os.path.join(work, f"disk-{args.arch}.img")
    make_disk(disk)
    # The clock of a device without RTC: far in the past. Polling must still work (plain HTTP
    # here) and the agent must say what the clock means for TLS.
    g = Guest(args.arch, image, disk, cmdline(args, "smoke", repo), rtc="2001-01-01T00:00:00")
    done = g.wait_for(r"MARGO-DONE|MARGO-FAIL|Kernel panic", args.timeout)
    g.finish(10)
    text = g.text()
    problems = []
    started = g.wait_for(r"MARGO-AGENT-STARTED", 0)
    recorded = g.wait_for(r"MARGO-RECORDED", 0)
    if not done or "MARGO-DONE" not in done[1]:
        problems.append("the guest did not finish (MARGO-DONE missing)")
    states = g.states()
    final = states[-1][1] if states else None
    got = (final or {}).get("source", {}).get("desired")
    if got != digest:
        problems.append(f"state records desired {got!r}, published {digest}")
    if not re.search(r"Podman.*(socket|/run/podman/podman\.sock)", text):
        problems.append("no journal line says Podman's socket is missing")
    if not re.search(r"system clock reads 2001-01-01 .*certificate not valid yet", text):
        problems.append("no warning about the clock far in the past (RTC at 2001-01-01)")
    # The state disk read-only: exit 7 and one line naming the directory.
    g2 = Guest(args.arch, image, disk, cmdline(args, "ro", repo))
    g2.wait_for(r"MARGO-DONE|MARGO-FAIL|Kernel panic", args.timeout)
    g2.finish(10)
    ro_text = g2.text()
    ro_exit = g2.wait_for(r"MARGO-EXIT rc=", 0)
    ro_line = g2.wait_for(r"state directory /var/lib/margo-agent is not writable", 0)
    if not ro_exit or not ro_exit[1].endswith("rc=7"):
        problems.append(f"read-only state disk: exit line {ro_exit}")
    if not ro_line or "read-only file system" not in ro_line[1]:
        problems.append("read-only state disk: no clear line naming the read-only file system")
    figures = {
        "arch": args.arch,
        "boot_to_agent_start_s": round(started[0], 2) if started else None,
        "boot_to_first_record_s": round(recorded[0], 2) if recorded else None,
        "podman_missing_reported": not any("Podman" in p for p in problems),
        "clock_warning": not any("clock" in p for p in problems),
        "read_only_state_exit": ro_exit[1].split("rc=")[1] if ro_exit else None,
    }
    return problems, figures, text + "\n----- read-only boot -----\n" + ro_text


class Stream(threading.Thread):
    """Publishes a new revision every `every` seconds until stopped."""

    def __init__(self, pub, first, every):
        super().__init__(daemon=True)
        self.pub, self.next, self.every = pub, first, every
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.pub.publish(self.next)
            self.next += 1
            self.halt.wait(self.every)

    def stop(self):
        self.halt.set()
        self.join(30)
        return self.next


def powercut(args, work, image):
    """Cycles of boot → agent records a stream of revisions → QEMU killed at a random moment.

    After each reboot the state must parse (status exit 0, nothing moved aside) and hold a
    published revision no older than the one before the last revision seen committed in the
    previous boot ("the last committed revision or the one before"; seen = read back from the
    disk by `status` in the guest). Every boot must converge again (record a newer revision
    within --timeout); the cut comes at a random moment up to --window seconds after that,
    while the agent keeps rewriting its state. The last boot runs without a cut and must reach
    the newest revision.
    """
    repo = f"margo/qemu-cut-{args.arch}-{os.getpid()}/desired"
    pub = Publisher(args.publisher, args.registry, repo, work)
    disk = os.path.join(work, f"disk-cut-{args.arch}.img")
    make_disk(disk)
    rng = random.Random(args.seed)
    problems, logs = [], []
    corrupt = converged_boots = writes_seen = 0
    boot_times, cut_after = [], []
    next_version = 1
    pub.publish(next_version)
    next_version += 1
    prev_floor = 0  # the oldest version the state may hold at the next boot
    converged_after = None
    cycles = args.cuts + 1
    for cycle in range(1, cycles + 1):
        last = cycle == cycles
        g = Guest(args.arch, image, disk, cmdline(args, "cut", repo))
        started = g.wait_for(r"MARGO-AGENT-STARTED", args.timeout)
        if not started:
            g.cut()
            problems.append(f"cycle {cycle}: the agent did not start\n{g.text()[-3000:]}")
            break
        boot_times.append(started[0])
        states = g.states()
        rc, doc, raw = states[0] if states else (-1, None, "")
        listing = [l for _, l in g.lines if l.startswith("MARGO-LS ")]
        held = None
        if rc != 0 or (doc is None and raw.strip()):
            corrupt += 1
            problems.append(f"cycle {cycle}: state does not parse (status rc={rc}): {raw[:500]}")
        elif any(".corrupt-" in l for l in listing):
            corrupt += 1
            problems.append(f"cycle {cycle}: a state file was moved aside: {listing}")
        else:
            d = (doc or {}).get("source", {}).get("desired")
            held = pub.version_of(d) if d else 0
            if held is None:
                corrupt += 1
                problems.append(f"cycle {cycle}: state holds a revision never published: {d}")
            elif held < prev_floor:
                corrupt += 1
                problems.append(f"cycle {cycle}: state holds version {held}, older than "
                                f"{prev_floor} (the one before the last committed)")
        if last:
            stream = None
            final = pub.publish(next_version)
            conv = g.wait_for(rf"MARGO-DESIRED {final}", args.timeout)
            g.cut()
            if conv:
                converged_after = round(conv[0] - started[0], 2)
            else:
                problems.append(f"last boot: the agent did not converge to version {next_version}")
        else:
            stream = Stream(pub, next_version, args.every)
            stream.start()
            # Converging again after the reboot: the first newer revision recorded. From then
            # on the agent rewrites its state every few hundred ms; cut somewhere in that.
            held_digest = pub.digests.get(held or -1, "none")
            newer = g.wait_for(rf"MARGO-DESIRED (?!{held_digest})sha256:", args.timeout)
            if newer:
                wait = rng.uniform(0.0, args.window)
                time.sleep(wait)
                cut_after.append(wait)
            else:
                problems.append(f"cycle {cycle}: the agent recorded no newer revision within "
                                f"{args.timeout} s after the reboot")
                cut_after.append(0.0)
            g.cut()
            next_version = stream.stop()
        seen = [pub.version_of(l.split(" ", 1)[1]) for _, l in g.lines
                if l.startswith("MARGO-DESIRED ") and len(l.split(" ", 1)) == 2]
        seen = [v for v in seen if v is not None]
        writes_seen += len(seen)
        base = held or 0
        if any(v > base for v in seen):
            converged_boots += 1
        # Next boot: at least the one before the last committed revision seen.
        if len(seen) >= 2:
            prev_floor = seen[-2]
        elif len(seen) == 1:
            prev_floor = min(seen[0], base)
        else:
            prev_floor = base
        logs.append(f"===== cycle {cycle} =====\n{g.text()}")
        log(f"cycle {cycle}/{cycles}: held version {held} at boot, recorded {seen[-3:]} "
            f"before the {'end' if last else 'cut'}")
    cuts = len(cut_after)
    figures = {
        "arch": args.arch,
        "cuts": cuts,
        "corrupt_states": corrupt,
        "revisions_recorded_seen": writes_seen,
        "boots_converging_before_cut": converged_boots - (1 if converged_after else 0),
        "convergence_rate": round((converged_boots - (1 if converged_after else 0)) / cuts, 3)
        if cuts else None,
        "final_converged": converged_after is not None,
        "final_converged_after_start_s": converged_after,
        "boot_to_agent_start_median_s": round(sorted(boot_times)[len(boot_times) // 2], 2)
        if boot_times else None,
    }
    return problems, figures, "\n".join(logs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["smoke", "powercut"])
    ap.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    ap.add_argument("--binary", required=True, help="static margo-agent for the guest")
    ap.add_argument("--publisher", default=None, help="host margo-agent (publishes)")
    ap.add_argument("--registry", required=True, help="host registry, 127.0.0.1:PORT")
    ap.add_argument("--cuts", type=int, default=20)
    ap.add_argument("--window", type=float, default=1.0,
                    help="cut at a uniformly random moment within this many seconds after the "
                         "agent records its first new revision of the boot")
    ap.add_argument("--every", type=float, default=0.15,
                    help="publish a new revision this often while a cycle runs")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=90)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    args.publisher = args.publisher or args.binary
    work = args.work or tempfile.mkdtemp(prefix="margo-qemu-")
    os.makedirs(work, exist_ok=True)
    image = build_image(args.arch, args.binary, work)
    t0 = time.monotonic()
    if args.mode == "smoke":
        problems, figures, text = smoke(args, work, image)
    else:
        problems, figures, text = powercut(args, work, image)
    figures["mode"] = args.mode
    figures["wall_s"] = round(time.monotonic() - t0, 1)
    with open(os.path.join(work, f"console-{args.mode}-{args.arch}.log"), "w") as f:
        f.write(text)
    line = json.dumps(figures)
    print(line)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")
    if problems:
        for p in problems:
            log("FAIL: " + p)
        log(f"console log: {work}/console-{args.mode}-{args.arch}.log")
        return 1
    log(f"{args.mode} {args.arch}: ok ({figures['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
