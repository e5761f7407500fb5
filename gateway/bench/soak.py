#!/usr/bin/env python3
"""Soak: the gateway and the metrics agent under churning clients for a long run.

One gateway (release build) in front of two echo upstreams with key-auth, a Redis-backed
rate limit (`fault_tolerant: true`), a small tier that answers 429, and the prometheus
plugin; a metrics-agent scraping the gateway every second and shipping by remote_write to
a sink in this script. Clients open a connection, send 1-30 keep-alive requests (valid
key, no key, the limited route) and close it, over and over. Every minute the
configuration is replaced through `POST /config` (a changed header value, so it is a real
reload); in the middle of the run Redis is stopped for 10 s and started again.

Every 10 s the gateway's and the agent's RSS and open file descriptors are sampled. At the
end: the slope of each (least squares over the second half, after warm-up), request
counts by outcome, and failures: a connection error or a 5xx. Expected answers are 200,
401 (no key) and 429 (the small tier). With `fault_tolerant` the Redis outage must not
fail requests (local counters take over), so the run fails on any failure.

Only the Python standard library. Everything listens on 127.0.0.1.

    cargo build --release -p gateway -p metrics-agent --bins
    python3 gateway/bench/soak.py --bin "$CARGO_TARGET_DIR/release" [--minutes 30]
"""

import argparse
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


# dup: each benchmark script runs standalone (no shared module to install).
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_hour(points):
    """Least-squares slope of (seconds, value) points, per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    if den == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den * 3600


def config(ups, redis_port, marker):
    return f"""_format_version: "3.0"
upstreams:
- name: echo
  targets: [{{target: "127.0.0.1:{ups[0]}"}}, {{target: "127.0.0.1:{ups[1]}"}}]
consumers:
- username: soak
  keyauth_credentials: [{{key: soak-key}}]
services:
- name: echo
  url: http://echo
  routes:
  - name: api
    paths: [/api]
    plugins:
    - name: key-auth
    - name: rate-limiting
      config: {{second: 100000, policy: redis, fault_tolerant: true, redis: {{host: 127.0.0.1, port: {redis_port}}}}}
    - name: request-transformer
      config: {{add: {{headers: ["x-soak-config:{marker}"]}}}}
  - name: limited
    paths: [/limited]
    plugins:
    - name: rate-limiting
      config: {{second: 5, policy: local}}
plugins:
- name: prometheus
  config: {{status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true}}
