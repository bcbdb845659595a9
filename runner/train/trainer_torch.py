"""`trainer=torch`: supervised fine-tuning with transformers + peft, on one process or under torchrun (DDP).

One optimizer step = `grad_accum` global batches of `batch_size` rows per process. The loss is
the mean cross-entropy over the assistant tokens of the whole step (all micro-batches, all ranks):
each rank sums its token losses and divides by the step's global token count, so 2 processes at
batch b compute exactly the gradient of 1 process at batch 2b.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from runner.core.stage import ConfigError, check_choice, check_range
from runner.train import checkpoint as ckpt
from runner.train.chat_data import Example, collate, encode_rows, length_sorted_batches
from runner.train.ddp import Dist, all_sum, barrier, init_distributed, shard
from runner.train import precision as prec
from runner.train.kd_loss import KDConfig
from runner.train.progress import TrainProgress
from runner.train.result import TrainPaths, TrainResult
from runner.train.schedule import SCHEDULES, Plan, lambda_scheduler

_log = logging.getLogger("runner")


class TorchTrainer:
    backend = "torch"
    # How the user names this trainer's keys: trainer.X, or trainer.torch.X under trainer=auto.
    config_key = "trainer"

    def __init__(self, method: str = "full", lora: dict[str, Any] | None = None, learning_rate: float = 1e-3,
                 lr_schedule: str = "cosine", warmup_steps: int = 0, weight_decay: float = 0.0,
                 max_grad_norm: float | None = 1.0, epochs: float = 1, max_steps: int | None = None,
                 max_wall_s: float | None = None, min_lr_ratio: float = 0.0, checkpoint_select: str = "last",
                 dev_rows: int = 200, dev_max_new_tokens: int = 64,
                 batch_size: int = 16, grad_accum: int = 1, max_seq_length: int = 512,
                 eval_every: int | None = None, max_valid_rows: int | None = None,
                 early_stopping_patience: int | None = None, early_stopping_min_delta: float = 0.0,
                 checkpoint_every: int | None = None, keep_checkpoints: int = 2, resume: bool = True,
                 device: str = "auto", bf16_autocast: bool = True, precision: str = "auto",
                 num_threads: int | None = None,
                 seed: int | None = None, progress: bool = True, enabled: bool = True,
                 kd: dict[str, Any] | None = None):
        self.method, self.lora = method, dict(lora or {})
        self.learning_rate, self.lr_schedule, self.warmup_steps = learning_rate, lr_schedule, warmup_steps
        self.weight_decay, self.max_grad_norm = weight_decay, max_grad_norm
        self.epochs, self.max_steps = epochs, max_steps
        # A wall budget for training (steps fitted once a few are timed), and which checkpoint to keep:
        # the last, the lowest validation loss, or the best gold match on the dev split (dev_select.py).
        self.max_wall_s, self.min_lr_ratio = max_wall_s, min_lr_ratio
        self.checkpoint_select, self.dev_rows, self.dev_max_new_tokens = checkpoint_select, dev_rows, dev_max_new_tokens
        self.batch_size, self.grad_accum, self.max_seq_length = batch_size, grad_accum, max_seq_length
        self.eval_every, self.max_valid_rows = eval_every, max_valid_rows
        self.patience, self.min_delta = early_stopping_patience, early_stopping_min_delta
        self.checkpoint_every, self.keep_checkpoints, self.resume = checkpoint_every, keep_checkpoints, resume
        self.device, self.bf16_autocast, self.num_threads = device, bf16_autocast, num_threads
        # fp32 | bf16 (autocast; weights and checkpoints stay fp32): runner.train.precision
        self.precision, self.precision_used, self.precision_reason = precision, "fp32", ""
        self.seed, self.progress, self.enabled = seed, progress, enabled
        # Logit distillation (runner.train.kd_loss); None: plain SFT. The Train stage resolves the
        # teacher folder and the offline store into kd_teacher_dir / kd_logits_dir before fit.
        self.kd = KDConfig.from_config(kd)
        self.kd_teacher_dir: Path | None = None
        self.kd_logits_dir: Path | None = None

    def validate(self, where: str) -> None:  # noqa: ARG002 - the failing stage is reported by the pipeline
        check_choice(self.config_key, "method", self.method, ["full", "lora"])
        check_choice(self.config_key, "lr_schedule", self.lr_schedule, list(SCHEDULES))
        check_range(self.config_key, "max_wall_s", self.max_wall_s, 0, lo_open=True)
        check_range(self.config_key, "min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_choice(self.config_key, "checkpoint_select", self.checkpoint_select, ["last", "valid_loss", "dev_gold"])
        check_range(self.config_key, "dev_rows", self.dev_rows, 1)
        check_range(self.config_key, "dev_max_new_tokens", self.dev_max_new_tokens, 1)
        prec.check_precision(self.config_key, self.precision, self.bf16_autocast, self.device)
        if self.checkpoint_select != "last" and not self.eval_every:
            raise ConfigError(f"{self.config_key}.checkpoint_select={self.checkpoint_select} needs "
                              f"{self.config_key}.eval_every (checkpoints are compared at each validation)")
        check_range(self.config_key, "learning_rate", self.learning_rate, 0, lo_open=True)
        for key in ("batch_size", "grad_accum", "max_seq_length"):
            check_range(self.config_key, key, getattr(self, key), 1)
        if self.max_steps is None:
            check_range(self.config_key, "epochs", self.epochs, 0, lo_open=True)
        else:
            check_range(self.config_key, "max_steps", self.max_steps, 1)
        for key in ("eval_every", "checkpoint_every", "early_stopping_patience", "num_threads"):
            value = getattr(self, {"early_stopping_patience": "patience"}.get(key, key))
            check_range(self.config_key, key, value, 1)
        if self.patience is not None and not self.eval_every:
            raise ConfigError(f"{self.config_key}.early_stopping_patience needs {self.config_key}.eval_every "
                              "(early stopping counts validations without improvement)")
        if self.method == "lora":
            for key in ("rank", "alpha", "dropout", "target_modules"):
                if key not in self.lora:
                    raise ConfigError(f"{self.config_key}.lora.{key} is missing (needed for method=lora)")
        if self.kd is not None:
            self.kd.validate(self.config_key)

    # ---------------------------------------------------------------- model
    def _load_model(self, base_dir: Path, seed: int, dist: Dist):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        hidden = getattr(AutoConfig.from_pretrained(base_dir), "hidden_size", None)
        self.precision_used, self.precision_reason = prec.resolve_precision(
            self.precision, self.bf16_autocast, dist.device, hidden)
        attn = prec.attn_implementation(self.precision_used, dist.device)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32,  # fp32 master weights
                                                     **({"attn_implementation": attn} if attn else {}))
        torch.manual_seed(seed)  # LoRA init and dropout
        if self.method == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=self.lora["rank"], lora_alpha=self.lora["alpha"], lora_dropout=self.lora["dropout"],
                target_modules=list(self.lora["target_modules"]), task_type="CAUSAL_LM"))
        model.to(dist.device)
        return model, tokenizer, pad_id

    # ----------------------------------------------------------------- loss
    def _token_loss_sum(self, model, examples: list[Example], pad_id: int, device: str, kd=None,
                        on_policy: bool = False):
        """Sum of next-token cross-entropy over the assistant tokens of these examples; with `kd`
        (a KDRuntime) the (1 - alpha) CE + alpha KD mix over the same tokens (on-policy: KD alone)."""
        import torch.nn.functional as F

        ids, mask, labels = (t.to(device) for t in collate(examples, pad_id))
        amp = prec.autocast(self.precision_used, device)
        # Logits only from the first position that predicts an answer token: the LM head over the
        # prompt (most of each row) would be computed and then ignored.
        start = min(e.prompt_len for e in examples) - 1
        with amp:
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=ids.size(1) - start).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                               labels[:, start + 1:].reshape(-1), ignore_index=-100, reduction="sum")
        if kd is not None:
            loss = kd.mix(loss, examples, ids, mask, labels[:, start + 1:], start, logits[:, :-1], on_policy)
        return loss, int(mask.sum())

    def _valid_loss(self, model, valid: list[Example], pad_id: int, dist: Dist) -> float | None:
        import torch

        if not valid:
            return None
        model.eval()
        total, count = 0.0, 0
        mine = shard(sorted(range(len(valid)), key=lambda i: len(valid[i].input_ids)), dist)
        with torch.no_grad():
            for b in range(0, len(mine), self.batch_size):
                exs = [valid[i] for i in mine[b:b + self.batch_size]]
                loss, _ = self._token_loss_sum(model, exs, pad_id, dist.device)
                total += float(loss)
                count += sum(e.n_target for e in exs)
        model.train()
        total, count = all_sum([total, float(count)], dist)
        return total / count

    # ------------------------------------------------------------------ fit
    def fit(self, train_rows: list[dict], valid_rows: list[dict], base_dir: Path, paths: TrainPaths,
            seed: int, dev=None) -> TrainResult:
        """`dev`: a dev_select.DevSet, scored at each validation (checkpoint_select=dev_gold)."""
        import copy

        import torch

        t_start = time.perf_counter()
        seed = self.seed if self.seed is not None else seed
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        dist = init_distributed(self.device)
        model, tokenizer, pad_id = self._load_model(base_dir, seed, dist)
        kd = None
        if self.kd is not None:
            from runner.train.kd_runtime import KDRuntime

            kd = KDRuntime.open(self, base_dir, dist.device)  # tokenizer check: before any step
        sampler = None
        if self.kd is not None and self.kd.on_policy > 0:
            from runner.train.on_policy import OnPolicySampler

            sampler = OnPolicySampler(self.kd.on_policy, self.kd.sample_temperature,
                                      self.kd.sample_max_new_tokens, tokenizer, model, self.kd.sample_constrain)
        train, dropped = encode_rows(tokenizer, train_rows, self.max_seq_length)
        valid, dropped_valid = encode_rows(tokenizer, valid_rows[: self.max_valid_rows or None], self.max_seq_length)
        if sampler is not None:
            sampler.check_rows(train)  # the constraint's grammar builds from every prompt: before any step
        global_bs = self.batch_size * dist.world
        if len(train) < global_bs:
            raise ValueError(f"only {len(train)} training rows fit max_seq_length={self.max_seq_length}; "
                             f"need at least batch_size x processes = {global_bs}")
        # Every rank builds the same global batches; batches too small to give each rank a row are dropped.
        batch_cache: dict[int, list[list[int]]] = {}

        def epoch_batches(epoch: int) -> list[list[int]]:
            if epoch not in batch_cache:
                batch_cache.clear()
                batch_cache[epoch] = [b for b in length_sorted_batches(train, global_bs, seed, epoch)
                                      if len(b) >= dist.world]
            return batch_cache[epoch]
        steps_per_epoch = math.ceil(len(epoch_batches(0)) / self.grad_accum)
        total_steps = self.max_steps or max(1, round(self.epochs * steps_per_epoch))

        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.learning_rate, weight_decay=self.weight_decay)
        plan = Plan(total_steps, self.warmup_steps, self.lr_schedule, self.min_lr_ratio)
        scheduler = lambda_scheduler(optimizer, plan)
        probe_steps = min(20, max(1, total_steps // 10))  # steps timed before fitting a wall budget
        core = model  # the unwrapped module: what we save and evaluate
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[dist.local_rank] if dist.device.startswith("cuda") else None)

        state = {"step": 0, "best_valid": None, "bad_evals": 0, "log": [], "train_s": 0.0, "tokens": 0,
                 "best_score": None, "best_step": None, "dev_gold": None, "eval_s": 0.0}
        best_weights = None  # the selected checkpoint's weights (small students: a copy in memory)
        resumed_from = None
        last = ckpt.latest_checkpoint(paths.resume_dirs) if self.resume else None
        if last is not None:
            saved = ckpt.load_checkpoint(last)
            core.load_state_dict(saved["weights"], strict=False)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            state = saved["state"]
            if isinstance(state.get("best_score"), (int, float)):  # a checkpoint from before tie-breaking
                state["best_score"] = [state["best_score"]]
            resumed_from = state["step"]

        def log_eval(step: int) -> bool:
            """Validate, record, keep the selected checkpoint, and say whether early stopping fires."""
            nonlocal best_weights
            t_eval = time.perf_counter()
            v = self._valid_loss(core, valid, pad_id, dist)
            g = dev.gold_rate(core, tokenizer) if dev is not None and len(dev) else None
            state["eval_s"] += time.perf_counter() - t_eval
            state["log"].append({"step": step, "loss": None, "valid_loss": v, "lr": None, "tokens": None,
                                 "elapsed_s": state["train_s"], "dev_gold": g})
            if dist.is_main:  # in run.log too: a long run without a terminal still shows its curve
                rate = state["tokens"] / state["train_s"] if state["train_s"] else 0.0
                _log.info("train: step %d/%d, valid loss %s, dev gold %s, %.0f tokens/s, %.0f s", step,
                          plan.total_steps, "null" if v is None else f"{v:.4f}", "null" if g is None else f"{g:.3f}",
                          rate, time.perf_counter() - t_start)
                if sampler is not None and state["train_s"]:
                    _log.info("train: on-policy %d of %d steps, sampling %.0f s (%.0f%% of train_s), teacher %.0f s "
                              "(%.0f%%), %d answer tokens sampled", sampler.steps, step, sampler.sample_s,
                              100 * sampler.sample_s / state["train_s"], kd.teacher_s,
                              100 * kd.teacher_s / state["train_s"], sampler.tokens)
            # Dev-gold ties (e.g. all 0 before the rise) go to the lower validation loss, not the
            # earliest step: a 1,500-step run once kept its step-500 weights that way.
            score = {"valid_loss": None if v is None else [-v],
                     "dev_gold": None if g is None else [g, -v if v is not None else float("-inf")]
                     }.get(self.checkpoint_select)
            if score is not None and step > 0 and (state["best_score"] is None or score > state["best_score"]):
                state["best_score"], state["best_step"], state["dev_gold"] = score, step, g
                best_weights = copy.deepcopy(core.state_dict())
            if v is None:
                return False
            if state["best_valid"] is None or v < state["best_valid"] - self.min_delta:
                state["best_valid"], state["bad_evals"] = v, 0
            else:
                state["bad_evals"] += 1
            return self.patience is not None and state["bad_evals"] >= self.patience

        # bf16 on a CPU, one process: bf16 weights inside each step, fp32 master (precision.Bf16Weights)
        bf16_weights = self.precision_used == "bf16" and dist.device == "cpu" and not dist.enabled
        model.train()
        bar = TrainProgress(total_steps, enabled=self.progress and dist.is_main)
        with bar:
            if state["step"] == 0 and self.eval_every:
                log_eval(0)
            stop = False
            out_of_time = False
            while state["step"] < total_steps and not stop and not out_of_time:
                step = state["step"]
                epoch, within = divmod(step, steps_per_epoch)
                batches = epoch_batches(epoch)[within * self.grad_accum:(within + 1) * self.grad_accum]
                t0 = time.perf_counter()
                micro = [[train[i] for i in shard(batch, dist)] for batch in batches]
                on_policy = sampler is not None and sampler.on_policy(seed, step)
                if on_policy:  # the student answers the step's prompts (fp32 weights, before the bf16 cast)
                    micro = sampler.sample(core, micro, pad_id, seed, step)
                    n_target = int(all_sum([float(sum(e.n_target for exs in micro for e in exs))], dist)[0])
                else:
                    n_target = sum(train[i].n_target for b in batches for i in b)  # the step's global token count
                loss_sum, tokens = 0.0, 0
                with prec.Bf16Weights(core, enabled=bf16_weights) as weights:
                    for k, exs in enumerate(micro):
                        sync = model.no_sync if dist.enabled and k < len(batches) - 1 else nullcontext
                        with sync():
                            loss, ntok = self._token_loss_sum(model, exs, pad_id, dist.device, kd, on_policy)
                            (loss * dist.world / n_target).backward()  # DDP averages over ranks; undo that
                        weights.collect()
                        loss_sum += float(loss.detach())
                        tokens += ntok
                if self.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable, self.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum, tokens = all_sum([loss_sum, float(tokens)], dist)
                state["train_s"] += time.perf_counter() - t0
                state["tokens"] += int(tokens)
                state["step"] = step = step + 1
                # Fit the schedule to the wall budget after the first timed steps, then again at each
                # validation of the first half (the first steps run slow; while the cosine is still
                # near its peak a new horizon bends it little). Step time: since the previous fit.
                refit = step == probe_steps or (self.eval_every and step % self.eval_every == 0
                                                and step < plan.total_steps // 2)
                # max_steps set: the schedule is fixed and max_wall_s is only a cap (reproducible)
                if self.max_wall_s and not self.max_steps and refit and step >= probe_steps:
                    mark_step, mark_s = state.get("fit_mark", (0, 0.0))
                    step_s = (state["train_s"] - mark_s) / max(1, step - mark_step)
                    state["fit_mark"] = (step, state["train_s"])
                    # validation time per training step: one validation's time / eval_every
                    eval_each = state["eval_s"] / max(1, sum(r["loss"] is None for r in state["log"]))
                    total_steps = plan.fit_wall(step, step_s, time.perf_counter() - t_start, self.max_wall_s,
                                                eval_each / self.eval_every if self.eval_every else 0.0)
                    bar.set_total(total_steps)
                step_loss = loss_sum / n_target
                state["log"].append({"step": step, "loss": step_loss, "valid_loss": None,
                                     "lr": scheduler.get_last_lr()[0], "tokens": int(tokens),
                                     "elapsed_s": state["train_s"],
                                     # on-policy steps log the KD term alone (their loss is no CE)
                                     "on_policy": on_policy if sampler is not None else None})
                bar.update(step, step_loss, state["tokens"] / state["train_s"])
                # the wall budget is spent: this step is the last one, and it is validated
                out_of_time = bool(self.max_wall_s) and time.perf_counter() - t_start > self.max_wall_s
                if self.eval_every and (step % self.eval_every == 0 or step == total_steps or out_of_time):
                    stop = log_eval(step)
                    bar.note_valid(state["log"][-1]["valid_loss"])
                if dist.is_main and self.checkpoint_every and (step % self.checkpoint_every == 0 or stop):
                    ckpt.save_checkpoint(paths.checkpoints, step, {
                        "weights": ckpt.trainable_state(core), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "state": state}, self.keep_checkpoints)
        if self.checkpoint_select != "last" and best_weights is not None:
            core.load_state_dict(best_weights)  # the selected checkpoint is what gets saved
        if dist.is_main:
            self._save(core, tokenizer, paths)
        barrier(dist)
        losses = [r["loss"] for r in state["log"] if r["loss"] is not None]
        # What ended training. Anything on the wall clock depends on the machine's speed at the time:
        # the same command and seed can then give other numbers.
        # (no max_steps: the clock set the horizon, whether the fitted schedule ran out or the budget did)
        if self.max_wall_s and not self.max_steps:
            stopped_by = "wall_budget"
        elif out_of_time and state["step"] < total_steps:
            stopped_by = "wall_cap"
        elif stop:
            stopped_by = "patience"
        else:
            stopped_by = "steps"
        if stopped_by.startswith("wall"):
            _log.warning("training stopped by the wall clock (trainer.max_wall_s=%s, %s) at step %d: the step count "
                        "depends on this machine's speed, so this run is not reproducible; set trainer.max_steps",
                        self.max_wall_s, stopped_by, state["step"])
        return TrainResult(
            log=state["log"], steps=state["step"], final_loss=losses[-1] if losses else None,
            best_valid_loss=state["best_valid"], wall_s=time.perf_counter() - t_start,
            train_s=state["train_s"], tokens=state["tokens"],
            params_total=sum(p.numel() for p in core.parameters()),
            params_trainable=sum(p.numel() for p in trainable),
            dropped_train=dropped, dropped_valid=dropped_valid, resumed_from_step=resumed_from,
            stopped_early=state["step"] < total_steps, stopped_by=stopped_by, world_size=dist.world, rank=dist.rank,
            merged=self.method == "lora",
            kd={**kd.stats(), **(sampler.stats(state["train_s"]) if sampler else {}),
                "kd_teacher_share": kd.teacher_s / state["train_s"] if state["train_s"] else None}
            if kd is not None else None,
            selected=self.checkpoint_select if best_weights is not None else "last",
            best_step=state["best_step"] if best_weights is not None else state["step"],
            dev_gold=state["dev_gold"], dev_rows=len(dev) if dev is not None else None,
            precision=self.precision_used)

    def _save(self, core, tokenizer, paths: TrainPaths) -> None:
        """Full: the model. LoRA: the adapter (student_adapter/) and the merged model (student_model/)."""
        if self.method == "lora":
            core.save_pretrained(paths.adapter)
            tokenizer.save_pretrained(paths.adapter)
            core = core.merge_and_unload()
        core.save_pretrained(paths.model)
        tokenizer.save_pretrained(paths.model)
