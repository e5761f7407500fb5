#!/usr/bin/env bash
# Checks the dev stack and the delivery pipeline without a Docker engine:
#
#   compose     `docker-compose config` (Debian's docker-compose v1) with .env.example
#   dockerfile  hadolint on every docker/*/Dockerfile (config: docker/hadolint.yaml)
#   workflows   actionlint (with ShellCheck) on .github/workflows/
#   shell       ShellCheck on the stack's scripts
#   prometheus  promtool: docker/prometheus/prometheus.yml, dashboards/prometheus/alerts.yml;
#               amtool: dashboards/alertmanager/alertmanager.yml
#   configs     `gateway check` of docker/gateway/kong.yml with the compose environment,
#               `metrics-agent check` of docker/metrics-agent/prometheus.yml
#   references  every path, port, env var, flag, build target and host:port the compose
#               file, the Dockerfiles and the workflows mention exists in the repository,
#               is set, is listened on, or is accepted by the binaries (their --help);
#               final images distroless, non-root, exec-form, with a HEALTHCHECK; no
#               secret literal in the compose file; AWS by OIDC only
#
# Tools come from .ci/deps/devstack.sh (run by scripts/install-deps.sh). Binaries: the
# workspace's debug build (`cargo build` of gateway, metrics-agent, provisioner first,
# unless CHECK_DEPLOY_NO_BUILD=1). Prints `N passed, M failed` last; exits 1 on failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT="$PWD"
VENV="${DEVSTACK_VENV:-${HOME}/.cache/edge-suite/devstack-venv}"
export PATH="$VENV/bin:$PATH"
PY="$VENV/bin/python"
[ -x "$PY" ] || PY=python3
LOG="$(mktemp -d)"
trap 'rm -rf "$LOG"' EXIT
passed=0
failed=0

run() { # name, command...
    local name="$1"; shift
    if "$@" > "$LOG/out" 2>&1; then
        passed=$((passed + 1)); echo "ok   $name"
    else
        failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/     /' "$LOG/out" | head -n 60
    fi
}
need() { # tool: missing tools are failures (install: bash .ci/deps/devstack.sh)
    command -v "$1" >/dev/null 2>&1 && return 0
    failed=$((failed + 1)); echo "FAIL $1 is not installed (bash .ci/deps/devstack.sh)"; return 1
}

# --- binaries (their --help is the reference for flags and env vars) -------------------
TARGET_DIR="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps 2>/dev/null | "$PY" -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo "$ROOT/target")}"
BIN="$TARGET_DIR/debug"
if [ "${CHECK_DEPLOY_NO_BUILD:-0}" != 1 ]; then
    run "cargo build (gateway, metrics-agent, provisioner binaries)" \
        cargo build -q -p gateway -p metrics-agent -p provisioner --bins
fi
export CHECK_BIN="$BIN"

# --- tools -----------------------------------------------------------------------------
if need docker-compose; then
    run "compose: docker-compose config (.env.example)" \
        docker-compose --env-file .env.example -f docker-compose.yml config -q
    # A fresh clone has no .env: the built-in development defaults must be enough.
    : > "$LOG/empty.env"
    run "compose: docker-compose config (no .env)" \
        env -i PATH="$PATH" docker-compose --env-file "$LOG/empty.env" -f docker-compose.yml config -q
    run "compose: built-in defaults equal .env.example" \
        env EMPTY_ENV="$LOG/empty.env" python3 - <<'PY'
import os, subprocess, sys, yaml
def cfg(envfile):
    out = subprocess.run(["docker-compose", "--env-file", envfile, "-f", "docker-compose.yml", "config"],
                         check=True, capture_output=True, text=True, env={"PATH": os.environ["PATH"]}).stdout
    return yaml.safe_load(out)
a, b = cfg(os.environ["EMPTY_ENV"]), cfg(".env.example")
if a != b:
    for name in sorted(set(a["services"]) | set(b["services"])):
        if a["services"].get(name) != b["services"].get(name):
            print(f"service {name}: compose defaults differ from .env.example")
    sys.exit(1)
