"""The seed incident replayed through the REAL programs, on loopback inside a private network namespace.

    python tests/integration/realprog.py OUT_DIR [--baseline-seconds 90] [--attack-requests 600] [--seed 1]
    python tests/integration/realprog.py --install-only       # LiteLLM and nginx only (CI set-up)

What runs (all bound to 127.0.0.1 in a fresh `unshare --net` namespace whose only interface is `lo`):
- a fake OpenAI upstream (fake_openai.py, standard library) on :18001 that answers /v1/chat/completions like OpenAI
  (id `chatcmpl-...`, `usage`), answers HTTP 429 with OpenAI's rate-limit error once `rate_limit_after` gpt-4 calls
  have succeeded, and stores LiteLLM's `generic_api` callback batches POSTed to /callbacks;
- the LiteLLM proxy from PyPI (LITELLM_VERSION, in its own cached virtualenv) on :4000 with `gpt-4` and
  `gpt-4o-mini` pointing at the fake upstream, NO master key (the seed's open proxy; this release refuses to start
  without one unless `dangerously_permit_weak_or_unset_master_key` is set, so it is), no database,
  `json_logs: true`, and two logging callbacks that receive the same StandardLoggingPayload: a custom callback
  (LiteLLM's documented `custom_callbacks.proxy_handler_instance` pattern) appending it to an NDJSON file, and the
  built-in `generic_api` callback POSTing batches to the fake upstream's /callbacks. generic_api loses payloads
  (1.106.12: `async_send_batch` clears its queue after the POST, dropping events logged while the POST was in
  flight; a few per run here), so the capture holds the lossless NDJSON and the batches are kept beside it;
- nginx from Debian on :8080 in front of it, `set_real_ip_from 127.0.0.0/8; real_ip_header X-Forwarded-For;`,
  access log in the `combined` format (and a second access log with a custom format kept beside the capture);
- clients: four "app servers" (10.0.1.11-14 in X-Forwarded-For, no Authorization by default) calling gpt-4o-mini
  about 2.5 times a second in all for the whole run; after `baseline_seconds` (90) 8 public addresses (6 IPv4,
  2 IPv6, documentation ranges) send `attack_requests` (600) gpt-4 requests with max_tokens 4000, concurrently,
  without Authorization (2-3 minutes); the upstream answers 429 after `rate_limit_after` (540) of them, LiteLLM
  retries each 429 twice. Nothing leaves the namespace: the client addresses are header values only.

OUT_DIR gets:
  capture/                   what the deployment logged (the input for `forensics report`) and truth.json
    nginx/access.log           nginx, `combined`
    litellm/proxy_stdout.log   the proxy's stdout+stderr as a container runtime keeps them (json_logs: true)
    litellm/callbacks.ndjson   one StandardLoggingPayload per line, per request, as the custom callback wrote it
    truth.json                 attack window, addresses, upstream ids, tokens and cost (ignored by ingest by name)
  variants/nginx_timings/access.log   the same requests in a custom format (see NGINX_TIMINGS_FORMAT)
  variants/generic_api/batch-NNNNNN.json   each POST of the generic_api callback, verbatim (a JSON array of
                               StandardLoggingPayload objects per flush, LiteLLM's default `json_array` format)
  upstream/upstream_requests.ndjson   every answer of the fake upstream (the provider's view: the billing truth)
  clients/requests.ndjson             every client request: address, times, status, ids as the client saw them
  setup/                              litellm_config.yaml, nginx.conf, timings.json, the processes' own output

Every process started is stopped by its PID in a `finally`; every client loop has a count limit and a deadline.
Install: LiteLLM goes into ~/.cache/forensics/litellm-<version>-py3X (or $FORENSICS_CACHE_DIR) the first time;
nginx comes from apt-get when missing. `Unavailable` is raised when PyPI / Debian cannot be reached.
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import http.client
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
LITELLM_VERSION = "1.106.12"   # newest whose `litellm[proxy]` extra resolves on PyPI here (see README in report)
FAKE_PORT, LITELLM_PORT, NGINX_PORT = 18001, 4000, 8080
NGINX_TIMINGS_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                        '"$http_referer" "$http_user_agent" $request_time $upstream_response_time '
                        '"$http_x_forwarded_for"')
# .pth files a clean install of litellm[proxy] brings (setuptools'); any other one runs code at every start-up of
# the venv's Python (the way litellm 1.82.8 was compromised): refuse the venv
ALLOWED_PTH = {"distutils-precedence.pth"}
APPS = ("10.0.1.11", "10.0.1.12", "10.0.1.13", "10.0.1.14")
ATTACKERS = ("192.0.2.14", "192.0.2.77", "198.51.100.23", "198.51.100.180", "203.0.113.9", "203.0.113.201",
             "2001:db8:85a3::8a2e:370:7334", "2001:db8:4:1::25")
ATTACK_UAS = ("curl/7.88.1", "curl/8.5.0", "python-requests/2.31.0")
APP_UA = "python-httpx/0.27.2"
APP_UA_SDK = "OpenAI/Python 1.51.2"
NETWORK_ERRORS = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                  "Could not resolve", "Failed to fetch", "Max retries exceeded", "ConnectTimeout",
                  "Connection refused", "Failed to establish a new connection", "Unable to connect",
                  "No route to host", "Name or service not known")


class Unavailable(RuntimeError):
    """PyPI or the Debian mirror cannot be reached: the programs cannot be installed here."""


@dataclass
class Scenario:
    baseline_seconds: float = 90.0        # app servers alone before the attack starts
    attack_requests: int = 600            # gpt-4 requests, max_tokens 4000, from the 8 public addresses
    attack_max_seconds: float = 240.0     # deadline of the attack phase (the count normally ends it first)
    app_gap_seconds: float = 1.2          # mean pause of each app server between two calls
    rate_limit_after: int = 540           # gpt-4 successes before the upstream answers 429 to every gpt-4 call
    latency_scale: float = 1.0            # upstream latency: gpt-4 0.8-2.0 s, gpt-4o-mini 0.15-0.5 s, times this
    flush_wait: float = 12.0              # after the last request: generic_api flushes every 5 s ...
    callback_wait_max: float = 60.0       # ... and wait until every answered request is in callbacks.ndjson
    seed: int = 1
    # what the app servers send as `Authorization: Bearer ...`: None (the default: plain HTTP clients, nothing
    # key-like in any log, as in the seed) or a placeholder such as "sk-acme-internal-apps" (the OpenAI SDK needs
    # one; with no master key LiteLLM accepts any value and logs its sha256 as user_api_key_hash when it starts
    # with "sk-", the value itself otherwise). The attackers never send one (curl loops).
    app_bearer: str | None = None
    litellm_version: str = LITELLM_VERSION
    attackers: tuple[str, ...] = ATTACKERS
    apps: tuple[str, ...] = APPS
    timings: dict = field(default_factory=dict)

    @property
    def deadline_seconds(self) -> float:
        """A bound on the whole run inside the namespace (start-up, both phases, flush, stop)."""
        return 180 + self.baseline_seconds + self.attack_max_seconds + self.callback_wait_max + 60


# ---------------------------------------------------------------- install (outside the namespace, needs the network)

def cache_dir() -> Path:
    root = os.environ.get("FORENSICS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "forensics")
    return Path(root)


def litellm_venv(version: str = LITELLM_VERSION) -> Path:
    return cache_dir() / f"litellm-{version}-py{sys.version_info.major}{sys.version_info.minor}"


def _pth_files(venv: Path) -> set[str]:
    return {p.name for p in venv.glob("lib/python*/site-packages/*.pth")}


def ensure_litellm(version: str = LITELLM_VERSION, log=print) -> tuple[Path, float]:
    """The cached venv holding `litellm[proxy]==version` (installed when missing); (venv, seconds spent installing).

    The venv's Python is never run here, outside the namespace: only pip runs, and the .pth check reads files."""
    venv = litellm_venv(version)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                 # one install at a time (parallel test runs)
        if (venv / ".complete").is_file():
            return venv, 0.0
        t0 = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        log(f"installing litellm[proxy]=={version} into {venv} (first run only)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--no-input", "-q",
                            f"litellm[proxy]=={version}"], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            out = r.stdout + r.stderr
            if any(e in out for e in NETWORK_ERRORS):
                raise Unavailable(f"PyPI unreachable, litellm[proxy]=={version} not installed: {out.strip()[-300:]}")
            raise RuntimeError(f"pip install litellm[proxy]=={version} failed:\n{out[-3000:]}")
        unexpected = _pth_files(venv) - ALLOWED_PTH
        if unexpected:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"litellm[proxy]=={version} installed unexpected .pth files {sorted(unexpected)}: "
                               "refused (code run at every Python start-up)")
        (venv / ".complete").write_text(f"litellm[proxy]=={version}\n")
        return venv, time.monotonic() - t0


