#!/usr/bin/env python3
"""Production-parity test (issue 15): staging's task definition, run on one machine.

`provisioner render staging` prints the gateway task definition `up` registers (the real
rendering code). This test runs it as local processes: two gateway "tasks", each with its
metrics-agent sidecar, with the containers' environment (image ENV + task environment +
the values ECS injects for the secrets), behind HAProxy standing in for the ALB (appends
X-Forwarded-For, sets X-Forwarded-Proto/Port, health-checks /status/ready on the status
port, blue and green target groups). Around them: a 3-master Redis Cluster the gateways
reach through ONE address (they discover cluster mode), PostgreSQL, Prometheus as the AMP
stand-in (remote-write receiver, the repo's alert rules) and Alertmanager (the repo's
alertmanager.yml through its entrypoint.sh) paging a PagerDuty Events API v2 stub.

Rewritten for one machine, and nothing else (docs/provisioner.md, "Production-parity test"):
listen addresses and endpoints -> 127.0.0.1 ports; GATEWAY_TRUSTED_IPS gets the local
load balancer's address (127.0.0.1/32) next to the VPC CIDR; REDIS_SSL=false, rediss:// and
sslmode=require as redis:// and sslmode=disable (no TLS in
the local Redis); the upstream's port in GATEWAY_CONFIG_STRING (its Cloud Map NAME is
kept and resolved through a hosts file bind-mounted over /etc/hosts in the gateways'
own mount namespace, which is how proof 3 changes its address); ecs.yml's fixed scrape
ports; ECS's metadata and credentials endpoints -> a local stub.

Proves: (1) the free tier is exact across both tasks; (2) the per-IP login limit is keyed
by the client address HAProxy saw; (3) an upstream address change is followed without a
restart; (4) PostgreSQL and Redis series from the agents are in Prometheus; (5) a firing
alert (PostgresDown, PostgreSQL stopped) reaches the PagerDuty stub; (6) a configuration
change rolled out blue-green, as `provisioner deploy` does it on AWS, with zero failed
requests under load.

    python3 tests/e2e/parity_test.py

Environment: PARITY_TEST_PROFILE (cargo profile of the binaries, default `debug`, the one
`cargo test` builds), CARGO_TARGET_DIR, PARITY_TEST_KEEP=1 (keep the state directory),
PARITY_TEST_IMAGES=TAG (run each task's containers with podman from the images
scripts/build-images.sh tagged TAG, e.g. `local`, instead of the binaries; as root).
Needs: haproxy, redis-server + redis-cli, PostgreSQL, prometheus, prometheus-alertmanager,
unshare/setpriv (.ci/deps/parity.sh installs them; .ci/deps/images.sh the image tools).
Prints `N passed, M failed` last.
"""
import base64
import csv
import hashlib
import hmac
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import http.client as httpclient
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = "127.0.0.1"
UPSTREAM_NAME = "auth.edge-suite-staging.local"  # provisioner/envs/staging.toml
results = []  # (name, ok, detail)
procs = []  # (name, Popen)


def check(name, ok, detail=""):
    results.append((name, bool(ok), detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail else ''}", flush=True)
    return ok


def log(msg):
    print(f"parity: {msg}", flush=True)


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


def cluster_ports(n):
    """Free ports for Redis Cluster nodes: at most 55535, with port+10000 (the bus) free."""
    import random

    def free(p):
        with socket.socket() as s:
            try:
                s.bind((HOST, p))
                return True
            except OSError:
                return False

    out = []
    while len(out) < n:
        p = random.randint(20000, 45000)
        if p not in out and p + 10000 not in out and free(p) and free(p + 10000):
            out.append(p)
    return out


def port_open(port, host=HOST):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for(what, fn, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout}s (last: {last!r})")


class SourceHandler(urllib.request.HTTPHandler):
    """Plain HTTP from a chosen local address (127.0.0.x: distinct clients for HAProxy)."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def http_open(self, req):
        source = self.source

        class Conn(httpclient.HTTPConnection):
            def __init__(self, *a, **kw):
                kw["source_address"] = (source, 0)
                super().__init__(*a, **kw)

        return self.do_open(Conn, req)


def http(method, url, headers=None, body=None, timeout=5, source=None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    opener = urllib.request.build_opener(SourceHandler(source)) if source else urllib.request.build_opener()
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def start(name, argv, env, logdir, cwd=None):
    out = open(os.path.join(logdir, f"{name}.log"), "ab")
    p = subprocess.Popen(argv, env=env, cwd=cwd or ROOT, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)
    procs.append((name, p))
    return p


def signal_proc(p, sig):
    """To the process group, and to the pid the hosts wrapper wrote (under `sudo`, the
    gateway runs in a session of its own but as our user again)."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    pidfile = getattr(p, "pidfile", None)
    if pidfile and os.path.exists(pidfile):
        try:
            os.kill(int(open(pidfile).read().strip() or 0), sig)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def stop(p, sig=signal.SIGTERM, timeout=20):
    if p.poll() is not None:
        return p.returncode
    signal_proc(p, sig)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_proc(p, signal.SIGKILL)
        try:
            return p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None


def stop_all():
    for _, p in reversed(procs):
        stop(p, timeout=10)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(secret, iss, sub, tier, ttl=3600):
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(
        json.dumps({"iss": iss, "sub": sub, "tier": tier, "iat": now, "exp": now + ttl}).encode())
    sig = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + b64(sig)


def find_binary(name, candidates):
    for c in candidates:
        p = shutil.which(c) or (c if os.path.isabs(c) and os.access(c, os.X_OK) else None)
        if p:
            return p
    raise FileNotFoundError(f"{name} not found (install: bash .ci/deps/parity.sh)")


def pg_bin(name):
    import glob

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else find_binary(name, [name])


def image_env(dockerfile, stage):
    """The ENV of one stage of a Dockerfile (what the container starts with)."""
    env, in_stage, cont = {}, False, ""
    for raw in open(dockerfile):
        line = raw.rstrip("\n")
        if re.match(r"^FROM\s", line, re.I):
            in_stage = re.search(rf"\sAS\s+{re.escape(stage)}\s*$", line, re.I) is not None
            continue
        if not in_stage:
            continue
        if cont or re.match(r"^ENV\s", line):
            text = (cont + " " + line.strip()) if cont else line.strip()[4:]
            if text.endswith("\\"):
                cont = text[:-1]
                continue
            cont = ""
            for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)=("([^"]*)"|\S*)', text):
                env[m.group(1)] = m.group(3) if m.group(3) is not None else m.group(2)
    return env