PY
fi
if need hadolint; then
    for f in docker/*/Dockerfile; do
        run "dockerfile: hadolint $f" hadolint --config docker/hadolint.yaml "$f"
    done
fi
if need actionlint && need shellcheck; then
    run "workflows: actionlint" actionlint -color=false -oneline
fi
if need shellcheck; then
    run "shell: shellcheck" shellcheck scripts/dev-up.sh scripts/check-deploy-files.sh \
        .ci/deps/devstack.sh .github/scripts/*.sh
fi
if need promtool; then
    run "prometheus: promtool check config docker/prometheus/prometheus.yml" \
        promtool check config --syntax-only docker/prometheus/prometheus.yml
    run "prometheus: promtool check rules dashboards/prometheus/alerts.yml" \
        promtool check rules dashboards/prometheus/alerts.yml
fi
if need amtool; then
    run "alertmanager: amtool check-config dashboards/alertmanager/alertmanager.yml" \
        amtool check-config dashboards/alertmanager/alertmanager.yml
fi

# --- the binaries accept the stack's configuration --------------------------------------
gateway_check() {
    # The gateway service's environment as compose resolves it (.env.example values).
    local envs unknown listed
    envs="$("$PY" - <<'PY'
import subprocess, yaml, shlex
out = subprocess.run(["docker-compose", "--env-file", ".env.example", "-f", "docker-compose.yml", "config"],
                     check=True, capture_output=True, text=True).stdout
env = yaml.safe_load(out)["services"]["gateway"].get("environment") or {}
print(" ".join(shlex.quote(f"{k}={'' if v is None else v}") for k, v in env.items()))
PY
)" || return 1
    # Plugins this build does not implement: .env.example must list exactly those (the
    # workaround goes away as plugins land).
    # shellcheck disable=SC2016
    unknown="$(eval "env -i PATH=\"\$PATH\" $envs GATEWAY_IGNORE_PLUGINS= \"\$CHECK_BIN/gateway\" check --config docker/gateway/kong.yml" 2>&1 |
        sed -n 's/.*plugin `\([a-z0-9_-]*\)` is not implemented by this gateway.*/\1/p' | sort -u | paste -sd, -)"
    listed="$(sed -n 's/^GATEWAY_IGNORE_PLUGINS=//p' .env.example | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
    if [ "$unknown" != "$listed" ]; then
        echo ".env.example has GATEWAY_IGNORE_PLUGINS=$listed, but this gateway build lacks exactly: ${unknown:-nothing}"
        echo "set GATEWAY_IGNORE_PLUGINS=$unknown in .env.example"
        return 1
    fi
    eval "env -i PATH=\"\$PATH\" $envs \"\$CHECK_BIN/gateway\" check --config docker/gateway/kong.yml"
}
env_values_check() { # service binary: clap accepts the compose environment's values
    local svc="$1" bin="$2" envs out extra=""
    [ "$bin" != metrics-agent ] || extra="--wal-dir $LOG/wal"
    envs="$("$PY" - "$svc" <<'PY'
import subprocess, sys, yaml, shlex
out = subprocess.run(["docker-compose", "--env-file", ".env.example", "-f", "docker-compose.yml", "config"],
                     check=True, capture_output=True, text=True).stdout
env = yaml.safe_load(out)["services"][sys.argv[1]].get("environment") or {}
print(" ".join(shlex.quote(f"{k}={'' if v is None else v}") for k, v in env.items()))
PY
)" || return 1
    # A config that does not exist: the binary parses its flags and env, then stops there.
    out="$(eval "env -i PATH=\"\$PATH\" $envs timeout 10 \"\$CHECK_BIN/$bin\" run --config /nonexistent/config.yml $extra" 2>&1)"
    if grep -qiE "^error: (invalid value|unexpected argument)" <<< "$out"; then
        printf '%s\n' "$out" | head -n 5
        return 1
    fi
    grep -qi "nonexistent" <<< "$out" || { printf 'unexpected: %s\n' "$out" | head -n 5; return 1; }
}
if [ -x "$BIN/gateway" ]; then
    run "configs: the gateway accepts the compose service's env values" env_values_check gateway gateway
fi
if [ -x "$BIN/metrics-agent" ]; then
    run "configs: the metrics-agent accepts the compose service's env values" env_values_check metrics-agent metrics-agent
fi
if [ -x "$BIN/gateway" ]; then
    run "configs: gateway check docker/gateway/kong.yml (compose environment, GATEWAY_IGNORE_PLUGINS of .env.example)" gateway_check
else
    failed=$((failed + 1)); echo "FAIL $BIN/gateway is missing"
fi
if [ -x "$BIN/metrics-agent" ]; then
    run "configs: metrics-agent check docker/metrics-agent/prometheus.yml" \
        "$BIN/metrics-agent" check --config docker/metrics-agent/prometheus.yml
    run "configs: metrics-agent check docker/metrics-agent/ecs.yml (the task definition's environment, the image's METRICS_AGENT_EXPAND_ENV)" \
        env METRICS_AGENT_EXPAND_ENV=true ECS_TASK_ID=0123456789abcdef0123456789abcdef DEPLOY_ENV=staging AWS_REGION=eu-west-1 \
        AMP_REMOTE_WRITE_URL=https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-0/api/v1/remote_write \
        "$BIN/metrics-agent" check --config docker/metrics-agent/ecs.yml
else
    failed=$((failed + 1)); echo "FAIL $BIN/metrics-agent is missing"
fi

# --- references --------------------------------------------------------------------------
"$PY" - <<'PY' > "$LOG/refs" 2>&1
import fnmatch, glob, json, os, re, shlex, subprocess, sys
try:
    import yaml
except ImportError:
    print("FAIL PyYAML is missing (bash .ci/deps/devstack.sh)")
    sys.exit(0)

ROOT = os.getcwd()
BIN = os.environ["CHECK_BIN"]
results = []


def check(name, problems):
    results.append((name, list(problems)))


def exists(rel):
    return os.path.exists(os.path.join(ROOT, rel))


def helptext(binary, *sub):
    path = os.path.join(BIN, binary)
    if not os.access(path, os.X_OK):
        return None
    p = subprocess.run([path, *sub, "--help"], capture_output=True, text=True)
    return p.stdout + p.stderr


def flags_of(text):
    return set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", text or ""))


