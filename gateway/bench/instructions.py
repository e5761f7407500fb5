#!/usr/bin/env python3
"""CPU work per request counted in instructions, not timed: immune to a noisy machine.

Each proxy runs under Valgrind's callgrind, which counts every user-space instruction the
process (all its threads) executes. After a warm-up the counters are zeroed, a fixed number
of keep-alive requests is sent, and the count is read back: instructions per request, the
same on every run to within a fraction of a percent. Kernel work (the socket system calls)
is not counted; it is the same for every variant that makes the same system calls.

Two comparisons:
  observability  one gateway, the policy path (JWT HS256 + CORS + round-robin) on four
                 routes: base, + prometheus plugin (all flags), + opentelemetry sampling
                 1%, + opentelemetry 100% (spans exported by OTLP/HTTP to a sink)
  core           the gateway's plain and policy paths (gateway/bench/configs) against nginx
                 (bench-peers nginx-plain.conf, one process), HAProxy's plain and full configs
                 from bench-peers, and with --hyper-floor BIN the minimal hyper proxy
                 (bench-peers hyper-proto): the engine's own floor

Usage (repository root, after `cargo build --release -p gateway --bins`; needs valgrind):
    python3 gateway/bench/instructions.py --bin "$CARGO_TARGET_DIR/release" [--requests 3000] \
        [--hyper-floor /tmp/hyper-proto/target/release/hyperproxy]
"""

import argparse
import glob
import http.client
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from observability import Sink, config as observability_config  # noqa: E402
from rate_limiting import Procs, free_port, gateway_argv, wait_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEERS = os.path.join(ROOT, "..", "shared", "bench-peers")
KEEP = None  # --keep: where the callgrind profiles go instead of being deleted



