#!/usr/bin/env python3
"""End-to-end test of the newcomer's path: the README's run command (scripts/dev-up.sh).

Starts `bash scripts/dev-up.sh` in its own process group on free ports, waits for its
"ready" line, takes a token it printed and calls the gateway with it, checks what the
running gateway build enforces (JWT, tier rate limits, CORS: plugins that are not
implemented yet are reported by dev-up and their checks are skipped), then presses
Ctrl-C (SIGINT to the process group) and checks that every process it started is gone
and every port is closed.

    python3 tests/e2e/devstack_test.py

Environment: DEVSTACK_TEST_PROFILE (cargo profile dev-up builds, default `debug` so it
reuses the test build; the README's default is `release`), DEVSTACK_TEST_TIMEOUT
(seconds for build + start, default 1200), DEVSTACK_TEST_SKIP_BUILD=1 (use the binaries
`cargo test` just built instead of `cargo build`, which would rebuild some crates without
the dev-dependencies' features), CARGO_TARGET_DIR (passed through).
Prints `N passed, M failed` last; exits non-zero on any failure.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = "127.0.0.1"
results = []  # (name, ok, detail)


def check(name, ok, detail=""):
    results.append((name, bool(ok), detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail else ''}", flush=True)
    return ok


def skip(name, why):
    print(f"skip {name}: {why}", flush=True)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def http(method, url, headers=None, timeout=5):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def hdr(headers, name):
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def main():
    profile = os.environ.get("DEVSTACK_TEST_PROFILE", "debug")
    deadline_s = int(os.environ.get("DEVSTACK_TEST_TIMEOUT", "1200"))
    gw, st, up1, up2, agent, redis, prom = free_ports(7)
    state = tempfile.mkdtemp(prefix="devstack-test-")
    env = dict(os.environ)
    env.update(
        DEV_PROFILE=profile,
        DEV_HOST=HOST,
        DEV_GATEWAY_PORT=str(gw),
        DEV_STATUS_PORT=str(st),
        DEV_UPSTREAM_PORTS=f"{up1} {up2}",
        DEV_AGENT_PORT=str(agent),
        DEV_REDIS_PORT=str(redis),
        DEV_PROMETHEUS_PORT=str(prom),
        DEV_STATE_DIR=state,
    )
    if os.environ.get("DEVSTACK_TEST_SKIP_BUILD") == "1":
        env["DEV_SKIP_BUILD"] = "1"
    print(f"devstack_test: starting scripts/dev-up.sh (profile {profile}, state {state})", flush=True)
    proc = subprocess.Popen(
        ["bash", "scripts/dev-up.sh"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # own process group: SIGINT to it is a Ctrl-C
    )
    # If this test is stopped (a CI timeout, Ctrl-C), stop dev-up's process group with it.
    def on_signal(signum, _frame):
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lines = []
    ready = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write("    | " + line)
            sys.stdout.flush()
            if "dev-up: ready" in line:
                ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    start = time.monotonic()
    while not ready.is_set() and proc.poll() is None and time.monotonic() - start < deadline_s:
        ready.wait(1)
    if not check("dev-up prints ready", ready.is_set(),
                 f"exit code {proc.poll()}" if proc.poll() is not None else ""):
        stop(proc, state, [])
        return finish()
    out = "".join(lines)

    pids = []
    with open(os.path.join(state, "pids")) as f:
        for line in f:
            pid, name = line.split(None, 1)
            pids.append((int(pid), name.strip()))
    names = [n for _, n in pids]
    check("gateway and both upstreams started", {"gateway", "upstream-1", "upstream-2"} <= set(names), ", ".join(names))

    m = re.search(r"^\s*free\s+\(100/min\)\s+(\S+)\s*$", out, re.M)
    check("a free-tier token is printed", m)
    tokens = {}
    for tier in ("free", "pro", "enterprise"):
        t = re.search(rf"^\s*{tier}\s+\(\d+/min\)\s+(\S+)\s*$", out, re.M)
        if t:
            tokens[tier] = t.group(1)
    check("a token for each tier is printed", len(tokens) == 3, ", ".join(tokens))
    n = re.search(r"NOTE: not enforced by this gateway build yet: (.*)$", out, re.M)
    not_enforced = set(n.group(1).split()) if n else set()
    if not_enforced:
        print(f"devstack_test: plugins not implemented by this build: {sorted(not_enforced)}", flush=True)
    check("gateway URL is printed", f"http://{HOST}:{gw}" in out)
    if f"http://{HOST}:{prom}" in out:
        code, _, _ = http("GET", f"http://{HOST}:{prom}/-/ready")
        check("printed Prometheus URL answers /-/ready", code == 200, str(code))
    else:
        skip("Prometheus", "not installed on this machine (dev-up says so)")
    if f"http://{HOST}:{agent}" in out:
        code, _, _ = http("GET", f"http://{HOST}:{agent}/ready")
        check("printed metrics-agent URL answers /ready", code == 200, str(code))
    else:
        skip("metrics-agent", "not started (not built, or failed its config check)")

    base = f"http://{HOST}:{gw}"
    free = tokens.get("free", "")
    code, h, body = http("GET", f"{base}/api/hello", {"Authorization": f"Bearer {free}"})
    ok = check("GET /api/hello with the printed free token: 200", code == 200, f"{code} {body[:200]!r}")
    if ok:
        echo = json.loads(body)
        check("the upstream sees the stripped path /hello", echo.get("path") == "/hello", echo.get("path", ""))
        check("correlation id echoed to the client", hdr(h, "X-Correlation-ID"))
    seen = set()
    for _ in range(6):
        code, h, _ = http("GET", f"{base}/api/lb", {"Authorization": f"Bearer {tokens.get('pro', '')}"})
        if hdr(h, "X-Upstream"):
            seen.add(hdr(h, "X-Upstream"))
    check("requests are balanced over both upstream instances", seen == {"auth-1", "auth-2"}, str(sorted(seen)))
    code, _, body = http("GET", f"{base}/healthz")
    check("public GET /healthz reaches the upstream's /health", code == 200, f"{code} {body[:80]!r}")
    code, _, _ = http("POST", f"{base}/auth/login")
    check("public POST /auth/login needs no token", code == 200, str(code))

    if "jwt" in not_enforced:
        skip("JWT checks", "the jwt plugin is not implemented by this build yet")
    else:
        code, _, _ = http("GET", f"{base}/api/hello")
        check("GET /api without a token: 401", code == 401, str(code))
        bad = free[:-4] + ("AAAA" if not free.endswith("AAAA") else "BBBB")
        code, _, _ = http("GET", f"{base}/api/hello", {"Authorization": f"Bearer {bad}"})
        check("GET /api with a bad signature: 401", code == 401, str(code))
        code, _, body = http("GET", f"{base}/api/hello", {"Authorization": f"Bearer {tokens.get('pro', '')}"})
        if code == 200:
            seen_h = json.loads(body).get("headers", {})
            check("upstream gets X-User-ID / X-User-Tier from the claims",
                  seen_h.get("x-user-id") == "dev-pro-user" and seen_h.get("x-user-tier") == "pro",
                  f"{seen_h.get('x-user-id')} {seen_h.get('x-user-tier')}")
        else:
            check("pro token accepted", False, str(code))

    if "rate-limiting" in not_enforced:
        skip("tier limit", "the rate-limiting plugin is not implemented by this build yet")
    else:
        # free is 100/min: within 101 requests of this minute (some already spent above)
        # one must be refused with 429, while pro keeps going.
        got429 = None
        for i in range(101):
            code, h, _ = http("GET", f"{base}/api/limit", {"Authorization": f"Bearer {free}"})
            if code == 429:
                got429 = (i, h)
                break
        check("free tier gets 429 at its 100/min limit", got429, "no 429 in 101 requests" if not got429 else f"after {got429[0]} requests")
        code, _, _ = http("GET", f"{base}/api/limit", {"Authorization": f"Bearer {tokens.get('pro', '')}"})
        check("pro tier is not limited by free's counter", code == 200, str(code))

    if "cors" in not_enforced:
        skip("CORS", "the cors plugin is not implemented by this build yet")
    else:
        code, h, _ = http("OPTIONS", f"{base}/api/hello", {
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        })
        check("CORS preflight from the local frontend origin is allowed",
              hdr(h, "Access-Control-Allow-Origin") == "http://localhost:5173", f"{code} {hdr(h, 'Access-Control-Allow-Origin')}")

    stop(proc, state, pids, ports=[gw, st, up1, up2, agent, redis, prom])
    reader.join(timeout=5)
    return finish()


def stop(proc, state, pids, ports=()):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    try:
        code = proc.wait(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        check("dev-up stops within 45s of Ctrl-C", False)
        return
    if not pids:
        return
    check("dev-up exits after Ctrl-C", code in (0, 130), f"exit code {code}")
    alive = []
    for pid, name in pids:
        try:
            os.kill(pid, 0)
            alive.append(f"{name}({pid})")
        except ProcessLookupError:
            pass
    check("every process dev-up started is gone", not alive, ", ".join(alive))
    still = [p for p in ports if port_open(p)]
    check("every port is closed", not still, str(still))


def finish():
    failed = sum(1 for _, ok, _ in results if not ok)
    passed = len(results) - failed
    print(f"devstack: {passed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