"""


class Sink(http.server.BaseHTTPRequestHandler):
    received = 0

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        Sink.received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.by = {}
        self.failures = []

    def add(self, key, failure=None):
        with self.lock:
            self.by[key] = self.by.get(key, 0) + 1
            if failure and len(self.failures) < 20:
                self.failures.append(failure)


def client_loop(port, counts, stop):
    rnd = random.Random()
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for _ in range(rnd.randint(1, 30)):
                kind = rnd.random()
                if kind < 0.8:
                    path, headers = "/api/x", {"apikey": "soak-key"}
                elif kind < 0.9:
                    path, headers = "/api/x", {}
                else:
                    path, headers = "/limited/x", {}
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                if r.status >= 500:
                    counts.add("5xx", f"{time.strftime('%H:%M:%S')} {path} {r.status}")
                else:
                    counts.add(str(r.status))
                if stop.is_set():
                    break
        except (OSError, http.client.HTTPException) as e:
            counts.add("error", f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")
        finally:
            conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server not found")
    work = tempfile.mkdtemp(prefix="soak-")
    procs = []

    def start(argv, **kw):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "log"), "a"), **kw)
        procs.append(p)
        return p

    redis_port = free_port()
    redis_argv = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = start(redis_argv)
    ups = [free_port(), free_port()]
    for p in ups:
        start([os.path.join(args.bin, "echo-upstream"), "--listen", f"127.0.0.1:{p}"])
    for p in [redis_port, *ups]:
        if not wait_port(p):
            sys.exit(f"port {p} did not open")
    cfg_path = os.path.join(work, "kong.yml")
    with open(cfg_path, "w") as f:
        f.write(config(ups, redis_port, 0))
    port, status = free_port(), free_port()
    gw = start([os.path.join(args.bin, "gateway"), "run", "--config", cfg_path,
                "--proxy-listen", f"127.0.0.1:{port}", "--status-listen", f"127.0.0.1:{status}",
                "--workers", "2", "--access-log", "off"], env=dict(os.environ, GATEWAY_LOG="warn"))
    if not wait_port(port) or not wait_port(status):
        sys.exit("gateway did not start")
    sink_port = free_port()
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", sink_port), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    prom = os.path.join(work, "prometheus.yml")
    with open(prom, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: gateway
    static_configs:
      - targets: ['127.0.0.1:{status}']
remote_write:
  - url: http://127.0.0.1:{sink_port}/api/v1/write
""")
    agent_port = free_port()
    agent_env = dict(os.environ, METRICS_AGENT_LISTEN=f"127.0.0.1:{agent_port}", RUST_LOG="warn")
    agent_env.pop("ECS_CONTAINER_METADATA_URI_V4", None)
    agent = start([os.path.join(args.bin, "metrics-agent"), "run", "--config", prom,
                   "--wal-dir", os.path.join(work, "wal")], env=agent_env)
    if not wait_port(agent_port):
        sys.exit("metrics-agent did not start")

    counts = Counts()
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(port, counts, stop), daemon=True)
               for _ in range(args.clients)]
    for t in threads:
        t.start()
    duration = args.minutes * 60
    t0 = time.time()
    samples = []  # (t, gw rss, gw fds, agent rss, agent fds)
    reloads, reload_failures = 0, 0
    next_reload, next_sample = t0 + 60, t0
    redis_down_at = t0 + duration / 2
    redis_restarted = False
    try:
        while time.time() - t0 < duration:
            now = time.time()
            if now >= next_sample:
                samples.append((now - t0, rss_mib(gw.pid), fds(gw.pid), rss_mib(agent.pid), fds(agent.pid)))
                s = samples[-1]
                print(f"{s[0]:7.0f}s gateway {s[1]:6.1f} MiB {s[2]:4d} fds | agent {s[3]:6.1f} MiB {s[4]:4d} fds | "
                      f"{dict(sorted(counts.by.items()))} | remote_write posts {Sink.received}", flush=True)
                next_sample += 10
            if now >= next_reload:
                reloads += 1
                body = config(ups, redis_port, reloads).encode()
                try:
                    c = http.client.HTTPConnection("127.0.0.1", status, timeout=30)
                    c.request("POST", "/config", body=body, headers={"content-type": "application/yaml"})
                    r = c.getresponse()
                    r.read()
                    if not 200 <= r.status < 300:
                        reload_failures += 1
                        print(f"reload {reloads}: {r.status}", flush=True)
                    c.close()
                except OSError as e:
                    reload_failures += 1
                    print(f"reload {reloads}: {e}", flush=True)
                next_reload += 60
            if not redis_restarted and now >= redis_down_at:
                print("redis: stopped for 10 s", flush=True)
                redis.send_signal(signal.SIGKILL)
                redis.wait()
                time.sleep(10)
                redis = start(redis_argv)
                wait_port(redis_port)
                print("redis: back", flush=True)
                redis_restarted = True
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        sink.shutdown()
    half = [s for s in samples if s[0] >= duration / 2 - 1] or samples
    result = {
        "minutes": args.minutes,
        "clients": args.clients,
        "requests": dict(sorted(counts.by.items())),
        "failures": counts.by.get("5xx", 0) + counts.by.get("error", 0),
        "failure_examples": counts.failures,
        "reloads": reloads,
        "reload_failures": reload_failures,
        "remote_write_posts": Sink.received,
        "gateway_rss_mib": [round(samples[0][1], 1), round(samples[-1][1], 1)],
        "gateway_rss_slope_mib_per_hour_second_half": round(slope_per_hour([(s[0], s[1]) for s in half]), 2),
        "gateway_fds": [samples[0][2], samples[-1][2]],
        "gateway_fd_slope_per_hour_second_half": round(slope_per_hour([(s[0], s[2]) for s in half]), 2),
        "agent_rss_mib": [round(samples[0][3], 1), round(samples[-1][3], 1)],
        "agent_rss_slope_mib_per_hour_second_half": round(slope_per_hour([(s[0], s[3]) for s in half]), 2),
        "agent_fds": [samples[0][4], samples[-1][4]],
        "agent_fd_slope_per_hour_second_half": round(slope_per_hour([(s[0], s[4]) for s in half]), 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    if result["failures"] or reload_failures:
        sys.exit("soak: failures (see above)")


if __name__ == "__main__":
    main()
