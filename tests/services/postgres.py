"""A throwaway PostgreSQL server on loopback for the tests.

Binaries: the `pgserver` wheel's (a dependency, so `make test` brings them), else Debian's
/usr/lib/postgresql/<v>/bin. A fresh data folder, trust authentication, TCP on 127.0.0.1 only
(no Unix socket), fsync off (test speed; durability across an OS crash is not what is tested).
PostgreSQL refuses to run as root: as root (CI) the server runs as `nobody`.
RUNNER_TEST_PG_URL=postgresql://... uses an existing server instead.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def bin_dir() -> Path | None:
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.submodule_search_locations:
        d = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        if (d / "postgres").exists():
            return d
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def missing() -> str | None:
    if os.environ.get("RUNNER_TEST_PG_URL"):
        return None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed (a dependency in pyproject.toml: make setup installs it)"
    if bin_dir() is None:
        return "no PostgreSQL binaries (the pgserver wheel, or Debian's postgresql)"
    return None


class PostgresServer:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="runner-pg-"))  # outside pytest's 0700 tmp: `nobody` reads it
        self.data, self.proc, self.url = self.root / "data", None, None

    def _as_server_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        nobody = pwd.getpwnam("nobody")
        os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
        return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]

    def start(self, timeout_s: float = 60.0) -> "PostgresServer":
        if os.environ.get("RUNNER_TEST_PG_URL"):
            self.url = os.environ["RUNNER_TEST_PG_URL"]
            return self
        bins, who = bin_dir(), self._as_server_user()
        if who and subprocess.run([*who, "test", "-r", str(bins / "postgres")]).returncode:
            # `nobody` cannot reach the binaries (e.g. a venv under /root): run a copy in our folder,
            # with the wheel's vendored libraries (pgserver.libs, found through the binaries' RPATH).
            pkg, copy = bins.parents[1], self.root / "site" / bins.parents[1].name
            shutil.copytree(bins.parent, copy / "pginstall", symlinks=True)
            if (pkg.parent / f"{pkg.name}.libs").is_dir():
                shutil.copytree(pkg.parent / f"{pkg.name}.libs", copy.parent / f"{pkg.name}.libs")
            bins = copy / "pginstall" / "bin"
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        subprocess.run([*who, str(bins / "initdb"), "-D", str(self.data), "-U", "runner", "--auth=trust",
                        "--encoding=UTF8", "--no-sync"], check=True, capture_output=True, env=env)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [*who, str(bins / "postgres"), "-D", str(self.data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "max_connections=100"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url = f"postgresql://runner@127.0.0.1:{port}/postgres"
        import psycopg

        end = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.stop()
                    raise RuntimeError("test PostgreSQL did not start:\n" +
                                       (self.root / "server.log").read_text(errors="replace")[-2000:])
                time.sleep(0.2)

    def new_database(self, name: str) -> str:
        """A fresh, empty database: one per test, so tests never see each other's rows."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}"')
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: does not wait for clients to leave
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)
