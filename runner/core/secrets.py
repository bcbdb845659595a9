"""Secrets: configs name environment variables; values are read only when needed and never logged."""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterable

from runner.core.stage import ConfigError

# Variables whose values are treated as secret even when no config names them.
_SECRET_NAME = re.compile(r"(API_KEY|_TOKEN|_SECRET|PASSWORD)$", re.IGNORECASE)


def read_secret(env_name: str | None, *, what: str) -> str | None:
    """Value of env var `env_name`; ConfigError naming the variable when it is unset."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(
            f"{what} needs an API key in the environment variable {env_name}, which is not set. "
            f"Fix: export {env_name}=... (configs hold only the variable's name, never the key)."
        )
    return value


def secret_values(extra_names: Iterable[str] = ()) -> list[str]:
    names = set(extra_names) | {k for k in os.environ if _SECRET_NAME.search(k)}
    vals = [os.environ[n] for n in names if os.environ.get(n) and len(os.environ[n]) >= 8]
    return sorted(set(vals), key=len, reverse=True)


def api_key_env_names(cfg: Any) -> set[str]:
    """Every `api_key_env` (and `url_env`: a URL may carry a password) value anywhere in a config tree."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if hasattr(node, "items"):
            for k, v in node.items():
                if k in ("api_key_env", "url_env") and isinstance(v, str):
                    found.add(v)
                else:
                    walk(v)
        elif isinstance(node, (list, tuple)) or type(node).__name__ == "ListConfig":
            for v in node:
                walk(v)

    walk(cfg)
    return found


def redact(text: str, values: Iterable[str]) -> str:
    for v in values:
        if v in text:
            text = text.replace(v, "***")
    return text


class RedactingFilter(logging.Filter):
    """Replaces secret values in every log record before any handler formats it."""

    def __init__(self, values: Iterable[str]):
        super().__init__()
        self.values = list(values)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.values:
            msg = record.getMessage()
            clean = redact(msg, self.values)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True


def install_redaction(extra_names: Iterable[str] = ()) -> RedactingFilter:
    filt = RedactingFilter(secret_values(extra_names))
    root = logging.getLogger()
    for h in root.handlers:
        h.addFilter(filt)
    root.addFilter(filt)
    return filt
