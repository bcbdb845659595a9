"""Generation engine: `generate(provider, requests, cache_dir=...)` -> one Response per request."""
from runner.engine.engine import generate, responses_frame
from runner.engine.types import (
           Completion,
           GenerationResult,
           ProviderError,
           Request,
           Response,
)

__all__ = ["generate", "responses_frame", "Completion", "GenerationResult", "ProviderError", "Request",
           "Response"]