def send(port, path, n, headers):
    """n sequential keep-alive GETs; every answer must be 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"GET {path} on :{port} answered {r.status}")
    conn.close()


class Counted:
    """A process under callgrind, with its counters zeroed and read by callgrind_control."""

    def __init__(self, procs, argv, workdir, name, env=None):
        self.out = os.path.join(workdir, f"callgrind.{name}")
        procs.start(["valgrind", "--tool=callgrind", "--trace-children=no", "--dump-instr=no",
                     f"--callgrind-out-file={self.out}.%p", "--collect-atstart=yes", *argv],
                    env=env or dict(os.environ), stderr=open(f"{self.out}.log", "w"))
        self.pid = procs.procs[-1].pid

    def control(self, *args):
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def zero(self):
        self.control("--zero")

    def read(self):
        """Instructions since the last zero (dumps a profile and sums its totals)."""
        before = set(glob.glob(f"{self.out}.{self.pid}*"))
        self.control("--dump")
        deadline = time.time() + 30
        while time.time() < deadline:
            new = set(glob.glob(f"{self.out}.{self.pid}*")) - before
            total, complete = 0, bool(new)
            for path in new:
                text = open(path).read()
                m = re.search(r"^totals: (\d+)", text, re.M)
                if not m:
                    complete = False
                    break
                total += int(m.group(1))
            if complete:
                for path in new:
                    if KEEP:
                        shutil.move(path, os.path.join(KEEP, os.path.basename(path)))
                    else:
                        os.unlink(path)
                return total
            time.sleep(0.2)
        sys.exit("callgrind did not dump")


def measure(counted, port, path, n, headers, warmup):
    send(port, path, warmup, headers)
    counted.zero()
    send(port, path, n, headers)
    return counted.read() / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--only", choices=["observability", "core"])
    ap.add_argument("--hyper-floor", help="the hyper-proto binary")
    ap.add_argument("--targets", help="comma-separated core targets to count (default: all)")
    ap.add_argument("--keep", help="keep the callgrind profiles in this directory "
                                   "(read them with callgrind_annotate --inclusive=yes)")
    args = ap.parse_args()
    global KEEP
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        KEEP = os.path.abspath(args.keep)
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (apt-get install valgrind)")
    token = open(os.path.join(PEERS, "token.txt")).read().strip()
    procs = Procs()
    sink_port = free_port()
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", sink_port), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    env = dict(os.environ, GATEWAY_LOG="warn")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as work:
            ups = [free_port(), free_port()]
            for p in ups:
                procs.start([os.path.join(args.bin, "echo-upstream"), "--listen", f"127.0.0.1:{p}"], cpu=0)
                wait_port(p)
            if args.only in (None, "observability"):
                cfg = os.path.join(work, "observability.yml")
                with open(cfg, "w") as f:
                    f.write(observability_config(ups[0], ups[1], sink_port))
                port, status = free_port(), free_port()
                gw = Counted(procs, gateway_argv(args.bin, cfg, port, status), work, "obs", env)
                if not wait_port(port, timeout=120):
                    sys.exit("gateway under valgrind did not start")
                headers = {"Authorization": f"Bearer {token}", "Origin": "https://app.example.com"}
                base = None
                for name in ("base", "metrics", "otel1", "otel100"):
                    ir = measure(gw, port, f"/{name}/echo", args.requests, headers, args.warmup)
                    base = base or ir
                    rows.append(("observability", name, ir, ir / base))
                    print(f"observability {name:8} {ir:10.0f} instructions/request  {ir / base:.4f} x base",
                          flush=True)
            if args.only in (None, "core"):
                targets = []  # (name, process, port, headers)
                policy_headers = {"Authorization": f"Bearer {token}", "Origin": "https://app.example.com"}

                def with_upstreams(text):
                    return (text.replace("127.0.0.1:18081", f"127.0.0.1:{ups[0]}")
                            .replace("127.0.0.1:18082", f"127.0.0.1:{ups[1]}"))

                for name in ("plain", "policy"):
                    cfg = os.path.join(work, f"{name}.yml")
                    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", f"{name}.yml")) as f:
                        text = with_upstreams(f.read())
                    with open(cfg, "w") as f:
                        f.write(text)
                    port, status = free_port(), free_port()
                    targets.append((f"gateway-{name}", Counted(procs, gateway_argv(args.bin, cfg, port, status),
                                                               work, name, env), port,
                                    policy_headers if name == "policy" else {}))
                if args.hyper_floor:
                    port = free_port()
                    targets.append(("hyper-floor", Counted(
                        procs, [args.hyper_floor, f"127.0.0.1:{port}", f"127.0.0.1:{ups[0]}",
                                f"127.0.0.1:{ups[1]}"], work, "hyper", dict(os.environ, MODE="conn")), port, {}))
                if shutil.which("nginx"):
                    port = free_port()
                    prefix = os.path.join(work, "nginx")
                    for d in ("logs", "tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
                        os.makedirs(os.path.join(prefix, d), exist_ok=True)
                    text = with_upstreams(open(os.path.join(PEERS, "nginx-plain.conf")).read())
                    text = text.replace("127.0.0.1:18200", f"127.0.0.1:{port}")
                    ncfg = os.path.join(work, "nginx-plain.conf")
                    with open(ncfg, "w") as f:
                        f.write(text)
                    targets.append(("nginx-plain", Counted(
                        procs, ["nginx", "-p", prefix + "/", "-e", "logs/error.log", "-c", ncfg,
                                "-g", "daemon off; master_process off;"], work, "nginx"), port, {}))
                if shutil.which("haproxy"):
                    for name in ("plain", "full"):
                        hcfg = os.path.join(work, f"haproxy-{name}.cfg")
                        text = with_upstreams(open(os.path.join(PEERS, f"haproxy-{name}.cfg")).read())
                        port = free_port()
                        text = text.replace("127.0.0.1:18100", f"127.0.0.1:{port}")
                        with open(hcfg, "w") as f:
                            f.write(text)
                        henv = dict(os.environ, FULL_PORT=str(port), FULL_STATS_SOCK=os.path.join(work, "full.sock"))
                        targets.append((f"haproxy-{name}", Counted(procs, ["haproxy", "-db", "-f", hcfg], work,
                                                                   f"haproxy-{name}", henv), port,
                                        policy_headers if name == "full" else {}))
                if args.targets:
                    wanted = set(args.targets.split(","))
                    targets = [t for t in targets if t[0] in wanted]
                for name, counted, port, _ in targets:
                    if not wait_port(port, timeout=120):
                        sys.stderr.write(open(f"{counted.out}.log").read()[-3000:])
                        sys.exit(f"{name} under valgrind did not start")
                ref = None
                for name, counted, port, headers in targets:
                    ir = measure(counted, port, "/api/echo", args.requests, headers, args.warmup)
                    rows.append(("core", name, ir, None))
                    if name == "nginx-plain":
                        ref = ir
                    print(f"core {name:14} {ir:10.0f} instructions/request", flush=True)
                if ref:
                    for _, name, ir, _ in [r for r in rows if r[0] == "core"]:
                        print(f"core {name:14} {ir / ref:.3f} x nginx-plain")
    finally:
        procs.stop()
        sink.shutdown()


if __name__ == "__main__":
    main()