def envs_of(text):
    return set(re.findall(r"\[env: ([A-Z0-9_]+)=", text or ""))


def crate_reads(crate):
    """Env var names a crate's sources mention as string literals (e.g. GATEWAY_LOG)."""
    names = set()
    for f in glob.glob(os.path.join(crate, "src", "**", "*.rs"), recursive=True):
        names |= set(re.findall(r'"((?:GATEWAY|METRICS_AGENT)_[A-Z0-9_]+)"', open(f).read()))
    return names


READS = {"gateway": crate_reads("gateway"), "metrics-agent": crate_reads("metrics-agent")}


HELP = {
    ("gateway", "run"): helptext("gateway", "run"),
    ("gateway", "check"): helptext("gateway", "check"),
    ("metrics-agent", "run"): helptext("metrics-agent", "run"),
    ("metrics-agent", "check"): helptext("metrics-agent", "check"),
    ("echo-upstream", None): helptext("echo-upstream"),
}
for sub in ("deploy", "status", "up", "plan", "down"):
    HELP[("provisioner", sub)] = helptext("provisioner", sub)
missing_bins = sorted({b for (b, _), t in HELP.items() if t is None})
check("binaries for --help: " + ", ".join(sorted({b for b, _ in HELP})),
      [f"{BIN}/{b} is missing" for b in missing_bins])


def port_of(addr):
    m = re.search(r":(\d+)$", str(addr).strip())
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- Dockerfiles
def parse_dockerfile(path):
    lines, cur = [], ""
    for raw in open(path):
        s = raw.rstrip("\n")
        if not cur and (s.strip().startswith("#") or not s.strip()):
            continue
        if s.strip().startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        lines.append(cur.strip())
        cur = ""
    stages, st = [], None
    for ln in lines:
        ins, _, arg = ln.partition(" ")
        ins = ins.upper()
        if ins == "FROM":
            parts = arg.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            st = {"base": parts[0], "name": name, "ins": []}
            stages.append(st)
        elif st is not None:
            st["ins"].append((ins, arg.strip()))
    args = {}
    for ln in lines:
        if ln.upper().startswith("ARG ") and "=" in ln:
            k, v = ln[4:].strip().split("=", 1)
            args[k] = v
        if ln.upper().startswith("FROM"):
            break
    for s in stages:
        s["base_resolved"] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), s["base"])
    return stages


def exec_form(arg):
    try:
        v = json.loads(arg)
        return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None
    except ValueError:
        return None


meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                                 capture_output=True, text=True).stdout or "{}")
packages = {p["name"]: p for p in meta.get("packages", [])}
bin_targets = {t["name"] for p in packages.values() for t in p["targets"] if "bin" in t["kind"]}
bin_targets.add("healthcheck")  # docker/healthcheck (its own workspace)
if exists("docker/healthcheck/Cargo.toml"):
    pass

