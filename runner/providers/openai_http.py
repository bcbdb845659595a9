"""A light client for OpenAI-compatible chat endpoints (`provider.client: http`).

Why: litellm's `acompletion` costs ~6-9 ms of CPU per call on the engine's one event loop (its
logging objects, pydantic responses, a price lookup per call). Against a fast server (a local vLLM,
median 0.3 s) at 64-256 requests in flight that CPU, not the server, sets the pace. This client
posts the same JSON body with one aiohttp session per event loop (a connection pool as wide as the
concurrency) and reads back only what the engine uses. litellm still decides the route (which
model strings speak the OpenAI API) and the price: its bundled price map is read once, at setup.
Failures map onto the same ProviderError kinds as the litellm path.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from runner.core.stage import ConfigError
from runner.engine.types import Completion, ProviderError

# litellm routes whose wire format is OpenAI's chat completions (the prefix is stripped, as litellm does).
HTTP_ROUTES = {"openai": None, "hosted_vllm": None, "openrouter": "https://openrouter.ai/api/v1"}
OPENAI_BASE = "https://api.openai.com/v1"


def route_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def choose_client(client: str, model: str, api_base: str | None) -> str:
    """auto: the light client for an OpenAI-compatible server named by api_base (vLLM, llama.cpp,
    sglang: where latency is low enough for client CPU to matter); hosted APIs keep litellm, which
    also translates parameters per model. `http` on a route that is not OpenAI-compatible is refused."""
    if client not in ("auto", "litellm", "http"):
        raise ConfigError(f"provider.client={client!r} must be one of auto, litellm, http")
    compatible = route_of(model) in HTTP_ROUTES
    if client == "http" and not compatible:
        raise ConfigError(f"provider.client=http: {model!r} is not an OpenAI-compatible route "
                          f"({', '.join(f'{r}/' for r in HTTP_ROUTES)}). Fix: provider.client=litellm")
    if client == "auto":
        return "http" if compatible and api_base and route_of(model) != "openrouter" else "litellm"
    return client


def base_url(model: str, api_base: str | None) -> str:
    base = api_base or HTTP_ROUTES.get(route_of(model)) or OPENAI_BASE
    return base.rstrip("/")


def unit_prices(litellm, model: str) -> tuple[float, float] | None:
    """(USD per prompt token, USD per completion token) from litellm's bundled map, or None."""
    try:
        per_in, _ = litellm.cost_per_token(model=model, prompt_tokens=1_000_000, completion_tokens=0)
        _, per_out = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1_000_000)
    except Exception:  # noqa: BLE001 - unknown model: unknown cost, never a silent 0
        return None
    return per_in / 1_000_000, per_out / 1_000_000


class OpenAIHTTP:
    """POST {base}/chat/completions. One aiohttp session per event loop (the engine may run
    several generate() calls, each with its own loop); close() is awaited by the engine."""

    def __init__(self, model: str, api_base: str | None, api_key: str | None, concurrency: int,
                 timeout_s: float, prices: tuple[float, float] | None):
        self.url = base_url(model, api_base) + "/chat/completions"
        self.model = model.split("/", 1)[1] if route_of(model) in HTTP_ROUTES and "/" in model else model
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.concurrency, self.timeout_s, self.prices = int(concurrency), float(timeout_s), prices
        self._session = None
        self._loop = None

    def session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, json_serialize=json.dumps,
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = self._loop = None

    async def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Completion:
        import aiohttp

        # extra_body / extra_headers as the OpenAI SDK (and litellm) read them: merged, not sent as keys
        params = dict(params)
        body = {"model": self.model, "messages": messages, **params.pop("extra_body", {}), **params}
        body.pop("extra_headers", None)
        headers = {**self.headers, **params.get("extra_headers", {})}
        try:
            async with self.session().post(self.url, data=json.dumps(body), headers=headers) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except asyncio.TimeoutError as e:
            raise ProviderError("timeout", f"no response from {self.url} within {self.timeout_s}s") from e
        except (aiohttp.ClientConnectionError, OSError) as e:
            root = _os_error(e)
            raise ProviderError("connection", f"cannot reach {self.url}: {type(e).__name__}: {e}"
                                f" (cause: {type(root).__name__}: {root})") from e
        if status != 200:
            raise http_error(status, raw, headers, self.url)
        return self.parse(raw)

    def parse(self, raw: bytes) -> Completion:
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ProviderError("malformed", f"unreadable response ({type(e).__name__}: {e}): {raw[:200]!r}") from e
        if text is None:
            raise ProviderError("malformed", "response with null message content")
        usage = data.get("usage") or {}
        t_in, t_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
        cost = None
        if self.prices is not None and t_in is not None and t_out is not None:
            cost = t_in * self.prices[0] + t_out * self.prices[1]
        return Completion(text=text, tokens_in=t_in, tokens_out=t_out, cost_usd=cost)


def http_error(status: int, raw: bytes, headers, url: str) -> ProviderError:
    """A non-200 answer as the engine's kind (the same table as the litellm path)."""
    msg = f"HTTP {status} from {url}: {raw[:300].decode('utf-8', 'replace')}"
    retry = parse_retry_after(headers)
    if status == 429:
        return ProviderError("rate_limit", msg, retry_after=retry)
    if status == 408:
        return ProviderError("timeout", msg)
    if status in (401, 403):
        return ProviderError("auth", msg)
    if status >= 500:
        return ProviderError("server", msg, retry_after=retry)
    if status == 404:
        return ProviderError("not_found", msg)
    if status in (400, 422):
        return ProviderError("bad_request", msg)
    return ProviderError("other", msg)


def parse_retry_after(headers) -> float | None:
    """Seconds from Retry-After (or retry-after-ms); None for an HTTP date or none at all."""
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except (TypeError, ValueError):  # an HTTP date: fall back to backoff
        return None
    return None


def _os_error(e: BaseException) -> BaseException:
    """The OS-level error under aiohttp's wrappers (ConnectionRefusedError, gaierror), else e."""
    found, seen = e, 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and type(e).__module__ == "builtins":
            found = e
        e, seen = getattr(e, "os_error", None) or e.__cause__ or e.__context__, seen + 1
    return found
