"""`cache.*` settings, checked at the start of every run, before any stage (and so any request).

cache.backend=sqlite (default): responses, claims and batch ids in SQLite files under cache_dir.
SQLite's WAL mode needs shared memory between its processes and POSIX locks over NFS are unreliable,
so that is refused when cache_dir is on a network filesystem and several processes may share it
(a multi-process launcher, or any run inside a SLURM job): jobs could corrupt the cache or pay
twice for a request. The fix is a server (cache.backend=postgres) or a node-local cache_dir.

cache.backend=postgres: the URL is read from the environment variable named by cache.url_env
(it may hold a password: configs hold the variable's name, never the URL). The server is reached
and its tables created here, so a wrong URL fails now, not at the teacher.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from runner.core.stage import ConfigError
from runner.engine import backend as cache_mod

log = logging.getLogger("runner")

BACKENDS = ("sqlite", "postgres")
# Kernel fstype names (the mount table's third-from-last field) of filesystems shared over a network.
NETWORK_FS = {"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "beegfs", "afs",
              "panfs", "9p", "ncpfs", "orangefs", "pvfs2", "wekafs", "davfs", "fuse.sshfs", "fuse.glusterfs",
              "fuse.cephfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.beegfs", "fuse.davfs"}
# The mount table; RUNNER_MOUNTINFO points at another file in the same format (tests fake an NFS mount).
MOUNTINFO = os.environ.get("RUNNER_MOUNTINFO", "/proc/self/mountinfo")


def _unescape(field: str) -> str:
    """Mount points escape space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: Path | str, mountinfo: str = MOUNTINFO) -> tuple[str, str] | None:
    """(mount point, filesystem type) of the mount holding `path`, or None without a mount table
    (not Linux: the check is skipped)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    p = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point, fstype = _unescape(fields[4]), right.split()[0]
        inside = p == point or p.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):  # later mounts shadow earlier ones
            best = (point, fstype)
    return best


def shared_by(env: dict[str, str] | None = None) -> str | None:
    """Why several processes, maybe on several hosts, may use the cache at once; None when only this one."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID"):
        return f"this run is SLURM job {env['SLURM_JOB_ID']}"
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    target = str(hc.launcher.get("_target_", ""))
    if hc.mode == RunMode.MULTIRUN and not target.endswith("BasicLauncher"):
        return f"the sweep runs its jobs in parallel processes (hydra/launcher={hc.runtime.choices.get('hydra/launcher')})"
    return None


def check_shared_filesystem(cache_dir: Path, backend: str, *, mountinfo: str = MOUNTINFO,
                            env: dict[str, str] | None = None) -> None:
    if backend != "sqlite":
        return
    mount = mount_of(cache_dir, mountinfo)
    if mount is None or mount[1].lower() not in NETWORK_FS:
        return
    why = shared_by(env)
    if why is None:
        return
    raise ConfigError(
        f"cache_dir {cache_dir} is on a network filesystem ({mount[1]} mounted at {mount[0]}) and {why}: the "
        "SQLite response cache is not safe there (WAL needs shared memory on one host; NFS locks are unreliable), "
        "so jobs could corrupt it or pay twice for the same request. Fix: a cache server shared by all jobs, "
        "cache.backend=postgres with its postgresql:// URL in $RUNNER_CACHE_URL (see docs/cluster.md), or a "
        "node-local cache_dir (e.g. cache_dir=/tmp/$USER/runner-cache), accepting that jobs on different "
        "nodes pay again for the same requests")


def configure_cache(settings: Any, cache_dir: Path | str, *, mountinfo: str = MOUNTINFO) -> None:
    """Validate `cache.*` for this run and select its backend (runner.engine.backend.open_cache)."""
    settings = settings or {}
    backend = str(settings.get("backend") or "sqlite")
    cache_mod.use_server(None)
    if backend not in BACKENDS:
        raise ConfigError(f"cache.backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    check_shared_filesystem(Path(cache_dir), backend, mountinfo=mountinfo)
    if backend == "postgres":
        cache_mod.use_server(_server_url(settings.get("url_env")))


def _server_url(env_name: str | None) -> str:
    if not env_name:
        raise ConfigError("cache.backend=postgres needs cache.url_env: the name of the environment variable that "
                          "holds the postgresql:// URL, e.g. cache.url_env=RUNNER_CACHE_URL")
    url = os.environ.get(env_name)
    if not url:
        raise ConfigError(f"cache.backend=postgres reads the server's URL from ${env_name}, which is not set. Fix: "
                          f"export {env_name}=postgresql://USER:PASSWORD@HOST:5432/DB (configs hold only the "
                          "variable's name: the URL may carry a password)")
    try:
        import psycopg
    except ImportError as e:
        raise ConfigError("cache.backend=postgres needs psycopg (pip install 'psycopg[binary]')") from e
    from runner.engine.cache_pg import connect, describe

    try:
        where = describe(url)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"${env_name} is not a valid PostgreSQL URL ({type(e).__name__})") from None
    try:
        connect(url).close()  # reach it and create the tables now, before any teacher request
    except psycopg.Error as e:
        raise ConfigError(f"cannot use the cache server {where} (URL from ${env_name}): {str(e).strip()[:300]}") from None
    log.info("response cache: postgres at %s (URL from $%s)", where, env_name)
    return url
