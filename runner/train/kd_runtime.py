"""What the torch trainer holds while it distils: the teacher's targets (online or offline) and
the cost counters (`train.kd_*` metrics). The loss formulas live in runner.train.kd_loss."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from runner.train.chat_data import IGNORE
from runner.train.kd_loss import KDConfig, combine, kd_divergence_sum, teacher_targets


class KDRuntime:
    def __init__(self, kd: KDConfig, teacher_dir: Path | None, logits_dir: Path | None, device: str):
        self.kd, self.device = kd, device
        self.teacher_dir, self.logits_dir = teacher_dir, logits_dir
        self.teacher = None
        self.offline = None
        self.teacher_s = 0.0     # teacher forward (online) or target lookup (offline), inside train_s
        self.positions = 0       # assistant positions distilled
        self.kd_sum = 0.0        # sum of the KD term (tau^2-scaled), for the mean per token
        # Off-policy steps at alpha = 0 are pure SFT: the data's answers never reach the teacher.
        # On-policy steps (kd.on_policy > 0) score the student's own answers: always online.
        off_policy_kd = kd.alpha > 0 and kd.on_policy < 1
        if kd.on_policy > 0 or (off_policy_kd and kd.mode == "online"):
            from runner.train.teacher_logits import load_teacher

            self.teacher = load_teacher(teacher_dir, device)
        if off_policy_kd and kd.mode == "offline":
            from runner.train.teacher_logits import OfflineTargets

            self.offline = OfflineTargets(logits_dir, kd)

    @classmethod
    def open(cls, trainer: Any, base_dir: Path, device: str) -> "KDRuntime":
        """Check the tokenizers (fails before the first step, naming the difference), then load."""
        from runner.core.stage import ConfigError
        from runner.train.teacher_logits import tokenizer_difference

        kd = trainer.kd
        teacher_dir = getattr(trainer, "kd_teacher_dir", None) or Path(kd.teacher)
        logits_dir = getattr(trainer, "kd_logits_dir", None)
        if not Path(teacher_dir, "config.json").exists():
            raise ConfigError(f"{trainer.config_key}.kd.teacher={kd.teacher}: no Hugging Face model at {teacher_dir}")
        diff = tokenizer_difference(teacher_dir, base_dir)
        if diff:
            raise ConfigError(f"{trainer.config_key}.kd: teacher ({teacher_dir}) and student ({base_dir}) "
                              f"tokenizers differ: {diff}. Logit KD needs the same tokenizer")
        if kd.mode == "offline" and kd.alpha > 0 and kd.on_policy < 1 and logits_dir is None:
            raise ConfigError(f"{trainer.config_key}.kd.mode=offline needs the teacher_logits stage's "
                              "artifact teacher_logits/ (enable the stage, or use kd.mode=online)")
        return cls(kd, Path(teacher_dir), logits_dir, device)

    def mix(self, ce_sum, examples, ids, mask, labels_shifted, start: int, student_logits, on_policy: bool = False):
        """(1 - alpha) CE + alpha KD over the same assistant positions (labels != IGNORE). On an
        on-policy batch (the student's sampled answers) the KD term alone, teacher online."""
        if self.kd.alpha == 0 and not on_policy:
            return combine(ce_sum, None, 0)
        sel = labels_shifted != IGNORE
        t0 = time.perf_counter()
        if on_policy or self.kd.mode == "online":
            from runner.train.teacher_logits import teacher_logits_at

            t_ids, t_logp = teacher_targets(teacher_logits_at(self.teacher, ids, mask, start)[sel],
                                            self.kd.temperature, self.kd.top_k)
        else:
            t_ids, t_logp = self.offline.targets(examples, ids.device)
        if ids.is_cuda:
            import torch

            torch.cuda.synchronize()
        self.teacher_s += time.perf_counter() - t0
        kd_sum = kd_divergence_sum(student_logits[sel], t_ids, t_logp, self.kd.temperature,
                                   self.kd.loss, self.kd.beta, self.kd.top_k_rest)
        self.positions += int(sel.sum())
        self.kd_sum += float(kd_sum.detach())
        return kd_sum if on_policy else combine(ce_sum, kd_sum, self.kd.alpha)

    def stats(self) -> dict[str, Any]:
        out = {"kd_mode": self.kd.mode, "kd_alpha": self.kd.alpha, "kd_loss": self.kd.loss,
               "kd_temperature": self.kd.temperature, "kd_top_k": self.kd.top_k,
               "kd_top_k_rest": self.kd.top_k_rest,
               "kd_teacher_s": round(self.teacher_s, 3), "kd_positions": self.positions,
               "kd_mean_term": self.kd_sum / self.positions if self.positions else None,
               "kd_teacher": str(self.teacher_dir)}
        if self.offline is not None:
            out["kd_offline_bytes_per_token"] = self.offline.meta["bytes_per_token"]
        return out
