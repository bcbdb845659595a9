"""Dataset downloads for users with internet: `python -m runner.data wikisql`.

The official WikiSQL archive (salesforce/WikiSQL `data.tar.bz2`, ~26 MB) unpacks to `data/`
with `<split>.jsonl`, `<split>.tables.jsonl` and `<split>.db`. It lands at
`<dest>/wikisql/data/`, the official layout that `load_questions(source="official")` reads.
Everything goes through temp files in the destination folder and a final rename, so an
interrupted download never leaves a half-unpacked dataset behind.
"""
from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

WIKISQL_URL = "https://github.com/salesforce/WikiSQL/raw/master/data.tar.bz2"
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download or unpack problem; the message says what went wrong and what to do."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fetch(url: str, path: Path, *, timeout_s: float = 60.0, progress: Callable[[str], None] = _stderr) -> int:
    """Stream `url` into `path`; returns the byte count. Progress every ~10% (or 8 MiB)."""
    try:
        resp = urllib.request.urlopen(url, timeout=timeout_s)  # noqa: S310 - user-given URL by design
    except urllib.error.HTTPError as e:
        raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}; check --url") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot reach {url}: {e}; check the network or pass --url to a mirror") from e
    with resp, open(path, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        step = max(total // 10, 1) if total else 8 * _CHUNK
        done, next_report = 0, step
        while chunk := resp.read(_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if done >= next_report:
                pct = f" ({100 * done / total:.0f}%)" if total else ""
                progress(f"downloaded {done / 2**20:.1f} MiB{pct}")
                next_report += step
    if total and done != total:
        raise DownloadError(f"download of {url} ended after {done} of {total} bytes; try again")
    progress(f"downloaded {done / 2**20:.1f} MiB from {url}")
    return done


def _check_members(tar: tarfile.TarFile) -> None:
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts:
            raise DownloadError(f"archive member {m.name!r} points outside the destination; refusing to unpack")
        if not (m.isfile() or m.isdir()):
            raise DownloadError(f"archive member {m.name!r} is not a plain file or folder; refusing to unpack")


def unpack_wikisql(archive: Path, into: Path) -> Path:
    """Unpack the official archive into `into`; returns the folder holding the .jsonl files."""
    with open(archive, "rb") as f:
        if f.read(3) != b"BZh":
            raise DownloadError(f"{archive.name} is not a bz2 file (an HTML error page?); check --url "
                                "points at WikiSQL's data.tar.bz2")
    try:
        with tarfile.open(archive, mode="r:bz2") as tar:
            _check_members(tar)
            tar.extractall(into, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DownloadError(f"{archive.name} is not a readable tar.bz2 archive: {e}") from e
    data = into / "data"
    if not data.is_dir() or not any(data.glob("*.jsonl")):
        raise DownloadError("the archive has no data/<split>.jsonl files: it is not WikiSQL's data.tar.bz2")
    return data


def download_wikisql(dest: Path, url: str = WIKISQL_URL, *, force: bool = False, timeout_s: float = 60.0,
                     progress: Callable[[str], None] = _stderr) -> Path:
    """Download and unpack to `<dest>/wikisql/data/`; returns that folder."""
    home = Path(dest).expanduser().resolve() / "wikisql"
    target = home / "data"
    if target.exists() and not force:
        raise DownloadError(f"{target} already exists; pass --force to replace it")
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=home, prefix=".download-"))
    try:
        archive = work / "data.tar.bz2"
        fetch(url, archive, timeout_s=timeout_s, progress=progress)
        unpacked = unpack_wikisql(archive, work / "unpacked")
        if target.exists():  # --force: swap in the new folder, then drop the old one
            old = work / "old"
            os.replace(target, old)
        os.replace(unpacked, target)
        files = sorted(p.name for p in target.iterdir())
        progress(f"unpacked {len(files)} files to {target}: {', '.join(files)}")
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)
