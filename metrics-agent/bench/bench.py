#!/usr/bin/env python3
"""metrics-agent vs Prometheus agent mode: same targets, same receiver, same run.

Phase 1 (throughput): N synthetic targets x S series at a 1 s interval, scraped first by
metrics-agent and then by `prometheus --enable-feature=agent`, each alone for DURATION
seconds, shipping to the same Prometheus remote-write receiver. Measured per agent: CPU
seconds (utime+stime from /proc/PID/stat) per million samples delivered, and RSS
(VmRSS from /proc/PID/status, sampled every second).

Phase 2 (restart): both agents scrape a few targets into a second receiver; the receiver is
stopped, both agents are restarted (SIGTERM, start again on the same WAL), then the
receiver comes back. The largest gap in each agent's `up` series over the window is
reported.

Only the Python standard library is used. Everything listens on 127.0.0.x.

    cargo build --release -p metrics-agent
    python3 metrics-agent/bench/bench.py --agent-bin $CARGO_TARGET_DIR/release/metrics-agent

With --receiver sink, phase 1 ships to a counting sink instead of a Prometheus (at 1M series
a Prometheus on the same cores cannot keep up and measures itself). Build it first:

    cargo build --release -p metrics-agent --example rw_sink
    python3 metrics-agent/bench/bench.py --agent-bin $CARGO_TARGET_DIR/release/metrics-agent \
        --receiver sink --series 20000 --duration 30 --skip-restart
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if http_get(url, 2)[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {url}")


# ---------------------------------------------------------------- synthetic targets


class Targets:
    """One HTTP server answering on 127.0.0.1..127.0.0.N (same port): N distinct targets.
    Every series carries the current second as its value, so bodies change each second; the
    full HTTP response is rendered once per second and shared by all targets (the scraper
    adds the `instance` label). A thread per keep-alive connection does only recv/sendall,
    so the target side stays cheap next to the agents being measured."""

    def __init__(self, n, series):
        self.n, self.series = n, series
        self.port = free_port()
        self.lock = threading.Lock()
        self.cached = (None, b"")
        self.served = 0  # scrapes answered (for samples-scraped accounting)
        self.prefixes = [
            f'bench_metric{{idx="{i}",handler="/api/v{i % 7}/items",method="{("GET", "POST", "PUT")[i % 3]}"}} '
            for i in range(series)
        ]
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", self.port))
        self.sock.listen(512)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def response(self):
        sec = int(time.time())
        with self.lock:
            if self.cached[0] != sec:
                v = f"{sec}\n"
                body = ("# TYPE bench_metric gauge\n" + v.join(self.prefixes) + v).encode()
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                self.cached = (sec, head + body)
            return self.cached[1]

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                _, buf = buf.split(b"\r\n\r\n", 1)
                conn.sendall(self.response())
                with self.lock:
                    self.served += 1
        except OSError:
            pass
        finally:
            conn.close()

    def addresses(self, n=None):
        return [f"127.0.0.{i + 1}:{self.port}" for i in range(n or self.n)]

    def close(self):
        self.stopped = True
        self.sock.close()


# ---------------------------------------------------------------- processes


class Receiver:
    def __init__(self, prom_bin, workdir):
        self.bin, self.dir = prom_bin, workdir
        self.port = free_port()
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "receiver.yml"), "w") as f:
            f.write("global: {scrape_interval: 1m}\nstorage:\n  tsdb:\n    out_of_order_time_window: 2h\n")
        self.proc = None
        self.start()

    def start(self):
        log = open(os.path.join(self.dir, "receiver.log"), "a")
        self.proc = subprocess.Popen(
            [
                self.bin,
                f"--config.file={self.dir}/receiver.yml",
                f"--storage.tsdb.path={self.dir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-remote-write-receiver",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        wait_http(f"http://127.0.0.1:{self.port}/-/ready")

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None

    def url(self):
        return f"http://127.0.0.1:{self.port}/api/v1/write"

    def query(self, q, at=None):
        params = {"query": q}
        if at is not None:
            params["time"] = f"{at:.3f}"
        _, body = http_get(f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(params), 120)
        return json.loads(body)["data"]["result"]


class Sink:
    """The counting remote-write sink (`--example rw_sink`): counts samples per agent and
    timestamp second without storing them, so that the receiver is not the bottleneck."""

    def __init__(self, sink_bin, workdir):
        self.port = free_port()
        os.makedirs(workdir, exist_ok=True)
        log = open(os.path.join(workdir, "sink.log"), "a")
        self.proc = subprocess.Popen([sink_bin, "--listen", f"127.0.0.1:{self.port}"], stdout=subprocess.DEVNULL, stderr=log)
        wait_http(f"http://127.0.0.1:{self.port}/-/ready")

    def url(self):
        return f"http://127.0.0.1:{self.port}/api/v1/write"

    def delivered(self, agent, t_end, window):
        """Samples of `agent` with timestamps in the `window` seconds ending at `t_end`."""
        last = int(t_end)
        q = urllib.parse.urlencode({"agent": agent, "from": last - window + 1, "to": last})
        _, body = http_get(f"http://127.0.0.1:{self.port}/count?{q}")
        return float(json.loads(body)["samples"])

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def write_config(path, agent_label, targets, remote_url):
    lines = [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        f"  external_labels: {{agent: {agent_label}}}",
        "scrape_configs:",
        "  - job_name: bench",
        "    static_configs:",
        "      - targets: [" + ", ".join(f"'{t}'" for t in targets) + "]",
        "remote_write:",
        f"  - url: {remote_url}",
        "    metadata_config: {send: false}",
        "    queue_config: {max_shards: 4, max_samples_per_send: 2000}",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class AgentProc:
    def __init__(self, kind, cfg, workdir, agent_bin, prom_bin):
        self.kind, self.cfg, self.dir = kind, cfg, workdir
        self.agent_bin, self.prom_bin = agent_bin, prom_bin
        self.port = free_port()
        os.makedirs(workdir, exist_ok=True)
        self.proc = None
        self.start()

    def start(self):
        log = open(os.path.join(self.dir, "agent.log"), "a")
        if self.kind == "metrics-agent":
            cmd = [self.agent_bin, "run", "--config", self.cfg, "--wal-dir", os.path.join(self.dir, "wal")]
            env = dict(os.environ, METRICS_AGENT_LISTEN=f"127.0.0.1:{self.port}", RUST_LOG="warn")
            env.pop("ECS_CONTAINER_METADATA_URI_V4", None)
            ready = f"http://127.0.0.1:{self.port}/ready"
        else:
            cmd = [
                self.prom_bin,
                "--enable-feature=agent",
                f"--config.file={self.cfg}",
                f"--storage.agent.path={os.path.join(self.dir, 'agent-data')}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
            env = dict(os.environ)
            ready = f"http://127.0.0.1:{self.port}/-/ready"
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        wait_http(ready)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[11], fields[12] are utime, stime (14th, 15th overall)
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


# ---------------------------------------------------------------- phases


def throughput(kind, args, targets, receiver, root):
    d = os.path.join(root, kind)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "prometheus.yml")
    write_config(cfg, kind, targets.addresses(), receiver.url())
    agent = AgentProc(kind, cfg, d, args.agent_bin, args.prometheus)
    time.sleep(args.warmup)
    t0, c0, s0 = time.time(), agent.cpu_seconds(), targets.served
    rss = []
    while time.time() - t0 < args.duration:
        time.sleep(1)
        rss.append(agent.rss_bytes())
    t1, c1, s1 = time.time(), agent.cpu_seconds(), targets.served
    # Let the queue drain, then count what the receiver got inside [t0, t1].
    time.sleep(args.drain)
    agent.stop()
    window = int(t1 - t0)
    if isinstance(receiver, Sink):
        delivered = receiver.delivered(kind, t1, window)
    else:
        res = receiver.query(f'sum(count_over_time(bench_metric{{agent="{kind}"}}[{window}s]))', at=t1)
        delivered = float(res[0]["value"][1]) if res else 0.0
    expected = args.targets * args.series * window / 1.0
    scraped = (s1 - s0) * args.series
    cpu = c1 - c0
    return {
        "agent": kind,
        "window_s": window,
        "cpu_s": round(cpu, 2),
        "samples_scraped": scraped,
        "samples_delivered": int(delivered),
        "samples_expected": int(expected),
        "delivered_ratio": round(delivered / scraped, 3) if scraped else None,
        "cpu_s_per_million": round(cpu / (scraped / 1e6), 3) if scraped else None,
        "cpu_s_per_million_delivered": round(cpu / (delivered / 1e6), 3) if delivered else None,
        "rss_median_mib": round(statistics.median(rss) / 2**20, 1),
        "rss_max_mib": round(max(rss) / 2**20, 1),
    }


def restart_gap(args, targets, prom_bin, root):
    d = os.path.join(root, "restart")
    receiver = Receiver(prom_bin, os.path.join(d, "receiver"))
    agents = []
    for kind in ("metrics-agent", "prometheus-agent"):
        ad = os.path.join(d, kind)
        os.makedirs(ad, exist_ok=True)
        cfg = os.path.join(ad, "prometheus.yml")
        write_config(cfg, kind, targets.addresses(args.restart_targets), receiver.url())
        agents.append(AgentProc(kind, cfg, ad, args.agent_bin, args.prometheus))
    time.sleep(10)
    start = time.time()
    receiver.stop()
    time.sleep(args.outage / 2)
    for a in agents:  # graceful restart, e.g. a deploy
        a.stop()
        a.start()
    time.sleep(args.outage / 2)
    receiver.start()
    time.sleep(args.drain + 10)
    end = time.time() - 5
    out = {}
    for a in agents:
        sel = f'up{{agent="{a.kind}",instance="127.0.0.1:{targets.port}"}}'
        res = receiver.query(f"{sel}[{int(time.time() - start) + 5}s]")
        ts = sorted(float(v[0]) for v in res[0]["values"]) if res else []
        ts = [t for t in ts if start <= t <= end]
        edges = [start] + ts + [end]  # a hole at either end of the window counts too
        gaps = [b - a for a, b in zip(edges, edges[1:])]
        out[a.kind] = {
            "samples_in_window": len(ts),
            "expected_about": int(end - start),
            "largest_gap_s": round(max(gaps), 1) if gaps else None,
        }
        a.stop()
    receiver.stop()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent-bin", required=True)
    p.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    p.add_argument("--targets", type=int, default=50)
    p.add_argument("--series", type=int, default=2000)
    p.add_argument("--duration", type=int, default=60, help="measured seconds per agent")
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--drain", type=int, default=20)
    p.add_argument("--rounds", type=int, default=1, help="repeat phase 1 and report medians")
    p.add_argument("--restart-targets", type=int, default=5)
    p.add_argument("--outage", type=int, default=20)
    p.add_argument(
        "--receiver",
        choices=("prometheus", "sink"),
        default="prometheus",
        help="phase 1's remote-write receiver: a Prometheus, or the counting sink (needed at 1M series)",
    )
    p.add_argument("--sink-bin", default=None, help="rw_sink binary (default: examples/rw_sink beside --agent-bin)")
    p.add_argument("--skip-restart", action="store_true", help="run phase 1 only")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, help="write results here too")
    args = p.parse_args()

    root = args.workdir or tempfile.mkdtemp(prefix="ma-bench-")
    targets = Targets(args.targets, args.series)
    results = {"config": vars(args), "throughput": [], "restart": None}
    try:
        if args.receiver == "sink":
            sink_bin = args.sink_bin or os.path.join(os.path.dirname(os.path.abspath(args.agent_bin)), "examples", "rw_sink")
            receiver = Sink(sink_bin, os.path.join(root, "sink"))
        else:
            receiver = Receiver(args.prometheus, os.path.join(root, "receiver"))
        for r in range(args.rounds):
            for kind in ("metrics-agent", "prometheus-agent"):
                rc0 = receiver.cpu_seconds() if isinstance(receiver, Sink) else None
                res = throughput(kind, args, targets, receiver, os.path.join(root, f"round{r}"))
                if rc0 is not None:
                    res["sink_cpu_s"] = round(receiver.cpu_seconds() - rc0, 2)
                res["round"] = r
                print(json.dumps(res), flush=True)
                results["throughput"].append(res)
        receiver.stop()
        if not args.skip_restart:
            results["restart"] = restart_gap(args, targets, args.prometheus, root)
            print(json.dumps({"restart": results["restart"]}), flush=True)
    finally:
        targets.close()

    def med(kind, key):
        vals = [t[key] for t in results["throughput"] if t["agent"] == kind and t[key] is not None]
        return statistics.median(vals) if vals else None

    summary = {}
    for key in ("cpu_s_per_million", "cpu_s_per_million_delivered", "rss_median_mib", "rss_max_mib"):
        a, b = med("metrics-agent", key), med("prometheus-agent", key)
        summary[key] = {"metrics-agent": a, "prometheus-agent": b, "ratio": round(a / b, 3) if a and b else None}
    results["summary"] = summary
    print(json.dumps({"summary": summary}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
