"""Fixtures for the services the cluster tests need (registered in tests/conftest.py):
a PostgreSQL server and a SLURM cluster, each started once per test session on loopback and
stopped at its end. A test whose service cannot run here is skipped with the reason, or fails
where RUNNER_TEST_SERVICES=required (.ci/run sets it: CI must run these tests, never skip them)."""
from __future__ import annotations

import os
import re

import pytest

from tests.services import postgres, slurm_cluster


def _unavailable(why: str) -> None:
    if os.environ.get("RUNNER_TEST_SERVICES") == "required":
        pytest.fail(why + " (RUNNER_TEST_SERVICES=required)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def pg_server():
    why = postgres.missing()
    if why:
        _unavailable(f"PostgreSQL unavailable: {why}")
    server = postgres.PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server, request) -> str:
    """A fresh database on the session's server, for this test only."""
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    return pg_server.new_database(name)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    why = slurm_cluster.missing()
    if why:
        _unavailable(f"SLURM unavailable: {why}")
    cluster = slurm_cluster.SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()
