"""`trainer=mlx`: fine-tuning through mlx-lm's Python API (Apple silicon; also runs on Linux CPU).

We call mlx-lm's own pieces (load, ChatDataset with prompt masking, linear_to_lora_layers,
tuner.train, save) in-process rather than a `mlx_lm.lora` subprocess, so errors surface here,
losses come back through a callback, and the output is the same Hugging Face folder layout as
the torch trainer. Outputs:
  student_model/    the trained model (LoRA/DoRA: adapters fused into the base weights)
  student_adapter/  LoRA/DoRA only: mlx-lm adapter format (adapters.safetensors + adapter_config.json),
                    loadable with `mlx_lm.load(student_base, adapter_path=student_adapter)`
Resume: mlx-lm checkpoints only the trainable weights (no optimizer state); a resumed run loads
the latest `NNNNNNN_adapters.safetensors` and runs the remaining iterations.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from runner.core.stage import ConfigError, check_choice, check_range
from runner.train.chat_data import encode_chat
from runner.train.result import TrainPaths, TrainResult

_CKPT = re.compile(r"^(\d+)_adapters\.safetensors$")


def _latest_mlx_checkpoint(dirs: list[Path]) -> tuple[int, Path] | None:
    for d in dirs:
        if d.is_dir():
            found = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT.match(p.name)))
            if found:
                return found[-1]
    return None


class MlxTrainer:
    backend = "mlx"
    # How the user names this trainer's keys: trainer.X, or trainer.torch.X under trainer=auto.
    config_key = "trainer"

    def __init__(self, method: str = "lora", iters: int = 600, batch_size: int = 4, learning_rate: float = 1e-5,
                 num_layers: int = 16, max_seq_length: int = 2048, steps_per_eval: int = 200,
                 steps_per_report: int = 1, val_batches: int = 25, save_every: int = 100,
                 grad_checkpoint: bool = False, grad_accumulation_steps: int = 1,
                 lora: dict[str, Any] | None = None, optimizer: str = "adam", resume: bool = True,
                 seed: int | None = None, enabled: bool = True, kd: dict[str, Any] | None = None,
                 torch: dict[str, Any] | None = None):
        self.method, self.iters, self.batch_size = method, iters, batch_size
        self.learning_rate, self.num_layers, self.max_seq_length = learning_rate, num_layers, max_seq_length
        self.steps_per_eval, self.steps_per_report, self.val_batches = steps_per_eval, steps_per_report, val_batches
        self.save_every, self.grad_checkpoint = save_every, grad_checkpoint
        self.grad_accumulation_steps = grad_accumulation_steps
        self.lora = dict(lora or {"rank": 8, "scale": 20.0, "dropout": 0.0})
        self.optimizer, self.resume, self.seed, self.enabled = optimizer, resume, seed, enabled
        # kd: logit distillation is torch-only; `torch` is what an experiment written for
        # trainer=auto (trainer.torch.kd) leaves here under trainer=mlx. Both only to fail clearly.
        self.kd = kd if (kd or {}).get("enabled") else (torch or {}).get("kd")

    def validate(self, where: str) -> None:  # noqa: ARG002 - the failing stage is reported by the pipeline
        if (self.kd or {}).get("enabled"):
            raise ConfigError(f"{self.config_key}.kd: logit distillation is implemented for trainer=torch only "
                              "(mlx-lm has no distillation loss); use trainer=torch, or drop the kd block")
        check_choice(self.config_key, "method", self.method, ["full", "lora", "dora"])
        check_choice(self.config_key, "optimizer", self.optimizer, ["adam", "adamw", "sgd", "adafactor"])
        check_range(self.config_key, "learning_rate", self.learning_rate, 0, lo_open=True)
        for key in ("iters", "batch_size", "max_seq_length", "steps_per_eval", "steps_per_report", "save_every",
                    "grad_accumulation_steps"):
            check_range(self.config_key, key, getattr(self, key), 1)
        if self.num_layers != -1:
            check_range(self.config_key, "num_layers", self.num_layers, 1)

    def fit(self, train_rows: list[dict], valid_rows: list[dict], base_dir: Path, paths: TrainPaths,
            seed: int) -> TrainResult:
        import mlx.core as mx
        import mlx.optimizers as optim
        import numpy as np
        from mlx.utils import tree_flatten, tree_unflatten
        from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
        from mlx_lm.tuner.trainer import TrainingArgs, iterate_batches, train
        from mlx_lm.tuner.utils import linear_to_lora_layers
        from mlx_lm.utils import load, save

        t_start = time.perf_counter()
        seed = self.seed if self.seed is not None else seed
        mx.random.seed(seed)
        np.random.seed(seed)  # mlx-lm shuffles batches with numpy
        model, tokenizer, config = load(str(base_dir), return_config=True)
        n_layers = len(model.layers) if self.num_layers == -1 else min(self.num_layers, len(model.layers))

        model.freeze()
        if self.method == "full":
            # All layers: unfreeze everything (embeddings too, which a scratch student needs).
            if n_layers == len(model.layers):
                model.unfreeze()
            else:
                for layer in model.layers[-n_layers:]:
                    layer.unfreeze()
        else:
            linear_to_lora_layers(model, n_layers, self.lora, use_dora=self.method == "dora")

        n_trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        # Same length rule as the torch trainer: skip rows that do not fit rather than cut their answer.
        hf_tok = tokenizer._tokenizer
        keep_train = _fitting(hf_tok, train_rows, self.max_seq_length)
        keep_valid = _fitting(hf_tok, valid_rows, self.max_seq_length)
        train_set = CacheDataset(ChatDataset(keep_train, tokenizer, mask_prompt=True))
        valid_set = CacheDataset(ChatDataset(keep_valid, tokenizer, mask_prompt=True))

        resumed = _latest_mlx_checkpoint(paths.resume_dirs) if self.resume else None
        if resumed is not None:
            model.load_weights(str(resumed[1]), strict=False)
        start = resumed[0] if resumed else 0

        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        adapter_config = {"fine_tune_type": self.method, "num_layers": n_layers,
                          "lora_parameters": self.lora if self.method != "full" else None}
        (paths.checkpoints / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        recorder = _Recorder(start)
        opt_cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD, "adafactor": optim.Adafactor}
        remaining = max(0, self.iters - start)
        # mlx-lm validates in full batches of trainer.batch_size and refuses a smaller set.
        validate = len(valid_set) >= self.batch_size
        no_valid = None if validate else (
            f"not measured: {len(valid_set)} valid.jsonl rows fit max_seq_length, fewer than "
            f"trainer.batch_size={self.batch_size} (mlx-lm validates in full batches of that size)")
        if remaining:
            args = TrainingArgs(batch_size=self.batch_size, iters=remaining, val_batches=self.val_batches,
                                steps_per_report=self.steps_per_report, steps_per_eval=self.steps_per_eval,
                                steps_per_save=self.save_every, max_seq_length=self.max_seq_length,
                                adapter_file=str(paths.checkpoints / "adapters.safetensors"),
                                grad_checkpoint=self.grad_checkpoint,
                                grad_accumulation_steps=self.grad_accumulation_steps)
            train(model=model, optimizer=opt_cls[self.optimizer](learning_rate=self.learning_rate), args=args,
                  train_dataset=train_set, val_dataset=valid_set if validate else None,
                  training_callback=recorder, iterate_batches=recorder.counting(iterate_batches))

        if self.method == "full":
            save(paths.model, str(base_dir), model, tokenizer, config, donate_model=False)
        else:
            paths.adapter.mkdir(parents=True, exist_ok=True)
            mx.save_safetensors(str(paths.adapter / "adapters.safetensors"),
                                dict(tree_flatten(model.trainable_parameters())))
            shutil.copy(paths.checkpoints / "adapter_config.json", paths.adapter / "adapter_config.json")
            fused = [(n, m.fuse()) for n, m in model.named_modules() if hasattr(m, "fuse")]
            model.update_modules(tree_unflatten(fused))
            save(paths.model, str(base_dir), model, tokenizer, config, donate_model=False)

        n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
        losses = [r["loss"] for r in recorder.log if r["loss"] is not None]
        valids = [r["valid_loss"] for r in recorder.log if r["valid_loss"] is not None]
        return TrainResult(
            log=recorder.log, steps=start + recorder.last_iter, final_loss=losses[-1] if losses else None,
            best_valid_loss=min(valids) if valids else None, wall_s=time.perf_counter() - t_start,
            train_s=recorder.train_s, tokens=recorder.input_tokens, params_total=n_params,
            params_trainable=n_trainable,
            dropped_train=len(train_rows) - len(keep_train), dropped_valid=len(valid_rows) - len(keep_valid),
            resumed_from_step=start if resumed else None, merged=self.method != "full",
            valid_loss_reason=no_valid)


def _fitting(hf_tokenizer, rows: list[dict], max_seq_length: int) -> list[dict]:
    out = []
    for row in rows:
        ex = encode_chat(hf_tokenizer, row["messages"])
        if len(ex.input_ids) <= max_seq_length and ex.n_target > 0:
            out.append(row)
    return out


class _Recorder:
    """mlx-lm TrainingCallback collecting the loss log (steps offset by a resumed start).

    mlx-lm reports tokens/s over the *loss* tokens; we also count every non-padding input token
    of the training batches, the torch trainer's definition of train.tokens.
    """

    def __init__(self, start: int):
        self.start, self.log, self.tokens, self.train_s, self.last_iter = start, [], 0, 0.0, 0
        self.input_tokens, self._input_reported = 0, 0

    def counting(self, iterate_batches):
        def wrapped(*args, **kwargs):
            for batch, lengths in iterate_batches(*args, **kwargs):
                if kwargs.get("loop"):  # training batches (validation iterates without loop)
                    self.input_tokens += int(lengths[:, 1].sum().item())
                yield batch, lengths
        return wrapped

    def on_train_loss_report(self, info: dict) -> None:
        it = self.start + info["iteration"]
        window_tokens = info["trained_tokens"] - self.tokens  # loss tokens, as mlx-lm counts them
        self.train_s += window_tokens / info["tokens_per_second"] if info["tokens_per_second"] else 0.0
        self.tokens = info["trained_tokens"]
        self.last_iter = info["iteration"]
        self.log.append({"step": it, "loss": info["train_loss"], "valid_loss": None,
                         "lr": info["learning_rate"], "tokens": self.input_tokens - self._input_reported,
                         "elapsed_s": self.train_s})
        self._input_reported = self.input_tokens

    def on_val_loss_report(self, info: dict) -> None:
        self.log.append({"step": self.start + info["iteration"], "loss": None, "valid_loss": info["val_loss"],
                         "lr": None, "tokens": None, "elapsed_s": self.train_s})
