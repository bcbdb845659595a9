"""CD step invariants: micro-batching and accumulation do not change the update; EDM pieces."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from runner.cd.consistency import (
    CDSettings,
    Models,
    accumulate_gradients,
    draw_step,
    optimizer_step,
)
from runner.cd.edm import Denoiser, EDMSchedule, heun_sample
from runner.cd.models import NetSpec
from runner.core.stage import ConfigError

GRID = 16


def make_models(seed: int = 0, arch: str = "mlp") -> Models:
    torch.manual_seed(seed)
    sch = EDMSchedule()
    teacher = Denoiser(NetSpec(arch=arch, width=32, depth=2).build(GRID, 2, 1), sch).requires_grad_(False)
    student = Denoiser(copy.deepcopy(teacher.net), sch, consistency=True).requires_grad_(True)
    with torch.no_grad():  # make the student differ from the teacher so the loss is not ~0
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    target = copy.deepcopy(student).requires_grad_(False)
    return Models(student, target, teacher)


def data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return 0.5 * torch.randn(n, GRID, generator=g), torch.randn(n, GRID, generator=g)


def grads(models: Models) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in models.student.parameters()])


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_micro_batching_gives_the_full_batch_gradient(arch):
    y, cond = data()
    full = CDSettings(batch_size=16, micro_batch=16, num_taus=3, N=10)
    micro = CDSettings(batch_size=16, micro_batch=4, num_taus=3, N=10)
    draw = draw_step(np.random.default_rng(0), full, y.shape[0], GRID)
    sigmas = EDMSchedule().karras_sigmas(full.N)
    out = []
    for s in (full, micro):
        models = make_models(arch=arch)
        loss = accumulate_gradients(models, y, cond, draw, sigmas, s)
        out.append((loss, grads(models)))
    assert out[0][0] > 0
    assert torch.allclose(out[0][1], out[1][1], atol=1e-5, rtol=0)
    assert abs(out[0][0] - out[1][0]) < 1e-6
    assert out[0][1].abs().max() > 1e-4  # the comparison is not between zeros


def test_accumulating_two_batches_equals_one_double_batch():
    y, cond = data()
    a = CDSettings(batch_size=8, micro_batch=4, num_taus=2, accum_steps=2, N=10, lr=1e-3, mu=0.9)
    b = CDSettings(batch_size=16, micro_batch=8, num_taus=2, accum_steps=1, N=10, lr=1e-3, mu=0.9)
    sigmas = EDMSchedule().karras_sigmas(a.N)
    params = []
    for s in (a, b):
        draw = draw_step(np.random.default_rng(7), s, y.shape[0], GRID)  # same seed -> same draws
        models = make_models()
        opt = torch.optim.Adam(models.student.parameters(), lr=s.lr)
        optimizer_step(models, opt, y, cond, draw, sigmas, s)
        params.append((torch.cat([p.flatten() for p in models.student.parameters()]),
                       torch.cat([p.flatten() for p in models.target.parameters()])))
    before = torch.cat([p.flatten() for p in make_models().student.parameters()])
    assert (params[0][0] - before).abs().max() > 1e-4  # the step moved the weights
    assert torch.allclose(params[0][0], params[1][0], atol=1e-6)
    assert torch.allclose(params[0][1], params[1][1], atol=1e-6)


def test_draws_do_not_depend_on_partitioning():
    one = draw_step(np.random.default_rng(5), CDSettings(batch_size=8, micro_batch=2, accum_steps=3), 50, GRID)
    two = draw_step(np.random.default_rng(5), CDSettings(batch_size=24, micro_batch=24), 50, GRID)
    np.testing.assert_array_equal(one.n, two.n)
    np.testing.assert_array_equal(one.z, two.z)
    assert one.n.min() >= 0 and one.n.max() <= CDSettings().N - 2


def test_beta_tau_distribution_stays_in_range_and_skews():
    s = CDSettings(batch_size=64, micro_batch=64, num_taus=8, tau_distribution="beta", beta_alpha=5, beta_beta=1)
    n = draw_step(np.random.default_rng(0), s, 10, GRID).n
    assert n.min() >= 0 and n.max() <= s.N - 2
    assert n.mean() > (s.N - 2) / 2  # beta(5, 1) favours the high indices (low noise)


def test_invalid_micro_batch_names_both_values():
    with pytest.raises(ConfigError, match=r"micro_batch=5.*batch_size=12"):
        CDSettings(batch_size=12, micro_batch=5)


def test_consistency_boundary_condition_and_heun_nfe():
    models = make_models()
    x, cond = data(4)
    sig_min = torch.full((4,), EDMSchedule().sigma_min)
    assert torch.allclose(models.student(x, sig_min, cond), x, atol=1e-6)  # f(x, sigma_min) = x
    _, nfe = heun_sample(models.teacher, torch.randn(4, GRID), cond, steps=18)
    assert nfe == 35
    sig = EDMSchedule().karras_sigmas(18)
    assert sig[0] == pytest.approx(80.0) and sig[-1] == pytest.approx(0.002) and torch.all(sig[1:] < sig[:-1])
