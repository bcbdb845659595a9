"""Measurements of a local model: memory high-water marks, weight bytes and parameter counts on disk.

Peak memory on CPU is the process RSS high-water mark (Linux VmHWM). It is reset right before
the window being measured (writing "5" to /proc/self/clear_refs), so it covers that window
only; where the reset is impossible, ru_maxrss (peak since process start) is reported and
labelled as such. On GPU: torch.cuda.max_memory_allocated after reset_peak_memory_stats.
"""
from __future__ import annotations

import json
import resource
import struct
import sys
from pathlib import Path
from typing import Any

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.npz", "*.gguf")


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else None


class PeakMemory:
    """Peak memory over a `with` block: CPU RSS high-water mark and (if used) CUDA allocations."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.scope = "window"
        self.peak_rss_bytes: int | None = None
        self.start_rss_bytes: int | None = None  # RSS right after the reset: the window's baseline
        self.cuda_peak_bytes: int | None = None

    def __enter__(self) -> "PeakMemory":
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            self.scope = "process"  # cannot reset: ru_maxrss covers the whole process life
        self.start_rss_bytes = rss_bytes()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: Any) -> None:
        hwm = _status_kb("VmHWM") if self.scope == "window" else None
        if hwm is not None:
            # The kernel folds the RSS into the high-water mark only at some events, not when an
            # allocator drops pages (madvise), so VmHWM can read below the RSS seen at the window's
            # start (negative growth was observed). The peak is at least the RSS at either end.
            seen = [hwm * 1024, self.start_rss_bytes or 0, rss_bytes() or 0]
            self.peak_rss_bytes = max(seen)
        else:
            self.scope = "process"
            ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
            self.peak_rss_bytes = ru if sys.platform == "darwin" else ru * 1024
        if self.device.startswith("cuda"):
            import torch

            self.cuda_peak_bytes = int(torch.cuda.max_memory_allocated())

    def as_dict(self) -> dict[str, Any]:
        return {"peak_rss_bytes": self.peak_rss_bytes, "peak_rss_scope": self.scope,
                "cuda_peak_allocated_bytes": self.cuda_peak_bytes}


def weight_files(folder: Path) -> list[Path]:
    folder = Path(folder).resolve()  # student_base may be a symlink to a pretrained folder
    return sorted({f for pattern in WEIGHT_PATTERNS for f in folder.glob(pattern)
                   if not f.name.startswith("training_args")})


def weight_bytes(folder: Path) -> int | None:
    """Bytes of the weight files only (no tokenizer, config or optimizer state). None if there are none."""
    files = weight_files(folder)
    return sum(f.stat().st_size for f in files) if files else None


def safetensors_params(folder: Path) -> int | None:
    """Parameters counted from safetensors headers (no tensor is loaded). None without safetensors."""
    files = sorted(Path(folder).resolve().glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for d in info["shape"]:
                count *= d
            total += count
    return total
