"""Training tokens/s and achieved GFLOP/s per student size x precision, side by side in one run.

For each size (conf/student/scratch.yaml) it builds the scratch Llama in memory and times
optimizer steps (forward, backward, AdamW) through the trainer's own loss path
(TorchTrainer._token_loss_sum: logits only from the first answer position, runner.train.precision
for autocast and the attention path). The arms are interleaved: rep 1 of every arm, then rep 2,
..., and the median of the reps is printed, so a machine busy with something else slows every
arm alike. Before that it measures the machine's matmul peak, (4n x n) @ (n x n) for n in
128..1024, fp32 and bf16.

Arms (--arms):
  fp32        weights and matrix products in fp32, attention sdpa (transformers' default)
  bf16        what trainer.precision=bf16 runs on a CPU (one process): bf16 weights inside the step,
              fp32 master weights, optimizer and loss (precision.Bf16Weights), autocast, attention
              eager (matmul + softmax)
  bf16_autocast  autocast only (fp32 weights, fp32 residual stream), eager: what DDP runs
  bf16_sdpa   bf16 with sdpa attention: the profile finding (CPU flash-attention backward in bf16
              is slow)
  bf16_compile  bf16 plus torch.compile of the model (inductor; slow to compile on 2 cores)

Rows are synthetic token ids shaped like the WikiSQL training rows (measured on wikisql_1k:
220 tokens a row, 24 of them the answer, 1.7 % padding at batch 16): --seq tokens a row, the
last --answer tokens learned, all rows the same length (no padding).

FLOPs per optimizer step (written down; counted as computed, causal masking not discounted):
  6 * N_body * B * T                    body matmuls (N_body = params of the layers, no embeddings)
  + 6 * V * d * B * (answer + 1)        LM head over the kept positions only
  + 6 * L * B * T * T * d               attention scores and weighted sum (QK^T, AV): 2 * 2 * T * d
                                        a token a layer forward, x3 for forward + backward
  achieved GFLOP/s = FLOPs per step / step seconds / 1e9.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python bench/train_throughput.py            # ~3-4 min on 2 cores
    python bench/train_throughput.py --sizes small --arms fp32,bf16,bf16_sdpa --reps 5
    python bench/train_throughput.py --sizes tiny,small,medium,large --steps 4      # longer
    python bench/train_throughput.py --sizes small --threads 2,1 --no-peak          # thread layout
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting OpenMP threads slow 2-core runs ~10x
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import yaml  # noqa: E402

from runner.train import precision as prec  # noqa: E402
from runner.train.chat_data import Example  # noqa: E402
from runner.train.trainer_torch import TorchTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def matmul_peak(dtype, sizes=(128, 256, 512, 1024), seconds: float = 0.4) -> dict[int, float]:
    """GFLOP/s of (4n x n) @ (n x n) per n: the best of a few timed bursts."""
    out = {}
    for n in sizes:
        a, b = torch.randn(4 * n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b
        best = 0.0
        for _ in range(3):
            k, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 3:
                a @ b
                k += 1
            best = max(best, 2 * 4 * n * n * n * k / (time.perf_counter() - t0) / 1e9)
        out[n] = best
    return out


def build(arch: dict, arm: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = dict(arch)
    config = LlamaConfig(max_position_embeddings=1024, tie_word_embeddings=True, **arch)
    precision = "fp32" if arm == "fp32" else "bf16"
    attn = "sdpa" if arm in ("fp32", "bf16_sdpa") else (prec.attn_implementation(precision, "cpu") or "sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=torch.float32)
    if arm == "bf16_compile":
        model = torch.compile(model)
    trainer = TorchTrainer(precision=precision)
    trainer.precision_used = precision
    return model, trainer


def flops_per_step(arch: dict, batch: int, seq: int, answer: int) -> float:
    d, L, inter, V = arch["hidden_size"], arch["num_hidden_layers"], arch["intermediate_size"], arch["vocab_size"]
    kv = d * arch["num_key_value_heads"] // arch["num_attention_heads"]
    n_body = L * (2 * d * d + 2 * d * kv + 3 * d * inter)
    return (6 * n_body * batch * seq + 6 * V * d * batch * (answer + 1)
            + 6 * L * batch * seq * seq * d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="tiny,small,large", help="comma list of conf/student/scratch.yaml sizes")
    ap.add_argument("--arms", default="fp32,bf16", help="fp32,bf16,bf16_autocast,bf16_sdpa,bf16_compile")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=160, help="tokens a row")
    ap.add_argument("--answer", type=int, default=24, help="learned tokens at the end of each row")
    ap.add_argument("--steps", type=int, default=2, help="timed optimizer steps per rep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="2", help="torch threads; a comma list (2,1) times each as its own arm")
    ap.add_argument("--no-peak", action="store_true")
    args = ap.parse_args()
    threads = [int(t) for t in str(args.threads).split(",")]
    torch.set_num_threads(threads[0])
    sizes_conf = yaml.safe_load((ROOT / "conf/student/scratch.yaml").read_text())["sizes"]
    sizes, arms = args.sizes.split(","), args.arms.split(",")
    print(f"torch {torch.__version__}, threads {args.threads}, CPU bf16 units: {prec.cpu_bf16_units()}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}; batch {args.batch} x {args.seq} tokens "
          f"({args.answer} learned), {args.steps} steps x {args.reps} reps, medians")
    peak = {}
    if not args.no_peak:
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peak[name] = matmul_peak(dt)
            print(f"matmul peak {name}: " + ", ".join(f"n={n} {g:.0f}" for n, g in peak[name].items())
                  + " GFLOP/s")

    gen = torch.Generator().manual_seed(0)
    runs = {}
    for size in sizes:
        arch = sizes_conf[size]
        ids = torch.randint(0, arch["vocab_size"], (args.batch, args.seq), generator=gen).tolist()
        exs = [Example(row, args.seq - args.answer) for row in ids]
        for arm, nt in [(a, t) for t in threads for a in arms]:
            torch.set_num_threads(nt)
            model, trainer = build(arch, arm)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step(model=model, trainer=trainer, opt=opt, exs=exs, swap=arm not in ("fp32", "bf16_autocast")):
                with prec.Bf16Weights(model, enabled=swap):
                    loss, _ = trainer._token_loss_sum(model, exs, 0, "cpu")
                    (loss / (args.batch * args.answer)).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            for _ in range(2 if arm != "bf16_compile" else 3):  # warm-up (allocator; compile)
                step()
            runs[size, arm, nt] = {"step": step, "times": [], "threads": nt,
                                   "params": sum(p.numel() for p in model.parameters())}
    for _ in range(args.reps):  # interleaved: every arm once per rep
        for key, run in runs.items():
            torch.set_num_threads(run["threads"])
            t0 = time.perf_counter()
            for _ in range(args.steps):
                run["step"]()
            run["times"].append((time.perf_counter() - t0) / args.steps)

    tokens = args.batch * args.seq
    print(f"\n{'size':8} {'params':>7} {'arm':13} {'thr':>3} {'s/step':>7} {'tokens/s':>9} {'GFLOP/s':>8} {'% peak':>7} "
          f"{'vs fp32':>8}")
    for (size, arm, nt), run in runs.items():
        arch = sizes_conf[size]
        s = statistics.median(run["times"])
        gf = flops_per_step(arch, args.batch, args.seq, args.answer) / s / 1e9
        pk = max(peak.get("fp32" if arm == "fp32" else "bf16", {0: 0}).values()) or None
        base = runs.get((size, "fp32", threads[0]))  # against fp32 at the first thread count
        ratio = statistics.median(base["times"]) / s if base else None
        print(f"{size:8} {run['params'] / 1e6:6.1f}M {arm:13} {nt:3d} {s:7.3f} {tokens / s:9.0f} {gf:8.1f} "
              f"{(100 * gf / pk if pk else float('nan')):6.1f}% {(f'{ratio:.2f}x' if ratio else ''):>8}")


if __name__ == "__main__":
    main()
