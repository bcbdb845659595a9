"""Every hosted or OpenAI-compatible model through litellm's async `acompletion`.

litellm is imported on first use (it takes seconds), with its bundled cost map (no network).
Its own retries are switched off: the engine retries, so every provider behaves the same.
Failures are mapped to ProviderError kinds the engine understands. `provider.client` picks the
wire path: litellm's, or the light OpenAI-compatible client (runner.providers.openai_http) that
`auto` takes for a server named by api_base, where litellm's CPU per call would set the pace.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
from typing import Any

from runner.core.secrets import read_secret
from runner.core.stage import ConfigError
from runner.engine.types import Completion, ProviderError, Request
from runner.providers.base import Provider
from runner.providers.batch import check_batch
from runner.providers.litellm_client import load_litellm, sample_params
from runner.providers.openai_http import (
    OpenAIHTTP,
    choose_client,
    parse_retry_after,
    unit_prices,
)

# Routes that honour api_base with an OpenAI-style client (safe to warm up against port 0).
_OPENAI_COMPATIBLE = {"openai", "openrouter", "hosted_vllm", "ollama", "ollama_chat"}


class LiteLLMProvider(Provider):
    kind = "litellm"
    modes = ("online", "batch")  # batch: OpenAI-compatible files + batches endpoints (runner.providers.batch)

    def __init__(self, model: str, *, api_base: str | None = None, api_key_env: str | None = None,
                 client: str = "auto", **base: Any):
        super().__init__(model, **base)
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.client = client
        self._api_key: str | None = None
        self._warm = False
        self._http: OpenAIHTTP | None = None

    @property
    def wire(self) -> str:
        """The client that sends the requests: litellm | http (provider.client resolved)."""
        return choose_client(self.client, self.model, self.api_base)

    def validate(self) -> None:
        super().validate()
        if self.api_base is not None and not str(self.api_base).startswith(("http://", "https://")):
            raise ConfigError(f"provider.api_base={self.api_base!r} must be an http(s) URL, "
                              f"e.g. http://localhost:8000/v1")
        self.wire  # noqa: B018 - provider.client: a bad value or an incompatible route fails here
        # Fails here, before any request, naming the variable to set.
        self._api_key = read_secret(self.api_key_env, what=f"provider {self.model}")
        if self.mode == "batch":
            check_batch(self)

    def setup(self) -> None:
        # Seconds of imports, kept out of the first requests' timeouts and off the event loop.
        litellm = load_litellm()
        if self.wire == "http":
            if self._http is None:  # litellm names the price once; the light client sends
                key = self.call_kwargs().get("api_key")
                self._http = OpenAIHTTP(self.model, self.api_base, key, self.concurrency, self.timeout_s,
                                        unit_prices(litellm, self.model))
            return
        if not self._warm:
            self._warm = True
            if self.api_base or self.model.split("/")[0] in _OPENAI_COMPATIBLE:
                with concurrent.futures.ThreadPoolExecutor(1) as pool:  # works even inside a running loop
                    pool.submit(asyncio.run, self._warm_up()).result()

    async def _warm_up(self) -> None:
        """The first call builds clients, SSL contexts and response types (0.7 s against the
        loopback server, stalling the whole first window). Pay it here with a call to port 0 of
        this machine: the connect fails at once and nothing anywhere receives a request."""
        try:
            await load_litellm().acompletion(model=self.model, messages=[{"role": "user", "content": "warm-up"}],
                                       api_base="http://127.0.0.1:0/v1", api_key="warm-up", timeout=2,
                                       num_retries=0, max_retries=0)
        except Exception:  # noqa: BLE001 - failing is the point
            pass

    def cache_identity(self) -> dict[str, Any]:
        return {**super().cache_identity(), "api_base": self.api_base}

    def endpoint(self) -> str:
        where = self.api_base or f"litellm's default endpoint for {self.model.split('/')[0]!r}"
        key = f", key from ${self.api_key_env}" if self.api_key_env else ""  # the variable's name, never the key
        return f"model {self.model} at {where}{key} ({self.wire} client)"

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def call_kwargs(self) -> dict[str, Any]:
        # drop_params: a sampling param the provider does not take is dropped, not an error.
        kwargs = {**self.generation_params(), "timeout": self.timeout_s, "num_retries": 0, "max_retries": 0,
                  "drop_params": True}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key is None and self.api_key_env:
            self._api_key = read_secret(self.api_key_env, what=f"provider {self.model}")
        if self._api_key:
            kwargs["api_key"] = self._api_key
        elif self.api_base:
            # Local OpenAI-compatible servers (vLLM, Ollama) take any key; the client insists on one.
            kwargs["api_key"] = "no-key"
        return kwargs

    async def acomplete(self, request: Request) -> Completion:
        if self._http is not None:
            return await self._http.complete(request.messages, sample_params(self.generation_params(), request.sample))
        litellm = load_litellm()
        try:
            resp = await litellm.acompletion(model=self.model, messages=request.messages,
                                             **sample_params(self.call_kwargs(), request.sample))
        except Exception as e:  # noqa: BLE001 - mapped to the engine's error kinds
            raise to_provider_error(litellm, e) from e
        try:
            text = resp.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError) as e:
            raise ProviderError("malformed", f"response without choices[0].message: {e}") from e
        if text is None:
            raise ProviderError("malformed", "response with null message content")
        usage = getattr(resp, "usage", None)
        return Completion(text=text, tokens_in=getattr(usage, "prompt_tokens", None),
                          tokens_out=getattr(usage, "completion_tokens", None), cost_usd=response_cost(litellm, resp))


def response_cost(litellm, resp) -> float | None:
    """litellm's cost from its bundled price map; None when the model has no known price."""
    hidden = getattr(resp, "_hidden_params", None) or {}
    if "response_cost" in hidden:  # litellm already priced it (None: no price known); don't redo it
        cost = hidden["response_cost"]
        return None if cost is None else float(cost)
    try:
        return float(litellm.completion_cost(completion_response=resp))
    except Exception:  # noqa: BLE001 - unknown model/price: unknown cost, never a silent 0
        return None


