"""A minimal provider for the cache tests: one stdlib HTTP POST per attempt to the loopback server.
litellm's client takes ~5 s to import on 2 cores; the cache tests start several processes."""
from __future__ import annotations

import asyncio
import json
import urllib.request

from runner.engine.types import Completion, Request
from runner.providers.base import Provider


class LoopbackHttp(Provider):
    kind = "loopback_http"

    def __init__(self, api_base: str, **kw):
        super().__init__("loopback", **{"max_retries": 0, "timeout_s": 10.0, **kw})
        self.url = f"{api_base}/chat/completions"

    async def acomplete(self, request: Request) -> Completion:
        return await asyncio.to_thread(self._post, request)

    def _post(self, request: Request) -> Completion:
        body = json.dumps({"model": self.model, "messages": request.messages}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
            out = json.loads(r.read())
        usage = out.get("usage") or {}
        return Completion(text=out["choices"][0]["message"]["content"], tokens_in=usage.get("prompt_tokens"),
                          tokens_out=usage.get("completion_tokens"))
