"""EDM (Karras et al. 2022) preconditioning, loss, sampling grid and Heun sampler, plus the
consistency-model boundary scalings (Song et al. 2023) that make f(x, sigma_min) = x.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from runner.core.stage import ConfigError


@dataclass
class EDMSchedule:
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2  # ln sigma ~ N(p_mean, p_std^2) during teacher training
    p_std: float = 1.2

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ConfigError(f"edm.sigma_min={self.sigma_min} must be > 0 and < sigma_max={self.sigma_max}")
        if self.sigma_data <= 0 or self.rho <= 0 or self.p_std <= 0:
            raise ConfigError("edm.sigma_data, edm.rho and edm.p_std must be > 0")

    def karras_sigmas(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """t_0 = sigma_max > ... > t_{n-1} = sigma_min (n points, no trailing zero)."""
        if n < 2:
            raise ValueError(f"a Karras grid needs n >= 2 points, got {n}")
        ramp = torch.linspace(0, 1, n, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return ((hi + ramp * (lo - hi)) ** self.rho).to(device=device, dtype=torch.float32)


class Denoiser(nn.Module):
    """D(x, sigma | cond) = c_skip x + c_out F(c_in x, cond, c_noise).

    consistency=True swaps in the boundary scalings of a consistency model, so that
    f(x, sigma_min) = x exactly; the network F and its inputs are unchanged, which is why
    the student can start from the teacher's F.
    """

    def __init__(self, net: nn.Module, schedule: EDMSchedule, consistency: bool = False):
        super().__init__()
        self.net, self.schedule, self.consistency = net, schedule, consistency

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        sd, s = self.schedule.sigma_data, sigma[:, None]
        if self.consistency:
            shifted = s - self.schedule.sigma_min
            c_skip = sd**2 / (shifted**2 + sd**2)
            c_out = shifted * sd / (s**2 + sd**2).sqrt()
        else:
            c_skip = sd**2 / (s**2 + sd**2)
            c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = sigma.log()[:, None] / 4
        out = self.net(torch.stack([c_in * x, cond], dim=1), c_noise)
        return c_skip * x + c_out * out.to(x.dtype)


def edm_loss(denoiser: Denoiser, y: torch.Tensor, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """lambda(sigma)-weighted denoising loss, averaged over grid points and samples."""
    sch = denoiser.schedule
    ln_sigma = torch.randn(y.shape[0], generator=generator, device=y.device) * sch.p_std + sch.p_mean
    sigma = ln_sigma.exp()
    noise = torch.randn(y.shape, generator=generator, device=y.device)
    weight = (sigma**2 + sch.sigma_data**2) / (sigma * sch.sigma_data) ** 2
    err = (denoiser(y + sigma[:, None] * noise, sigma, cond) - y) ** 2
    return (weight * err.mean(dim=1)).mean()


def heun_step(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
              cond: torch.Tensor) -> torch.Tensor:
    """One Heun (2nd-order) step of the probability-flow ODE from t to t_next, per row (t_next > 0)."""
    dt = (t_next - t)[:, None]
    d = (x - denoiser(x, t, cond)) / t[:, None]
    x_euler = x + dt * d
    d_next = (x_euler - denoiser(x_euler, t_next, cond)) / t_next[:, None]
    return x + dt * (d + d_next) / 2


@torch.no_grad()
def heun_sample(denoiser: Denoiser, noise: torch.Tensor, cond: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
    """EDM sampler on the Karras grid with t_steps = 0: `steps` Heun steps, 2*steps - 1 NFE
    (the last step to t = 0 is an Euler step). Returns (sample, NFE)."""
    sigmas = denoiser.schedule.karras_sigmas(steps, noise.device) if steps > 1 else \
        torch.tensor([denoiser.schedule.sigma_max], device=noise.device)
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    x, nfe = sigmas[0] * noise, 0
    ones = torch.ones(noise.shape[0], device=noise.device)
    for i in range(steps):
        t, t_next = sigmas[i] * ones, sigmas[i + 1] * ones
        if sigmas[i + 1] > 0:
            x, nfe = heun_step(denoiser, x, t, t_next, cond), nfe + 2
        else:
            x, nfe = denoiser(x, t, cond), nfe + 1  # Euler to t=0 lands on D(x, t)
    return x, nfe


@torch.no_grad()
def consistency_sample(student: Denoiser, noise: torch.Tensor, cond: torch.Tensor,
                       sigmas: list[float], generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Multistep consistency sampling: y = f(sigma_0 z); then y = f(y + sqrt(s^2 - s_min^2) z', s)."""
    sch = student.schedule
    ones = torch.ones(noise.shape[0], device=noise.device)
    y = student(sigmas[0] * noise, sigmas[0] * ones, cond)
    for s in sigmas[1:]:
        z = torch.randn(noise.shape, generator=generator, device=noise.device)
        y = student(y + (s**2 - sch.sigma_min**2) ** 0.5 * z, s * ones, cond)
    return y, len(sigmas)
