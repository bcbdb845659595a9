"""The Burgers solver and the cached dataset."""
from __future__ import annotations

import numpy as np
import pytest

from runner.cd.burgers import Burgers1D, random_initial_conditions, solve_burgers
from runner.core.stage import ConfigError


def test_solver_conserves_mean_and_dissipates_energy():
    rng = np.random.default_rng(1)
    u = random_initial_conditions(rng, 8, 64, 4) + 0.3  # non-zero mean, so conservation is not trivial
    means, energies = [u.mean(axis=1)], [(u**2).mean(axis=1)]
    for _ in range(4):
        u = solve_burgers(u, nu=0.05, horizon=0.25, dt=4e-3)
        means.append(u.mean(axis=1))
        energies.append((u**2).mean(axis=1))
    np.testing.assert_allclose(means[-1], means[0], atol=1e-12)
    # The mean part of the energy is conserved; the fluctuation energy strictly decays.
    fluct = np.array(energies) - np.array(means) ** 2
    assert np.all(np.diff(fluct, axis=0) < 0)
    assert np.all(np.isfinite(u))


def test_solver_matches_heat_equation_for_small_amplitude():
    # At tiny amplitude the nonlinearity vanishes: a sine mode decays as exp(-nu k^2 t).
    x = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    u0 = 1e-6 * np.sin(3 * x)[None]
    uT = solve_burgers(u0, nu=0.05, horizon=1.0, dt=4e-3)
    np.testing.assert_allclose(uT, u0 * np.exp(-0.05 * 9 * 1.0), rtol=1e-5, atol=1e-14)


def test_dataset_is_cached_by_config_hash(tmp_path):
    ds = Burgers1D(n_train=16, n_test=4, grid=32, dt=0.01)
    first, cached1 = ds.load(tmp_path)
    second, cached2 = ds.load(tmp_path)
    assert (cached1, cached2) == (False, True)
    np.testing.assert_array_equal(first.train_uT, second.train_uT)
    assert np.allclose(np.abs(first.train_u0).max(axis=1), 1.0)
    other = Burgers1D(n_train=16, n_test=4, grid=32, dt=0.01, seed=1)
    assert other.cache_path(tmp_path) != ds.cache_path(tmp_path)


def test_unstable_time_step_is_rejected():
    with pytest.raises(ConfigError, match="dt"):
        Burgers1D(dt=0.5)
