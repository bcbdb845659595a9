"""Which response-cache backend this process's run uses: SQLite under cache_dir (one machine) or a
PostgreSQL server shared by several (runner.engine.cache_pg). Chosen once per run, after
validation, by runner.engine.cache_config.configure_cache."""
from __future__ import annotations

from pathlib import Path

from runner.engine.cache import ResponseCache

# The server this process's run chose (a postgresql:// URL), or None for SQLite under cache_dir.
# Set by runner.engine.cache_config.configure_cache at the start of every run, after validation;
# module state because every stage opens the cache from a cache_dir it was handed.
_SERVER_URL: str | None = None


def use_server(url: str | None) -> None:
    global _SERVER_URL
    _SERVER_URL = url


def server_url() -> str | None:
    return _SERVER_URL


def open_cache(cache_dir: Path | str):
    """The response cache of the current run: Postgres when configured, else SQLite in cache_dir."""
    if _SERVER_URL:
        from runner.engine.cache_pg import PgResponseCache

        return PgResponseCache(_SERVER_URL)
    return ResponseCache(cache_dir)
