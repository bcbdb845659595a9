"""Providers: litellm (every hosted/OpenAI-compatible API), simulated (offline, labelled), local_hf."""
from runner.providers.base import Provider

__all__ = ["Provider"]
