"""1-D viscous Burgers data: a vectorised pseudo-spectral RK4 solver and the cached dataset.

u_t + (u^2/2)_x = nu u_xx on [0, 2pi) periodic. The task is u(0) -> u(T).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runner.core.artifacts import atomic_path
from runner.core.stage import ConfigError


def burgers_rhs(u_hat: np.ndarray, k: np.ndarray, nu: float, dealias: np.ndarray) -> np.ndarray:
    """Spectral right-hand side for a batch of rfft coefficients (rows = samples)."""
    u = np.fft.irfft(u_hat * dealias, axis=-1)  # 2/3 rule: truncate before forming u^2
    nonlinear = -0.5j * k * np.fft.rfft(u * u, axis=-1) * dealias
    return nonlinear - nu * k * k * u_hat


def solve_burgers(u0: np.ndarray, nu: float, horizon: float, dt: float) -> np.ndarray:
    """Integrate a batch (n, grid) of periodic fields from t=0 to `horizon` with classic RK4."""
    grid = u0.shape[-1]
    k = np.fft.rfftfreq(grid, d=1.0 / grid)  # integer wavenumbers on [0, 2pi)
    dealias = (k < grid / 3).astype(float)
    steps = max(1, int(round(horizon / dt)))
    h = horizon / steps  # land exactly on the horizon
    u_hat = np.fft.rfft(u0, axis=-1)
    for _ in range(steps):
        k1 = burgers_rhs(u_hat, k, nu, dealias)
        k2 = burgers_rhs(u_hat + 0.5 * h * k1, k, nu, dealias)
        k3 = burgers_rhs(u_hat + 0.5 * h * k2, k, nu, dealias)
        k4 = burgers_rhs(u_hat + h * k3, k, nu, dealias)
        u_hat = u_hat + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return np.fft.irfft(u_hat, n=grid, axis=-1)


def random_initial_conditions(rng: np.random.Generator, n: int, grid: int, modes: int) -> np.ndarray:
    """sum_{m=1..modes} (a_m sin mx + b_m cos mx)/m, a, b ~ N(0,1), scaled to max|u0| = 1."""
    x = np.linspace(0.0, 2 * math.pi, grid, endpoint=False)
    m = np.arange(1, modes + 1)
    a, b = rng.standard_normal((n, modes)), rng.standard_normal((n, modes))
    u0 = (a / m) @ np.sin(np.outer(m, x)) + (b / m) @ np.cos(np.outer(m, x))
    return u0 / np.abs(u0).max(axis=1, keepdims=True)


@dataclass
class BurgersData:
    train_u0: np.ndarray
    train_uT: np.ndarray
    test_u0: np.ndarray
    test_uT: np.ndarray


@dataclass
class Burgers1D:
    """Config of the dataset (conf/dataset/burgers1d.yaml); `load` generates or reads the cache."""

    grid: int = 64
    nu: float = 0.05
    horizon: float = 1.0
    dt: float = 4e-3
    modes: int = 4
    n_train: int = 2000
    n_test: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.grid < 8 or self.grid % 2:
            raise ConfigError(f"dataset.grid={self.grid} must be an even number >= 8")
        for key in ("nu", "horizon", "dt"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"dataset.{key}={getattr(self, key)} must be > 0")
        if self.modes < 1 or self.modes >= self.grid // 3:
            raise ConfigError(f"dataset.modes={self.modes} must be in [1, grid/3) so the 2/3 rule keeps them")
        if self.n_train < 1 or self.n_test < 1:
            raise ConfigError(f"dataset.n_train={self.n_train} and n_test={self.n_test} must be >= 1")
        # Explicit RK4 on the diffusion term is stable for nu k^2 dt below ~2.7; keep a margin.
        k_max = self.grid / 3
        if self.nu * k_max**2 * self.dt > 2.0:
            raise ConfigError(f"dataset.dt={self.dt} is too large for nu={self.nu} at grid={self.grid} "
                              f"(nu*k_max^2*dt={self.nu * k_max**2 * self.dt:.2f} > 2); lower dt")

    def fingerprint(self) -> str:
        blob = json.dumps({"kind": "burgers1d", "v": 1, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def cache_path(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "burgers1d" / f"{self.fingerprint()}.npz"

    def generate(self) -> BurgersData:
        rng = np.random.default_rng(self.seed)
        u0 = random_initial_conditions(rng, self.n_train + self.n_test, self.grid, self.modes)
        uT = solve_burgers(u0, self.nu, self.horizon, self.dt)
        n = self.n_train
        return BurgersData(u0[:n].astype(np.float32), uT[:n].astype(np.float32),
                           u0[n:].astype(np.float32), uT[n:].astype(np.float32))

    def load(self, cache_dir: Path) -> tuple[BurgersData, bool]:
        """(data, from_cache). Writes the cache atomically so parallel runs never read half a file."""
        path = self.cache_path(cache_dir)
        if path.exists():
            with np.load(path) as z:
                return BurgersData(**{k: z[k] for k in ("train_u0", "train_uT", "test_u0", "test_uT")}), True
        data = self.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".tmp.npz") as tmp:  # np.savez wants the .npz suffix
            np.savez(tmp, **asdict(data))
        return data, False
