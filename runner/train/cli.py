"""Train a student outside the pipeline, e.g. data-parallel on several GPUs or machines.

    # one process (same as the pipeline's `train` stage)
    python -m runner.train.cli --run-dir RUN_DIR [--config trainer.yaml] [--set key=value ...]
    # DDP: 2 processes on this machine (gloo on CPU, nccl on GPU); batch_size is per process
    torchrun --standalone --nproc_per_node=2 -m runner.train.cli --run-dir RUN_DIR --set batch_size=8
    # several machines: torchrun --nnodes=2 --node_rank=R --rdzv_endpoint=HOST:PORT ... (same arguments)

RUN_DIR is a pipeline run folder: it reads artifacts/train.jsonl, valid.jsonl and student_base/, and
writes artifacts/student_model/ (+ student_adapter/ for LoRA), train_checkpoints/, train_log.parquet
and train_metrics.json, exactly as the `train` stage would. `--train/--valid/--base/--out` override
the individual paths. Trainer options come from conf/trainer/torch.yaml, then --config, then --set.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spin-waiting threads starve 2-core hosts

from omegaconf import OmegaConf  # noqa: E402

DEFAULTS = Path(__file__).resolve().parents[2] / "conf" / "trainer" / "torch.yaml"


def trainer_config(config_file: str | None, overrides: list[str]) -> dict:
    cfg = OmegaConf.load(DEFAULTS)
    if config_file:
        cfg = OmegaConf.merge(cfg, OmegaConf.load(config_file))
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("_target_", None)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", help="pipeline run folder (uses its artifacts/)")
    ap.add_argument("--train"), ap.add_argument("--valid"), ap.add_argument("--base"), ap.add_argument("--out")
    ap.add_argument("--config", help="YAML/JSON file of trainer options (conf/trainer/torch.yaml keys)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="trainer option overrides")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    art = Path(args.run_dir) / "artifacts" if args.run_dir else None
    pick = lambda given, name: Path(given) if given else (art / name if art else None)  # noqa: E731
    train, valid, base, out = (pick(args.train, "train.jsonl"), pick(args.valid, "valid.jsonl"),
                               pick(args.base, "student_base"), pick(args.out, ""))
    if None in (train, valid, base, out):
        ap.error("give --run-dir RUN_DIR, or all of --train --valid --base --out")

    from runner.train.chat_data import read_chat_jsonl
    from runner.train.result import LOG_SCHEMA, TrainPaths
    from runner.train.trainer_torch import TorchTrainer

    trainer = TorchTrainer(**trainer_config(args.config, args.set))
    trainer.validate("train_cli")
    paths = TrainPaths(model=out / "student_model", adapter=out / "student_adapter",
                       checkpoints=out / "train_checkpoints", resume_dirs=[out / "train_checkpoints"])
    result = trainer.fit(read_chat_jsonl(train), read_chat_jsonl(valid), base, paths, args.seed)
    if result.rank == 0:
        import polars as pl

        pl.DataFrame(result.log, schema=LOG_SCHEMA).write_parquet(out / "train_log.parquet")
        summary = {k: getattr(result, k) for k in ("steps", "final_loss", "best_valid_loss", "wall_s", "train_s",
                                                   "tokens", "tokens_per_s", "world_size", "resumed_from_step",
                                                   "stopped_by", "precision", "kd")}
        (out / "train_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary))
    from runner.train.ddp import Dist, shutdown

    shutdown(Dist(rank=result.rank, world=result.world_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
