"""`cache.*` validation: the network-filesystem refusal (on a faked mount table) and the Postgres URL."""
from __future__ import annotations

import socket

import pytest

from runner.core.stage import ConfigError
from runner.engine import backend as cache_mod
from runner.engine.cache_config import (
    check_shared_filesystem,
    configure_cache,
    mount_of,
)


def mountinfo(tmp_path, *mounts: tuple[str, str]) -> str:
    """A /proc/self/mountinfo with these (mount point, fstype) lines, after the real root."""
    lines = ["27 1 254:0 / / rw,relatime - ext4 /dev/vda rw"]
    for i, (point, fstype) in enumerate(mounts):
        lines.append(f"{100 + i} 27 0:{50 + i} / {point.replace(' ', chr(92) + '040')} rw,relatime shared:1 - "
                     f"{fstype} server:/export rw,vers=4.2")
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(autouse=True)
def _sqlite_after():
    yield
    cache_mod.use_server(None)


def test_mount_of_takes_the_deepest_mount_and_unescapes(tmp_path):
    mi = mountinfo(tmp_path, ("/shared", "nfs4"), ("/shared/scratch dir", "lustre"), ("/shared/local", "xfs"),
                   ("/shared/données", "cifs"))
    assert mount_of("/shared/u/cache", mi) == ("/shared", "nfs4")
    assert mount_of("/shared/scratch dir/c", mi) == ("/shared/scratch dir", "lustre")
    assert mount_of("/shared/localx/c", mi) == ("/shared", "nfs4")  # a prefix of the name is not a parent
    assert mount_of("/shared/local/c", mi) == ("/shared/local", "xfs")
    assert mount_of("/home/u", mi) == ("/", "ext4")
    assert mount_of("/shared/données/x", mi) == ("/shared/données", "cifs")
    assert mount_of("/x", str(tmp_path / "absent")) is None


@pytest.mark.parametrize("fstype", ["nfs4", "lustre", "gpfs", "cifs", "fuse.sshfs"])
def test_network_cache_dir_inside_slurm_fails_naming_path_fs_and_fix(tmp_path, fstype):
    mi = mountinfo(tmp_path, ("/shared", fstype))
    with pytest.raises(ConfigError) as e:
        check_shared_filesystem("/shared/u/cache", "sqlite", mountinfo=mi, env={"SLURM_JOB_ID": "42"})
    msg = str(e.value)
    assert "/shared/u/cache" in msg and f"({fstype} mounted at /shared)" in msg and "SLURM job 42" in msg
    assert "cache.backend=postgres" in msg and "node-local cache_dir" in msg


def test_what_is_allowed(tmp_path):
    mi = mountinfo(tmp_path, ("/shared", "nfs4"))
    check_shared_filesystem("/shared/c", "sqlite", mountinfo=mi, env={})  # one process, no sweep: fine
    check_shared_filesystem("/shared/c", "postgres", mountinfo=mi, env={"SLURM_JOB_ID": "1"})  # the server cache
    check_shared_filesystem("/local/c", "sqlite", mountinfo=mi, env={"SLURM_JOB_ID": "1"})  # node-local
    with pytest.raises(ConfigError):  # the same call the first one is, inside SLURM: refused
        check_shared_filesystem("/shared/c", "sqlite", mountinfo=mi, env={"SLURM_JOB_ID": "1"})


def test_postgres_backend_settings_fail_at_validation(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNNER_TEST_CACHE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"\$RUNNER_TEST_CACHE_URL, which is not set"):
        configure_cache({"backend": "postgres", "url_env": "RUNNER_TEST_CACHE_URL"}, tmp_path)
    with pytest.raises(ConfigError, match="cache.backend='redis'"):
        configure_cache({"backend": "redis"}, tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RUNNER_TEST_CACHE_URL", f"postgresql://u:hunter2-secret@127.0.0.1:{port}/cache")
    with pytest.raises(ConfigError) as e:
        configure_cache({"backend": "postgres", "url_env": "RUNNER_TEST_CACHE_URL"}, tmp_path)
    assert f"127.0.0.1:{port}/cache" in str(e.value) and "hunter2" not in str(e.value)
    assert cache_mod.server_url() is None  # a failed check leaves SQLite selected


def test_postgres_backend_selected_when_reachable(tmp_path, monkeypatch, pg_url):
    monkeypatch.setenv("RUNNER_TEST_CACHE_URL", pg_url)
    configure_cache({"backend": "postgres", "url_env": "RUNNER_TEST_CACHE_URL"}, tmp_path)
    c = cache_mod.open_cache(tmp_path)
    assert type(c).__name__ == "PgResponseCache" and len(c) == 0
    c.close()
    configure_cache({"backend": "sqlite"}, tmp_path)  # the next run in this process chose SQLite again
    assert type(cache_mod.open_cache(tmp_path)).__name__ == "ResponseCache"
