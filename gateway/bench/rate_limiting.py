#!/usr/bin/env python3
"""Rate-limiting benchmark: one gateway, one upstream, the same route three ways
(no rate limiting, policy local, policy redis), measured in one run with wrk, in
interleaved rounds; then over-admission across 3 gateway instances sharing Redis.

Usage (from the repository root, after a release build):
    CARGO_TARGET_DIR=/work/target-rl cargo build --release -p gateway --bins
    python3 gateway/bench/rate_limiting.py --bin /work/target-rl/release

Needs wrk, redis-server, redis-cli and taskset. Everything listens on 127.0.0.1.
Cores: wrk, the upstream and Redis on core 0, the gateway on core 1 (2-core machine).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIG = 1_000_000_000  # a limit no run reaches: every request is decided and admitted


# dup: each benchmark script runs standalone (no shared module to install).
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, cpu=None, **kw):
        if cpu is not None and shutil.which("taskset"):
            args = ["taskset", "-c", str(cpu)] + args
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


def gateway_config(upstream, redis_port, routes):
    out = [
        '_format_version: "3.0"',
        "services:",
        "- name: svc",
        f"  url: http://127.0.0.1:{upstream}",
        "  routes:",
    ]
    for name, plugin in routes:
        out.append(f"  - name: {name}")
        out.append(f"    paths: [/{name}]")
        if plugin:
            out.append("    plugins:")
            out.append("    - name: rate-limiting")
            out.append(f"      config: {plugin}")
    return "\n".join(out) + "\n"


def cpu_seconds(pid):
    """User + system CPU seconds of a process and all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def gateway_argv(binary, cfg, port, status, workers=1):
    """The benchmark gateway's command line: loopback listeners, no access log."""
    return [
        os.path.join(binary, "gateway"), "run", "--config", cfg,
        "--proxy-listen", f"127.0.0.1:{port}",
        "--status-listen", f"127.0.0.1:{status}",
        "--workers", str(workers), "--access-log", "off",
    ]


def start_gateway(procs, binary, cfg_text, workdir, cpu, workers):
    path = os.path.join(workdir, f"gw-{len(procs.procs)}.yml")
    with open(path, "w") as f:
        f.write(cfg_text)
    port, status = free_port(), free_port()
    procs.start(gateway_argv(binary, path, port, status, workers), cpu=cpu,
                env=dict(os.environ, GATEWAY_LOG="warn"))
    if not wait_port(status) or not wait_port(port):
        sys.exit("gateway did not start")
    return port, status


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        mult = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        lat[pct] = float(val) * mult
    return {
        "rps": rps,
        "requests": total,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "p50_ms": lat.get("50"),
        "p99_ms": lat.get("99"),
    }


