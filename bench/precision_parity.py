"""Does bf16 training follow fp32's loss curve? The same scratch student, same init, same batches,
trained for --steps in fp32 and in bf16 (`trainer.precision`), side by side in one run.

Prints, per window of --window steps, the mean training loss of each arm and their ratio
bf16 / fp32, the final validation loss of each, and tokens/s of each (same machine, same run).
The rows are a run's distilled training set (`artifacts/train.jsonl`, `valid.jsonl`), so the
curve is the one `wikisql_full` trains on.

    OMP_WAIT_POLICY=PASSIVE python bench/precision_parity.py --run outputs/wikisql_full/<date>/<time> \
        --size small --steps 1000

bf16 needs a CPU with bf16 matrix units (AMX or AVX-512 BF16) or a GPU; elsewhere validation
refuses it (runner/train/precision.py) and this script says so.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a run folder with artifacts/train.jsonl and valid.jsonl "
                                   "(default: the newest such run under outputs/)")
    ap.add_argument("--size", default="small", help="a size of conf/student/scratch.yaml")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--rows", type=int, default=4000, help="training rows used (the tokenizer is trained on them)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import yaml

    from runner.core.stage import ConfigError
    from runner.lm.scratch import ScratchStudent
    from runner.train.chat_data import read_chat_jsonl
    from runner.train.result import TrainPaths
    from runner.train.trainer_torch import TorchTrainer

    if args.run is None:
        found = sorted(Path("outputs").glob("**/artifacts/train.jsonl"), key=lambda p: p.stat().st_mtime)
        if not found:
            print("precision_parity: skipped, no run with artifacts/train.jsonl under outputs/ "
                  "(run `python -m runner +experiment=wikisql_full` first, or pass --run)")
            return 0
        args.run = str(found[-1].parent.parent)
    art = Path(args.run) / "artifacts"
    train = read_chat_jsonl(art / "train.jsonl")[: args.rows]
    valid = read_chat_jsonl(art / "valid.jsonl")[:200]
    sizes = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/student/scratch.yaml").read_text())["sizes"]
    tmp = Path(tempfile.mkdtemp(prefix="precision_parity_"))
    base = tmp / "base"
    ScratchStudent(args.size, sizes, pre_tokenizer="words").build(train, base, seed=0)

    results = {}
    for arm in ("fp32", "bf16"):
        tr = TorchTrainer(learning_rate=args.lr, warmup_steps=min(100, args.steps // 10), min_lr_ratio=0.05,
                          batch_size=16, max_steps=args.steps, max_seq_length=512, precision=arm,
                          num_threads=args.threads, progress=False, checkpoint_select="last",
                          eval_every=args.steps, max_valid_rows=200)
        try:
            tr.validate("trainer")
        except ConfigError as err:
            print(f"{arm}: refused here: {err}")
            return 2
        res = tr.fit(train, valid, base, TrainPaths(model=tmp / arm / "m", adapter=tmp / arm / "a",
                                                    checkpoints=tmp / arm / "c"), seed=0)
        losses = [r["loss"] for r in res.log if r.get("loss") is not None]
        valid_losses = [r["valid_loss"] for r in res.log if r.get("valid_loss") is not None]
        results[arm] = (losses, valid_losses[-1] if valid_losses else None, res.tokens / res.train_s)

    (f32, v32, t32), (b16, v16, t16) = results["fp32"], results["bf16"]
    print(f"size {args.size}, {len(train)} rows, batch 16, {args.steps} steps, lr {args.lr}, threads {args.threads}")
    print(f"{'steps':>11}  {'fp32 loss':>9}  {'bf16 loss':>9}  {'bf16/fp32':>9}")
    w = args.window
    for i in range(0, min(len(f32), len(b16)), w):
        a, b = f32[i:i + w], b16[i:i + w]
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        print(f"{i + 1:>5}-{i + len(a):<5}  {ma:9.4f}  {mb:9.4f}  {mb / ma:9.4f}")
    print(f"final validation loss: fp32 {v32:.4f}, bf16 {v16:.4f} (ratio {v16 / v32:.4f})")
    print(f"tokens/s: fp32 {t32:,.0f}, bf16 {t16:,.0f} ({t16 / t32:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