def ensure_nginx(log=print) -> tuple[str, float]:
    """The nginx binary (apt-get installs nginx-light, else nginx, when missing); (path, seconds spent installing)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if found:
        return found, 0.0
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("nginx is not installed and apt-get cannot be run here (not root or not Debian)")
    t0 = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log("installing nginx from Debian (first run only)")
    outs = []
    r = subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, env=env, timeout=600)
    outs.append(r.stdout + r.stderr)
    for pkg in ("nginx-light", "nginx"):
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg],
                           capture_output=True, text=True, env=env, timeout=600)
        outs.append(r.stdout + r.stderr)
        if r.returncode == 0 and (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
            # the package starts a system nginx on :80 on some systems; that one is not ours to stop
            return shutil.which("nginx") or "/usr/sbin/nginx", time.monotonic() - t0
    text = "\n".join(outs)
    if any(e in text for e in NETWORK_ERRORS):
        raise Unavailable(f"Debian mirror unreachable, nginx not installed: {text.strip()[-300:]}")
    raise RuntimeError(f"apt-get install nginx failed:\n{text[-3000:]}")


def program_versions(venv: Path, nginx: str) -> dict:
    nv = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    meta = next(venv.glob("lib/python*/site-packages/litellm-*.dist-info/METADATA"), None)
    version = next((ln.split(":", 1)[1].strip() for ln in meta.read_text().splitlines()
                    if ln.startswith("Version:")), None) if meta else None
    return {"litellm": version, "nginx": nv.split("/", 1)[-1] if "/" in nv else nv}


# ---------------------------------------------------------------- run: outside part

def run(out: Path, scenario: Scenario | None = None, log=print) -> dict:
    """Install what is missing, run the scenario in a private network namespace, return truth.json's content."""
    scenario = scenario or Scenario()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for d in ("capture", "variants", "upstream", "clients", "setup"):
        if (out / d).exists() and any((out / d).iterdir()):
            raise FileExistsError(f"{out / d} is not empty")
    t0 = time.monotonic()
    venv, litellm_install = ensure_litellm(scenario.litellm_version, log=log)
    nginx, nginx_install = ensure_nginx(log=log)
    scenario.timings.update(litellm_install_seconds=round(litellm_install, 1),
                            nginx_install_seconds=round(nginx_install, 1))
    spec = out / "setup" / "scenario.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({**asdict(scenario), "venv": str(venv), "nginx": nginx, "out": str(out),
                                "programs": program_versions(venv, nginx)}, indent=1))
    cmd = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    cmd += ["--", sys.executable, str(Path(__file__).resolve()), "_inside", str(spec)]
    t1 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig)   # dies with this process
    try:
        rc = proc.wait(timeout=scenario.deadline_seconds + 60)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        if proc.poll() is None:                        # SIGTERM lets the inside part stop its own processes
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _kill_recorded(out / "setup" / "pids.json")      # anything it could not stop
    if rc != 0:
        raise RuntimeError(f"the scenario failed (exit {rc}); see {out / 'setup'}")
    truth = json.loads((out / "capture" / "truth.json").read_text())
    truth["timings"].update(scenario.timings, run_seconds=round(time.monotonic() - t1, 1),
                            total_seconds=round(time.monotonic() - t0, 1))
    (out / "capture" / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    return truth


def _kill_recorded(pids_file: Path) -> None:
    """Stop, by PID, the processes the inside part recorded and that still run the command it started."""
    if not pids_file.is_file():
        return
    for name, (pid, marker) in json.loads(pids_file.read_text()).items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------- run: inside the namespace

def _lo_up() -> None:
    """Bring `lo` up (SIOCGIFFLAGS / SIOCSIFFLAGS), so no iproute2 is needed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, 0x8913, ifreq))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sh14x", b"lo", flags | 0x1 | 0x40))   # IFF_UP | IFF_RUNNING
    finally:
        s.close()


def _no_other_interface() -> list[str]:
    return sorted(n for _, n in socket.if_nameindex() if n != "lo")   # this namespace's (not /sys's) interfaces


def _pdeathsig():
    """In the child: get SIGTERM when the inside part dies, whatever the way."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


class Procs:
    """The processes started inside, by name: started with Popen, recorded in pids.json, stopped by PID."""

    def __init__(self, pids_file: Path):
        self.pids_file = pids_file
        self.procs: dict[str, tuple[subprocess.Popen, str]] = {}

    def start(self, name: str, cmd: list[str], marker: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig, **kw)
        self.procs[name] = (p, marker)
        self.pids_file.write_text(json.dumps({n: (q.pid, m) for n, (q, m) in self.procs.items()}))
        return p

    def stop(self, name: str, sig=signal.SIGTERM, timeout: float = 20) -> int | None:
        p, _ = self.procs[name]
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        return p.returncode

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)


