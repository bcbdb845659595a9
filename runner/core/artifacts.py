"""Artifact store: named polars DataFrames as parquet (and other files) under `<run>/artifacts/`.

Writes are atomic (temp file in the same folder + rename) so a killed run never leaves a
half-written artifact that a later stage or a rerun would trust.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temp path beside `path`; on success it is renamed onto `path` (atomic on POSIX),
    on any error it is removed. Readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared and read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class ArtifactStore:
    """`name` -> `<root>/<name>.parquet` for tables; `path(name)` for any other file or folder
    (a name with a suffix is a file, a name ending in `/` is a folder).

    `fallback_dirs` are earlier run folders' artifact dirs, read when this run lacks an
    artifact (re-running one stage on another run's outputs).
    """

    def __init__(self, root: Path, fallback_dirs: Iterable[Path] = ()):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fallback_dirs = [Path(p) for p in fallback_dirs]

    @staticmethod
    def _filename(name: str) -> str:
        if name.endswith("/"):  # a folder artifact, e.g. a Hugging Face model directory
            return name.rstrip("/")
        return name if Path(name).suffix else f"{name}.parquet"

    def path(self, name: str) -> Path:
        """Where this run writes `name` (a table name, or a file/folder name with a suffix)."""
        return self.root / self._filename(name)

    def locate(self, name: str) -> Path | None:
        """Where `name` can be read from: this run first, then the fallback runs."""
        for d in [self.root, *self.fallback_dirs]:
            p = d / self._filename(name)
            if p.exists():
                return p
        return None

    def exists(self, name: str) -> bool:
        return self.locate(name) is not None

    def write(self, name: str, df: pl.DataFrame) -> Path:
        path = self.path(name)
        with atomic_path(path) as tmp:
            df.write_parquet(tmp)
        return path

    def read(self, name: str) -> pl.DataFrame:
        p = self.locate(name)
        if p is None:
            tried = [str(d / self._filename(name)) for d in [self.root, *self.fallback_dirs]]
            raise FileNotFoundError(f"artifact {name!r} not found; tried: {tried}")
        return pl.read_parquet(p)

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.root / (name if name.endswith(".json") else f"{name}.json")
        atomic_write_json(path, obj)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.root / name
        atomic_write_bytes(path, text.encode())
        return path


def remove_path(path: Path) -> None:
    """Delete a file, a symlink or a folder (no error when absent)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
