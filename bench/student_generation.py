"""Batched vs one-at-a-time greedy generation of a student, same model, same prompts.

Prints rows/s and actually generated tokens/s for:
  * `hf generate x1`   transformers `model.generate`, one prompt at a time (the reference baseline)
  * `hf generate bN`   transformers `model.generate` on left-padded batches of N (input order)
  * `ours x1`          runner.lm.generate, one prompt at a time
  * `ours bN`          runner.lm.generate, length-sorted batches of N, finished rows dropped
  * `ours bN shared`   the same, plus prefix sharing: rows of a batch on the same table encode
                       their common schema prefix once
  * `ours bN shared+parallel`  the same, plus one batch per CPU thread at once, each on one
                       torch thread (the default: what the student eval stages run on a CPU)
and whether every greedy output equals the one-at-a-time output (fp32), listing rows that differ.

Prompts (--prompts): `wikisql` (default): the held-out eval split the pipeline would draw
(n_eval=--rows, seed, disjoint whole tables, ~3 questions per table) rendered with the pipeline's
prompt template; needs $RUNNER_DATA_DIR. `synthetic`: random words, no two prompts alike (no
shared prefix beyond the chat header), lengths +-25% around --prompt-tokens.

    OMP_WAIT_POLICY=PASSIVE RUNNER_DATA_DIR=../shared/data python bench/student_generation.py   # 256 rows
    OMP_WAIT_POLICY=PASSIVE python bench/student_generation.py --rows 48 --batch-sizes 8 16   # quick check
    OMP_WAIT_POLICY=PASSIVE python bench/student_generation.py --model outputs/.../artifacts/student_model
    OMP_WAIT_POLICY=PASSIVE python bench/student_generation.py --prompts synthetic --bf16   # + bf16 batches

Without --model it builds the default scratch student (conf/student/scratch.yaml, size small: 6.2M
params; tokenizer trained on 1,000 training prompts + gold SQL) for wikisql prompts, or a 4.65M
Llama (tests/lm/tiny_lm.py) for synthetic ones, in a temp folder. Random weights are drawn
with std 0.3 (tiny_lm.py says why) so greedy outputs vary from row to row; a default-init model
repeats one token, which would make the agreement check vacuous.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.lm.generate import (  # noqa: E402
    encode_chats,
    generate_torch,
    load_torch_model,
    stop_token_ids,
)

WORDS = ("player team position year score country nationality school college round pick "
         "games points goals rank city venue date opponent result attendance record").split()


def make_prompts(tokenizer, rows: int, mean_tokens: int, seed: int) -> list[list[dict[str, str]]]:
    """Chat prompts whose token lengths spread +-25% around mean_tokens (like real schemas do)."""
    rng = random.Random(seed)
    convs = []
    for _ in range(rows):
        target = int(mean_tokens * rng.uniform(0.75, 1.25))
        words = []
        while True:
            words.extend(rng.choice(WORDS) for _ in range(8))
            conv = [{"role": "system", "content": "Return only the SQL query."},
                    {"role": "user", "content": " ".join(words)}]
            if len(encode_chats(tokenizer, [conv])[0]) >= target:
                break
        convs.append(conv)
    return convs


def wikisql_prompts(rows: int, seed: int) -> tuple[list[list[dict[str, str]]], list[dict]]:
    """(eval conversations, training chats with gold SQL) as the pipeline's load + prompt stages make them."""
    import json

    from runner.distill.load import WikiSqlDataset
    from runner.text2sql.data import find_data_root, load_questions, load_tables
    from runner.text2sql.database import table_schema
    from runner.text2sql.prompt import PromptTemplate, chat_messages
    from runner.text2sql.sql import render_sql

    ds = WikiSqlDataset(n_train=1000, n_eval=rows, seed=seed)
    root = find_data_root(None)
    sampled = ds.sample(load_questions(root))
    tables = load_tables(root, set(sampled["table_id"].unique().to_list()))
    template, evals, train = PromptTemplate(), [], []
    for r in sampled.iter_rows(named=True):
        table = tables[r["table_id"]]
        conv = chat_messages(*template.render(table, r["question"], ds.table_alias))
        if r["split"] == "eval":
            evals.append(conv)
        else:
            _, cols, types = table_schema(table)
            gold = render_sql(ds.table_alias, cols, types, r["sel"], r["agg"], json.loads(r["conds"]))
            train.append({"messages": [*conv, {"role": "assistant", "content": gold}]})
    return evals, train


