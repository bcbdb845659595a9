"""Logit (white-box) distillation: the `trainer.torch.kd` block and the token-level loss.

Total loss of a step = ((1 - alpha) * sum of CE + alpha * sum of KD) / assistant tokens of the step,
where both sums run over exactly the same positions: the assistant tokens (labels != IGNORE).
Summing per token (not per row) keeps the two terms on one scale, as the CE term already is.

KD per position t, at temperature tau, p = softmax(z / tau):
    forward_kl  tau^2 * KL(p_T || p_S)          (Hinton et al. 2015: tau^2 keeps gradients ~ tau-free)
    reverse_kl  tau^2 * KL(p_S || p_T)          (mode-seeking, MiniLLM)
    jsd         tau^2 * [beta * KL(p_T || m) + (1 - beta) * KL(p_S || m)],  m = beta p_T + (1 - beta) p_S
                (beta -> 0: ~ beta * forward KL; beta -> 1: ~ (1 - beta) * reverse KL; 0.5: symmetric JSD)
Top-k: the teacher's k most likely tokens S (log-probs taken at tau over the full vocabulary, then
truncated). `top_k_rest` says what happens to the mass outside S:
    bucket       (default) both distributions become k + 1 outcomes: the k tokens of S and one "rest"
                 outcome holding 1 - sum over S (the teacher's from its full-vocabulary log-probs, the
                 student's from its full softmax). Student mass outside S is penalised.
    renormalise  both are renormalised over S and compared there. Student mass outside S is then
                 invisible to the KD term: at alpha = 0.9 only the 0.1-weighted CE term pushes it
                 down, and greedy decoding picked tokens outside S (wikisql_logit_kd_full: exec pass
                 0.004 at alpha = 0.9, docs/logit_kd.md).
With k = |V| both equal the dense loss (tested).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from runner.core.stage import ConfigError, check_choice, check_range

LOSSES = ("forward_kl", "reverse_kl", "jsd")
MODES = ("online", "offline")
RESTS = ("bucket", "renormalise")
_TINY = 1e-12  # floor of a rest mass (k = |V| leaves ~0, up to rounding)


@dataclass
class KDConfig:
    teacher: str | None = None       # HF folder, or an artifact name such as `kd_teacher_model/`
    alpha: float = 0.5               # weight of the KD term; 1 - alpha on the CE term
    temperature: float = 1.0
    top_k: int | None = 16           # null: dense (online only)
    top_k_rest: str = "bucket"       # the mass outside the top k: one extra outcome | renormalise over k
    loss: str = "forward_kl"
    beta: float = 0.5                # jsd only
    mode: str = "offline"            # online: teacher forward each step; offline: teacher_logits stage
    store_dtype: str = "float16"     # offline log-prob storage (float32 for bit-level parity tests)
    enabled: bool = True
    teacher_tables_check: bool = True  # false: accept a teacher whose training tables cannot be checked
    # On-policy distillation (runner.train.on_policy): the fraction of steps whose answers the
    # student samples itself and the teacher scores; 0 = offline/online KD exactly.
    on_policy: float = 0.0
    sample_temperature: float = 1.0
    sample_max_new_tokens: int = 64
    sample_constrain: str | None = None  # wikisql: sample only what the evaluation's grammar allows

    @classmethod
    def from_config(cls, raw: dict[str, Any] | None) -> "KDConfig | None":
        """None when the block is absent or `enabled: false` (nothing changes for plain SFT)."""
        if not raw:
            return None
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"trainer kd block: unknown keys {sorted(unknown)}; "
                              f"known: {sorted(cls.__dataclass_fields__)}")
        cfg = cls(**raw)
        if not cfg.enabled:
            # A teacher or alpha set while KD is off would train plain SFT and say nothing.
            default = cls()
            changed = sorted(k for k in raw if k != "enabled" and getattr(cfg, k) != getattr(default, k))
            if changed:
                raise ConfigError(f"trainer.kd.{changed[0]} is set but trainer.kd.enabled=false, so the run would "
                                  f"train plain SFT ({', '.join('kd.' + k for k in changed)} ignored). Fix: add "
                                  "trainer.kd.enabled=true, or drop the kd overrides")
            return None
        return cfg

    def validate(self, key: str) -> None:
        k = f"{key}.kd"
        if not self.teacher:
            raise ConfigError(f"{k}.teacher is not set: a local HF folder or an artifact such as kd_teacher_model/")
        check_range(k, "alpha", self.alpha, 0, 1)
        check_range(k, "temperature", self.temperature, 0, lo_open=True)
        check_range(k, "top_k", self.top_k, 1)
        check_choice(k, "loss", self.loss, LOSSES)
        check_choice(k, "mode", self.mode, MODES)
        check_choice(k, "top_k_rest", self.top_k_rest, RESTS)
        check_choice(k, "store_dtype", self.store_dtype, ["float16", "bfloat16", "float32"])
        if self.loss == "jsd":
            check_range(k, "beta", self.beta, 0, lo_open=True)
            if self.beta >= 1:
                raise ConfigError(f"{k}.beta={self.beta} is out of range: it must be < 1 (0 < beta < 1)")
        check_range(k, "on_policy", self.on_policy, 0, 1)
        check_range(k, "sample_temperature", self.sample_temperature, 0, lo_open=True)
        check_range(k, "sample_max_new_tokens", self.sample_max_new_tokens, 1)
        from runner.lm.constraint import NAMES

        check_choice(k, "sample_constrain", self.sample_constrain, NAMES)
        if self.mode == "offline" and self.top_k is None:
            raise ConfigError(f"{k}.mode=offline needs {k}.top_k (dense offline logits are |V| floats per "
                              f"token); set top_k, or use {k}.mode=online for a dense teacher")


def teacher_targets(teacher_logits, temperature: float, top_k: int | None):
    """Teacher log-probs at tau for the selected positions: (ids [N,k] or None when dense, logp)."""
    import torch

    logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if top_k is None:
        return None, logp
    vals, ids = torch.topk(logp, min(top_k, logp.size(-1)), dim=-1)
    return ids, vals


def _kl(logp_a, logp_b):
    """Sum over the last axis of p_a (log p_a - log p_b); 0 * log 0 counts as 0."""
    import torch

    p = logp_a.exp()
    return torch.where(p > 0, p * (logp_a - logp_b), torch.zeros_like(p)).sum(-1)


def _with_rest(logp_top):
    """[N, k] log-probs of k outcomes -> [N, k + 1]: the k, then log(1 - their sum) (floored)."""
    import torch

    rest = torch.log((-torch.expm1(torch.logsumexp(logp_top, -1, keepdim=True).clamp_max(0))).clamp_min(_TINY))
    return torch.cat([logp_top, rest], -1)


def kd_divergence_sum(student_logits, ids, teacher_logp, temperature: float, loss: str = "forward_kl",
                      beta: float = 0.5, rest: str = "bucket"):
    """tau^2 * sum over positions of D(teacher, student). `student_logits` [N, V] (selected
    assistant positions); `ids` [N, k] (None: dense) and `teacher_logp` from teacher_targets;
    `rest`: what the mass outside the top k becomes (module docstring)."""
    import torch

    s = student_logits.float() / temperature
    t = teacher_logp.float()
    if ids is None:
        s_logp, t_logp = torch.log_softmax(s, -1), t
    elif rest == "bucket":  # k tokens + one outcome for everything else, on both sides
        s_logp = _with_rest(torch.log_softmax(s, -1).gather(-1, ids.long()))
        t_logp = _with_rest(t)
    else:  # renormalise both over the teacher's top-k set S
        s_logp = torch.log_softmax(s.gather(-1, ids.long()), -1)
        t_logp = t - torch.logsumexp(t, -1, keepdim=True)
    if loss == "forward_kl":
        per = _kl(t_logp, s_logp)
    elif loss == "reverse_kl":
        per = _kl(s_logp, t_logp)
    elif loss == "jsd":
        log_m = torch.logsumexp(torch.stack([t_logp + math.log(beta), s_logp + math.log(1 - beta)]), 0)
        per = beta * _kl(t_logp, log_m) + (1 - beta) * _kl(s_logp, log_m)
    else:
        raise ValueError(f"unknown kd loss {loss!r}; one of {LOSSES}")
    return per.sum() * temperature ** 2


def combine(ce_sum, kd_sum, alpha: float):
    """(1 - alpha) CE + alpha KD; alpha = 0 returns the CE tensor itself (bit-identical SFT)."""
    if alpha == 0 or kd_sum is None:
        return ce_sum
    return (1 - alpha) * ce_sum + alpha * kd_sum