class Stub(BaseHTTPRequestHandler):
    """PagerDuty Events API v2, ECS task metadata v4 and container credentials."""

    events = []
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n)
        if self.path == "/v2/enqueue":
            try:
                ev = json.loads(data)
            except ValueError:
                return self.reply(400, {"status": "invalid event", "message": "not JSON"})
            with Stub.lock:
                Stub.events.append(ev)
            return self.reply(202, {"status": "success", "message": "Event processed",
                                    "dedup_key": ev.get("dedup_key", "")})
        self.reply(404, {})

    def do_GET(self):
        m = re.match(r"^/ecs/([^/]+)/task(/stats)?$", self.path)
        if m:
            task = m.group(1)
            if m.group(2):
                return self.reply(200, {})
            return self.reply(200, {
                "Cluster": "edge-suite-staging-cluster",
                "TaskARN": f"arn:aws:ecs:us-east-1:000000000000:task/edge-suite-staging-cluster/{task}",
                "Family": "edge-suite-staging-gateway", "Revision": "1",
                "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING", "LaunchType": "FARGATE",
                "Limits": {"CPU": 0.5, "Memory": 1024}, "Containers": [],
            })
        if self.path == "/creds":
            return self.reply(200, {"AccessKeyId": "AKIAPARITYTEST000000", "SecretAccessKey": "parity-test-secret",
                                    "Token": "parity-test-token", "Expiration": "2099-01-01T00:00:00Z"})
        self.reply(404, {})


