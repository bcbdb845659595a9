"""litellm itself, imported on first use (it takes seconds) with its bundled cost map (no network),
and the per-sample request parameters every litellm call path shares (online, batch, pricing)."""
from __future__ import annotations

import os
from typing import Any

_litellm = None


def load_litellm():
    global _litellm
    if _litellm is None:
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before import: no fetch of the cost map
        import litellm

        litellm.suppress_debug_info = True  # no "Give Feedback" banner on every failed attempt
        _litellm = litellm
    return _litellm


def sample_params(kwargs: dict[str, Any], sample: int) -> dict[str, Any]:
    """Best-of-n: sample k > 0 is sent with seed = provider.seed (or 0) + k, so each sample is its
    own reproducible draw and an OpenAI-compatible server can tell the samples apart."""
    if sample:
        kwargs = {**kwargs, "seed": int(kwargs.get("seed") or 0) + int(sample)}
    return kwargs
