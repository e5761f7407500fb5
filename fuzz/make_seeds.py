#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/).

Real inputs: Kong files from the repository and from gateway/tests, exposition bodies
as the agent's tests serve them, signed tokens and key sets made here, WAL segments in
the on-disk format (metrics-agent/src/wal). Run from the repository root; the output is
committed (keys are random, so a re-run changes the jwt/jwks seeds).
"""
import base64, glob, hashlib, hmac, json, os, re, struct, time, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# -- kong_config: files in the repository, then configs embedded in gateway/tests/it.
for p in ["docker/gateway/kong.yml", "gateway/examples/kong.yml",
          "gateway/bench/configs/plain.yml", "gateway/bench/configs/policy.yml"]:
    put("kong_config", p.replace("/", "_"), open(os.path.join(ROOT, p), "rb").read())
n = 0
for path in sorted(glob.glob(os.path.join(ROOT, "gateway/tests/it/*.rs"))):
    src = open(path).read()
    for m in re.finditer(r'r#"(_format_version:.*?)"#', src, re.S):
        text = m.group(1)
        if "format!" in src[max(0, m.start() - 40):m.start()]:
            # format! templates: placeholders become a port, `{{` `}}` single braces.
            text = re.sub(r"\{[a-z_]*\}", "18080", text).replace("{{", "{").replace("}}", "}")
        n += 1
        put("kong_config", f"it_{os.path.basename(path)[:-3]}_{n:02}.yml", text)
put("kong_config", "json.json", json.dumps({
    "_format_version": "3.0",
    "services": [{"name": "s", "url": "http://127.0.0.1:9000/base",
                  "routes": [{"name": "r", "paths": ["/api", "~/v[0-9]+/items$"],
                              "strip_path": True}]}],
    "consumers": [{"username": "u", "keyauth_credentials": [{"key": "k"}]}],
    "plugins": [{"name": "key-auth"}, {"name": "rate-limiting", "config": {"minute": 5}}],
}, indent=1))
put("kong_config", "legacy_1_1.yml", '_format_version: "1.1"\nservices:\n- name: s\n  url: http://up:80\n  routes:\n  - name: r\n    paths: ["/a/./b/../c", "/users/\\\\d+", "/%7Euser", "/%FA%2F.b/"]\n')
put("kong_config", "env_ref.yml", '_format_version: "3.0"\nconsumers:\n- username: u\n  jwt_secrets:\n  - key: k\n    secret: ${{ env "FUZZ_UNSET_SECRET" }}\n')

# -- jwt_token: tokens for the target's credentials (fuzz/fuzz_targets/jwt_token.rs).
SECRET = b"fuzz-secret-0123456789abcdef0123456789"


def token(header, claims, key=SECRET, digest=hashlib.sha256):
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    c = b64u(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, f"{h}.{c}".encode(), digest).digest()
    return f"{h}.{c}.{b64u(sig)}"


now = int(time.time())
put("jwt_token", "hs256_valid", token({"alg": "HS256", "typ": "JWT"},
                                      {"iss": "fuzz-hs256", "sub": "u1", "exp": now + 10 ** 8, "nbf": now - 10}))
put("jwt_token", "hs512_bearer", "Bearer " + token({"alg": "HS512"}, {"iss": "fuzz-hs512", "aud": ["x"], "exp": now + 10 ** 8},
                                                   digest=hashlib.sha512))
put("jwt_token", "kid_in_header", "bearer  " + token({"alg": "HS256", "kid": "fuzz-hs256"}, {"iss": "a", "aud": "x", "exp": 1.5e9}))
put("jwt_token", "expired", token({"alg": "HS256"}, {"iss": "fuzz-hs256", "exp": 1000, "nbf": "soon"}))
put("jwt_token", "bad_sig", token({"alg": "HS256"}, {"iss": "fuzz-hs256"}, key=b"wrong"))
put("jwt_token", "none_alg", b64u(b'{"alg":"none"}') + "." + b64u(b'{"iss":"fuzz-hs256"}') + ".")
put("jwt_token", "rs256_std_b64", base64.b64encode(b'{"alg":"RS256","kid":"k1"}').decode() + "." +
    base64.b64encode(b'{"iss":"fuzz-hs256","exp":99999999999}').decode() + ".c2ln+/==")

# -- jwks: key sets of every key type the plugin reads.
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402


def int_b64(i):
    return b64u(i.to_bytes((i.bit_length() + 7) // 8, "big"))


rk = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
rsa_jwk = {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": int_b64(rk.n), "e": int_b64(rk.e)}
eck = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
ec_jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "e1", "x": b64u(eck.x.to_bytes(32, "big")), "y": b64u(eck.y.to_bytes(32, "big"))}
ec384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
ec384_jwk = {"kty": "EC", "crv": "P-384", "kid": "e2", "x": b64u(ec384.x.to_bytes(48, "big")), "y": b64u(ec384.y.to_bytes(48, "big"))}
ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
ed_jwk = {"kty": "OKP", "crv": "Ed25519", "kid": "o1", "x": b64u(ed)}
oct_jwk = {"kty": "oct", "kid": "h1", "alg": "HS256", "k": b64u(SECRET)}
put("jwks", "rsa", json.dumps({"keys": [rsa_jwk]}))
put("jwks", "ec_p256", json.dumps({"keys": [ec_jwk]}))
put("jwks", "mixed", json.dumps({"keys": [ec384_jwk, ed_jwk, oct_jwk, dict(rsa_jwk, kid="r2", alg="PS384")]}))
put("jwks", "no_kid_no_alg", json.dumps({"keys": [{k: v for k, v in rsa_jwk.items() if k not in ("kid", "alg")}, dict(ec_jwk, crv="P-521")]}))
put("jwks", "empty", '{"keys": []}')

# -- transform_template: template, query string, then headers and @captures.
for i, t in enumerate([
    "/users/$(query_params.id)/orders\nid=42&x=1\nx-user: alice\n@1=abc",
    "/v2$(uri_captures.rest)\n\n@rest=/items/7",
    "$(headers.x-consumer-username or \"anonymous\")\n\nx-consumer-username: bob",
    "Bearer $(headers[\"x-token\"])\n\nx-token: t0k3n",
    "/a/$(query_params[\"q\"])/$(uri_captures[1])\nq=..%2F..%2Fadmin&q=2\n@1=%2e%2e",
    "literal $('$(uri_captures.x)') and $(ngx.var.remote_addr)\n\n",
    "x-new:$(headers.host)\n",
]):
    put("transform_template", f"t{i}", t)

# -- normalize_path
for i, p in enumerate(["/", "/api/echo", "/a//b/./c/../d", "/%7euser/%2f", "/../..", "/a/%2e%2e/b",
                       "/caf%C3%A9/x/", "relative/../x", "/a%2Fb%2F..%2F", "//double//slash//"]):
    put("normalize_path", f"p{i}", p)

# -- exposition: bodies as the agent's tests and targets serve them.
put("exposition", "text_0.0.4", "# HELP http_requests_total The total.\n# TYPE http_requests_total counter\n"
    'http_requests_total{method="post",code="200"} 1027 1395066363000\n'
    'http_requests_total{method="post",code="400"}    3 1395066363000\n\n'
    'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9\n'
    "metric_without_timestamp_and_labels 12.47\n"
    'something_weird{problem="division by zero"} +Inf -3982045\n'
    'rpc_duration_seconds{quantile="0.5"} 4773\ngo:gc_total{a="}"} NaN\n')
put("exposition", "openmetrics", '# TYPE foo counter\n# UNIT foo seconds\nfoo_total{a="b"} 17.0 1520879607.789 # {trace_id="KOO5S4vxi0o"} 0.67\nfoo_created{a="b"} 1520872607.123\n# EOF\n')
put("exposition", "agent_target_om", '# HELP synthetic_requests Requests served.\n# TYPE synthetic_requests counter\nsynthetic_requests_total{path="/a"} 3 # {trace_id="abc"} 1.0\nsynthetic_requests_created{path="/a"} 1700000000.0\nsynthetic_temperature_celsius{room="lab \\"1\\""} 21.5\n# EOF\n')
put("exposition", "histogram", '# TYPE kong_latency_ms histogram\nkong_latency_ms_bucket{type="request",service="s",le="1"} 0\nkong_latency_ms_bucket{type="request",service="s",le="+Inf"} 12\nkong_latency_ms_sum{type="request",service="s"} 230.5\nkong_latency_ms_count{type="request",service="s"} 12\n')
put("exposition", "empty_values_escapes", 'm{a="",b="x\\\\y",c="\\t"}\t-0.0\nm2{  a = "1" , } 1e-300 -5\n')


# -- wal_recovery: flags, shards, [cursor], segments (see fuzz_targets/wal_recovery.rs).
def record(shard, samples, min_ts, max_ts, payload):
    tail = struct.pack("<HHIqq", shard, 0, samples, min_ts, max_ts)
    crc = zlib.crc32(tail + payload) & 0xFFFFFFFF
    return struct.pack("<II", len(payload), crc) + tail + payload


def wal_input(flags, shards, segments, cursor=None):
    out = bytes([flags | (len(segments) - 1), shards - 1])
    if cursor is not None:
        out += bytes([len(cursor)]) + b"".join(struct.pack("<QQ", s, o) for s, o in cursor)
    for seg in segments[:-1]:
        out += struct.pack("<H", len(seg)) + seg
    return out + segments[-1]


ms = now * 1000
recs = [record(i % 2, 10, ms - 5000, ms - 1000 + i, bytes([i]) * (20 + i)) for i in range(6)]
MAGIC = b"MAWALv01"
put("wal_recovery", "two_segments", wal_input(0, 2, [MAGIC + b"".join(recs[:3]), MAGIC + b"".join(recs[3:])]))
put("wal_recovery", "torn_tail", wal_input(0, 2, [MAGIC + b"".join(recs[:4]) + recs[4][:40]]))
put("wal_recovery", "no_magic_fixed_crc", wal_input(8 | 16, 1, [b"".join(recs)]))
put("wal_recovery", "cursor", wal_input(4, 2, [MAGIC + b"".join(recs[:3]), MAGIC + b"".join(recs[3:])],
                                          cursor=[(1, 8 + len(recs[0])), (2, 8)]))
put("wal_recovery", "bad_middle_segment", wal_input(32 | 64, 3, [MAGIC + recs[0], b"garbage" * 5, MAGIC + recs[1] + b"\xff" * 33]))
old = record(0, 7, 1000, 2000, b"old" * 10)
put("wal_recovery", "too_old", wal_input(64, 1, [MAGIC + old + recs[0]]))
print("seeds written under", CORPUS)
