"""On-policy distillation (GKD: Agarwal et al., ICLR 2024): `trainer.kd.on_policy` = lambda.

On a fraction lambda of the optimizer steps the student answers the step's prompts itself (sampled
at `kd.sample_temperature`, at most `kd.sample_max_new_tokens` tokens, through the same decoding
loop as evaluation: runner.lm.greedy.decode; with `kd.sample_constrain: wikisql`, from the
distribution restricted to what the evaluation's grammar allows), the teacher scores every token of those answers
(online, whatever `kd.mode` says: no store can hold logits of answers not yet written), and the
step's loss is the KD divergence alone over the sampled tokens:

    loss = sum over sampled answer tokens of tau^2 D(teacher, student) / sampled tokens of the step

No cross-entropy on those tokens: CE toward the student's own samples would teach it what it
already wrote. The other steps are today's KD, unchanged ((1 - alpha) CE + alpha KD on the data's
answers), so lambda = 0 is offline/online KD exactly. Which steps are on-policy, and what is
sampled, depend only on (seed, step): the same command and seed sample the same tokens.
"""
from __future__ import annotations

import random
import time
from typing import Any, Sequence

from runner.train.chat_data import Example


def is_on_policy_step(fraction: float, seed: int, step: int) -> bool:
    """Whether optimizer step `step` samples its answers (a draw per step, seeded; every rank agrees)."""
    if fraction <= 0:
        return False
    if fraction >= 1:
        return True
    return random.Random(f"on-policy/{seed}/{step}").random() < fraction


def sample_answers(model: Any, examples: Sequence[Example], *, pad_id: int, stop_ids: Sequence[int],
                   max_new_tokens: int, temperature: float, seed: int, workers: int = 1,
                   constraints: Sequence[Any] | None = None) -> list[Example]:
    """The examples' prompts with answers the student samples in place of the data's.

    Each returned Example is prompt + sampled tokens (the stop token included when sampled, so the
    student is also taught where to stop); its labels (collate) cover exactly the sampled tokens.
    `workers` > 1 (a CPU): the rows are split into that many batches decoded at once, one torch
    thread each (runner.lm.greedy: faster than one batch on every thread); each batch has its own
    seeded generator, so the samples depend on (seed, workers), never on thread timing.
    `constraints`: one runner.lm.constraint.ConstrainedRow per example, or None (unconstrained)."""
    from runner.lm.greedy import greedy_batches

    prompts = [list(e.input_ids[:e.prompt_len]) for e in examples]
    n = max(1, min(workers, len(prompts)))
    batches = [list(range(len(prompts)))[j::n] for j in range(n)]
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()  # dropout off while sampling: the answer is the model's, not a dropout mask's
    try:
        for b, results in greedy_batches(model, prompts, batches, pad_id=pad_id, stop_ids=stop_ids,
                                         max_new_tokens=max_new_tokens, workers=n, temperature=temperature,
                                         seed=seed, constraints=constraints):
            for i, (tokens, _) in zip(b, results):
                out[i] = tokens
    finally:
        model.train(was_training)
    return [Example(p + tokens, len(p), e.user) for p, tokens, e in zip(prompts, out, examples)]


class OnPolicySampler:
    """Samples the on-policy steps' answers and counts what that costs (train.sample_s, ...)."""

    def __init__(self, fraction: float, temperature: float, max_new_tokens: int, tokenizer: Any, model: Any,
                 constrain: str | None = None):
        from runner.lm.generate import stop_token_ids
        from runner.lm.greedy import auto_workers

        self.fraction, self.temperature, self.max_new_tokens = fraction, temperature, max_new_tokens
        self.constrain = constrain
        self.grammar, self.pieces = None, None
        if constrain:
            from runner.lm.constraint import builder, token_bytes

            self.grammar, self.pieces = builder(constrain), token_bytes(tokenizer)  # once: |V| decodes
        self.workers = auto_workers(model.device.type)  # a CPU: one decoding batch per torch thread
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.steps = 0        # on-policy optimizer steps taken
        self.tokens = 0       # answer tokens sampled (this process)
        self.stopped = 0      # answers that ended with a stop token (the rest hit max_new_tokens)
        self.answers = 0
        self.sample_s = 0.0   # student sampling, inside train_s

    def check_rows(self, examples: Sequence[Example]) -> None:
        """Before the first step: every training prompt builds the constraint's grammar."""
        if not self.constrain:
            return
        for n, e in enumerate(examples):
            try:
                self.grammar(e.user or "")
            except ValueError as err:
                raise ValueError(f"trainer.kd.sample_constrain={self.constrain}: training row {n}'s prompt "
                                 f"does not build the grammar ({err}). Fix: trainer.kd.sample_constrain=null, "
                                 "or train on this task's prompts") from None

    def _constraints(self, exs: Sequence[Example]) -> list[Any] | None:
        if not self.constrain:
            return None
        from runner.lm.constraint import ConstrainedRow

        return [ConstrainedRow(self.grammar(e.user or ""), self.pieces, self.stop_ids) for e in exs]

    def on_policy(self, seed: int, step: int) -> bool:
        return is_on_policy_step(self.fraction, seed, step)

    def sample(self, model: Any, micro_batches: list[list[Example]], pad_id: int, seed: int,
               step: int) -> list[list[Example]]:
        t0 = time.perf_counter()
        out = []
        for k, exs in enumerate(micro_batches):
            # one seed per (run seed, step, micro-batch): reproducible, and unrelated across steps
            sampled = sample_answers(model, exs, pad_id=pad_id, stop_ids=self.stop_ids,
                                     max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                     seed=random.Random(f"sample/{seed}/{step}/{k}").getrandbits(62),
                                     workers=self.workers, constraints=self._constraints(exs))
            self.tokens += sum(e.n_target for e in sampled)
            self.stopped += sum(1 for e in sampled if e.input_ids[-1] in self.stop_ids)
            self.answers += len(sampled)
            out.append(sampled)
        if model.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        self.sample_s += time.perf_counter() - t0
        self.steps += 1
        return out

    def stats(self, train_s: float) -> dict[str, Any]:
        return {"kd_on_policy": self.fraction, "kd_sample_temperature": self.temperature,
                "kd_sample_constrain": self.constrain,
                "kd_sample_max_new_tokens": self.max_new_tokens, "kd_on_policy_steps": self.steps,
                "sample_s": round(self.sample_s, 3), "sample_share": self.sample_s / train_s if train_s else None,
                "kd_sampled_tokens": self.tokens,
                "kd_sampled_stop_rate": self.stopped / self.answers if self.answers else None}