def _wait_http(port: int, path: str, deadline: float, proc: subprocess.Popen, what: str) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                c.close()
                return
            c.close()
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer on 127.0.0.1:{port}{path} in time")


def litellm_config(fake_port: int) -> str:
    base = f"http://127.0.0.1:{fake_port}/v1"
    return f"""# the seed's open proxy: no master_key, no database_url; logs as a real deployment has them
model_list:
  - model_name: gpt-4
    litellm_params:
      model: openai/gpt-4
      api_base: {base}
      api_key: sk-proj-realprog0dummy0upstream0key
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}
      api_key: sk-proj-realprog0dummy0upstream0key

litellm_settings:
  json_logs: true
  # custom_callbacks.py beside this file writes each StandardLoggingPayload to $REALPROG_CALLBACK_NDJSON;
  # generic_api POSTs batches to $GENERIC_LOGGER_ENDPOINT (default log_format json_array)
  callbacks: ["custom_callbacks.proxy_handler_instance", "generic_api"]

general_settings:
  # LiteLLM >= 1.10x refuses to start without a master key; the seed's proxy ran without one (an older release,
  # or this opt-out): the open proxy needs it said out loud
  dangerously_permit_weak_or_unset_master_key: true
"""


def nginx_config(prefix: Path, capture: Path, variants: Path, root: bool) -> str:
    return f"""# nginx in front of LiteLLM, as in the seed deployment
{"user root;" if root else "master_process off;"}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    log_format timings '{NGINX_TIMINGS_FORMAT}';
    access_log {capture}/nginx/access.log combined;
    access_log {variants}/nginx_timings/access.log timings;
    # the load balancer in front (here: the test clients) puts the client in X-Forwarded-For
    set_real_ip_from 127.0.0.0/8;
    real_ip_header X-Forwarded-For;
    upstream litellm {{
        server 127.0.0.1:{LITELLM_PORT};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{NGINX_PORT};
        server_name llm-gateway.example.com;
        client_max_body_size 10m;
        location = /nginx-health {{ access_log off; return 200 "ok"; }}
        location / {{
            proxy_pass http://litellm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


TOPICS = ("the history of the Roman empire", "quantum computing", "climate policy", "medieval castles",
          "the stock market", "deep sea creatures", "renaissance painting", "space exploration")
TICKETS = ("My order #4411 arrived damaged, the box was crushed.", "I was charged twice for my subscription.",
           "How do I reset my password? The link expired.", "The app crashes when I upload a photo.",
           "Can I change the delivery address after checkout?", "Your invoice shows the wrong VAT number.")


class Clients:
    """The client side: app servers and attackers, each a thread with a count limit and a deadline."""

    def __init__(self, out: Path, rng: random.Random):
        self.lock = threading.Lock()
        self.rows: list[dict] = []
        self.file = open(out / "requests.ndjson", "w", buffering=1)
        self.rng = rng
        self.stop_apps = threading.Event()

    def call(self, who: str, xff: str, ua: str, auth: str | None, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "User-Agent": ua, "X-Forwarded-For": xff,
                   "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        row = {"who": who, "address": xff, "model": body["model"], "max_tokens": body.get("max_tokens"),
               "sent": time.time()}
        try:
            c = http.client.HTTPConnection("127.0.0.1", NGINX_PORT, timeout=120)
            c.request("POST", "/v1/chat/completions", body=data, headers=headers)
            r = c.getresponse()
            payload = r.read()
            row.update(status=r.status, litellm_call_id=r.getheader("x-litellm-call-id"),
                       response_cost=r.getheader("x-litellm-response-cost"))
            c.close()
            try:
                doc = json.loads(payload)
                row.update(id=doc.get("id"), usage=doc.get("usage"),
                           error=(doc.get("error") or {}).get("message", "")[:200] if "error" in doc else None)
            except ValueError:
                row.update(id=None, error=payload[:200].decode(errors="replace"))
        except OSError as e:
            row.update(status=None, error=repr(e))
        row["received"] = time.time()
        with self.lock:
            self.rows.append(row)
            self.file.write(json.dumps(row) + "\n")
        return row

    def app_server(self, n: int, address: str, stop_at: float, gap: float, bearer: str | None,
                   limit: int = 5000) -> None:
        rng = random.Random(self.rng.random())
        for _ in range(limit):
            if self.stop_apps.is_set() or time.monotonic() >= stop_at:
                return
            body = {"model": "gpt-4o-mini",
                    "messages": [{"role": "system", "content": "You are a helpful support assistant for ACME."},
                                 {"role": "user", "content": f"Summarize this ticket: {rng.choice(TICKETS)}"}]}
            if rng.random() < 0.6:
                body["max_tokens"] = rng.choice((256, 512))
            body["temperature"] = 0.2
            self.call(f"app{n}", address, APP_UA_SDK if bearer else APP_UA, bearer, body)
            self.stop_apps.wait(min(rng.expovariate(1 / gap), 4 * gap))

    def attacker(self, address: str, count: int, stop_at: float, start_delay: float) -> None:
        rng = random.Random(self.rng.random())
        ua = rng.choice(ATTACK_UAS)
        time.sleep(start_delay)
        for _ in range(count):
            if time.monotonic() >= stop_at:
                return
            body = {"model": "gpt-4", "max_tokens": 4000,
                    "messages": [{"role": "user", "content": f"Write a detailed 10000 word essay about "
                                                             f"{rng.choice(TOPICS)}. {rng.getrandbits(64):x}"}]}
            self.call("attack", address, ua, None, body)
            time.sleep(rng.uniform(0.0, 0.3))


def ndjson_call_ids(path: Path) -> set[str]:
    """The litellm_call_ids in the custom callback's NDJSON (complete lines only)."""
    ids = set()
    try:
        text = path.read_text()
    except OSError:
        return ids
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            ids.add(json.loads(line).get("litellm_call_id"))
    return ids


