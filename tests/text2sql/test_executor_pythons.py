"""The executor's identifier semantics on every Python the project supports (>= 3.10).

`sqlite3.Connection.setconfig` (which can switch SQLite's double-quoted-string fallback off)
exists only from Python 3.12 and `setlimit` from 3.11, so the executor must not depend on them.
The executor imports nothing outside the standard library, so each interpreter found on this
machine runs the same check script in a subprocess."""
from __future__ import annotations

import glob
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = r'''
import sqlite3, sys, tempfile, os
sys.path.insert(0, sys.argv[1])
from runner.text2sql.connection import connect
from runner.text2sql.executor import SqlExecutor
path = os.path.join(tempfile.mkdtemp(), "t.sqlite")
con = connect(path, readonly=False)
con.execute('CREATE TABLE "table_1" ("name" TEXT COLLATE NKEY, "city" TEXT COLLATE NKEY)')
con.execute("INSERT INTO table_1 VALUES ('john', 'oslo')")
con.commit(); con.close()
with SqlExecutor(path, timeout_s=0.2, table_alias="t") as ex:
    bad = [ex.execute(q, "table_1") for q in (
        'SELECT "nope" FROM t WHERE "nope" = 1', 'SELECT "city" FROM t WHERE "name" = "john"')]
    good = ex.execute('SELECT "city" FROM "t" WHERE "name" = \'John\'', "table_1")
    runaway = ex.execute("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r")
print([r.error_kind for r in bad], good.rows, runaway.error_kind, sys.version_info[:2])
assert [r.error_kind for r in bad] == ["unknown_column", "unknown_column"], bad
assert good.ok and good.rows == [("oslo",)], good
assert runaway.error_kind == "timeout", runaway
'''


def interpreters() -> dict[str, str]:
    found = {f"{sys.version_info[0]}.{sys.version_info[1]}": sys.executable}
    candidates = [shutil.which(f"python3.{m}") for m in range(10, 15)]
    candidates += glob.glob("/root/.pyenv/versions/3.1[0-9]*/bin/python") + glob.glob("/usr/bin/python3.1[0-9]")
    for exe in filter(None, candidates):
        try:
            ver = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ver and tuple(map(int, ver.split("."))) >= (3, 10):
            found.setdefault(ver, exe)
    return found


PYTHONS = interpreters()


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12"])
def test_double_quoted_unknown_name_fails_on_every_python(version):
    exe = PYTHONS.get(version)
    if exe is None:
        pytest.skip(f"no Python {version} interpreter on this machine (found: {sorted(PYTHONS)})")
    proc = subprocess.run([exe, "-c", SCRIPT, str(REPO)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