def build_default_model(folder: Path, prompts: str, train: list[dict], seed: int) -> Path:
    import torch
    import yaml

    if prompts == "synthetic":
        from tests.lm.tiny_lm import build_tiny_lm

        return build_tiny_lm(folder, hidden=256, layers=6, heads=8, kv_heads=4, intermediate=688, vocab=4096,
                             seed=seed)
    from transformers import AutoModelForCausalLM

    from runner.lm.scratch import ScratchStudent

    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "conf/student/scratch.yaml").read_text())
    ScratchStudent(size="small", sizes=cfg["sizes"]).build(train, folder, seed)
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    return folder


def hf_generate(model, tokenizer, convs, batch_size: int, new_tokens: int) -> list[list[int]]:
    import torch

    out = []
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs]
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                                 eos_token_id=stop_token_ids(tokenizer, model),
                                 pad_token_id=tokenizer.pad_token_id)
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            out.append([t for t in row if t != tokenizer.pad_token_id])
    return out


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def diff_report(name: str, got: list[list[int]], ref: list[list[int]], stops: set[int]) -> str:
    """Rows whose greedy tokens differ from the reference, with the first differing position."""
    bad = []
    for i, (a, b) in enumerate(zip(got, ref)):
        a = [t for t in a if t not in stops]
        b = [t for t in b if t not in stops]
        if a != b:
            pos = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            bad.append(f"row {i} first differs at generated token {pos}")
    if not bad:
        return f"{name}: all {len(ref)} rows identical to the reference"
    return f"{name}: {len(bad)}/{len(ref)} rows differ: " + "; ".join(bad[:5])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="HF folder; default: a random-weight scratch student (see above)")
    ap.add_argument("--prompts", choices=("wikisql", "synthetic"), default="wikisql")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=150, help="synthetic prompts: mean length")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--hf-batch", type=int, default=32, help="batch size for the hf generate reference")
    ap.add_argument("--share-min", type=int, default=32, help="share_prefix_min_tokens of the `shared` rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--x1-one-thread", action="store_true",
                    help="also time one-at-a-time decoding with 1 torch thread (faster than 2 for batch 1 here)")
    ap.add_argument("--bf16", action="store_true",
                    help="also time bfloat16 batches (fast on CPUs with avx512_bf16/AMX; outputs differ from fp32)")
    args = ap.parse_args()

    import torch

    from runner.lm.batch_plan import plan_batches, prefill_plan

    tmp = tempfile.TemporaryDirectory()
    convs, train = wikisql_prompts(args.rows, args.seed) if args.prompts == "wikisql" else (None, [])
    if args.model is None:
        args.model = str(build_default_model(Path(tmp.name) / "student", args.prompts, train, args.seed))
    model, tok, load_s = load_torch_model(args.model, device="cpu", dtype="float32")
    threads = torch.get_num_threads()
    stops = set(stop_token_ids(tok, model))
    n_params = sum(p.numel() for p in model.parameters())
    if convs is None:
        convs = make_prompts(tok, args.rows, args.prompt_tokens, args.seed)
    prompts = encode_chats(tok, convs)
    lens = [len(p) for p in prompts]
    print(f"model {args.model}: {n_params / 1e6:.2f}M params, load {load_s:.2f} s; torch threads "
          f"{torch.get_num_threads()}; {len(convs)} {args.prompts} prompts, mean {sum(lens) / len(lens):.0f} "
          f"tokens (min {min(lens)}, max {max(lens)}); max {args.new_tokens} new tokens, greedy, fp32")
    for bs in args.batch_sizes:  # prompt tokens the shared mode encodes, from the same plans
        plans = [prefill_plan([prompts[i] for i in b], args.share_min)
                 for b in plan_batches(prompts, bs, min_shared=args.share_min)]
        encoded = sum(len(seg) for plan in plans for step in plan for seg in step.segments)
        padded = sum(len(step.segments) * max(map(len, step.segments)) for plan in plans for step in plan)
        print(f"  batch {bs} shared: encodes {encoded} of {sum(lens)} prompt tokens ({encoded / sum(lens):.0%}), "
              f"{padded} with padding ({padded / sum(lens):.0%})")
    generate_torch(model, tok, convs[:8], max_new_tokens=4, batch_size=8)  # warm-up (allocator, kernels)

    rows = []
    ref_hf, s = timed(lambda: hf_generate(model, tok, convs, 1, args.new_tokens))
    rows.append(("hf generate x1", s, sum(map(len, ref_hf))))
    seq, s = timed(lambda: generate_torch(model, tok, convs, max_new_tokens=args.new_tokens, batch_size=1,
                                          workers=1))
    ref = [g.token_ids for g in seq]
    rows.append(("ours x1", s, sum(g.tokens_out for g in seq)))
    checks = [diff_report("ours x1 vs hf generate x1", ref, ref_hf, stops)]
    if args.x1_one_thread:  # the one-at-a-time baseline at its own best thread count, for reference
        torch.set_num_threads(1)
        seq1, s = timed(lambda: generate_torch(model, tok, convs, max_new_tokens=args.new_tokens, batch_size=1,
                                               workers=1))
        torch.set_num_threads(threads)
        rows.append(("ours x1, 1 thread", s, sum(g.tokens_out for g in seq1)))
        checks.append(diff_report("ours x1, 1 thread", [g.token_ids for g in seq1], ref, stops))
    hf_b, s = timed(lambda: hf_generate(model, tok, convs, args.hf_batch, args.new_tokens))
    rows.append((f"hf generate b{args.hf_batch}", s, sum(map(len, hf_b))))
    checks.append(diff_report(f"hf generate b{args.hf_batch}", hf_b, ref, stops))
    for bs in args.batch_sizes:
        for shared, workers in ((0, 1), (args.share_min, 1), (args.share_min, "auto")):
            name = f"ours b{bs}" + (" shared" if shared else "") + ("+parallel" if workers != 1 else "")
            out, s = timed(lambda: generate_torch(model, tok, convs, max_new_tokens=args.new_tokens, batch_size=bs,
                                                  min_shared=shared, workers=workers))
            rows.append((name, s, sum(g.tokens_out for g in out)))
            checks.append(diff_report(name, [g.token_ids for g in out], ref, stops))

    if args.bf16:
        m16, _, _ = load_torch_model(args.model, device="cpu", dtype="bfloat16")
        generate_torch(m16, tok, convs[:8], max_new_tokens=4, batch_size=8)  # warm-up
        n_seq = min(32, len(convs))  # bf16 one at a time on a subset: padding effects vs dtype effects
        seq16 = generate_torch(m16, tok, convs[:n_seq], max_new_tokens=args.new_tokens, batch_size=1)
        for bs in args.batch_sizes:
            out, s = timed(lambda: generate_torch(m16, tok, convs, max_new_tokens=args.new_tokens, batch_size=bs,
                                                  min_shared=args.share_min))
            rows.append((f"ours b{bs} shared+parallel bf16", s, sum(g.tokens_out for g in out)))
            checks.append(diff_report(f"ours b{bs} bf16 vs fp32 (dtype)", [g.token_ids for g in out], ref, stops))
            checks.append(diff_report(f"ours b{bs} bf16 vs bf16 x1, first {n_seq} rows (padding)",
                                      [g.token_ids for g in out[:n_seq]], [g.token_ids for g in seq16], stops))

    n = len(convs)
    base_hf, base_ours = n / rows[0][1], n / rows[1][1]
    print(f"\n{'mode':<32}{'wall s':>9}{'rows/s':>9}{'gen tok/s':>11}{'vs hf x1':>10}{'vs ours x1':>12}")
    for name, wall, toks in rows:
        rps = n / wall
        print(f"{name:<32}{wall:>9.2f}{rps:>9.2f}{toks / wall:>11.1f}{rps / base_hf:>9.2f}x{rps / base_ours:>11.2f}x")
    print("\ngreedy agreement with one-at-a-time fp32 `ours x1` unless named otherwise (stop tokens ignored):")
    for c in checks:
        print("  " + c)
    tmp.cleanup()


if __name__ == "__main__":
    main()
