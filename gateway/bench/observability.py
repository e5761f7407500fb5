#!/usr/bin/env python3
"""Cost of metrics and tracing on the policy path, measured in one run.

One gateway process (pinned to core 1, one worker) serves the same upstream on four
routes, all with the policy path (JWT HS256 + CORS + load balancing):
  /base      policy path only
  /control   the same as /base: the spread between the two is the noise floor
  /metrics   + prometheus plugin (status, latency, bandwidth, per-consumer series)
  /otel1     + prometheus + opentelemetry sampling 1%
  /otel100   + prometheus + opentelemetry sampling 100%
Spans go by OTLP/HTTP to a sink on core 0 that answers 200. wrk (core 0) runs each route
in interleaved rounds (shuffled order in each round); the table reports medians and
ratios to /base.

Usage (repository root, after `cargo build --release -p gateway --bins`):
    python3 gateway/bench/observability.py --bin "$CARGO_TARGET_DIR/release"
"""

import argparse
import http.server
import os
import random
import statistics
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rate_limiting import Procs, cpu_seconds, free_port, start_gateway, wait_port, wrk  # noqa: E402

SECRET = "bench-peers-hs256-test-secret-0123456789abcdef"
TOKEN_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "bench-peers", "token.txt")


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def config(up_a, up_b, sink):
    policy = """    - name: jwt
      config: {claims_to_verify: [exp]}
    - name: cors
      config: {origins: [https://app.example.com, https://admin.example.com]}"""
    prom = """    - name: prometheus
      config: {per_consumer: true, status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true}"""

    def otel(rate):
        return f"""    - name: opentelemetry
      config: {{traces_endpoint: "http://127.0.0.1:{sink}/v1/traces", sampling_rate: {rate}}}"""

    routes = [("base", policy), ("control", policy), ("metrics", policy + "\n" + prom),
              ("otel1", policy + "\n" + prom + "\n" + otel(0.01)),
              ("otel100", policy + "\n" + prom + "\n" + otel(1.0))]
    out = f"""_format_version: "3.0"
consumers:
- username: bench
  jwt_secrets:
  - key: bench-peers
    secret: {SECRET}
upstreams:
- name: echo
  targets: [{{target: "127.0.0.1:{up_a}"}}, {{target: "127.0.0.1:{up_b}"}}]
services:
- name: echo
  url: http://echo
  routes:
"""
    for name, plugins in routes:
        out += f"  - name: {name}\n    paths: [/{name}]\n    plugins:\n{plugins}\n"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--duration", default="3s")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    token = open(TOKEN_FILE).read().strip()
    procs = Procs()
    sink_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", sink_port), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as work:
            ups = [free_port(), free_port()]
            for p in ups:
                procs.start([os.path.join(args.bin, "echo-upstream"), "--listen", f"127.0.0.1:{p}"], cpu=0)
                wait_port(p)
            port, _status = start_gateway(procs, args.bin, config(ups[0], ups[1], sink_port), work, cpu=1, workers=1)
            gw_pid = procs.procs[-1].pid
            headers = [f"Authorization: Bearer {token}", "Origin: https://app.example.com"]
            names = ["base", "control", "metrics", "otel1", "otel100"]
            results = {n: [] for n in names}
            for n in names:  # warm-up
                wrk(f"http://127.0.0.1:{port}/{n}/echo", "2s", args.conns, headers)
            rng = random.Random(args.seed)
            for r in range(args.rounds):
                order = names[:]
                rng.shuffle(order)  # no variant always runs first or last in a round
                for n in order:
                    c0 = cpu_seconds(gw_pid)
                    res = wrk(f"http://127.0.0.1:{port}/{n}/echo", args.duration, args.conns, headers)
                    res["cpu_us_per_req"] = (cpu_seconds(gw_pid) - c0) * 1e6 / max(res["requests"], 1)
                    results[n].append(res)
                    print(f"round {r + 1} {n}: {res['rps']:.0f} req/s p99 {res['p99_ms']:.2f} ms "
                          f"cpu {res['cpu_us_per_req']:.1f} us/req non2xx {res['non2xx']}", flush=True)
            base_rps = statistics.median(x["rps"] for x in results["base"])
            base_cpu = statistics.median(x["cpu_us_per_req"] for x in results["base"])
            print("\nvariant   req/s(median)  vs base  paired  p99 ms  cpu us/req  cpu vs base  non2xx")
            for n in names:
                rps = statistics.median(x["rps"] for x in results[n])
                # Each round's ratio to the same round's /base, then the median: slow drifts
                # of the machine cancel out.
                paired = statistics.median(x["rps"] / b["rps"] for x, b in zip(results[n], results["base"]))
                p99 = statistics.median(x["p99_ms"] for x in results[n])
                cpu = statistics.median(x["cpu_us_per_req"] for x in results[n])
                bad = sum(x["non2xx"] for x in results[n])
                print(f"{n:9} {rps:13.0f}  {rps / base_rps:7.3f}  {paired:6.3f}  {p99:6.2f}  {cpu:10.1f}"
                      f"  {cpu / base_cpu:11.3f}  {bad}")
    finally:
        procs.stop()
        server.shutdown()


if __name__ == "__main__":
    main()
