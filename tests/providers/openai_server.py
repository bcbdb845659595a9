"""A loopback OpenAI-compatible chat server for tests and the throughput bench.

Real HTTP on 127.0.0.1 (ephemeral port): litellm talks to it exactly as to a hosted API.
What it does with each request is decided by `plan(prompt, attempt) -> Action`, where
prompt is the last message's content and attempt counts that prompt's arrivals (1, 2, ...).
It counts everything the tests assert on: requests per prompt, max requests in flight and
arrival times.

Run standalone (used by bench/teacher_throughput.py so its CPU is not the client's):
    python -m tests.providers.openai_server [--port N]
prints `PORT <n>` and serves until killed; each request sleeps the `sleep=<seconds>` in its prompt.
"""
from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Action:
    kind: str = "ok"  # ok | status | malformed | hang
    delay_s: float = 0.0  # slept before answering (latency, or the hang before a timeout)
    status: int = 200
    retry_after: float | None = None
    text: str | None = None  # default: "echo: <prompt>"


def always_ok(prompt: str, attempt: int) -> Action:
    return Action()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real APIs
    # TCP_NODELAY, as uvicorn/vLLM set it: headers and body go out as two writes, and with Nagle on
    # the body waits for the client's delayed ACK (~40 ms on Linux) on every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        srv: LoopbackServer = self.server.owner  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        prompt = (body.get("messages") or [{}])[-1].get("content", "")
        action = srv.arrive(prompt, body)
        try:
            if action.delay_s > 0:
                time.sleep(action.delay_s)
            if action.kind == "ok":
                self._send(200, json.dumps(_completion(body, action.text or f"echo: {prompt}")).encode())
            elif action.kind == "malformed":
                self._send(200, b'{"id": "x", "choices": [{"message": {"content": "trunc')
            else:
                headers = {"Retry-After": f"{action.retry_after:g}"} if action.retry_after is not None else {}
                err = {"error": {"message": f"loopback {action.status}", "type": "loopback", "code": action.status}}
                self._send(action.status, json.dumps(err).encode(), headers)
        except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout): fine
            pass
        finally:
            srv.leave()

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # listen() backlog; the default 5 drops SYNs under 64 new connections (1 s retry)


def _completion(body: dict, text: str) -> dict:
    prompt_chars = sum(len(m.get("content") or "") for m in body.get("messages", []))
    return {
        "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": len(text) // 4 + 1,
                  "total_tokens": prompt_chars // 4 + len(text) // 4 + 2},
    }


class LoopbackServer:
    """Start with `with LoopbackServer(plan) as srv: ... srv.api_base ...`."""

    def __init__(self, plan: Callable[[str, int], Action] = always_ok, port: int = 0):
        self.plan = plan
        self.plan_takes_body = len(inspect.signature(plan).parameters) >= 3
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.httpd = _Server(("127.0.0.1", port), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def arrive(self, prompt: str, body: dict | None = None) -> Action:
        """A plan taking three arguments also gets the request body (e.g. best-of-n's `seed`)."""
        with self.lock:
            self.counts[prompt] = self.counts.get(prompt, 0) + 1
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            attempt = self.counts[prompt]
        if self.plan_takes_body:
            return self.plan(prompt, attempt, body or {})
        return self.plan(prompt, attempt)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_SLEEP = re.compile(r"sleep=([0-9.]+)")


def sleep_from_prompt(prompt: str, attempt: int) -> Action:
    """Standalone plan: sleep the seconds written in the prompt as `sleep=<s>` (the bench chooses them)."""
    m = _SLEEP.search(prompt)
    return Action(delay_s=float(m.group(1)) if m else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    with LoopbackServer(sleep_from_prompt, port=args.port) as srv:
        print(f"PORT {srv.port}", flush=True)
        try:
            srv.thread.join()
        except KeyboardInterrupt:
            pass
    sys.exit(0)


if __name__ == "__main__":
    main()
