#!/usr/bin/env python3
"""The gateway's core proxy path against HAProxy, nginx and a bare hyper proxy, interleaved.

Every proxy runs at the same time, pinned to core 1 (one worker/thread each); the nginx
echo upstream and wrk share core 0. Targets are measured in interleaved rounds (A B C D,
A B C D, ...) so that a noisy neighbour hits all of them alike; the table gives medians of
requests/s, p99 and CPU per request (the proxy process's user + system time divided by the
requests it served), and ratios.

Targets:
  direct          wrk straight to the echo upstream (the ceiling)
  haproxy-plain   ../shared/bench-peers/haproxy-plain.cfg
  nginx-plain     ../shared/bench-peers/nginx-plain.conf
  hyper-floor     ../shared/bench-peers/hyper-proto (with --hyper-floor BIN): a minimal hyper
                  proxy with nothing of the gateway: the floor of the engine the gateway uses
  gateway-plain   the gateway, plain proxy config (one route, round-robin upstream)
  haproxy-full    ../shared/bench-peers/haproxy-full.cfg (JWT + rate limit + CORS + LB)
  gateway-policy  the gateway with JWT HS256 + CORS + round-robin with health checks

Usage (repository root, after `cargo build --release -p gateway --bins`):
    python3 gateway/bench/core_path.py --bin "$CARGO_TARGET_DIR/release" --rounds 5 \
        [--hyper-floor /tmp/hyper-proto/target/release/hyperproxy] [--conns 64] [--body-kib 64]

`--body-kib N` sends POSTs with an N KiB body instead of GETs. The idle RSS of each
gateway process is printed after start-up.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rate_limiting import Procs, cpu_seconds, free_port, start_gateway, wait_port, wrk  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEERS = os.path.join(ROOT, "..", "shared", "bench-peers")

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def read_config(name):
    with open(os.path.join(CONFIGS, name)) as f:
        return f.read()


NGINX_MASTERS = []


def stop_nginx_workers():
    """Stop every nginx this script started, workers included. The master is stopped
    first (SIGSTOP) so that it cannot respawn a worker killed under it, which would then
    outlive the run and hold the benchmark ports."""
    kids_of = {}
    for m in NGINX_MASTERS:
        try:
            os.kill(m, 19)  # SIGSTOP
        except OSError:
            continue
        try:
            kids_of[m] = open(f"/proc/{m}/task/{m}/children").read().split()
        except OSError:
            kids_of[m] = []
    for m, kids in kids_of.items():
        for k in kids:
            try:
                os.kill(int(k), 9)
            except OSError:
                pass
        try:
            os.kill(m, 9)
        except OSError:
            pass


def nginx(procs, work, name, conf, cpu):
    prefix = os.path.join(work, name)
    for d in ("logs", "tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    procs.start(["nginx", "-p", prefix + "/", "-e", "logs/error.log", "-c", conf, "-g", "daemon off;"], cpu=cpu)
    NGINX_MASTERS.append(procs.procs[-1].pid)
    return procs.procs[-1].pid


def nginx_worker(master_pid):
    """nginx serves from its worker process; CPU is read from it."""
    for _ in range(50):
        try:
            kids = open(f"/proc/{master_pid}/task/{master_pid}/children").read().split()
        except OSError:
            kids = []
        if kids:
            return int(kids[0])
        time.sleep(0.1)
    return master_pid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--duration", default="4s")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--targets", default="direct,haproxy-plain,nginx-plain,hyper-floor,gateway-plain,"
                                         "haproxy-full,gateway-policy")
    ap.add_argument("--hyper-floor", help="the hyper-proto binary (target hyper-floor)")
    ap.add_argument("--body-kib", type=int, default=0, help="POST bodies of this many KiB")
    ap.add_argument("--json", help="write the raw rounds and the summary here")
    args = ap.parse_args()
    wanted = args.targets.split(",")
    for tool in ("wrk", "nginx", "haproxy", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run {PEERS}/setup.sh first")
    token = open(os.path.join(PEERS, "token.txt")).read().strip()
    policy_headers = [f"Authorization: Bearer {token}", "Origin: https://app.example.com"]
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory() as work:
            nginx(procs, work, "upstream", os.path.join(PEERS, "upstream-echo.conf"), cpu=0)
            wait_port(18081)
            wait_port(18082)
            targets = {}  # name -> (url, pid, headers)
            if "direct" in wanted:
                targets["direct"] = ("http://127.0.0.1:18081/api/echo", None, [])
            if "haproxy-plain" in wanted:
                procs.start(["haproxy", "-db", "-f", os.path.join(PEERS, "haproxy-plain.cfg")], cpu=1)
                targets["haproxy-plain"] = ("http://127.0.0.1:18100/api/echo", procs.procs[-1].pid, [])
            if "nginx-plain" in wanted:
                m = nginx(procs, work, "nginx-plain", os.path.join(PEERS, "nginx-plain.conf"), cpu=1)
                targets["nginx-plain"] = ("http://127.0.0.1:18200/api/echo", m, [])
            if "hyper-floor" in wanted and args.hyper_floor:
                port = free_port()
                procs.start([args.hyper_floor, f"127.0.0.1:{port}", "127.0.0.1:18081", "127.0.0.1:18082"],
                            cpu=1, env=dict(os.environ, MODE="conn"))
                targets["hyper-floor"] = (f"http://127.0.0.1:{port}/api/echo", procs.procs[-1].pid, [])
            if "gateway-plain" in wanted:
                port, _ = start_gateway(procs, args.bin, read_config("plain.yml"), work, cpu=1, workers=1)
                pid = procs.procs[-1].pid
                targets["gateway-plain"] = (f"http://127.0.0.1:{port}/api/echo", pid, [])
            if "haproxy-full" in wanted:
                sock = os.path.join(work, "full.sock")
                procs.start(["haproxy", "-db", "-f", os.path.join(PEERS, "haproxy-full.cfg")], cpu=1,
                            env=dict(os.environ, FULL_STATS_SOCK=sock))
                targets["haproxy-full"] = ("http://127.0.0.1:18101/api/echo", procs.procs[-1].pid, policy_headers)
            if "gateway-policy" in wanted:
                port, _ = start_gateway(procs, args.bin, read_config("policy.yml"), work, cpu=1, workers=1)
                pid = procs.procs[-1].pid
                targets["gateway-policy"] = (f"http://127.0.0.1:{port}/api/echo", pid, policy_headers)
            for url, _, _ in targets.values():
                wait_port(int(url.split(":")[2].split("/")[0]))
            time.sleep(2.5)  # health checks settle
            for n, (_, pid, _) in targets.items():
                if n.startswith("gateway"):
                    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status")
                               if line.startswith("VmRSS:"))
                    print(f"idle RSS {n}: {rss / 1024:.1f} MiB", flush=True)
            script = None
            if args.body_kib:
                script = os.path.join(work, "post.lua")
                with open(script, "w") as f:
                    f.write('wrk.method = "POST"\n'
                            f'wrk.body = string.rep("x", {args.body_kib * 1024})\n'
                            'wrk.headers["Content-Type"] = "application/octet-stream"\n')
            pids = {n: (nginx_worker(p) if n.startswith("nginx") else p) for n, (_, p, _) in targets.items()}
            for n, (url, _, hdrs) in targets.items():  # warm-up, and a functional check
                res = wrk(url, "1s", args.conns, hdrs, script=script)
                if res["non2xx"] or res["requests"] == 0:
                    sys.exit(f"{n}: {res['non2xx']} non-2xx of {res['requests']} in the warm-up")
            rounds = {n: [] for n in targets}
            for r in range(args.rounds):
                for n, (url, _, hdrs) in targets.items():
                    pid = pids[n]
                    c0 = cpu_seconds(pid) if pid else 0.0
                    res = wrk(url, args.duration, args.conns, hdrs, script=script)
                    res["cpu_us_per_req"] = ((cpu_seconds(pid) - c0) * 1e6 / max(res["requests"], 1)) if pid else None
                    rounds[n].append(res)
                    cpu = f"{res['cpu_us_per_req']:.1f}" if pid else "-"
                    print(f"round {r + 1} {n:15} {res['rps']:9.0f} req/s  p99 {res['p99_ms']:6.2f} ms  "
                          f"cpu {cpu} us/req  non2xx {res['non2xx']}", flush=True)
            summary = {}
            for n, rs in rounds.items():
                cpus = [x["cpu_us_per_req"] for x in rs if x["cpu_us_per_req"] is not None]
                summary[n] = {
                    "rps": statistics.median(x["rps"] for x in rs),
                    "p50_ms": statistics.median(x["p50_ms"] for x in rs),
                    "p99_ms": statistics.median(x["p99_ms"] for x in rs),
                    "cpu_us_per_req": statistics.median(cpus) if cpus else None,
                    "non2xx": sum(x["non2xx"] for x in rs),
                }
            ref = summary.get("nginx-plain")
            full = summary.get("haproxy-full")
            body = f", POST {args.body_kib} KiB" if args.body_kib else ""
            print(f"\nmedians of {args.rounds} interleaved rounds, wrk -t1 -c{args.conns} -d{args.duration}{body}")
            print("target            req/s  p50 ms  p99 ms  cpu us/req    rps/nginx    cpu/nginx  rps/hap-full")
            for n, s in summary.items():
                cpu = s["cpu_us_per_req"]
                rel = lambda a, b: f"{a / b:11.2f}" if a and b else f"{'-':>11}"  # noqa: E731
                print(f"{n:15} {s['rps']:8.0f} {s['p50_ms']:7.2f} {s['p99_ms']:7.2f} "
                      f"{(f'{cpu:.1f}' if cpu else '-'):>11}  "
                      f"{rel(s['rps'], ref and ref['rps'])}  {rel(cpu, ref and ref['cpu_us_per_req'])}  "
                      f"{rel(s['rps'], full and full['rps'])}")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"rounds": rounds, "summary": summary}, f, indent=1)
    finally:
        stop_nginx_workers()
        procs.stop()


if __name__ == "__main__":
    main()
