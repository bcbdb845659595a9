"""Training stages of the Burgers CD pipeline: operator -> diffusion_teacher -> consistency_distill.

Artifacts: `burgers_pairs` (parquet: split, u0, uT, op = operator prediction), `operator.pt`,
`teacher.pt`, `student.pt`, and a loss log table per stage.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import polars as pl
import torch

from runner.cd.burgers import Burgers1D
from runner.cd.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from runner.cd.consistency import CDSettings, Models, draw_step, optimizer_step
from runner.cd.edm import Denoiser, EDMSchedule, edm_loss
from runner.cd.models import NetSpec, count_params, macs_per_row
from runner.cd.report import distill_cost
from runner.cd.runtime import (
    TorchRuntime,
    cosine_lr,
    gpu_utilization,
    peak_memory_mb,
    sync,
)
from runner.core.stage import ConfigError, Stage, check_range


def load_pairs(ctx, device: torch.device) -> dict[str, torch.Tensor]:
    """`burgers_pairs` as tensors: train_u0, train_uT, train_op, test_u0, ..."""
    df = ctx.store.read("burgers_pairs")
    out = {}
    for split in ("train", "test"):
        part = df.filter(pl.col("split") == split)
        for col in ("u0", "uT", "op"):
            out[f"{split}_{col}"] = torch.as_tensor(part[col].to_numpy().copy(), device=device)
    return out


def log_phase(ctx, phase: str, device: torch.device, wall: float, samples: int) -> None:
    mem, how = peak_memory_mb(device)
    util, util_note = gpu_utilization(device)
    ctx.metrics.update("cd", {f"{phase}_wall_s": round(wall, 3), f"{phase}_samples": samples,
                              f"{phase}_samples_per_s": round(samples / wall, 1) if wall > 0 else None,
                              f"{phase}_peak_mem_mb": round(mem, 1), f"{phase}_gpu_util_pct": util})
    ctx.metrics.log("cd.peak_mem_source", how)
    ctx.metrics.log("cd.gpu_util_source", util_note)
    ctx.metrics.log("cd.device", str(device))
    ctx.timer.add_items(samples)


def fit(loss_fn, params, steps: int, n_train: int, batch_size: int, lr: float, seed: int,
        device: torch.device) -> list[float]:
    """AdamW with a cosine schedule on random mini-batches; loss_fn(idx, generator) -> loss."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(seed)
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr)
        idx = torch.randint(0, n_train, (batch_size,), generator=gen, device=device)
        loss = loss_fn(idx, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def loss_log(losses: list[float], every: int = 50) -> pl.DataFrame:
    """Loss averaged over windows of `every` steps (the curve, small enough to store)."""
    arr = np.asarray(losses, dtype=np.float64)
    starts = np.arange(0, len(arr), every)
    return pl.DataFrame({"step": starts + every, "loss": [float(arr[s:s + every].mean()) for s in starts]})


class TrainStage(Stage):
    def __init__(self, runtime: TorchRuntime, net: NetSpec, steps: int, batch_size: int, lr: float):
        self.runtime, self.net, self.steps, self.batch_size, self.lr = runtime, net, steps, batch_size, lr

    def validate(self, ctx) -> None:
        check_range(self.name, "steps", self.steps, 1)
        check_range(self.name, "batch_size", self.batch_size, 1)
        check_range(self.name, "lr", self.lr, 0, lo_open=True)
        self.runtime.resolve()


class OperatorStage(TrainStage):
    """Deterministic regressor u0 -> u(T); writes the data with its predictions for later stages."""

    writes = ("burgers_pairs", "operator.pt", "operator_train_log")

    def __init__(self, dataset: Burgers1D, **kw):
        super().__init__(**kw)
        self.dataset = dataset

    def run(self, ctx) -> None:
        device = self.runtime.apply()
        t0 = time.perf_counter()
        data, cached = self.dataset.load(ctx.cache_dir)
        ctx.metrics.update("cd", {"dataset_wall_s": round(time.perf_counter() - t0, 3), "dataset_from_cache": cached,
                                  "dataset_fingerprint": self.dataset.fingerprint()})
        grid = self.dataset.grid
        u0, uT = torch.as_tensor(data.train_u0, device=device), torch.as_tensor(data.train_uT, device=device)
        torch.manual_seed(ctx.stage_seed("operator.init"))
        net = self.net.build(grid, 1, 0).to(device)

        def loss_fn(idx, _gen):
            return ((net(u0[idx, None]) - uT[idx]) ** 2).mean()

        t0 = time.perf_counter()
        losses = fit(loss_fn, net.parameters(), self.steps, u0.shape[0], self.batch_size, self.lr,
                     ctx.stage_seed("operator.fit"), device)
        sync(device)
        log_phase(ctx, "operator", device, time.perf_counter() - t0, self.steps * self.batch_size)
        ctx.metrics.log("cd.operator_params", count_params(net))
        with torch.no_grad():
            preds = {s: net(torch.as_tensor(u, device=device)[:, None]).cpu().numpy()
                     for s, u in (("train", data.train_u0), ("test", data.test_u0))}
        pairs = pl.concat([
            pl.DataFrame({"split": [s] * len(u), "u0": u, "uT": t, "op": preds[s]})
            for s, u, t in (("train", data.train_u0, data.train_uT), ("test", data.test_u0, data.test_uT))])
        ctx.store.write("burgers_pairs", pairs)
        ctx.store.write("operator_train_log", loss_log(losses))
        save_checkpoint(ctx.store.path("operator.pt"), net, self.net)


class DiffusionTeacherStage(TrainStage):
    """EDM denoiser of the scaled residual y = (uT - op(u0)) * residual_scale, conditioned on op(u0)."""

    reads = ("burgers_pairs",)
    writes = ("teacher.pt", "teacher_train_log")

    def __init__(self, schedule: EDMSchedule, **kw):
        super().__init__(**kw)
        self.schedule = schedule

    def run(self, ctx) -> None:
        device = self.runtime.apply()
        d = load_pairs(ctx, device)
        residual = d["train_uT"] - d["train_op"]
        # Scale the target to std sigma_data, the scale EDM's preconditioning assumes.
        scale = self.schedule.sigma_data / float(residual.std())
        y, cond = residual * scale, d["train_op"]
        torch.manual_seed(ctx.stage_seed("teacher.init"))
        denoiser = Denoiser(self.net.build(y.shape[1], 2, 1), self.schedule).to(device)

        def loss_fn(idx, gen):
            return edm_loss(denoiser, y[idx], cond[idx], gen)

        t0 = time.perf_counter()
        losses = fit(loss_fn, denoiser.parameters(), self.steps, y.shape[0], self.batch_size, self.lr,
                     ctx.stage_seed("teacher.fit"), device)
        sync(device)
        log_phase(ctx, "teacher", device, time.perf_counter() - t0, self.steps * self.batch_size)
        ctx.metrics.log("cd.teacher_params", count_params(denoiser))
        ctx.store.write("teacher_train_log", loss_log(losses))
        save_checkpoint(ctx.store.path("teacher.pt"), denoiser.net, self.net,
                        schedule=vars(self.schedule), residual_scale=scale)


def load_denoiser(ctx, name: str, grid: int, device: torch.device, consistency: bool) -> tuple[Denoiser, dict]:
    ckpt = load_checkpoint(ctx.store.locate(name))
    net, _ = build_from_checkpoint(ckpt, grid, 2, 1, device)
    return Denoiser(net, EDMSchedule(**ckpt["schedule"]), consistency=consistency), ckpt


class ConsistencyDistillStage(Stage):
    """Consistency distillation of the teacher into a one-step student (see runner/cd/consistency.py)."""

    reads = ("burgers_pairs", "teacher.pt")
    writes = ("student.pt", "cd_train_log")

    def __init__(self, runtime: TorchRuntime, cd: CDSettings):
        self.runtime, self.cd = runtime, cd

    def validate(self, ctx) -> None:
        device = self.runtime.resolve()
        if device.type != "cuda" and (self.cd.bf16 or self.cd.compile):
            raise ConfigError(
                f"consistency_distill.bf16={self.cd.bf16} / compile={self.cd.compile} are CUDA-only and the "
                f"device is {device}; set consistency_distill.bf16=false consistency_distill.compile=false "
                "or run on a CUDA machine")

    def run(self, ctx) -> None:
        device = self.runtime.apply()
        s = self.cd
        d = load_pairs(ctx, device)
        grid = d["train_u0"].shape[1]
        teacher, ckpt = load_denoiser(ctx, "teacher.pt", grid, device, consistency=False)
        teacher.requires_grad_(False)
        scale = ckpt["residual_scale"]
        y, cond = (d["train_uT"] - d["train_op"]) * scale, d["train_op"]
        student = Denoiser(copy.deepcopy(teacher.net), teacher.schedule, consistency=True).requires_grad_(True)
        target = copy.deepcopy(student).requires_grad_(False)
        raw_student_net = student.net
        if s.compile:
            for m in (student, target, teacher):
                m.net = torch.compile(m.net)
        models = Models(student, target, teacher)
        sigmas = teacher.schedule.karras_sigmas(s.N, device)
        opt = torch.optim.Adam(student.parameters(), lr=s.lr)
        rng = np.random.default_rng(ctx.stage_seed("consistency_distill.draws"))
        steps = s.optimizer_steps(y.shape[0])
        autocast = device.type if s.bf16 else None
        log, window = [], []
        t0 = time.perf_counter()
        for step in range(steps):
            draw = draw_step(rng, s, y.shape[0], grid)
            loss, gnorm = optimizer_step(models, opt, y, cond, draw, sigmas, s, autocast)
            window.append((loss, gnorm))
            if (step + 1) % s.log_every == 0 or step + 1 == steps:
                log.append({"step": step + 1, "loss": float(np.mean([w[0] for w in window])),
                            "grad_norm": float(np.mean([w[1] for w in window]))})
                window = []
        sync(device)
        wall = time.perf_counter() - t0
        cost = distill_cost(s, steps, y.shape[0], macs_per_row(raw_student_net, grid, 2, 1))
        log_phase(ctx, "distill", device, wall, cost["distill_samples"])
        ctx.metrics.update("cd", cost)
        ctx.metrics.update("cd", {
            "distill_rows_per_s": round(cost["rows_student_fwd_bwd"] / wall, 1),
            "distill_gflops_per_s": round(cost["flops_total"] / wall / 1e9, 3),
            "distill_final_loss": log[-1]["loss"], "bf16": s.bf16, "compile": s.compile,
            "effective_batch": s.effective_batch})
        ctx.store.write("cd_train_log", pl.DataFrame(log))
        spec = NetSpec(**ckpt["spec"])
        save_checkpoint(ctx.store.path("student.pt"), raw_student_net, spec, schedule=ckpt["schedule"],
                        residual_scale=scale, N=s.N)