def to_provider_error(litellm, e: Exception) -> ProviderError:
    """Map a litellm/openai/httpx exception onto the engine's retry kinds."""
    root = _root_cause(e)
    cause = f" (cause: {type(root).__name__}: {root})" if root is not e else ""
    msg = (f"{type(e).__name__}: {e}"[:400] + cause)[:600]
    if _caused_by(e, json.JSONDecodeError):  # litellm reports an unparseable 200 body as a 500
        return ProviderError("malformed", msg)
    status = getattr(e, "status_code", None)
    if isinstance(e, litellm.RateLimitError) or status == 429:
        return ProviderError("rate_limit", msg, retry_after=retry_after(e))
    if isinstance(e, litellm.Timeout) or status == 408:
        return ProviderError("timeout", msg)
    if isinstance(e, litellm.AuthenticationError) or status in (401, 403):
        return ProviderError("auth", msg)
    # litellm reports a refused connection, DNS or TLS failure as a 500 "Connection error.": the cause
    # chain tells. A connect timeout stays "timeout" (checked above; the openai one subclasses this).
    if isinstance(e, litellm.APIConnectionError) or _is_connection_failure(e):
        return ProviderError("connection", msg)
    if isinstance(status, int) and status >= 500:
        return ProviderError("server", msg, retry_after=retry_after(e))
    if isinstance(e, litellm.NotFoundError) or status == 404:  # unknown model or wrong api_base path
        return ProviderError("not_found", msg)
    if isinstance(e, litellm.BadRequestError) or status in (400, 422):
        return ProviderError("bad_request", msg)
    if isinstance(e, litellm.APIError):
        return ProviderError("server", msg)
    return ProviderError("other", msg)


def _is_connection_failure(e: BaseException) -> bool:
    import ssl

    import httpx
    import openai

    if _caused_by(e, (openai.APITimeoutError, httpx.TimeoutException, TimeoutError)):
        return False
    return _caused_by(e, (openai.APIConnectionError, httpx.ConnectError, ConnectionError, ssl.SSLError,
                          socket.gaierror))


def _root_cause(e: BaseException) -> BaseException:
    """The OS-level error under the wrappers (ConnectionRefusedError, gaierror, SSLError), else e."""
    found, seen = e, 0
    while e is not None and seen < 10:
        if isinstance(e, OSError):
            found = e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return found


def _caused_by(e: BaseException, cls: type | tuple[type, ...]) -> bool:
    seen = 0
    while e is not None and seen < 10:  # bounded: exception chains can be cyclic
        if isinstance(e, cls):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def retry_after(e: Exception) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, when the error carries the response."""
    headers = None
    for attr in ("litellm_response_headers", "headers"):
        headers = headers or getattr(e, attr, None)
    response = getattr(e, "response", None)
    headers = headers or getattr(response, "headers", None)
    return parse_retry_after(headers) if headers else None