def batch_call_ids(folder: Path) -> list[str]:
    """The litellm_call_ids in the generic_api batches, one per payload (a request in two batches counts twice)."""
    return [p.get("litellm_call_id") for f in sorted(folder.glob("batch-*.json")) for p in json.loads(f.read_bytes())]


# the custom callback, as LiteLLM's docs show it (custom_callbacks.py beside the config, `proxy_handler_instance`)
CUSTOM_CALLBACKS = '''"""Append every request's StandardLoggingPayload to an NDJSON file (success and failure)."""
import os
import threading

from litellm.integrations.custom_logger import CustomLogger
from litellm.litellm_core_utils.safe_json_dumps import safe_dumps


class NDJSONPayloadLogger(CustomLogger):
    def __init__(self):
        super().__init__()
        self.path = os.environ["REALPROG_CALLBACK_NDJSON"]
        self.lock = threading.Lock()

    def _write(self, kwargs):
        payload = kwargs.get("standard_logging_object")
        if payload is not None:
            line = safe_dumps(payload) + "\\n"
            with self.lock, open(self.path, "a") as f:
                f.write(line)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs)


proxy_handler_instance = NDJSONPayloadLogger()
'''


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _price() -> tuple[Decimal, Decimal, str]:
    """gpt-4's list price ($ per million input / output tokens) from genai-prices, else OpenAI's published one."""
    try:
        from importlib.metadata import version as dist_version

        from genai_prices import Usage, calc_price
        p = calc_price(Usage(input_tokens=1_000_000, output_tokens=1_000_000), model_ref="gpt-4",
                       provider_id="openai")
        return Decimal(str(p.input_price)), Decimal(str(p.output_price)), f"genai-prices {dist_version('genai-prices')}"
    except Exception:     # the harness also runs without the project's packages
        return Decimal(30), Decimal(60), "OpenAI list price (genai-prices not importable)"


