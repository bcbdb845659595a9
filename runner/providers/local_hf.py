"""`local_hf`: an in-process causal LM (a local Hugging Face folder or a hub id) as a provider.

Batched for real: the engine hands `complete_batch` up to `batch_size` requests and they are
decoded together in one left-padded greedy batch (runner.lm.generate), stopping at the
end-of-turn token. `tokens_out` is what the model actually generated for each row. Backends:
`torch` (transformers) everywhere; `mlx` (mlx-lm's batch generation) where mlx is installed.
Use it for students and as a local teacher: `provider=local_hf provider.model=/path/or/hub-id`.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from pathlib import Path
from typing import Any

from runner.core.stage import ConfigError, check_choice
from runner.lm import constraint
from runner.providers.base import Completion, Provider, Request

BACKENDS = ("torch", "mlx")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_FINGERPRINT_FILES = ("*.safetensors", "*.bin", "*.npz", "config.json", "tokenizer.json",
                      "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def weights_fingerprint(path: Path) -> str:
    """sha256 over the files that decide the answers, so a retrained model never hits stale cache."""
    h = hashlib.sha256()
    for pattern in _FINGERPRINT_FILES:
        for f in sorted(path.glob(pattern)):
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


class LocalHFProvider(Provider):
    kind = "local_hf"
    batched = True

    def __init__(self, model: str, *, backend: str = "torch", device: str = "auto", dtype: str = "auto",
                 revision: str | None = None, batch_size: int = 32, concurrency: int = 1,
                 cache: bool = False, share_prefix_min_tokens: int = 0, constrain: str | None = None,
                 **kwargs: Any):
        super().__init__(model, batch_size=batch_size, concurrency=concurrency, cache=cache, **kwargs)
        self.backend, self.device, self.dtype, self.revision = backend, device, dtype, revision
        self.share_prefix_min_tokens, self.constrain = share_prefix_min_tokens, constrain
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self.load_s: float | None = None
        self._fingerprint: str | None = None

    def validate(self) -> None:
        super().validate()
        check_choice("provider", "backend", self.backend, BACKENDS)
        check_choice("provider", "dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        if not isinstance(self.share_prefix_min_tokens, int) or self.share_prefix_min_tokens < 0:
            raise ConfigError(f"provider.share_prefix_min_tokens={self.share_prefix_min_tokens!r} must be an "
                              "integer >= 0 (0: off; e.g. 32: rows of a batch sharing >= 32 prompt tokens "
                              "encode them once)")
        constraint.check_name("provider", self.constrain)
        if self.constrain and self.backend == "mlx":
            raise ConfigError(f"provider.constrain={self.constrain}: constrained decoding runs on the torch "
                              "backend only; set backend=torch or constrain=null")
        if self.concurrency != 1 and self.backend == "mlx":
            raise ConfigError(f"provider.concurrency={self.concurrency}: the mlx backend runs one batch at a "
                              "time; set provider.concurrency=1 and raise provider.batch_size for throughput")
        if self.temperature != 0 or self.top_p not in (None, 1, 1.0):
            raise ConfigError("local_hf decodes greedily only: set provider.temperature=0 and provider.top_p=null")
        if not Path(self.model).exists() and not _HUB_ID.match(self.model):
            raise ConfigError(f"provider.model={self.model!r} is neither an existing folder nor a hub id "
                              "like Qwen/Qwen2.5-0.5B-Instruct")
        if self.backend == "mlx":
            import importlib.util

            if importlib.util.find_spec("mlx_lm") is None:
                raise ConfigError("provider.backend=mlx needs mlx-lm: pip install 'runner[mlx]'")

    def cache_identity(self) -> dict[str, Any]:
        if self._fingerprint is None:
            path = Path(self.model)
            self._fingerprint = weights_fingerprint(path) if path.is_dir() else f"hub@{self.revision or 'main'}"
        return {**super().cache_identity(), "backend": self.backend, "dtype": self.dtype,
                "weights": self._fingerprint, "share_prefix_min_tokens": self.share_prefix_min_tokens,
                **({"constrain": self.constrain} if self.constrain else {})}

    # --- model ------------------------------------------------------------------------------
    def setup(self) -> None:
        with self._lock:
            if self._loaded is not None:
                return
            from runner.lm import generate as gen
            if self.backend == "mlx":
                model, tok, secs = gen.load_mlx_model(self.model)
            else:
                model, tok, secs = gen.load_torch_model(self.model, device=self.device, dtype=self.dtype,
                                                        revision=self.revision)
            self._loaded, self.load_s = (model, tok), secs

    @property
    def model_and_tokenizer(self) -> tuple[Any, Any]:
        self.setup()
        return self._loaded  # type: ignore[return-value]

    def order(self, conversations: list[list[dict[str, str]]]) -> list[int]:
        """The order to send these conversations in: longest first, and rows sharing a prompt
        prefix next to each other (so the engine's consecutive batches can share it)."""
        from runner.lm import generate as gen
        from runner.lm.batch_plan import plan_order

        _, tok = self.model_and_tokenizer
        encode = gen.encode_chats_mlx if self.backend == "mlx" else gen.encode_chats
        shared = self.share_prefix_min_tokens if self.backend == "torch" else 0
        return plan_order(encode(tok, conversations), shared)

    @contextlib.contextmanager
    def session(self):
        """With concurrency > 1 on a CPU, the engine runs that many batches at once in threads:
        each gets one torch thread (one batch per core decodes faster than every core on one
        batch; runner.lm.greedy). The thread count is restored afterwards."""
        import torch

        from runner.lm.generate import resolve_device

        if self.backend != "torch" or self.concurrency == 1 or resolve_device(self.device) != "cpu":
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def generate(self, conversations: list[list[dict[str, str]]], *, sort_by_length: bool = True,
                 batch_size: int | None = None, workers: int | str = "auto"):
        """Direct batched generation (no engine): list of runner.lm.generate.Generation."""
        from runner.lm import generate as gen
        model, tok = self.model_and_tokenizer
        bs = batch_size or self.batch_size
        if self.backend == "mlx":  # mlx-lm's batch generation, one batch at a time; no prefix sharing
            with self._lock:
                return gen.generate_mlx(model, tok, conversations, max_new_tokens=self.max_tokens, batch_size=bs,
                                        sort_by_length=sort_by_length)
        # torch inference reads the weights only: concurrent batches (engine threads) are safe.
        return gen.generate_torch(model, tok, conversations, max_new_tokens=self.max_tokens, batch_size=bs,
                                  sort_by_length=sort_by_length, min_shared=self.share_prefix_min_tokens,
                                  workers=workers, constrain=self.constrain)

    def complete_batch(self, requests: list[Request]) -> list[Completion]:
        # The engine already chose the batch; keep its order (the caller sorts by length).
        gens = self.generate([r.messages for r in requests], sort_by_length=False, batch_size=len(requests),
                             workers=1)
        # cost_usd 0.0: a local model has no per-token charge (compute is not priced here).
        return [Completion(text=self._apply_stop(g.text), tokens_in=g.tokens_in, tokens_out=g.tokens_out,
                           cost_usd=0.0) for g in gens]

    def _apply_stop(self, text: str) -> str:
        for s in self.stop or ():
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        return text

    def describe(self) -> str:
        return f"{self.kind}[{self.backend}]:{self.model}"

