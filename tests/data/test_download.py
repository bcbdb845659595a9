"""`python -m runner.data wikisql` against a loopback HTTP server serving a tiny archive."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runner.data import DownloadError, download_wikisql
from runner.text2sql.data import load_questions, load_tables

REPO = Path(__file__).resolve().parents[2]
QUESTION = {"phase": 1, "table_id": "1-1000-1", "question": "Who is the player from utah?",
            "sql": {"sel": 0, "conds": [[1, 0, "Utah"]], "agg": 0}}
TABLE = {"id": "1-1000-1", "header": ["Player", "School"], "types": ["text", "text"],
         "rows": [["Jeff Judkins", "Utah"]], "page_title": "Jazz"}


def make_archive(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


WIKISQL_ARCHIVE = make_archive({
    "data/dev.jsonl": (json.dumps(QUESTION) + "\n").encode(),
    "data/dev.tables.jsonl": (json.dumps(TABLE) + "\n").encode(),
})


@pytest.fixture
def server():
    """Serves `routes[path] = (status, body)` on 127.0.0.1:<ephemeral>; records requested paths."""
    routes: dict[str, tuple[int, bytes]] = {}
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            status, body = routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, routes, seen
    httpd.shutdown()
    httpd.server_close()


def test_download_unpacks_official_layout_that_the_loader_reads(server, tmp_path):
    base, routes, seen = server
    routes["/data.tar.bz2"] = (200, WIKISQL_ARCHIVE)
    messages: list[str] = []
    target = download_wikisql(tmp_path, f"{base}/data.tar.bz2", progress=messages.append)
    assert target == tmp_path.resolve() / "wikisql" / "data"
    assert sorted(p.name for p in target.iterdir()) == ["dev.jsonl", "dev.tables.jsonl"]
    assert [p.name for p in (tmp_path / "wikisql").iterdir()] == ["data"]  # no temp files left
    assert any("downloaded" in m for m in messages) and seen == ["/data.tar.bz2"]
    q = load_questions(tmp_path, source="official", split="dev")
    assert q["question"].to_list() == [QUESTION["question"]]
    tables = load_tables(tmp_path, set(q["table_id"]), source="official", split="dev")
    assert tables["1-1000-1"].header == ["Player", "School"]


def test_existing_data_needs_force(server, tmp_path):
    base, routes, _ = server
    routes["/data.tar.bz2"] = (200, WIKISQL_ARCHIVE)
    download_wikisql(tmp_path, f"{base}/data.tar.bz2", progress=lambda m: None)
    (tmp_path / "wikisql" / "data" / "marker").write_text("old")
    with pytest.raises(DownloadError, match="--force"):
        download_wikisql(tmp_path, f"{base}/data.tar.bz2", progress=lambda m: None)
    download_wikisql(tmp_path, f"{base}/data.tar.bz2", force=True, progress=lambda m: None)
    assert not (tmp_path / "wikisql" / "data" / "marker").exists()


@pytest.mark.parametrize("status,body,message", [
    (404, b"nope", "HTTP 404"),
    (200, b"<html>rate limited</html>", "not a bz2 file"),
    (200, b"BZh91AY&SY garbage", "not a readable tar.bz2"),
    (200, make_archive({"README": b"hello"}), "not WikiSQL's data.tar.bz2"),
    (200, make_archive({"../escape.jsonl": b"{}"}), "outside the destination"),
])
def test_bad_downloads_fail_clearly_and_leave_nothing(server, tmp_path, status, body, message):
    base, routes, _ = server
    routes["/data.tar.bz2"] = (status, body)
    with pytest.raises(DownloadError, match=message):
        download_wikisql(tmp_path / "root", f"{base}/data.tar.bz2", progress=lambda m: None)
    assert list((tmp_path / "root" / "wikisql").iterdir()) == []
    assert not (tmp_path / "escape.jsonl").exists() and not (tmp_path / "root" / "escape.jsonl").exists()


def test_cli(server, tmp_path):
    base, routes, _ = server
    routes["/w.tar.bz2"] = (200, WIKISQL_ARCHIVE)
    ok = subprocess.run([sys.executable, "-m", "runner.data", "wikisql", "--url", f"{base}/w.tar.bz2",
                         "--dest", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "RUNNER_DATA_DIR=" in ok.stdout and (tmp_path / "wikisql" / "data" / "dev.jsonl").is_file()
    bad = subprocess.run([sys.executable, "-m", "runner.data", "wikisql", "--url", f"{base}/missing",
                          "--dest", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "HTTP 404" in bad.stderr