def inside(spec_path: Path) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    capture, variants, setup = out / "capture", out / "variants", out / "setup"
    for d in (capture / "nginx", capture / "litellm", variants / "generic_api", variants / "nginx_timings",
              out / "upstream",
              out / "clients", setup):
        d.mkdir(parents=True, exist_ok=True)
    _lo_up()
    others = _no_other_interface()
    if others:
        raise RuntimeError(f"not a private namespace: interfaces {others}")
    procs = Procs(setup / "pids.json")
    stopping = threading.Event()

    def on_term(*_):
        stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t_start = time.monotonic()
    hard_deadline = t_start + spec["baseline_seconds"] + spec["attack_max_seconds"] + 240
    timings: dict = {}
    nginx_prefix = Path(os.environ.get("TMPDIR", "/tmp")) / f"realprog-nginx-{os.getpid()}"
    try:
        # 1. the fake upstream
        procs.start("fake_openai", [sys.executable, str(HERE / "fake_openai.py"), "--port", str(FAKE_PORT),
                                    "--dir", str(out / "upstream"),
                                    "--callback-dir", str(variants / "generic_api"),
                                    "--rate-limit-after", str(spec["rate_limit_after"]), "--seed", str(spec["seed"]),
                                    "--latency-scale", str(spec["latency_scale"])],
                    "fake_openai.py", stdout=open(setup / "fake_openai.out", "w"), stderr=subprocess.STDOUT)
        _wait_http(FAKE_PORT, "/health", time.monotonic() + 30, procs.procs["fake_openai"][0], "fake upstream")

        # 2. LiteLLM
        cfg = setup / "litellm_config.yaml"
        cfg.write_text(litellm_config(FAKE_PORT))
        (setup / "custom_callbacks.py").write_text(CUSTOM_CALLBACKS)
        venv = Path(spec["venv"])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC", "LITELLM", "AZURE",
                                                                        "AWS", "DATABASE_URL", "REDIS"))}
        env.update(JSON_LOGS="True", GENERIC_LOGGER_ENDPOINT=f"http://127.0.0.1:{FAKE_PORT}/callbacks",
                   REALPROG_CALLBACK_NDJSON=str(capture / "litellm" / "callbacks.ndjson"),
                   LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONUNBUFFERED="1", TZ="UTC",
                   PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}", HOME=str(setup / "home"))
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        (setup / "home").mkdir(exist_ok=True)
        stdout_log = open(capture / "litellm" / "proxy_stdout.log", "w")
        t = time.monotonic()
        procs.start("litellm", [str(venv / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
                                "--port", str(LITELLM_PORT)],
                    str(venv / "bin" / "litellm"), stdout=stdout_log, stderr=subprocess.STDOUT, env=env,
                    cwd=str(setup / "home"))
        _wait_http(LITELLM_PORT, "/health/liveliness", time.monotonic() + 150, procs.procs["litellm"][0], "LiteLLM")
        timings["litellm_startup_seconds"] = round(time.monotonic() - t, 1)

        # 3. nginx
        (nginx_prefix / "tmp").mkdir(parents=True, exist_ok=True)
        ncfg = setup / "nginx.conf"
        ncfg.write_text(nginx_config(nginx_prefix, capture, variants, root=_really_root()))
        procs.start("nginx", [spec["nginx"], "-p", str(nginx_prefix), "-e", str(nginx_prefix / "error.log"),
                              "-c", str(ncfg)], "nginx",
                    stdout=open(setup / "nginx.out", "w"), stderr=subprocess.STDOUT)
        _wait_http(NGINX_PORT, "/nginx-health", time.monotonic() + 30, procs.procs["nginx"][0], "nginx")

        # 4. the scenario: app servers throughout, the attack after baseline_seconds
        rng = random.Random(spec["seed"])
        clients = Clients(out / "clients", rng)
        now = time.monotonic()
        attack_start = now + spec["baseline_seconds"]
        attack_stop = attack_start + spec["attack_max_seconds"]
        threads = [threading.Thread(target=clients.app_server, daemon=True,
                                    args=(n + 1, a, attack_stop, spec["app_gap_seconds"], spec["app_bearer"]))
                   for n, a in enumerate(spec["apps"])]
        for th in threads:
            th.start()
            time.sleep(rng.uniform(0.1, 0.6))
        time.sleep(max(0.0, attack_start - time.monotonic()))
        n_att = len(spec["attackers"])
        counts = [spec["attack_requests"] // n_att + (1 if i < spec["attack_requests"] % n_att else 0)
                  for i in range(n_att)]
        attackers = [threading.Thread(target=clients.attacker, daemon=True,
                                      args=(a, counts[i], attack_stop, i * 1.5 + rng.uniform(0, 1)))
                     for i, a in enumerate(spec["attackers"])]
        for th in attackers:
            th.start()
        for th in attackers:
            th.join(timeout=max(0.0, attack_stop + 130 - time.monotonic()))
        # the app servers go on for a few seconds after the attack, then stop (each finishes its call in flight)
        clients.stop_apps.wait(min(10.0, max(0.0, attack_stop - time.monotonic())))
        clients.stop_apps.set()
        for th in threads:
            th.join(timeout=max(0.0, attack_stop + 260 - time.monotonic()))
        timings["scenario_seconds"] = round(time.monotonic() - now, 1)
        # generic_api flushes its queue every 5 s; the custom callback writes as each request ends (a logging
        # task after the response): wait for the payload of every request LiteLLM answered
        t = time.monotonic()
        time.sleep(spec["flush_wait"])
        handled = {r["litellm_call_id"] for r in clients.rows if r.get("litellm_call_id")}
        while (not handled <= ndjson_call_ids(capture / "litellm" / "callbacks.ndjson")
               and time.monotonic() < t + spec["callback_wait_max"]):
            time.sleep(1.0)
        timings["callback_wait_seconds"] = round(time.monotonic() - t, 1)
        procs.stop("nginx", signal.SIGQUIT)       # graceful: finishes the open requests, closes the logs
        procs.stop("litellm")
        procs.stop("fake_openai")
        clients.file.close()
        truth = make_truth(out, spec, clients.rows, timings)
        (capture / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        try:
            (setup / "nginx_error.log").write_bytes((nginx_prefix / "error.log").read_bytes())
        except OSError:
            pass
        shutil.rmtree(nginx_prefix, ignore_errors=True)
        if time.monotonic() > hard_deadline:
            print("realprog: over the time budget", file=sys.stderr)


def _really_root() -> bool:
    """Real root (not root mapped in a user namespace): nginx may then run a master and switch users."""
    try:
        for line in Path("/proc/self/uid_map").read_text().splitlines():
            inside_uid, outside_uid, _ = line.split()
            if inside_uid == "0":
                return outside_uid == "0"
    except OSError:
        pass
    return os.geteuid() == 0


def answered_by_nginx(row: dict) -> bool:
    """A gateway error nginx made itself: 502/504 with nginx's own HTML page and no LiteLLM call id. LiteLLM never
    saw such a request, so it has no callback payload. It happens in real deployments like this one: uvicorn closes
    an idle keep-alive connection after 5 s while nginx's upstream keepalive keeps it for 60 s, so a POST sent on a
    connection uvicorn is closing gets "Connection reset by peer" and nginx does not retry a non-idempotent request."""
    return (row.get("status") in (502, 504) and not row.get("litellm_call_id")
            and "nginx" in (row.get("error") or ""))


def make_truth(out: Path, spec: dict, rows: list[dict], timings: dict) -> dict:
    upstream = [json.loads(ln) for ln in (out / "upstream" / "upstream_requests.ndjson").read_text().splitlines()
                if ln.strip()]
    attackers = set(spec["attackers"])
    attack = sorted((r for r in rows if r["address"] in attackers), key=lambda r: r["sent"])
    base = sorted((r for r in rows if r["address"] not in attackers), key=lambda r: r["sent"])
    billed = [u for u in upstream if u["status"] == 200 and u["family"] == "gpt-4"]
    pin, pout, source = _price()
    prompt = sum(u["prompt_tokens"] for u in billed)
    completion = sum(u["completion_tokens"] for u in billed)
    cost = (prompt * pin + completion * pout) / Decimal(1_000_000)
    mini = [u for u in upstream if u["status"] == 200 and u["family"] == "gpt-4o-mini"]
    status = lambda rs: {str(k): sum(1 for r in rs if r.get("status") == k)      # noqa: E731
                         for k in sorted({r.get("status") for r in rs}, key=str)}
    seen_ids = {r["id"] for r in attack if r.get("id")}
    received = ndjson_call_ids(out / "capture" / "litellm" / "callbacks.ndjson")
    by_nginx = [r for r in rows if answered_by_nginx(r)]
    missing = [r for r in rows if r.get("litellm_call_id") not in received and not answered_by_nginx(r)]
    batched = batch_call_ids(out / "variants" / "generic_api")
    handled = [r["litellm_call_id"] for r in rows if r.get("litellm_call_id")]
    lost = sorted(set(handled) - set(batched))
    lost_attack = [r for r in attack if r.get("litellm_call_id") in set(lost)]
    incident = {
        "id": "INC-1", "kind": "unauthenticated_proxy", "verdict": "attack",
        "description": "LiteLLM proxy without a master key reachable through nginx; 8 public addresses sent gpt-4 "
                       "requests with max_tokens 4000 until the upstream rate-limited them (HTTP 429).",
        "start": _iso(attack[0]["sent"]), "end": _iso(max(r["received"] for r in attack)),
        "attacker_ips": sorted(attackers), "requests": len(attack), "status": status(attack),
        "request_ids": sorted(u["id"] for u in billed),
        "litellm_call_ids": sorted(r["litellm_call_id"] for r in attack if r.get("litellm_call_id")),
        "ids_seen_by_clients_match_upstream": seen_ids == {u["id"] for u in billed},
        "upstream_calls": len([u for u in upstream if u["family"] == "gpt-4"]),
        "upstream_429": len([u for u in upstream if u["family"] == "gpt-4" and u["status"] == 429]),
        "prompt_tokens": prompt, "completion_tokens": completion,
        "price_usd_per_mtok": {"model": "gpt-4", "input": str(pin), "output": str(pout), "source": source},
        "cost_usd": str(cost),
        "max_tokens": 4000, "model": "gpt-4", "key_hash": None,
    }
    mini_cost = sum(Decimal(u["prompt_tokens"]) * Decimal("0.15") + Decimal(u["completion_tokens"]) * Decimal("0.6")
                    for u in mini) / Decimal(1_000_000)
    files = sorted(str(p.relative_to(out / "capture")) for p in (out / "capture").rglob("*")
                   if p.is_file() and p.name != "truth.json")
    return {
        "generator": "tests/integration/realprog.py", "programs": spec.get("programs", {}),
        "scenario": {k: spec[k] for k in ("baseline_seconds", "attack_requests", "attack_max_seconds",
                                          "rate_limit_after", "latency_scale", "seed", "litellm_version",
                                          "app_bearer")},
        "incidents": [incident],
        "baseline": {"addresses": list(spec["apps"]), "model": "gpt-4o-mini", "start": _iso(base[0]["sent"]),
                     "end": _iso(max(r["received"] for r in base)), "requests": len(base), "status": status(base),
                     "cost_usd": str(mini_cost), "user_agent": APP_UA_SDK if spec["app_bearer"] else APP_UA,
                     "authorization": f"Bearer {spec['app_bearer']}" if spec["app_bearer"] else None},
        "conventions": {
            "addresses": "public addresses are documentation ranges (RFC 5737, RFC 3849); clients connect to "
                         "127.0.0.1 and send X-Forwarded-For, nginx realip (set_real_ip_from 127.0.0.0/8) logs it "
                         "as $remote_addr",
            "window": "start = first attack request sent by a client, end = last attack response received",
            "request_ids": "the chatcmpl ids the upstream issued for successful gpt-4 calls (what it bills)",
            "cost_usd": "upstream token counts x gpt-4 list price; 429s cost nothing",
            "attackers_send_no_authorization": "curl-style loops send no Authorization header",
        },
        "files": files,
        "timings": timings,
        "clients": {"requests": len(rows), "status": status(rows),
                    "without_callback_payload": [{k: r.get(k) for k in ("address", "model", "status", "sent",
                                                                         "received", "litellm_call_id", "error")}
                                                 for r in missing],
                    "answered_by_nginx": [{k: r.get(k) for k in ("address", "model", "status", "sent", "received")}
                                          for r in by_nginx]},
        "generic_api": {"payloads": len(batched), "requests_answered": len(handled), "lost": len(lost),
                        "lost_attack": len(lost_attack), "duplicated": len(batched) - len(set(batched)),
                        "lost_attack_cost_share": float(
                            sum((Decimal(r["usage"]["prompt_tokens"]) * pin + Decimal(r["usage"]["completion_tokens"])
                                 * pout) / Decimal(1_000_000) for r in lost_attack if r.get("usage")) / cost
                            if cost else 0),
                        "lost_call_ids": lost},
    }


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["_inside"]:
        return inside(Path(argv[1]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--install-only", action="store_true",
                    help="install LiteLLM (cached venv) and nginx when missing, then exit (for CI set-up)")
    ap.add_argument("--baseline-seconds", type=float, default=Scenario.baseline_seconds)
    ap.add_argument("--attack-requests", type=int, default=Scenario.attack_requests)
    ap.add_argument("--rate-limit-after", type=int, default=Scenario.rate_limit_after)
    ap.add_argument("--latency-scale", type=float, default=Scenario.latency_scale)
    ap.add_argument("--seed", type=int, default=Scenario.seed)
    ap.add_argument("--app-bearer", default=None, help="Authorization the app servers send (default: none)")
    args = ap.parse_args(argv)
    if args.install_only:
        venv, seconds = ensure_litellm()
        nginx, nginx_seconds = ensure_nginx()
        print(json.dumps({"venv": str(venv), "litellm_install_seconds": round(seconds, 1), "nginx": nginx,
                          "nginx_install_seconds": round(nginx_seconds, 1), **program_versions(venv, nginx)}))
        return 0
    if args.out is None:
        ap.error("OUT_DIR is required")
    truth = run(args.out, Scenario(baseline_seconds=args.baseline_seconds, attack_requests=args.attack_requests,
                                   rate_limit_after=args.rate_limit_after, latency_scale=args.latency_scale,
                                   seed=args.seed, app_bearer=args.app_bearer))
    print(json.dumps({k: truth["incidents"][0][k] for k in ("start", "end", "requests", "status", "cost_usd")}))
    print(json.dumps(truth["timings"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
