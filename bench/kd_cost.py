"""What logit distillation costs: SFT vs KD online vs KD offline, side by side, in one run.

    python bench/kd_cost.py                          # toy Text2SQL rows (self-contained), ~1-2 min
    python bench/kd_cost.py --run-dir outputs/wikisql_logit_kd/DATE/TIME   # a run's train.jsonl

A `small` teacher (6M params) and a `tiny` student sharing one tokenizer (random weights: the cost
does not depend on what the weights know). Each mode trains the same student for the same steps in
its own process, so the peak RSS of one mode cannot hide another's. Printed per mode:
tokens/s (non-padding input tokens / optimizer-step seconds, as train.tokens_per_s), train.kd_teacher_s
(teacher forward online, store lookup offline; inside the step time), peak RSS of the fit, and for
offline the one-off teacher_logits pass (seconds) and the store's bytes per token.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"tiny": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
                  "intermediate_size": 384, "vocab_size": 4096},
         "small": {"hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 8,
                   "intermediate_size": 768, "vocab_size": 4096}}


def rows_for(args) -> list[dict]:
    from runner.train.chat_data import read_chat_jsonl
    from tests.train.toy import toy_rows

    if args.run_dir:
        return read_chat_jsonl(Path(args.run_dir) / "artifacts" / "train.jsonl")[: args.rows]
    return toy_rows(args.rows, seed=0)


def prepare(args, work: Path) -> None:
    """Teacher (small, own BPE) and student (tiny, the teacher's tokenizer)."""
    from runner.lm.scratch import ScratchStudent
    from runner.student.kd_stages import build_with_tokenizer

    rows = rows_for(args)
    ScratchStudent("small", SIZES).build(rows, work / "teacher", seed=0)
    build_with_tokenizer(ScratchStudent("tiny", SIZES), work / "teacher", work / "student", seed=1)


def one_mode(args, work: Path, mode: str) -> dict:
    """Runs in its own process: one fit, its measurements as a dict."""
    import torch

    from runner.lm.perf import PeakMemory
    from runner.train.chat_data import encode_rows
    from runner.train.kd_loss import KDConfig
    from runner.train.result import TrainPaths
    from runner.train.teacher_logits import compute_store
    from runner.train.trainer_torch import TorchTrainer

    torch.set_num_threads(args.threads)
    rows = rows_for(args)
    kd = None if mode == "sft" else {"enabled": True, "teacher": str(work / "teacher"), "alpha": 0.5,
                                     "top_k": args.top_k, "mode": mode}
    trainer = TorchTrainer(max_steps=args.steps, batch_size=args.batch_size, max_seq_length=512, eval_every=None,
                           num_threads=args.threads, progress=False, warmup_steps=0, kd=kd)
    out: dict = {"mode": mode}
    if mode == "offline":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(work / "teacher")
        examples, _ = encode_rows(tok, rows, 512)
        t0 = time.perf_counter()
        meta = compute_store(examples, work / "teacher", KDConfig(**{k: v for k, v in kd.items()}),
                             work / "store", pad_id=tok.pad_token_id)
        out.update(store_s=round(time.perf_counter() - t0, 2), bytes_per_token=meta["bytes_per_token"],
                   store_bytes=meta["bytes"], store_positions=meta["positions"])
        trainer.kd_logits_dir = work / "store"
    trainer.kd_teacher_dir = work / "teacher"
    with PeakMemory("cpu") as mem:
        res = trainer.fit(rows, rows[:8], work / "student",
                          TrainPaths(model=work / f"out_{mode}", adapter=work / "a", checkpoints=work / "c"), seed=0)
    out.update(steps=res.steps, tokens=res.tokens, train_s=round(res.train_s, 2),
               tokens_per_s=round(res.tokens_per_s or 0), kd_teacher_s=(res.kd or {}).get("kd_teacher_s", 0.0),
               peak_rss_mb=round((mem.peak_rss_bytes or 0) / 2**20), final_loss=round(res.final_loss, 4))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", help="a run folder whose artifacts/train.jsonl to train on (default: toy rows)")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:  # child process
        print("RESULT " + json.dumps(one_mode(args, Path(args.work), args.mode)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(args, work)
        results = []
        for mode in ("sft", "online", "offline"):
            cmd = [sys.executable, __file__, "--mode", mode, "--work", str(work), *sys.argv[1:]]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.split("RESULT ", 1)[1]))
    sft = results[0]["tokens_per_s"]
    print(f"{'mode':8} {'tokens/s':>9} {'x SFT':>6} {'kd_teacher_s':>12} {'train_s':>8} {'peak RSS MB':>11} "
          f"{'store s':>8} {'B/token':>8}")
    for r in results:
        print(f"{r['mode']:8} {r['tokens_per_s']:>9} {r['tokens_per_s'] / sft:>6.2f} {r['kd_teacher_s']:>12} "
              f"{r['train_s']:>8} {r['peak_rss_mb']:>11} {r.get('store_s', '-'):>8} {r.get('bytes_per_token', '-'):>8}")
    off = results[2]
    print(f"offline store: {off['store_positions']} positions, {off['store_bytes']} bytes "
          f"(top_k={args.top_k}, int16 ids + float16 log-probs); steps={results[0]['steps']}, "
          f"batch_size={args.batch_size}, {args.threads} threads")


if __name__ == "__main__":
    main()