IMAGES = {}  # stage name -> info (final, runtime stages)
BIN_HELP = {"gateway": ("gateway", "run"), "metrics-agent": ("metrics-agent", "run"), "echo-upstream": ("echo-upstream", None)}
for df in sorted(glob.glob("docker/*/Dockerfile")):
    probs = []
    stages = parse_dockerfile(df)
    names = [s["name"] for s in stages]
    used_as_source = set()
    for i, s in enumerate(stages):
        for ins, arg in s["ins"]:
            m = re.search(r"--from=(\S+)", arg)
            if ins == "COPY" and m:
                used_as_source.add(m.group(1))
        # A stage built on another (FROM <stage>), and a selector `FROM ${ARG}` whose
        # default names a stage (BINARIES=build|prebuilt): it may pick any stage above it.
        if s["base_resolved"] in names:
            used_as_source.add(s["base_resolved"])
            if re.fullmatch(r"\$\{\w+\}", s["base"]):
                used_as_source.update(x["name"] for x in stages[:i] if x["name"])
    if len(stages) < 2:
        probs.append("not multi-stage")
    ignore_file = df + ".dockerignore"
    ignores = []
    if exists(ignore_file):
        ignores = [l.strip() for l in open(ignore_file) if l.strip() and not l.startswith("#")]
    else:
        probs.append(f"{ignore_file} is missing (the build context is the repository)")

    def ignored(src):
        for pat in ignores:
            pat = pat.rstrip("/")
            if fnmatch.fnmatch(src, pat) or fnmatch.fnmatch(src, pat + "/*") or src.split("/")[0] == pat:
                return pat
        return None

    for s in stages:
        final = s["name"] not in used_as_source
        copied = set()
        label = f"{df} stage {s['name']}"
        for ins, arg in s["ins"]:
            if ins == "COPY" or ins == "ADD":
                toks = [t for t in shlex.split(arg) if not t.startswith("--")]
                srcs, dest = toks[:-1], toks[-1]
                if "--from=" not in arg:
                    for src in srcs:
                        if src in (".", "./"):
                            continue
                        if src.startswith("docker/prebuilt/"):
                            # Staged by scripts/build-images.sh (host-built binaries), not committed.
                            if "docker/prebuilt" not in (open(os.path.join(ROOT, "scripts/build-images.sh")).read()
                                                         if exists("scripts/build-images.sh") else ""):
                                probs.append(f"{label}: COPY source {src}: nothing stages docker/prebuilt/")
                        elif not glob.glob(os.path.join(ROOT, src)):
                            probs.append(f"{label}: COPY source {src} does not exist")
                        elif ignored(src):
                            probs.append(f"{label}: COPY source {src} is excluded by {ignore_file} ({ignored(src)})")
                for src in srcs:
                    copied.add(dest.rstrip("/") + "/" + os.path.basename(src) if dest.endswith("/") else dest)
            if ins == "RUN":
                for pkg in re.findall(r"cargo build[^&;]*?-p\s+([\w-]+)", arg):
                    if pkg not in packages:
                        probs.append(f"{label}: cargo build -p {pkg}: no such workspace package")
                for mp in re.findall(r"--manifest-path\s+(\S+)", arg):
                    if not exists(mp):
                        probs.append(f"{label}: --manifest-path {mp} does not exist")
                for b in re.findall(r"target/(?:[\w-]+/)?release/([\w-]+)", arg):
                    if b not in bin_targets:
                        probs.append(f"{label}: copies target/release/{b}, which no package builds")
        if not final:
            continue
        base = s["base_resolved"]
        info = {"dockerfile": df, "copied": copied, "env": {}, "expose": set(), "cmd": None, "entry": None, "health": None}
        if not ("distroless" in base or base == "scratch"):
            probs.append(f"{label}: final image is {base}, not distroless/scratch")
        user = None
        for ins, arg in s["ins"]:
            if ins == "USER":
                user = arg
            elif ins == "ENV":
                for k, v in re.findall(r'(\w+)=("[^"]*"|\S*)', arg):
                    info["env"][k] = v.strip('"')
            elif ins == "EXPOSE":
                info["expose"] |= {int(p.split("/")[0]) for p in arg.split()}
            elif ins in ("CMD", "ENTRYPOINT"):
                form = exec_form(arg)
                if form is None:
                    probs.append(f"{label}: {ins} is shell form (the image has no shell; PID 1 must be the program)")
                info["cmd" if ins == "CMD" else "entry"] = form
            elif ins == "HEALTHCHECK":
                info["health"] = arg
            elif ins == "STOPSIGNAL" and arg not in ("SIGTERM", "15"):
                probs.append(f"{label}: STOPSIGNAL {arg} (the binaries drain on SIGTERM)")
        uid = (user or "").split(":")[0]
        if not uid or not uid.isdigit() or uid == "0":
            probs.append(f"{label}: USER {user!r}: want a numeric non-root user")
        h = info["health"]
        if h is None:
            probs.append(f"{label}: no HEALTHCHECK")
        elif h.strip() == "NONE":
            if s["name"] != "provisioner":
                probs.append(f"{label}: HEALTHCHECK NONE is only for the run-to-completion provisioner")
        else:
            form = exec_form(h.split("CMD", 1)[1].strip()) if "CMD" in h else None
            if form is None:
                probs.append(f"{label}: HEALTHCHECK must be exec form (no shell in the image)")
            else:
                info["health_cmd"] = form
                if form[0].startswith("/") and form[0] not in copied:
                    probs.append(f"{label}: HEALTHCHECK runs {form[0]}, which the stage does not COPY")
        entry = info["entry"] or []
        for p in entry[:1] + [x for x in entry[1:] if x.startswith("/usr/")]:
            if p.startswith("/") and p not in copied:
                probs.append(f"{label}: ENTRYPOINT runs {p}, which the stage does not COPY")
        # Flags and env vars the binary must accept.
        prog = os.path.basename(entry[-1]) if entry else None
        if prog in BIN_HELP:
            b, sub = BIN_HELP[prog]
            cmd = info["cmd"] or []
            if b in ("gateway", "metrics-agent") and cmd:
                b, sub = b, cmd[0]
            text = HELP.get((b, sub)) or helptext(b, *([sub] if sub else []))
            if text:
                for f in [c for c in cmd if c.startswith("--")]:
                    if f.split("=")[0] not in flags_of(text):
                        probs.append(f"{label}: CMD flag {f} is not accepted by `{b} {sub or ''}`")
                for k in info["env"]:
                    if re.match(r"^(GATEWAY|METRICS_AGENT)_", k) and k not in envs_of(text) | READS.get(b, set()):
                        probs.append(f"{label}: ENV {k} is not read by {b}")
                for c in [c for c in cmd if c.startswith("/")]:
                    if c not in copied and not any(c.startswith(d + "/") or c == d for d in copied):
                        if not re.search(r"(VOLUME|wal)", c, re.I) and c != info["env"].get("METRICS_AGENT_WAL_DIR"):
                            probs.append(f"{label}: CMD path {c} is not in the image")
            listens = {port_of(v) for k, v in info["env"].items() if k.endswith("_LISTEN")}
            listens |= {port_of(cmd[i + 1]) for i, c in enumerate(cmd[:-1]) if c == "--listen"}
            listens.discard(None)
            if info["expose"] - listens:
                probs.append(f"{label}: EXPOSE {sorted(info['expose'] - listens)} but it listens on {sorted(listens)}")
            hc = info.get("health_cmd")
            if hc and len(hc) > 1 and port_of(re.sub(r"(https?://[^/]+).*", r"\1", hc[1])) not in listens:
                probs.append(f"{label}: HEALTHCHECK probes {hc[1]} but it listens on {sorted(listens)}")
            info["listens"] = listens
        IMAGES[s["name"]] = info
    check(f"dockerfile: {df}: multi-stage, distroless, non-root, exec form, HEALTHCHECK, paths, flags", probs)

