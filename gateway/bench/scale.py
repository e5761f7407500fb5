#!/usr/bin/env python3
"""Large configurations: load and reload time, memory, and per-request CPU against a
small configuration, side by side in one run.

Two generated decK-style files (YAML):
  small   10 prefix routes, key-auth on every route, 10 consumers with a key each
  large   10,000 prefix routes, key-auth on every route, 100,000 consumers with a key each

For each: `gateway check` wall time and peak RSS; start-up; a reload by `POST /config` (the
whole file, timed to the 201) and the RSS after it; then CPU per request (process user +
system time / requests) with wrk on a route in the middle of the file, keep-alive, the
gateway pinned to core 1 with one worker, both gateways measured in interleaved rounds.

Usage (repository root, after `cargo build --release -p gateway --bins`):
    python3 gateway/bench/scale.py --bin "$CARGO_TARGET_DIR/release" [--rounds 3]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rate_limiting import Procs, cpu_seconds, free_port, wait_port, wrk  # noqa: E402


def config(routes, consumers, up):
    out = ['_format_version: "3.0"', "services:"]
    per_service = 100
    for s in range((routes + per_service - 1) // per_service):
        out += [f"- name: svc{s}", f"  url: http://127.0.0.1:{up}", "  routes:"]
        for r in range(s * per_service, min(routes, (s + 1) * per_service)):
            out += [f"  - name: route{r}", f"    paths: [/r{r}]",
                    "    plugins:", "    - name: key-auth"]
    out.append("consumers:")
    for c in range(consumers):
        out += [f"- username: user{c}", "  keyauth_credentials:", f"  - key: key-{c:08d}"]
    return "\n".join(out) + "\n"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def check(binary, path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    subprocess.run([binary, "check", "--config", path], check=True, stdout=subprocess.DEVNULL)
    took = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(peak, before)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", default="4s")
    ap.add_argument("--conns", type=int, default=64)
    args = ap.parse_args()
    gw = os.path.join(args.bin, "gateway")
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory() as work:
            up = free_port()
            procs.start([os.path.join(args.bin, "echo-upstream"), "--listen", f"127.0.0.1:{up}"], cpu=0)
            wait_port(up)
            sizes = {"small": (10, 10), "large": (10_000, 100_000)}
            running = {}
            for name, (routes, consumers) in sizes.items():
                path = os.path.join(work, f"{name}.yml")
                text = config(routes, consumers, up)
                with open(path, "w") as f:
                    f.write(text)
                took, peak = check(gw, path)
                print(f"{name}: {routes} routes, {consumers} consumers, {len(text) / 1e6:.1f} MB; "
                      f"check {took:.2f} s, peak RSS of the check so far {peak / 1024:.0f} MiB", flush=True)
                port, status = free_port(), free_port()
                t0 = time.monotonic()
                procs.start([gw, "run", "--config", path, "--proxy-listen", f"127.0.0.1:{port}",
                             "--status-listen", f"127.0.0.1:{status}", "--workers", "1",
                             "--access-log", "off"], cpu=1, env=dict(os.environ, GATEWAY_LOG="warn"))
                pid = procs.procs[-1].pid
                wait_port(status, timeout=120)
                wait_port(port, timeout=120)
                started = time.monotonic() - t0
                rss0 = rss_kb(pid)
                reloads = []
                for _ in range(3):
                    req = urllib.request.Request(f"http://127.0.0.1:{status}/config", data=text.encode(),
                                                 method="POST", headers={"Content-Type": "text/yaml"})
                    t0 = time.monotonic()
                    with urllib.request.urlopen(req, timeout=120) as r:
                        assert r.status == 201, r.status
                    reloads.append(time.monotonic() - t0)
                rss1 = rss_kb(pid)
                print(f"{name}: start-up {started:.2f} s, idle RSS {rss0 / 1024:.1f} MiB; reload (POST /config) "
                      f"median {statistics.median(reloads):.2f} s of {len(reloads)}, RSS after {rss1 / 1024:.1f} MiB",
                      flush=True)
                mid = routes // 2
                running[name] = (f"http://127.0.0.1:{port}/r{mid}/x", pid, [f"apikey: key-{consumers // 2:08d}"])
            rounds = {n: [] for n in running}
            for n, (url, _, hdrs) in running.items():
                res = wrk(url, "1s", args.conns, hdrs)
                if res["non2xx"] or not res["requests"]:
                    sys.exit(f"{n}: warm-up failed: {res}")
            for r in range(args.rounds):
                for n, (url, pid, hdrs) in running.items():
                    c0 = cpu_seconds(pid)
                    res = wrk(url, args.duration, args.conns, hdrs)
                    cpu = (cpu_seconds(pid) - c0) * 1e6 / max(res["requests"], 1)
                    rounds[n].append((res["rps"], cpu, res["non2xx"]))
                    print(f"round {r + 1} {n:6} {res['rps']:9.0f} req/s  cpu {cpu:.1f} us/req  "
                          f"non2xx {res['non2xx']}", flush=True)
            med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
                   for n, v in rounds.items()}
            print(f"\nmedians of {args.rounds} interleaved rounds, wrk -t1 -c{args.conns} -d{args.duration}")
            for n, (rps, cpu) in med.items():
                print(f"{n:6} {rps:9.0f} req/s  {cpu:6.1f} us CPU/request  "
                      f"{cpu / med['small'][1]:.2f} x small")
    finally:
        procs.stop()


if __name__ == "__main__":
    main()