class Stack:
    def __init__(self, state):
        self.state = state
        self.logs = os.path.join(state, "logs")
        os.makedirs(self.logs)
        self.hosts = os.path.join(state, "hosts")
        profile = os.environ.get("PARITY_TEST_PROFILE", "debug")
        target = os.environ.get("CARGO_TARGET_DIR") or json.loads(subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT))["target_directory"]
        self.bin = os.path.join(target, "debug" if profile in ("debug", "dev") else profile)
        for b in ("gateway", "echo-upstream", "metrics-agent", "provisioner"):
            if not os.access(os.path.join(self.bin, b), os.X_OK):
                raise FileNotFoundError(f"{self.bin}/{b} is missing (cargo build --workspace)")
        self.jwt_secret = b64(os.urandom(24))
        self.redis_password = b64(os.urandom(18))
        self.pg_password = b64(os.urandom(18))
        self.tasks = {}  # name -> dict(gateway=Popen, agent=Popen, proxy=port, status=port, agent_port=port)
        # PARITY_TEST_IMAGES=TAG: the tasks run as podman containers of the images
        # scripts/build-images.sh tagged TAG (`local`), instead of the binaries.
        self.images = os.environ.get("PARITY_TEST_IMAGES", "")
        self.run_id = os.urandom(3).hex()
        self.containers = []
        self.containers_conf = os.path.join(state, "containers.conf")
        with open(self.containers_conf, "w") as f:
            # This sandbox refuses setrlimit (docs: /work/shared/reference/containers.md).
            f.write("[containers]\ndefault_ulimits = []\n")

    # --- infrastructure --------------------------------------------------------------
    def start_stub(self):
        srv = ThreadingHTTPServer((HOST, 0), Stub)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.stub_srv = srv
        self.stub = f"http://{HOST}:{srv.server_address[1]}"

    def start_redis_cluster(self):
        ports = cluster_ports(3)
        for i, p in enumerate(ports):
            d = os.path.join(self.state, f"redis-{i}")
            os.makedirs(d)
            start(f"redis-{i}", [find_binary("redis-server", ["redis-server"]), "--port", str(p), "--bind", HOST,
                                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                 "--cluster-node-timeout", "5000", "--requirepass", self.redis_password,
                                 "--masterauth", self.redis_password, "--save", "", "--appendonly", "no",
                                 "--dir", d], dict(os.environ), self.logs)
        for p in ports:
            wait_for(f"redis on {p}", lambda p=p: port_open(p), 15)
        cli = find_binary("redis-cli", ["redis-cli"])
        env = dict(os.environ, REDISCLI_AUTH=self.redis_password)
        subprocess.run([cli, "--cluster", "create", *[f"{HOST}:{p}" for p in ports], "--cluster-replicas", "0",
                        "--cluster-yes"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for p in ports:
            wait_for(f"cluster state ok on {p}", lambda p=p: "cluster_state:ok" in subprocess.run(
                [cli, "-h", HOST, "-p", str(p), "cluster", "info"], env=env, capture_output=True, text=True).stdout, 20)
        self.redis_ports = ports

    def start_postgres(self):
        d = os.path.join(self.state, "pg")
        os.makedirs(d)
        root = os.geteuid() == 0
        if root:
            subprocess.run(["chown", "-R", "postgres:postgres", d], check=True)

        def as_pg(argv):
            return (["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + argv) if root else argv

        pwfile = os.path.join(d, "pw")
        with open(pwfile, "w") as f:
            f.write(self.pg_password)
        if root:
            subprocess.run(["chown", "postgres:postgres", pwfile], check=True)
        subprocess.run(as_pg([pg_bin("initdb"), "-D", os.path.join(d, "data"), "-U", "postgres", "--no-sync", "-E",
                              "UTF8", "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", pwfile]),
                       check=True, stdout=open(os.path.join(self.logs, "initdb.log"), "w"), stderr=subprocess.STDOUT)
        (port,) = free_ports(1)
        self.pg = start("postgres", as_pg([pg_bin("postgres"), "-D", os.path.join(d, "data"), "-p", str(port),
                                           "-h", HOST, "-k", d, "-c", "fsync=off"]), dict(os.environ), self.logs)
        wait_for("postgres ready", lambda: subprocess.run([pg_bin("pg_isready"), "-h", HOST, "-p", str(port), "-q"])
                 .returncode == 0, 30)
        # The DSN's user (the RDS master user `gateway`), with the generated password.
        sql = (f"CREATE ROLE gateway LOGIN PASSWORD '{self.pg_password}'; GRANT pg_monitor TO gateway;")
        subprocess.run(as_pg([pg_bin("psql"), "-h", d, "-p", str(port), "-U", "postgres", "-d", "postgres", "-q",
                              "-v", "ON_ERROR_STOP=1", "-c", sql]), check=True, stdout=subprocess.DEVNULL)
        self.pg_port = port

    def start_prometheus(self):
        self.prom_port, self.am_port = free_ports(2)
        am_dir = os.path.join(self.state, "alertmanager")
        os.makedirs(am_dir)
        key_file = os.path.join(am_dir, "secrets", "pagerduty_routing_key")
        text = open(os.path.join(ROOT, "dashboards/alertmanager/alertmanager.yml")).read()
        text = text.replace("https://events.pagerduty.com/v2/enqueue", f"{self.stub}/v2/enqueue")
        text = text.replace("/etc/alertmanager/secrets/pagerduty_routing_key", key_file)
        am_cfg = os.path.join(am_dir, "alertmanager.yml")
        with open(am_cfg, "w") as f:
            f.write(text)
        self.pd_key = "parity" + os.urandom(8).hex()
        env = dict(os.environ, PAGERDUTY_ROUTING_KEY=self.pd_key, PAGERDUTY_KEY_FILE=key_file,
                   ALERTMANAGER_BIN=find_binary("alertmanager", ["prometheus-alertmanager", "alertmanager"]))
        start("alertmanager", ["sh", os.path.join(ROOT, "dashboards/alertmanager/entrypoint.sh"),
                               f"--config.file={am_cfg}", f"--storage.path={am_dir}/data",
                               f"--web.listen-address={HOST}:{self.am_port}", "--cluster.listen-address="],
              env, self.logs)
        prom_dir = os.path.join(self.state, "prometheus")
        os.makedirs(prom_dir)
        cfg = os.path.join(prom_dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global:
  evaluation_interval: 1s
rule_files: ['{ROOT}/dashboards/prometheus/alerts.yml']
alerting:
  alertmanagers:
  - static_configs: [{{targets: ['{HOST}:{self.am_port}']}}]
""")
        start("prometheus", [find_binary("prometheus", ["prometheus"]), f"--config.file={cfg}",
                             f"--storage.tsdb.path={prom_dir}/data", f"--web.listen-address={HOST}:{self.prom_port}",
                             "--web.enable-remote-write-receiver"], dict(os.environ), self.logs)
        wait_for("prometheus ready", lambda: http("GET", f"http://{HOST}:{self.prom_port}/-/ready")[0] == 200, 30)
        wait_for("alertmanager ready", lambda: http("GET", f"http://{HOST}:{self.am_port}/-/ready")[0] == 200, 30)

    def start_upstream(self, name, listen):
        return start(name, [os.path.join(self.bin, "echo-upstream"), "--listen", listen, "--name", name],
                     dict(os.environ), self.logs)

    def set_upstream_address(self, addr):
        # In place (same inode): the bind mount over /etc/hosts shows the new content.
        with open(self.hosts, "r+") as f:
            f.truncate(0)
            f.write(f"127.0.0.1 localhost\n::1 localhost\n{addr} {UPSTREAM_NAME}\n")

    # --- the task definition -----------------------------------------------------------
    def render(self, env_arg="staging"):
        out = subprocess.run([os.path.join(self.bin, "provisioner"), "render", env_arg], cwd=ROOT,
                             capture_output=True, text=True, env=dict(os.environ, AWS_REGION="us-east-1"))
        if out.returncode != 0:
            raise RuntimeError(f"provisioner render {env_arg}: {out.stderr}")
        return json.loads(out.stdout)

    def container_env(self, td, name, dockerfile_stage):
        c = next(c for c in td["containerDefinitions"] if c["name"] == name)
        env = image_env(os.path.join(ROOT, f"docker/{dockerfile_stage[0]}/Dockerfile"), dockerfile_stage[1])
        env.update({kv["name"]: kv["value"] for kv in c["environment"]})
        return c, env

    def secret_value(self, td, name):
        """What ECS would inject from Secrets Manager for `name`."""
        plain = {"JWT_SECRET": self.jwt_secret, "REDIS_PASSWORD": self.redis_password}
        if name in plain:
            return plain[name]
        t = td["secretTemplates"][name]
        password = self.pg_password if name == "METRICS_AGENT_POSTGRES_DSN" else self.redis_password
        t = t.replace("{password}", urllib.parse.quote(password, safe=""))
        t = t.replace("(known after apply):5432", f"{HOST}:{self.pg_port}")
        # The local PostgreSQL and Redis speak no TLS (like REDIS_SSL=false for the gateway).
        t = t.replace("sslmode=require", "sslmode=disable").replace("rediss://", "redis://")
        return t.replace("(known after apply):6379", f"{HOST}:{self.redis_ports[0]}")

    def hosts_wrapper(self, pidfile):
        """argv prefix running a command with self.hosts over /etc/hosts, in a mount
        namespace of its own; the command's pid (it is exec'd) goes to `pidfile`."""
        script = 'echo $$ > "$1" && mount --bind "$0" /etc/hosts && shift && exec "$@"'
        if os.geteuid() == 0:
            return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, self.hosts, pidfile]
        if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0:
            return ["unshare", "-rm", "sh", "-c", script, self.hosts, pidfile]
        # No user namespaces (e.g. Ubuntu's AppArmor restriction): root for the mount,
        # then back to our user for the gateway.
        uid, gid = os.getuid(), os.getgid()
        script = ('echo $$ > "$1" && mount --bind "$0" /etc/hosts && shift && '
                  f'exec setpriv --reuid={uid} --regid={gid} --clear-groups -- "$@"')
        return ["sudo", "-n", "-E", shutil.which("unshare") or "unshare", "-m", "sh", "-c", script, self.hosts,
                pidfile]

    def start_task(self, name, td, upstream_port, ports=None):
        """One ECS task: the gateway container and its metrics-agent sidecar."""
        proxy, status = ports or free_ports(2)
        (agent_port,) = free_ports(1)
        gw_def, gw_env = self.container_env(td, "gateway", ("gateway", "gateway"))
        for s in gw_def["secrets"]:
            gw_env[s["name"]] = self.secret_value(td, s["name"])
        rewrites = {
            "GATEWAY_PROXY_LISTEN": f"{HOST}:{proxy}",
            "GATEWAY_STATUS_LISTEN": f"{HOST}:{status}",
            # The VPC CIDR, plus where the load balancer lives here.
            "GATEWAY_TRUSTED_IPS": gw_env["GATEWAY_TRUSTED_IPS"] + ",127.0.0.1/32",
            "REDIS_HOST": HOST,
            "REDIS_PORT": str(self.redis_ports[0]),
            "REDIS_SSL": "false",
            "GATEWAY_CONFIG_STRING": re.sub(rf"\b{re.escape(UPSTREAM_NAME)}:\d+", f"{UPSTREAM_NAME}:{upstream_port}",
                                            gw_env["GATEWAY_CONFIG_STRING"]),
        }
        gw_env.update(rewrites)
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        if self.images:
            gw = self.podman_run(f"{name}-gateway", gw_def, gw_env, status, [
                "--read-only" if gw_def.get("readonlyRootFilesystem") else "--read-only=false",
                "-v", f"{self.hosts}:/etc/hosts:ro"])
        else:
            pidfile = os.path.join(self.state, f"{name}-gateway.pid")
            gw = start(f"{name}-gateway", self.hosts_wrapper(pidfile) + [os.path.join(self.bin, "gateway")] +
                       gw_def["command"], {**base, **gw_env}, self.logs)
            gw.pidfile = pidfile
        ag_def, ag_env = self.container_env(td, "metrics-agent", ("metrics-agent", "metrics-agent"))
        for s in ag_def["secrets"]:
            ag_env[s["name"]] = self.secret_value(td, s["name"])
        task_dir = os.path.join(self.state, name)
        os.makedirs(os.path.join(task_dir, "wal"))
        ecs_yml = open(os.path.join(ROOT, "docker/metrics-agent/ecs.yml")).read()
        ecs_yml = ecs_yml.replace("127.0.0.1:8100", f"{HOST}:{status}").replace("127.0.0.1:9464", f"{HOST}:{agent_port}")
        with open(os.path.join(task_dir, "ecs.yml"), "w") as f:
            f.write(ecs_yml)
        ag_env.update({
            "METRICS_AGENT_LISTEN": f"{HOST}:{agent_port}",
            "METRICS_AGENT_WAL_DIR": os.path.join(task_dir, "wal"),
            "AMP_REMOTE_WRITE_URL": f"http://{HOST}:{self.prom_port}/api/v1/write",
            # Injected by ECS (169.254.170.2 there).
            "ECS_CONTAINER_METADATA_URI_V4": f"{self.stub}/ecs/{name}",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{self.stub}/creds",
        })
        if self.images:
            # The image's paths; the WAL volume and the rewritten ecs.yml mounted there.
            del ag_env["METRICS_AGENT_WAL_DIR"]
            if os.geteuid() == 0:
                os.chown(os.path.join(task_dir, "wal"), 65532, 65532)
            agent = self.podman_run(f"{name}-agent", ag_def, ag_env, agent_port, [
                "-v", f"{task_dir}/wal:/var/lib/metrics-agent",
                "-v", f"{task_dir}/ecs.yml:/etc/metrics-agent/ecs.yml:ro"])
        else:
            cmd = ag_def["command"]
            cmd = [os.path.join(task_dir, "ecs.yml") if a == "/etc/metrics-agent/ecs.yml" else
                   os.path.join(task_dir, "wal") if a == "/var/lib/metrics-agent" else a for a in cmd]
            agent = start(f"{name}-agent", [os.path.join(self.bin, "metrics-agent")] + cmd, {**base, **ag_env},
                          self.logs)
        t = dict(name=name, gateway=gw, agent=agent, proxy=proxy, status=status, agent_port=agent_port)
        self.tasks[name] = t
        return t

    PODMAN = ["podman", "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]

    def podman_run(self, name, cdef, env, port, extra):
        """One container of the task definition, from the image scripts/build-images.sh
        built: its entry point, command, health check and stop timeout; host network (the
        task's awsvpc namespace is shared by its containers, here with everything); the
        environment passed by name only (`-e NAME`), so no value is on a command line."""
        image = f"localhost/edge-suite/{cdef['name']}:{self.images}"
        hc = cdef.get("healthCheck") or {}
        probe = [re.sub(r"127\.0\.0\.1:(8100|9464)", f"{HOST}:{port}", a) for a in hc.get("command", [])[1:]]
        container = f"parity-{self.run_id}-{name}"
        argv = self.PODMAN + ["run", "--rm", "--name", container, "--network", "host",
                              "--stop-timeout", str(cdef.get("stopTimeout") or 30)]
        if probe:
            argv += ["--health-cmd", json.dumps(probe), "--health-interval", f"{hc.get('interval', 15)}s",
                     "--health-retries", str(hc.get("retries", 3)), "--health-timeout", f"{hc.get('timeout', 5)}s"]
        for k in sorted(env):
            argv += ["-e", k]
        argv += extra + ["--entrypoint", json.dumps(cdef["entryPoint"]), image] + cdef["command"]
        penv = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        penv["CONTAINERS_CONF"] = self.containers_conf
        p = start(name, argv, {**penv, **env}, self.logs)
        p.container = container
        self.containers.append(container)
        return p

    def podman(self, *args):
        return subprocess.run(self.PODMAN + list(args), capture_output=True, text=True,
                              env=dict(os.environ, CONTAINERS_CONF=self.containers_conf))

    def stop_task_container(self, p):
        """ECS stops a task's containers with their STOPSIGNAL, then SIGKILL after stopTimeout."""
        if getattr(p, "container", None):
            self.podman("stop", "-t", "30", p.container)
            try:
                return p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                return stop(p)
        return stop(p)

    def wait_ready(self, t, timeout=60):
        def ready():
            if t["gateway"].poll() is not None:
                raise RuntimeError(f"{t['name']} gateway exited with {t['gateway'].returncode}")
            return http("GET", f"http://{HOST}:{t['status']}/status/ready")[0] == 200
        try:
            wait_for(f"{t['name']} /status/ready", ready, timeout)
        except TimeoutError:
            if t["gateway"].poll() is not None:
                raise RuntimeError(f"{t['name']} gateway exited with {t['gateway'].returncode}") from None
            raise

    # --- HAProxy (the ALB) ---------------------------------------------------------------
    def start_haproxy(self, blue, green_ports):
        (self.lb_port,) = free_ports(1)
        self.lb_sock = os.path.join(self.state, "haproxy.sock")
        servers = [f"    server {t['name']} {HOST}:{t['proxy']} check port {t['status']}" for t in blue]
        servers += [f"    server green{i + 1} {HOST}:{p} check port {s} disabled" for i, (p, s) in enumerate(green_ports)]
        cfg = os.path.join(self.state, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    stats socket {self.lb_sock} mode 600 level admin
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend alb
    bind {HOST}:{self.lb_port}
    # The ALB appends the address it saw to X-Forwarded-For and sets the listener's
    # protocol and port (https on 443).
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Port 443
    default_backend tasks
backend tasks
    balance roundrobin
    # The target groups' health check: /status/ready on the status port.
    option httpchk GET /status/ready
    http-check expect status 200
    default-server inter 500ms rise 2 fall 2
{chr(10).join(servers)}
""")
        start("haproxy", [find_binary("haproxy", ["haproxy", "/usr/sbin/haproxy"]), "-db", "-f", cfg],
              dict(os.environ), self.logs)
        wait_for("haproxy", lambda: port_open(self.lb_port) and os.path.exists(self.lb_sock), 15)

    def lb(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.lb_sock)
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        return out.decode()

    def lb_stats(self):
        text = self.lb("show stat").lstrip("# ")
        rows = {}
        for r in csv.DictReader(io.StringIO(text)):
            if r.get("pxname") == "tasks" and r.get("svname") not in ("FRONTEND", "BACKEND"):
                rows[r["svname"]] = r
        return rows


# --- the proofs --------------------------------------------------------------------------
def wait_minute_start(need_s):
    left = 60 - time.time() % 60
    if left < need_s:
        log(f"waiting {left:.0f}s for a fresh rate-limit minute")
        time.sleep(left + 0.3)


def proof_tiers(st, base):
    token = jwt(st.jwt_secret, "staging-app", f"parity-free-{os.urandom(4).hex()}", "free")
    before = st.lb_stats()
    codes = [http("GET", f"{base}/api/tier", {"Authorization": f"Bearer {token}"})[0] for _ in range(120)]
    after = st.lb_stats()
    served = {n: int(after[n]["hrsp_2xx"]) - int(before[n]["hrsp_2xx"]) for n in ("blue1", "blue2")}
    limited = {n: int(after[n]["hrsp_4xx"]) - int(before[n]["hrsp_4xx"]) for n in ("blue1", "blue2")}
    check("(1) free tier: exactly 100 of 120 admitted across both tasks",
          codes.count(200) == 100 and codes.count(429) == 20,
          f"200: {codes.count(200)}, 429: {codes.count(429)}, other: {len(codes) - codes.count(200) - codes.count(429)}")
    check("(1) both tasks served and refused part of the tier (one shared counter)",
          all(v >= 40 for v in served.values()) and all(v >= 5 for v in limited.values()),
          f"2xx per task {served}, 4xx per task {limited}")


def proof_login(st, base):
    a, b = "127.0.0.2", "127.0.0.3"
    codes = [http("POST", f"{base}/auth/login", source=a)[0] for _ in range(300)]
    check("(2) client 127.0.0.2: 300 logins admitted within the minute (both tasks)", codes.count(200) == 300,
          f"200: {codes.count(200)}, others: {sorted(set(codes) - {200})}")
    code, h, _ = http("POST", f"{base}/auth/login", source=a)
    check("(2) client 127.0.0.2: the 301st login is refused", code == 429, str(code))
    code, _, _ = http("POST", f"{base}/auth/login", source=a, headers={"X-Forwarded-For": "198.51.100.7"})
    check("(2) a forged X-Forwarded-For does not buy a new budget", code == 429, str(code))
    code, _, body = http("POST", f"{base}/auth/login", source=b)
    check("(2) client 127.0.0.3 has its own budget", code == 200, str(code))
    if code == 200:
        seen = json.loads(body).get("headers", {})
        check("(2) the upstream sees the ALB's X-Forwarded-Proto/For",
              seen.get("x-forwarded-proto") == "https" and b in seen.get("x-forwarded-for", ""),
              f"proto {seen.get('x-forwarded-proto')}, for {seen.get('x-forwarded-for')}")


def check_containers(st, tasks):
    """The images as the task definition runs them: non-root, read-only root filesystem
    for the gateway, the health check command passing."""
    for t in tasks:
        for role in ("gateway", "agent"):
            c = t[role].container
            out = st.podman("inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", c).stdout.split()
            want_ro = "true" if role == "gateway" else "false"
            check(f"images: {c} runs as 65532 (non-root){', read-only root' if role == 'gateway' else ''}",
                  out[:1] == ["65532:65532"] and out[1:2] == [want_ro], " ".join(out))
            try:
                hc = wait_for(f"{c} health check", lambda c=c: st.podman("healthcheck", "run", c).returncode == 0 or None,
                              30, 1)
            except TimeoutError:
                hc = False
            check(f"images: {c} health check command passes", hc)
        if st.images:
            out = st.podman("exec", t["gateway"].container, "/usr/local/bin/healthcheck",
                            "http://127.0.0.1:1/health")
            check(f"images: {t['gateway'].container} health check fails on a closed port", out.returncode != 0,
                  f"rc {out.returncode}")


def proof_dns(st, base, up_port, tasks):
    def gateway_pids():
        out = {}
        for t in tasks:
            try:
                if st.images:  # the container's main process, as the host sees it
                    pid = int(st.podman("inspect", "--format", "{{.State.Pid}}", t["gateway"].container).stdout)
                else:
                    pid = int(open(t["gateway"].pidfile).read().strip())
                os.kill(pid, 0)
                out[t["name"]] = pid
            except (OSError, ValueError):
                out[t["name"]] = None
        return out

    pids = gateway_pids()

    def upstreams(n=8):
        return {http("GET", f"{base}/healthz")[1].get("x-upstream") for _ in range(n)}

    before = upstreams()
    check("(3) the upstream name resolves to the first address (auth-a)", before == {"auth-a"}, str(before))
    b = st.start_upstream("auth-b", f"[::1]:{up_port}")
    wait_for("auth-b", lambda: port_open(up_port, "::1"), 10)
    st.set_upstream_address("::1")
    t0 = time.monotonic()
    try:
        wait_for("the gateways follow the new address", lambda: upstreams() == {"auth-b"}, 30, 0.5)
        took = time.monotonic() - t0
        check("(3) both tasks follow the address change without a restart", True, f"{took:.1f}s")
    except TimeoutError as e:
        check("(3) both tasks follow the address change without a restart", False, str(e))
    found = [t["name"] for t in tasks if "re-resolved to new addresses" in gateway_log(st, t)]
    check("(3) both gateways logged the re-resolution", len(found) == len(tasks), str(found))
    now = gateway_pids()
    check("(3) no gateway restarted (same process ids, alive)", None not in now.values() and now == pids, f"{pids} -> {now}")
    return b


def gateway_log(st, t):
    return open(os.path.join(st.logs, f"{t['name']}-gateway.log"), errors="replace").read()


def prom_query(st, q):
    url = f"http://{HOST}:{st.prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    code, _, body = http("GET", url)
    return json.loads(body)["data"]["result"] if code == 200 else []


def proof_series(st, tasks):
    ids = {t["name"] for t in tasks}
    for metric in ("pg_up", "redis_up", "kong_http_requests_total"):
        def seen(metric=metric):
            r = prom_query(st, f'{metric}{{env="staging"}}')
            got = {s["metric"].get("ecs_task_id") for s in r}
            up = metric == "kong_http_requests_total" or all(s["value"][1] == "1" for s in r)
            return got if ids <= got and up else None
        try:
            got = wait_for(f"{metric} from both agents", seen, 60, 1)
            check(f"(4) {metric} in Prometheus from both tasks' agents", True, f"ecs_task_id {sorted(got)}")
        except TimeoutError as e:
            check(f"(4) {metric} in Prometheus from both tasks' agents", False, str(e))


def proof_alert(st, stopped_at):
    def paged():
        with Stub.lock:
            for ev in Stub.events:
                p = ev.get("payload", {})
                if ev.get("event_action") == "trigger" and "PostgresDown" in json.dumps(ev):
                    return ev, p
        return None
    try:
        ev, p = wait_for("PostgresDown at the PagerDuty stub", paged, max(5, 150 - (time.monotonic() - stopped_at)), 1)
        check("(5) PostgresDown reached the PagerDuty stub (Events API v2 trigger)",
              ev.get("routing_key") == st.pd_key and p.get("severity") == "critical",
              f"{time.monotonic() - stopped_at:.0f}s after PostgreSQL stopped; summary {p.get('summary', '')[:80]!r}")
    except TimeoutError as e:
        check("(5) PostgresDown reached the PagerDuty stub (Events API v2 trigger)", False,
              f"{e}; alerts: {[a['labels'].get('alertname') for a in alerts(st)]}")


def alerts(st):
    code, _, body = http("GET", f"http://{HOST}:{st.prom_port}/api/v1/alerts")
    return json.loads(body)["data"]["alerts"] if code == 200 else []


def proof_deploy(st, base, up_port, green_ports):
    # A configuration change, from the repo's files: staging's kong.yml with another CORS max_age.
    tmp = os.path.join(st.state, "envs-next")
    os.makedirs(tmp)
    kong = open(os.path.join(ROOT, "provisioner/envs/staging/kong.yml")).read()
    if "max_age: 3600" not in kong:
        return check("(6) staging kong.yml has the CORS max_age the change edits", False)
    with open(os.path.join(tmp, "kong.yml"), "w") as f:
        f.write(kong.replace("max_age: 3600", "max_age: 600"))
    toml = open(os.path.join(ROOT, "provisioner/envs/staging.toml")).read()
    toml = re.sub(r'(?m)^dashboards_dir = .*$', f'dashboards_dir = "{ROOT}/dashboards"', toml)
    toml = toml.replace('[gateway]\n', f'[gateway]\nconfig = "{tmp}/kong.yml"\n', 1)
    with open(os.path.join(tmp, "staging.toml"), "w") as f:
        f.write(toml)
    td_old = st.render()
    td_new = st.render(os.path.join(tmp, "staging.toml"))
    check("(6) the changed kong.yml renders a new configuration fingerprint",
          td_new["gatewayConfigHash"] != td_old["gatewayConfigHash"],
          f"{td_old['gatewayConfigHash']} -> {td_new['gatewayConfigHash']}")
    origin = "https://app.staging.edge-suite.example.com"
    pre = {"Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "Authorization"}

    def max_ages(n=6):
        return {http("OPTIONS", f"{base}/api/x", pre)[1].get("access-control-max-age") for _ in range(n)}

    check("(6) before: the live configuration's preflight max-age", max_ages() == {"3600"}, str(max_ages()))
    # Load while rolling: enterprise tier (5000/min) and the public health route.
    token = jwt(st.jwt_secret, "staging-app", f"parity-load-{os.urandom(4).hex()}", "enterprise")
    stop_load = threading.Event()
    counts = {"ok": 0, "failed": 0, "errors": []}
    lock = threading.Lock()

    def load(path, headers):
        while not stop_load.is_set():
            try:
                code = http("GET", f"{base}{path}", headers, timeout=10)[0]
                err = None if code == 200 else str(code)
            except Exception as e:  # noqa: BLE001 - a failed request is what this counts
                err = repr(e)
            with lock:
                if err:
                    counts["failed"] += 1
                    counts["errors"].append(err)
                else:
                    counts["ok"] += 1
            time.sleep(0.01)

    loaders = [threading.Thread(target=load, args=a, daemon=True)
               for a in (("/api/load", {"Authorization": f"Bearer {token}"}), ("/healthz", {}))]
    for t in loaders:
        t.start()
    t0 = time.monotonic()
    # deploy, step by step as provisioner/src/deploy.rs does it against ECS and the ALB:
    # 1. a new revision with the new GATEWAY_CONFIG_STRING; 2. a task set on the idle
    # (green) target group; 3. the health gate (target health); 4. the listener flips
    # to green; 5. blue drains (deregistration delay) and its task set is removed.
    # The green target group's ports were declared with HAProxy's backend (disabled).
    green = [st.start_task(f"green{i + 1}", td_new, up_port, ports) for i, ports in enumerate(green_ports)]
    for t in green:
        st.wait_ready(t)
    for i in range(len(green)):
        st.lb(f"set server tasks/green{i + 1} state ready")
    gate = True
    try:
        wait_for("green healthy in the target group", lambda: all(
            st.lb_stats()[f"green{i + 1}"]["status"] == "UP" for i in range(len(green))), 30)
    except TimeoutError:
        gate = False
    check("(6) health gate: the new tasks are healthy in the load balancer", gate,
          str({n: r["status"] for n, r in st.lb_stats().items()}))
    for n in ("blue1", "blue2"):
        st.lb(f"set server tasks/{n} state drain")
    wait_for("blue drained", lambda: all(int(st.lb_stats()[n]["scur"]) == 0 for n in ("blue1", "blue2")), 30)
    for n in ("blue1", "blue2"):
        st.lb(f"set server tasks/{n} state maint")
    exits = {}
    for n in ("blue1", "blue2"):
        # SIGTERM: the gateway drains, as ECS stops a task.
        exits[n] = st.stop_task_container(st.tasks[n]["gateway"])
        st.stop_task_container(st.tasks[n]["agent"])
    time.sleep(2)  # traffic on green only, old tasks gone
    stop_load.set()
    for t in loaders:
        t.join(timeout=15)
    took = time.monotonic() - t0
    check("(6) zero failed requests during the roll-out", counts["failed"] == 0 and counts["ok"] > 50,
          f"{counts['ok']} ok, {counts['failed']} failed in {took:.1f}s {counts['errors'][:5]}")
    check("(6) the old gateways exited cleanly on SIGTERM (drained, not killed)", all(c == 0 for c in exits.values()),
          str(exits))
    check("(6) after: every request sees the new configuration", max_ages(10) == {"600"}, str(max_ages()))
    stats = st.lb_stats()
    check("(6) the new tasks took the traffic",
          all(int(stats[f"green{i + 1}"]["stot"]) > 0 for i in range(len(green))),
          str({n: r["stot"] for n, r in stats.items()}))
    return green


def main():
    state = tempfile.mkdtemp(prefix="parity-test-")
    os.chmod(state, 0o711)  # PostgreSQL runs as `postgres` below it when we are root
    log(f"state {state}")
    started = time.monotonic()
    st = Stack(state)

    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run(st)
    except Exception as e:  # noqa: BLE001 - report, then clean up
        check("the parity stack ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        stop_all()
        for c in st.containers:
            st.podman("rm", "-f", "-t", "0", c)
        failed = any(not ok for _, ok, _ in results)
        if failed:
            for name in sorted(os.listdir(st.logs)):
                tail = open(os.path.join(st.logs, name), errors="replace").read()[-1500:]
                print(f"--- {name} (tail)\n{tail}", flush=True)
        if os.environ.get("PARITY_TEST_KEEP") != "1" and not failed:
            shutil.rmtree(state, ignore_errors=True)
        else:
            log(f"kept {state}")
    log(f"{time.monotonic() - started:.0f}s")
    return finish()


def run(st):
    st.start_stub()
    td = st.render()
    gw = next(c for c in td["containerDefinitions"] if c["name"] == "gateway")
    env = {kv["name"]: kv["value"] for kv in gw["environment"]}
    check("provisioner render staging: the configuration travels as GATEWAY_CONFIG_STRING",
          "GATEWAY_CONFIG_STRING" in env and gw["command"] == ["run"], str(gw["command"]))
    check("the task trusts the VPC for X-Forwarded-For",
          env.get("GATEWAY_REAL_IP_HEADER") == "X-Forwarded-For" and env.get("GATEWAY_TRUSTED_IPS"),
          f"{env.get('GATEWAY_TRUSTED_IPS')} {env.get('GATEWAY_REAL_IP_HEADER')}")
    m = re.search(rf"{re.escape(UPSTREAM_NAME)}:(\d+)", env["GATEWAY_CONFIG_STRING"])
    if not check(f"the upstream is the env file's Cloud Map name {UPSTREAM_NAME}", m):
        return
    st.start_redis_cluster()
    st.start_postgres()
    st.start_prometheus()
    (up_port,) = free_ports(1)
    open(st.hosts, "w").close()
    st.set_upstream_address("127.0.0.1")
    st.start_upstream("auth-a", f"{HOST}:{up_port}")
    wait_for("auth-a", lambda: port_open(up_port), 10)
    blue = [st.start_task(f"blue{i}", td, up_port) for i in (1, 2)]
    for t in blue:
        st.wait_ready(t)
    if st.images:
        check_containers(st, blue)
    green_ports = [tuple(free_ports(2)) for _ in range(2)]
    st.start_haproxy(blue, green_ports)
    wait_for("blue healthy behind HAProxy", lambda: all(r["status"] == "UP" for n, r in st.lb_stats().items()
                                                        if n.startswith("blue")), 30)
    base = f"http://{HOST}:{st.lb_port}"

    wait_minute_start(30)
    minute = int(time.time() // 60)
    proof_tiers(st, base)
    # The store connects at the first rate-limited request.
    found = [t["name"] for t in blue if "using cluster mode" in gateway_log(st, t)]
    check("both gateways found the Redis Cluster behind the one address by themselves", len(found) == 2, str(found))
    proof_login(st, base)
    if int(time.time() // 60) != minute:
        log("note: proofs 1-2 crossed a minute boundary (slow machine); their counts may be off")
    proof_series(st, blue)
    stop(st.pg)
    stopped_at = time.monotonic()
    log("PostgreSQL stopped; PostgresDown should page in about 90s (1m `for`, 15s scrape)")
    proof_dns(st, base, up_port, blue)
    proof_deploy(st, base, up_port, green_ports)
    proof_alert(st, stopped_at)


def finish():
    failed = sum(1 for _, ok, _ in results if not ok)
    passed = len(results) - failed
    print(f"parity: {passed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