# ---------------------------------------------------------------- compose
raw_compose = open("docker-compose.yml").read()
env_example = {}
for line in open(".env.example"):
    m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
    if m:
        env_example[m.group(1)] = m.group(2)
probs = []
used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", raw_compose))
for v in sorted(used - set(env_example)):
    probs.append(f"docker-compose.yml uses ${{{v}}}, which .env.example does not define")
kong_text = open("docker/gateway/kong.yml").read()
dev_up = open("scripts/dev-up.sh").read()
for k in sorted(set(env_example) - used - {"COMPOSE_PROJECT_NAME"}):
    if k not in dev_up and f'env "{k}"' not in kong_text:
        probs.append(f".env.example defines {k}, which nothing uses")
check(".env.example: every variable docker-compose.yml interpolates is defined there, and nothing else", probs)

probs = []
raw = yaml.safe_load(raw_compose)
for name, svc in raw["services"].items():
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    for k, v in env.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|ROUTING_KEY|API_KEY", k) and v not in (None, "") and "${" not in str(v):
            probs.append(f"service {name}: {k} is a literal in docker-compose.yml (take it from .env)")
    for p in svc.get("ports") or []:
        if not str(p).startswith("127.0.0.1:"):
            probs.append(f"service {name}: port {p} is published on every interface (bind 127.0.0.1)")
tracked = subprocess.run(["git", "ls-files", ".env"], capture_output=True, text=True).stdout.strip()
if tracked:
    probs.append(".env is committed")
check("compose: no secret literal, ports on 127.0.0.1 only, .env not committed", probs)

resolved = yaml.safe_load(subprocess.run(
    ["docker-compose", "--env-file", ".env.example", "-f", "docker-compose.yml", "config"],
    capture_output=True, text=True).stdout or "{}")
services = resolved.get("services", {})
THIRD_PARTY_PORTS = {"redis": {6379}, "postgres": {5432}, "prometheus": {9090}, "alertmanager": {9093}, "grafana": {3000}}
listen = {}
probs = []
for name, svc in services.items():
    env = svc.get("environment") or {}
    cmd = svc.get("command") or []
    ports = {port_of(v) for k, v in env.items() if k.endswith("_LISTEN")}
    ports |= {port_of(cmd[i + 1]) for i, c in enumerate(cmd[:-1]) if c == "--listen"}
    image = str(svc.get("image", ""))
    for key, known in THIRD_PARTY_PORTS.items():
        if re.match(rf"^([\w./-]*/)?{key}(-oss)?:", image):
            ports |= known
    ports.discard(None)
    listen[name] = ports
for name, svc in services.items():
    b = svc.get("build")
    target = None
    if b:
        ctx = b.get("context", ".")
        df = os.path.relpath(os.path.join(ctx, b.get("dockerfile", "Dockerfile")), ROOT)
        if not exists(df):
            probs.append(f"{name}: build dockerfile {df} does not exist")
        else:
            stages = [s["name"] for s in parse_dockerfile(df)]
            target = b.get("target") or stages[-1]
            if target not in stages:
                probs.append(f"{name}: build target {target} is not a stage of {df}")
    for v in svc.get("volumes") or []:
        src, tgt = (v.get("source"), v.get("target")) if isinstance(v, dict) else (v.split(":")[0], v.split(":")[1])
        typ = v.get("type") if isinstance(v, dict) else ("bind" if src.startswith("/") else "volume")
        if typ == "bind" and not os.path.exists(src):
            probs.append(f"{name}: bind mount source {os.path.relpath(src, ROOT)} does not exist")
    mounts = {(v.get("target") if isinstance(v, dict) else v.split(":")[1]) for v in svc.get("volumes") or []}
    env = svc.get("environment") or {}
    cmd = svc.get("command") or []
    info = IMAGES.get(target) if target else None
    hc = (svc.get("healthcheck") or {}).get("test")
    if not hc and not (info and info.get("health")):
        probs.append(f"{name}: no healthcheck")
    if hc and isinstance(hc, list):
        urls = [x for x in hc if re.match(r"https?://", x)]
        for u in urls:
            p = port_of(re.sub(r"(https?://[^/]+).*", r"\1", u))
            if p not in listen[name]:
                probs.append(f"{name}: healthcheck probes {u} but the service listens on {sorted(listen[name])}")
        if info and hc[0] == "CMD" and hc[1].startswith("/") and hc[1] not in info["copied"]:
            probs.append(f"{name}: healthcheck runs {hc[1]}, which the image does not contain")
        if info and hc[0] == "CMD-SHELL":
            probs.append(f"{name}: CMD-SHELL healthcheck, but the image has no shell")
    for p in svc.get("ports") or []:
        tgt = p.get("target") if isinstance(p, dict) else int(str(p).split(":")[-1].split("/")[0])
        if int(tgt) not in listen[name]:
            probs.append(f"{name}: publishes container port {tgt} but listens on {sorted(listen[name])}")
    for dep, cond in (svc.get("depends_on") or {}).items():
        c = cond.get("condition") if isinstance(cond, dict) else None
        if dep not in services:
            probs.append(f"{name}: depends_on unknown service {dep}")
        elif c == "service_healthy" and not (services[dep].get("healthcheck") or {}).get("test"):
            dinfo = IMAGES.get((services[dep].get("build") or {}).get("target", ""))
            if not (dinfo and dinfo.get("health")):
                probs.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
    # Our binaries: flags, env vars, config paths.
    if info and info.get("entry"):
        prog = os.path.basename(info["entry"][-1])
        if prog in BIN_HELP:
            b, sub = BIN_HELP[prog]
            if b in ("gateway", "metrics-agent") and cmd:
                sub = cmd[0]
            text = HELP.get((b, sub))
            if text:
                for f in [c for c in cmd if c.startswith("--")]:
                    if f.split("=")[0] not in flags_of(text):
                        probs.append(f"{name}: command flag {f} is not accepted by `{b} {sub or ''}`")
                for k in env:
                    if re.match(r"^(GATEWAY|METRICS_AGENT)_", k) and k not in envs_of(text) | READS.get(b, set()):
                        probs.append(f"{name}: {k} is not read by {b}")
            for c in [c for c in cmd if c.startswith("/")]:
                if c not in mounts and c not in info["copied"]:
                    probs.append(f"{name}: command path {c} is neither mounted nor in the image")
    if target == "gateway":
        refs = set(re.findall(r'\$\{\{\s*env\s+"(\w+)"\s*\}\}', kong_text))
        for r in sorted(refs - set(env) - set(info["env"] if info else {})):
            probs.append(f"{name}: docker/gateway/kong.yml needs {r}, which neither the service nor the image sets")
        for k in env:
            if not re.match(r"^(GATEWAY|METRICS_AGENT)_", k) and k not in refs:
                probs.append(f"{name}: sets {k}, which docker/gateway/kong.yml does not reference")
check("compose: build targets, mounts, ports, healthchecks, depends_on, flags and env vars of the binaries", probs)

# host:port references between services, and start order.
probs = []
names = set(services)


def texts_of(name, svc):
    out = [json.dumps(svc.get("environment") or {}), json.dumps(svc.get("command") or [])]
    for v in svc.get("volumes") or []:
        src = v.get("source") if isinstance(v, dict) else v.split(":")[0]
        if src and os.path.isfile(src) and os.path.getsize(src) < 1_000_000:
            out.append(open(src, errors="replace").read())
    b = svc.get("build")
    info = IMAGES.get((b or {}).get("target", "")) if b else None
    if info:
        out.append(json.dumps(info["env"]))
    return "\n".join(out)


def deps_closure(name):
    seen, todo = set(), [name]
    while todo:
        for d in (services[todo.pop()].get("depends_on") or {}):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


for name, svc in services.items():
    text = texts_of(name, svc)
    for host, port in set(re.findall(r"(?<![\w.-])([a-z][a-z0-9-]*):(\d{2,5})\b", text)):
        if host not in names or host == name:
            continue
        if int(port) not in listen[host]:
            probs.append(f"{name}: refers to {host}:{port}, but {host} listens on {sorted(listen[host])}")
        if host not in deps_closure(name):
            probs.append(f"{name}: refers to {host}:{port} without depends_on {host}")
    for m in re.finditer(r"\$\{?(\w+)\}?", text):
        pass
check("compose: every service:port a service or its config refers to is listened on and depended on", probs)

# Grafana provisioning.
probs = []
g = services.get("grafana")
if g:
    mounts = {}
    for v in g.get("volumes") or []:
        src, tgt = (v.get("source"), v.get("target")) if isinstance(v, dict) else v.split(":")[:2]
        mounts[tgt] = src
    prov = {t: s for t, s in mounts.items() if t.startswith("/etc/grafana/provisioning/")}
    kinds = {t.split("/")[4] for t in prov}
    for k in ("datasources", "dashboards"):
        if k not in kinds:
            probs.append(f"grafana: nothing mounted in /etc/grafana/provisioning/{k}/")
    ds_uids = set()
    for t, s in prov.items():
        if not os.path.isfile(s):
            continue
        doc = yaml.safe_load(open(s)) or {}
        for ds in doc.get("datasources") or []:
            ds_uids.add(ds.get("uid"))
            url = str(ds.get("url", ""))
            for var in re.findall(r"\$\{?(\w+)\}?", url):
                if var not in (g.get("environment") or {}):
                    probs.append(f"grafana: datasource url {url} needs {var} in the grafana service's environment")
            resolved_url = re.sub(r"\$\{?(\w+)\}?", lambda m: str((g.get("environment") or {}).get(m.group(1), "")), url)
            h = re.match(r"https?://([\w-]+):(\d+)", resolved_url)
            if h and h.group(1) in names and int(h.group(2)) not in listen[h.group(1)]:
                probs.append(f"grafana: datasource {resolved_url}: {h.group(1)} listens on {sorted(listen[h.group(1)])}")
        for p in doc.get("providers") or []:
            path = (p.get("options") or {}).get("path", "")
            src = next((s2 for t2, s2 in mounts.items() if path == t2 or path.startswith(t2 + "/")), None)
            if not src:
                probs.append(f"grafana: dashboards provider path {path} is not mounted")
            else:
                d = os.path.join(src, os.path.relpath(path, next(t2 for t2, s2 in mounts.items() if s2 == src)))
                jsons = glob.glob(os.path.join(d, "*.json"))
                if not jsons:
                    probs.append(f"grafana: no dashboard JSON in {os.path.relpath(d, ROOT)}")
                uids = set()
                for f in jsons:
                    try:
                        dash = json.load(open(f))
                    except ValueError as e:
                        probs.append(f"{os.path.relpath(f, ROOT)}: invalid JSON: {e}")
                        continue
                    if dash.get("uid") in uids:
                        probs.append(f"{os.path.relpath(f, ROOT)}: duplicate uid {dash.get('uid')}")
                    uids.add(dash.get("uid"))
                    for ref in re.findall(r'"datasource":\s*\{[^}]*"uid":\s*"([^"]+)"', open(f).read()):
                        if ref not in ds_uids and not ref.startswith("$") and ref not in ("-- Grafana --", "grafana"):
                            probs.append(f"{os.path.relpath(f, ROOT)}: datasource uid {ref} is not provisioned")
check("grafana: datasource and every dashboard provisioned, references resolve", probs)

# ---------------------------------------------------------------- provisioner's task definition vs images
probs = []
notes = []
td = "provisioner/src/aws/task_definition.rs"
if exists(td):
    src = open(td).read()
    for block, image in ((r"let gateway = ContainerDefinition(.*?)\.build\(\);", "gateway"),
                         (r"let agent = ContainerDefinition(.*?)\.build\(\);", "metrics-agent")):
        m = re.search(block, src, re.S)
        info = IMAGES.get(image)
        if not m or not info:
            continue
        body = m.group(1)
        for ep in re.findall(r'\.entry_point\("([^"]+)"\)', body):
            path = ep if ep.startswith("/") else f"/usr/local/bin/{ep}"
            if path not in info["copied"]:
                probs.append(f"{td}: {image} entry point {ep} is not in the image ({path})")
        for c in re.findall(r'\.command\("(/[^"]+)"\)', body):
            if c not in info["copied"] and c != info["env"].get("METRICS_AGENT_WAL_DIR"):
                probs.append(f"{td}: {image} command path {c} is not in the image")
        for f in re.findall(r'\.command\("(--[a-z-]+)"\)', body):
            t = HELP.get((image, "run"))
            if t and f not in flags_of(t):
                probs.append(f"{td}: {image} flag {f} is not accepted by `{image} run`")
    for probe in re.findall(r'const \w+: &str = "(/usr/local/bin/[\w-]+)"', src):
        for image in ("gateway", "metrics-agent"):
            if image in IMAGES and probe not in IMAGES[image]["copied"]:
                probs.append(f"{td}: uses {probe}, which the {image} image does not contain")
    if "CMD-SHELL" in src and "curl" in src:
        notes.append(f"NOTE {td}: the ECS health checks run `CMD-SHELL curl ...`, but the images have "
                     "no shell and no curl; use [\"CMD\", \"/usr/local/bin/healthcheck\", URL]")
desired = "provisioner/src/desired.rs"
if exists(desired) and "gateway" in IMAGES:
    dsrc = open(desired).read()
    ecs_env = set(re.findall(r'gateway_(?:env|secrets)\.insert\(\s*"(\w+)"', dsrc))
    refs = set(re.findall(r'\$\{\{\s*env\s+"(\w+)"\s*\}\}', open("docker/gateway/kong.yml").read()))
    for r in sorted(refs - ecs_env):
        if r in IMAGES["gateway"]["env"]:
            notes.append(f"NOTE {desired}: ECS does not set {r} for the gateway; the image default "
                         f"{r}={IMAGES['gateway']['env'][r]!r} (compose's) applies")
        else:
            probs.append(f"{desired}: ECS does not set {r}, which docker/gateway/kong.yml needs and the image does not default")
    agent_env = set(re.findall(r'agent_env\.insert\(\s*"(\w+)"', dsrc))
    agent_reads = envs_of(HELP.get(("metrics-agent", "run"))) | READS["metrics-agent"]
    if exists("docker/metrics-agent/ecs.yml"):  # ${NAME} references of the ECS config
        agent_reads |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", open("docker/metrics-agent/ecs.yml").read()))
    for k in sorted(agent_env - agent_reads):
        if not k.startswith("AWS_"):
            notes.append(f"NOTE {desired}: ECS sets {k} for the metrics-agent, which neither its flags nor "
                         "docker/metrics-agent/ecs.yml reads")
check("provisioner task definition: entry points, config paths and flags exist in the images", probs)

# ---------------------------------------------------------------- runbooks
probs = []
if exists("dashboards/prometheus/alerts.yml") and exists("docs/operations.md"):
    anchors = set()
    for line in open("docs/operations.md"):
        m = re.match(r"^#+\s+(.*)$", line)
        if m:
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    rules = yaml.safe_load(open("dashboards/prometheus/alerts.yml")) or {}
    for grp in rules.get("groups") or []:
        for r in grp.get("rules") or []:
            url = (r.get("annotations") or {}).get("runbook_url", "")
            m = re.match(r"^(?:\S*/)?docs/operations\.md#(\S+)$", url)
            if r.get("alert") and not url:
                probs.append(f"alert {r['alert']}: no runbook_url")
            elif m and m.group(1) not in anchors:
                probs.append(f"alert {r['alert']}: runbook {url} has no section in docs/operations.md")
check("runbooks: every alert's runbook_url has its section in docs/operations.md", probs)

# ---------------------------------------------------------------- workflows
probs = []
wf_files = sorted(glob.glob(".github/workflows/*.yml"))
scripts = sorted(glob.glob(".github/scripts/*.sh"))
if not wf_files:
    probs.append("no workflow in .github/workflows/")
for f in wf_files + scripts:
    text = open(f).read()
    if re.search(r"aws-access-key-id|aws-secret-access-key|secrets\.AWS_(ACCESS|SECRET)", text):
        probs.append(f"{f}: long-lived AWS keys (use OIDC: role-to-assume)")
    for ref in re.findall(r"uses:\s*\./(\S+)", text):
        if not exists(ref):
            probs.append(f"{f}: uses ./{ref}, which does not exist")
    for ref in re.findall(r"(?:bash|python3|sh)\s+((?:\.?[\w.-]+/)+[\w.-]+\.(?:sh|py))", text):
        if not exists(ref):
            probs.append(f"{f}: runs {ref}, which does not exist")
    for ref in re.findall(r"file:\s*([^\s,}]*Dockerfile[^\s,}]*)", text):
        if "${{" not in ref and not exists(ref):
            probs.append(f"{f}: Dockerfile {ref} does not exist")
    for m in re.finditer(r"\bprov(?:isioner)?\s+(deploy|status|up|plan|down)\b([^\n]*)", text):
        t = HELP.get(("provisioner", m.group(1)))
        for fl in re.findall(r"(--[a-z][a-z-]*)", m.group(2)):
            if t and fl not in flags_of(t):
                probs.append(f"{f}: `provisioner {m.group(1)} {fl}` is not accepted")
    if f.endswith(".yml"):
        doc = yaml.safe_load(text)
        for jname, job in (doc.get("jobs") or {}).items():
            for inc in ((job.get("strategy") or {}).get("matrix") or {}).get("include") or []:
                df, tgt = inc.get("file"), inc.get("target")
                if not df:
                    continue
                if not exists(df):
                    probs.append(f"{f}: job {jname}: matrix file {df} does not exist")
                elif tgt and tgt not in [s["name"] for s in parse_dockerfile(df)]:
                    probs.append(f"{f}: job {jname}: matrix target {tgt} is not a stage of {df}")
                # Images ECS runs must match the task definition's CPU architecture.
                if f.endswith("release.yml") and inc.get("image") in ("gateway", "metrics-agent") and exists(td):
                    arch = "linux/arm64" if "CpuArchitecture::Arm64" in open(td).read() else "linux/amd64"
                    if arch not in str(inc.get("platform", "")):
                        probs.append(f"{f}: job {jname}: {inc.get('image')} is built for {inc.get('platform', 'the runner')}, "
                                     f"but the ECS task definition runs {arch}")
        wf_perm = (doc.get("permissions") or {}) if isinstance(doc.get("permissions"), dict) else {}
        for jname, job in (doc.get("jobs") or {}).items():
            steps = job.get("steps") or []
            uses_aws = any("configure-aws-credentials" in str(s.get("uses", "")) for s in steps)
            perm = job.get("permissions") if isinstance(job.get("permissions"), dict) else wf_perm
            if uses_aws:
                if (perm or {}).get("id-token") != "write":
                    probs.append(f"{f}: job {jname} assumes an AWS role without permissions: id-token: write")
                for s in steps:
                    if "configure-aws-credentials" in str(s.get("uses", "")) and "role-to-assume" not in (s.get("with") or {}):
                        probs.append(f"{f}: job {jname}: configure-aws-credentials without role-to-assume")
                if "DEPLOY_ROLE" in json.dumps(steps) and not job.get("environment"):
                    probs.append(f"{f}: job {jname} deploys without a GitHub environment")
check("workflows: referenced files, Dockerfile targets and provisioner flags exist; AWS by OIDC role only; deploys use environments", probs)

failed = 0
for name, probs in results:
    if probs:
        failed += 1
        print(f"FAIL {name}")
        for p in probs:
            print(f"     {p}")
    else:
        print(f"ok   {name}")
for n in notes:
    print(n)
print(f"REFS {len(results) - failed} {failed}")
PY
grep -v '^REFS ' "$LOG/refs"
if counts="$(grep '^REFS ' "$LOG/refs")"; then
    read -r _ p f <<< "$counts"
    passed=$((passed + p)); failed=$((failed + f))
else
    failed=$((failed + 1)); echo "FAIL references (the checker crashed)"
fi

echo
echo "check-deploy-files: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
