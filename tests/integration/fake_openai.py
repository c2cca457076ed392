"""A small OpenAI-compatible upstream for the real-programs harness (Python standard library only).

    python fake_openai.py --port 18001 --dir DIR [--rate-limit-after 540] [--seed 1]

Serves on 127.0.0.1 only:
- POST /v1/chat/completions: a chat.completion body as OpenAI sends it (id `chatcmpl-...`, `usage` with the token
  details), after a short latency; once `--rate-limit-after` successful calls of a gpt-4 model have been answered,
  every further gpt-4 call gets HTTP 429 with OpenAI's rate-limit error JSON (the "ban" at the end of the seed
  incident). Each answer is appended to DIR/upstream_requests.ndjson: what the provider would bill (the truth).
- POST /callbacks: a log receiver for LiteLLM's `generic_api` callback; each POST body is stored verbatim as
  CALLBACK_DIR/batch-NNNNNN.json (what a receiving service would store: LiteLLM's default `json_array` format
  sends one JSON array of StandardLoggingPayload objects per flush).
- GET /health: 200.
Stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import json
import random
import secrets
import signal
import string
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ALPHABET = string.ascii_letters + string.digits
# what the provider calls each model in its answers (OpenAI answers with the dated snapshot)
SNAPSHOT = {"gpt-4": "gpt-4-0613", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}
WORDS = ("the", "report", "system", "value", "model", "data", "result", "process", "customer", "order", "time",
         "because", "which", "their", "would", "analysis", "request", "service", "policy", "team")


def _id(prefix: str, n: int = 29) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(n))


def prompt_tokens(messages) -> int:
    """Roughly what tiktoken counts for a chat prompt: ~4 characters a token plus 3 per message and 3 to prime."""
    n = 3
    for m in messages if isinstance(messages, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        text = content if isinstance(content, str) else json.dumps(content)
        n += 3 + max(1, (len(text or "") + 3) // 4)
    return n


class State:
    def __init__(self, out: Path, callback_dir: Path, rate_limit_after: int, seed: int, latency_scale: float):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.rate_limit_after = rate_limit_after
        self.latency_scale = latency_scale
        self.gpt4_ok = 0
        self.batches = 0
        self.callback_dir = callback_dir
        callback_dir.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        self.truth = open(out / "upstream_requests.ndjson", "a", buffering=1)

    def record(self, row: dict) -> None:
        with self.lock:
            self.truth.write(json.dumps(row, sort_keys=True) + "\n")
            self.truth.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1.0"
    state: State

    def log_message(self, fmt, *args):  # quiet: the harness keeps its own record
        pass

    def _send(self, status: int, body: dict | bytes, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path.rstrip("/") in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error", "param": None,
                                       "code": "unknown_url"}})

    def do_POST(self):
        body = self._body()
        if self.path.startswith("/callbacks"):
            self._callback(body)
        elif self.path.rstrip("/").endswith("/chat/completions"):
            self._chat(body)
        else:
            self._send(404, {"error": {"message": f"Invalid URL (POST {self.path})", "type": "invalid_request_error",
                                       "param": None, "code": None}})

    def _callback(self, body: bytes) -> None:
        st = self.state
        with st.lock:
            st.batches += 1
            n = st.batches
        (st.callback_dir / f"batch-{n:06d}.json").write_bytes(body)
        self._send(200, {"status": "ok"})

    def _chat(self, body: bytes) -> None:
        st = self.state
        received = time.time()
        try:
            req = json.loads(body)
        except ValueError:
            self._send(400, {"error": {"message": "We could not parse the JSON body of your request.",
                                       "type": "invalid_request_error", "param": None, "code": None}})
            return
        model = str(req.get("model") or "")
        max_tokens = req.get("max_tokens") or req.get("max_completion_tokens")
        family = "gpt-4o-mini" if "mini" in model else "gpt-4" if model.startswith("gpt-4") else model
        request_id = "req_" + secrets.token_hex(16)
        with st.lock:
            banned = family == "gpt-4" and st.gpt4_ok >= st.rate_limit_after
            if family == "gpt-4" and not banned:
                st.gpt4_ok += 1
            slow = st.rng.uniform(0.8, 2.0) if family == "gpt-4" else st.rng.uniform(0.15, 0.5)
            cap = int(max_tokens) if max_tokens else None
            if family == "gpt-4" and cap:       # "write 10,000 words": most answers run into max_tokens
                completion = cap if st.rng.random() < 0.75 else st.rng.randint(min(2400, cap), cap)
            else:
                completion = st.rng.randint(min(40, cap or 40), min(cap or 400, 400))
        prompt = prompt_tokens(req.get("messages"))
        if banned:
            time.sleep(0.05 * st.latency_scale)
            st.record({"time": received, "model": model, "family": family, "status": 429, "id": None,
                       "x_request_id": request_id, "max_tokens": max_tokens})
            self._send(429, {"error": {
                "message": (f"Rate limit reached for gpt-4 in organization org-q7HVDbCQ4sVLhhp6k0rW2NzE on tokens "
                            f"per min (TPM): Limit 10000, Used 9241, Requested {prompt + int(max_tokens or 0)}. "
                            "Please try again in 22.446s. Visit https://platform.openai.com/account/rate-limits "
                            "to learn more."),
                "type": "tokens", "param": None, "code": "rate_limit_exceeded"}},
                {"x-request-id": request_id, "x-ratelimit-limit-tokens": "10000",
                 "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "22.446s"})
            return
        time.sleep(slow * st.latency_scale)
        cid = _id("chatcmpl-")
        finish = "length" if max_tokens and completion >= int(max_tokens) else "stop"
        # the text is kept short (the capture stays small); the usage is what the provider bills
        text = " ".join(st.rng.choice(WORDS) for _ in range(12)).capitalize() + "."
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        answer = {"id": cid, "object": "chat.completion", "created": int(received),
                  "model": SNAPSHOT.get(family, model),
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                       "annotations": []},
                               "logprobs": None, "finish_reason": finish}],
                  "usage": usage, "service_tier": "default", "system_fingerprint": None}
        st.record({"time": received, "answered": time.time(), "model": model, "family": family, "status": 200,
                   "id": cid, "x_request_id": request_id, "max_tokens": max_tokens,
                   "prompt_tokens": prompt, "completion_tokens": completion})
        self._send(200, answer, {"x-request-id": request_id, "openai-organization": "user-abc123",
                                 "openai-processing-ms": str(int(slow * st.latency_scale * 1000)),
                                 "openai-version": "2020-10-01"})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", type=Path, required=True, help="where upstream_requests.ndjson goes")
    ap.add_argument("--callback-dir", type=Path, required=True, help="where the generic_api batches go")
    ap.add_argument("--rate-limit-after", type=int, default=10**9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--latency-scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    Handler.state = State(args.dir, args.callback_dir, args.rate_limit_after, args.seed, args.latency_scale)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        Handler.state.truth.close()


if __name__ == "__main__":
    main()
