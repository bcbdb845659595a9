"""cd_eval: NRMSE of operator, teacher and student against ground truth on the test split,
student-vs-teacher fidelity with shared noise, ensembles, NFE, measured sampling speed-up, plots."""
from __future__ import annotations

import time

import numpy as np
import polars as pl
import torch

from runner.cd.edm import consistency_sample, heun_sample
from runner.cd.report import nrmse, nrmse_per_sample, plot_cases, plot_nrmse_vs_nfe
from runner.cd.runtime import TorchRuntime, sync
from runner.cd.stages import load_denoiser, load_pairs
from runner.core.stage import ConfigError, Stage, check_range


class CDEvalStage(Stage):
    reads = ("burgers_pairs", "teacher.pt", "student.pt")
    writes = ("cd_eval", "cd_report.json", "cd_nrmse_vs_nfe.png", "cd_test_cases.png")

    def __init__(self, runtime: TorchRuntime, teacher_steps: int = 18, teacher_lowstep_steps: int = 4,
                 curve_steps: tuple[int, ...] = (1, 2, 3, 4, 6, 10, 18), student_sigmas: tuple[float, ...] = (80.0, 0.5),
                 ensemble_k: int = 8, timing_repeats: int = 3, min_timing_s: float = 0.5, plot_cases: int = 4):
        self.runtime, self.teacher_steps, self.teacher_lowstep_steps = runtime, teacher_steps, teacher_lowstep_steps
        self.curve_steps, self.student_sigmas = list(curve_steps), [float(s) for s in student_sigmas]
        self.ensemble_k, self.timing_repeats, self.n_plot_cases = ensemble_k, timing_repeats, plot_cases
        self.min_timing_s = min_timing_s

    def validate(self, ctx) -> None:
        for key in ("teacher_steps", "teacher_lowstep_steps", "ensemble_k", "timing_repeats"):
            check_range(self.name, key, getattr(self, key), 1)
        check_range(self.name, "min_timing_s", self.min_timing_s, 0)
        if len(self.student_sigmas) < 2 or sorted(self.student_sigmas, reverse=True) != self.student_sigmas:
            raise ConfigError(f"{self.name}.student_sigmas={self.student_sigmas} must list >= 2 decreasing noise "
                              "levels (the first is the 1-step sampler's, the first two the 2-step sampler's)")
        self.runtime.resolve()

    def run(self, ctx) -> None:
        device = self.runtime.apply()
        d = load_pairs(ctx, device)
        u0, truth, op = d["test_u0"], d["test_uT"].cpu().numpy(), d["test_op"]
        grid, n = u0.shape[1], u0.shape[0]
        teacher, tck = load_denoiser(ctx, "teacher.pt", grid, device, consistency=False)
        student, _ = load_denoiser(ctx, "student.pt", grid, device, consistency=True)
        scale = tck["residual_scale"]
        gen = torch.Generator(device=device).manual_seed(ctx.stage_seed("cd_eval"))
        noise = torch.randn(self.ensemble_k, n, grid, generator=gen, device=device)

        def field(residual: torch.Tensor) -> np.ndarray:  # back to u(T) units
            return (op + residual / scale).cpu().numpy()

        def teacher_field(steps: int, k: int = 0) -> tuple[np.ndarray, int]:
            x, nfe = heun_sample(teacher, noise[k], op, steps)
            return field(x), nfe

        def student_field(sigmas: list[float], k: int = 0) -> tuple[np.ndarray, int]:
            x, nfe = consistency_sample(student, noise[k], op, sigmas, gen)
            return field(x), nfe

        m: dict = {"nrmse_operator": nrmse(op.cpu().numpy(), truth)}
        teacher_pred, m["nfe_teacher"] = teacher_field(self.teacher_steps)
        low_pred, m["nfe_teacher_lowstep"] = teacher_field(self.teacher_lowstep_steps)
        s1_pred, m["nfe_student"] = student_field(self.student_sigmas[:1])
        s2_pred, m["nfe_student_2step"] = student_field(self.student_sigmas[:2])
        m.update(nrmse_teacher=nrmse(teacher_pred, truth), nrmse_teacher_lowstep=nrmse(low_pred, truth),
                 nrmse_student_1step=nrmse(s1_pred, truth), nrmse_student_2step=nrmse(s2_pred, truth),
                 nrmse_student_vs_teacher=nrmse(s1_pred, teacher_pred))  # same noise draw
        # Baseline: the teacher's denoiser applied once at sigma_max (its posterior-mean estimate).
        m["nrmse_teacher_1nfe"] = nrmse(teacher_field(1)[0], truth)
        m["student_over_teacher_nrmse"] = m["nrmse_student_1step"] / m["nrmse_teacher"]
        m["nfe_reduction"] = m["nfe_teacher"] / m["nfe_student"]

        # Ensemble means over K noise draws (the K = 0 draw is the one above).
        t_ens = np.mean([teacher_field(self.teacher_steps, k)[0] for k in range(self.ensemble_k)], axis=0)
        s_ens = np.mean([student_field(self.student_sigmas[:1], k)[0] for k in range(self.ensemble_k)], axis=0)
        m.update(ensemble_k=self.ensemble_k, nrmse_teacher_ensemble=nrmse(t_ens, truth),
                 nrmse_student_ensemble=nrmse(s_ens, truth))

        m.update(self.measure_speed(teacher, student, noise[0], op, device))
        curve_t = [(nfe, nrmse(p, truth)) for p, nfe in (teacher_field(st) for st in self.curve_steps)]
        curve_s = [(1, m["nrmse_student_1step"]), (2, m["nrmse_student_2step"])]
        ctx.metrics.update("cd", m)
        ctx.timer.add_items(n)

        ctx.store.write("cd_eval", pl.DataFrame({
            "case": np.arange(n), "nrmse_operator": nrmse_per_sample(op.cpu().numpy(), truth),
            "nrmse_teacher": nrmse_per_sample(teacher_pred, truth),
            "nrmse_student_1step": nrmse_per_sample(s1_pred, truth),
            "nrmse_student_vs_teacher": nrmse_per_sample(s1_pred, teacher_pred)}))
        plot_nrmse_vs_nfe(ctx.store.path("cd_nrmse_vs_nfe.png"), curve_t, curve_s)
        plot_cases(ctx.store.path("cd_test_cases.png"),
                   {"truth": truth, "teacher 35 NFE" if m["nfe_teacher"] == 35 else "teacher": teacher_pred,
                    "student 1 step": s1_pred}, u0.cpu().numpy(), self.n_plot_cases)
        all_cd = {k[3:]: v for k, v in ctx.metrics.as_dict().items() if k.startswith("cd.")}
        ctx.store.write_json("cd_report.json", {
            "metrics": all_cd,
            "curves": {"teacher": [{"nfe": a, "nrmse": b} for a, b in curve_t],
                       "student": [{"nfe": a, "nrmse": b} for a, b in curve_s]},
            "settings": {"teacher_steps": self.teacher_steps, "teacher_lowstep_steps": self.teacher_lowstep_steps,
                         "student_sigmas": self.student_sigmas, "test_cases": n},
            "definitions": {
                "nrmse": "sqrt(mean((p - t)^2) / mean(t^2)) over all test samples and grid points",
                "nrmse_student_vs_teacher": "student 1-step vs teacher field, same initial noise",
                "sampling_speedup": "median wall of teacher sampling / median wall of student 1-step, whole test set",
                "flops": "2 x MACs per forward row; student fwd+bwd = 3 forwards; teacher = 2 forwards per row",
                "forward_passes_seed_formula": "iterations x (batch_size / micro_batch) x num_taus (seed 004)"}})

    def measure_speed(self, teacher, student, noise, cond, device) -> dict:
        """Median wall time of sampling the whole test set, teacher vs 1-step student.

        Each sampler runs at least `timing_repeats` times and for at least `min_timing_s`, so the
        fast student is not timed from a handful of millisecond calls on a shared CPU."""
        def timed(fn) -> float:
            fn()  # warm-up (allocations, compiled kernels)
            walls: list[float] = []
            while len(walls) < self.timing_repeats or sum(walls) < self.min_timing_s:
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                walls.append(time.perf_counter() - t0)
            return float(np.median(walls))

        wt = timed(lambda: heun_sample(teacher, noise, cond, self.teacher_steps))
        ws = timed(lambda: consistency_sample(student, noise, cond, self.student_sigmas[:1]))
        return {"sampling_wall_teacher_s": wt, "sampling_wall_student_s": ws, "sampling_speedup": wt / ws}
