"""Per-token prices from litellm's bundled price map (no network), for forecasts and batch mode."""
from __future__ import annotations


def unit_prices(provider) -> tuple[float | None, float | None, str]:
    """(USD per input token, USD per output token, basis) or (None, None, reason it is unknown).

    Batch mode: the map's batch prices when it has them, else half the online price (OpenAI and
    Anthropic price their batch APIs at 50 %); the basis says which."""
    if provider.kind != "litellm":
        reason = getattr(provider, "cost_reason", None)
        return None, None, reason() if reason else f"{provider.kind} has no price"
    from runner.providers.litellm_client import load_litellm

    litellm = load_litellm()
    try:
        p_in, p_out = litellm.cost_per_token(model=provider.model, prompt_tokens=1, completion_tokens=1)
    except Exception:  # noqa: BLE001 - unmapped model: unknown, never 0
        return None, None, f"litellm's price map has no price for {provider.model}"
    if getattr(provider, "mode", "online") != "batch":
        return float(p_in), float(p_out), "litellm price map (online)"
    try:
        info = litellm.get_model_info(provider.model)
    except Exception:  # noqa: BLE001
        info = {}
    b_in, b_out = info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches")
    if b_in is not None and b_out is not None:
        return float(b_in), float(b_out), "litellm price map (batch prices)"
    return (float(p_in) * 0.5, float(p_out) * 0.5,
            "litellm online price x 0.5 (no batch price in the map; OpenAI and Anthropic price batches at half)")


def price(tokens_in: int | None, tokens_out: int | None, p_in: float | None, p_out: float | None) -> float | None:
    if None in (tokens_in, tokens_out, p_in, p_out):
        return None
    return tokens_in * p_in + tokens_out * p_out