def wrk(url, duration, conns, headers=(), cpu=0, script=None):
    args = ["wrk", "-t1", f"-c{conns}", f"-d{duration}", "--latency"]
    for h in headers:
        args += ["-H", h]
    if script:
        args += ["-s", script]
    args.append(url)
    if shutil.which("taskset"):
        args = ["taskset", "-c", str(cpu)] + args
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def redis_histogram(status_port):
    """Quantile upper bounds (seconds) and the share of calls <= 1 ms, from the gateway's
    gateway_redis_latency_seconds histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{status_port}/metrics").read().decode()
    buckets = []
    for m in re.finditer(r'^gateway_redis_latency_seconds_bucket\{le="([^"]+)"\} (\d+)', text, re.M):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets.append((le, int(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    out = {"calls": total}
    for q in (0.5, 0.9, 0.99, 0.999):
        out[f"p{q * 100:g}_le_s"] = next(le for le, n in buckets if n >= q * total)
    out["share_le_1ms"] = next(n for le, n in buckets if le == 0.001) / total
    return out


def throughput_summary(results, lowc, status):
    med = {n: statistics.median(x["rps"] for x in v) for n, v in results.items()}
    best = {n: max(x["rps"] for x in v) for n, v in results.items()}
    p99 = {n: statistics.median(x["p99_ms"] for x in v) for n, v in results.items()}
    p50_c4 = {n: statistics.median(x["p50_ms"] for x in v) for n, v in lowc.items()}
    p99_c4 = {n: statistics.median(x["p99_ms"] for x in v) for n, v in lowc.items()}
    redis_calls = redis_histogram(status)
    summary = {
        "rps_median": med,
        "rps_best": best,
        "local_vs_none_best": best["local"] / best["none"],
        "redis_vs_local_best": best["redis"] / best["local"],
        "p99_ms_c64": p99,
        "p50_ms_c4": p50_c4,
        "p99_ms_c4": p99_c4,
        "local_vs_none": med["local"] / med["none"],
        "redis_vs_local": med["redis"] / med["local"],
        "redis_added_p50_ms_c4": p50_c4["redis"] - p50_c4["none"],
        "redis_added_p99_ms_c4": p99_c4["redis"] - p99_c4["none"],
        "redis_calls": redis_calls,
    }
    return summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--low-duration", default="5s", help="length of each 4-connection latency run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--limit", type=int, default=5000, help="limit for the over-admission run")
    ap.add_argument("--skip-throughput", action="store_true", help="only the over-admission run")
    a = ap.parse_args()

    procs = Procs()
    work = tempfile.mkdtemp(prefix="rl-bench-")
    try:
        up = free_port()
        procs.start([os.path.join(a.bin, "echo-upstream"), "--listen", f"127.0.0.1:{up}", "--name", "up"], cpu=0)
        rp = free_port()
        procs.start(["redis-server", "--bind", "127.0.0.1", "--port", str(rp), "--save", "", "--appendonly", "no", "--dir", work], cpu=0)
        if not (wait_port(up) and wait_port(rp)):
            sys.exit("upstream or redis did not start")
        redis = f"{{host: 127.0.0.1, port: {rp}, timeout: 2000}}"
        routes = [
            ("none", None),
            ("local", f"{{minute: {BIG}, limit_by: ip, policy: local}}"),
            ("redis", f"{{minute: {BIG}, limit_by: ip, policy: redis, redis: {redis}}}"),
        ]
        port, status = start_gateway(procs, a.bin, gateway_config(up, rp, routes), work, 1, a.workers)
        for name, _ in [] if a.skip_throughput else routes:  # warm-up (connections, script cache)
            wrk(f"http://127.0.0.1:{port}/{name}", "3s", a.conns)

        results = {name: [] for name, _ in routes}
        lowc = {name: [] for name, _ in routes}
        for r in range(0 if a.skip_throughput else a.rounds):
            for name, _ in routes:
                res = wrk(f"http://127.0.0.1:{port}/{name}", a.duration, a.conns)
                results[name].append(res)
                res4 = wrk(f"http://127.0.0.1:{port}/{name}", a.low_duration, 4)
                lowc[name].append(res4)
                print(f"round {r + 1} {name:6} c{a.conns}: {res['rps']:9.0f} rps p99 {res['p99_ms']:.2f} ms | "
                      f"c4: {res4['rps']:8.0f} rps p50 {res4['p50_ms']:.3f} ms p99 {res4['p99_ms']:.3f} ms"
                      f" non2xx {res['non2xx'] + res4['non2xx']}", flush=True)

        summary = {}
        if not a.skip_throughput:
            summary = throughput_summary(results, lowc, status)

        # Over-admission: 3 gateways, one Redis, one identifier, limit L, 3 wrk at once.
        limit = a.limit
        cfg = gateway_config(up, rp, [("shared", f"{{hour: {limit}, limit_by: header, header_name: x-user, policy: redis, redis: {redis}}}")])
        gws = [start_gateway(procs, a.bin, cfg, work, 1, a.workers) for _ in range(3)]
        user = f"x-user: bench-{int(time.time())}"
        outs = [tempfile.TemporaryFile() for _ in gws]
        ws = [
            subprocess.Popen(["wrk", "-t1", "-c32", "-d6s", "-H", user, f"http://127.0.0.1:{p}/shared"], stdout=o, text=True)
            for (p, _), o in zip(gws, outs)
        ]
        admitted, sent = 0, 0
        for w, o in zip(ws, outs):
            w.wait()
            o.seek(0)
            res = parse_wrk(o.read().decode())
            sent += res["requests"]
            admitted += res["requests"] - res["non2xx"]
        counted = subprocess.run(["redis-cli", "-p", str(rp), "--scan", "--pattern", "ratelimit:*bench-*"], capture_output=True, text=True).stdout.split()
        in_redis = [subprocess.run(["redis-cli", "-p", str(rp), "get", k], capture_output=True, text=True).stdout.strip() for k in counted]
        summary["over_admission"] = {"limit": limit, "sent": sent, "admitted_2xx": admitted, "over": admitted - limit, "redis_counter": in_redis}

        print(json.dumps(summary, indent=2))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"summary": summary, "rounds": results, "rounds_c4": lowc}, f, indent=2)
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
