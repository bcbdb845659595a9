"""Fast batched greedy generation for local causal LMs (torch/transformers and mlx-lm).

The torch path is a hand-written greedy loop rather than `model.generate`: for small students
the per-step Python overhead of `generate` (logits processors, stopping criteria, cache
bookkeeping) dominates the arithmetic. What makes it fast:
  * prompts are sorted by length so each batch holds similar lengths (little padding);
  * left padding with explicit position ids, so a padded row computes what it would alone;
  * prefill computes logits for the last position only (`logits_to_keep=1`);
  * rows that emit a stop token leave the batch at once (their KV cache rows are dropped),
    so the batch shrinks instead of decoding padding to `max_new_tokens`;
  * optionally (`min_shared`), a prompt prefix shared by rows of a batch is encoded once
    (runner.lm.batch_plan groups rows by shared token prefix).
Token counts are what the model actually produced for the row (the stop token included,
nothing after it). Row latency is the time from its batch's start to the step it finished.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from runner.lm.batch_plan import plan_batches
from runner.lm.greedy import greedy_batches, resolve_workers

# End-of-turn markers of common chat templates; used only when present in the vocabulary.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")


@dataclass
class Generation:
    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    token_ids: list[int]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    # auto: bf16 on GPU, fp32 on CPU. Not for speed: on an AMX CPU bf16 decodes 1.41x faster
    # (docs/performance.md), but greedy outputs then change with the batch's padding (15 of 32 rows)
    # and held-out gold in bf16 is not yet measured; `dtype: bfloat16` opts in.
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_torch_model(path: str, *, device: str = "auto", dtype: str = "auto",
                     revision: str | None = None) -> tuple[Any, Any, float]:
    """(model in eval mode, tokenizer with left padding, load seconds)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device), revision=revision)
    model.to(device).eval()
    if tokenizer.pad_token_id is None:  # e.g. Llama-style tokenizers; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, time.perf_counter() - t0


def stop_token_ids(tokenizer: Any, model: Any | None = None) -> list[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for t in ([eos] if isinstance(eos, int) else (eos or [])):
        ids.add(int(t))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return sorted(ids)


def encode_chats(tokenizer: Any, conversations: Sequence[list[dict[str, str]]]) -> list[list[int]]:
    """Chat template with the generation prompt, then token ids (the template adds special tokens)."""
    texts = [tokenizer.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False)
             for m in conversations]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def generate_torch(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]], *,
                   max_new_tokens: int = 64, batch_size: int = 32, sort_by_length: bool = True,
                   stop_ids: Sequence[int] | None = None, min_shared: int = 0, workers: int | str = "auto",
                   on_batch: Callable[[int], None] | None = None, constrain: str | None = None
                   ) -> list[Generation]:
    """Greedy completions for chat conversations, in input order. `min_shared` > 0 encodes a
    prefix of at least that many tokens once for all rows of a batch that share it; `workers`
    batches run at once, one torch thread each (auto: one per CPU thread; runner.lm.greedy).
    `constrain`: `wikisql` keeps every answer inside WikiSQL's query language
    (runner.text2sql.grammar); None: plain greedy."""
    prompts = encode_chats(tokenizer, conversations)
    stop_ids = stop_token_ids(tokenizer, model) if stop_ids is None else list(stop_ids)
    constraints = None
    if constrain:
        from runner.lm.constraint import constrained_rows

        users = [next(m["content"] for m in c if m["role"] == "user") for c in conversations]
        constraints = constrained_rows(constrain, users, tokenizer, stop_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    results: list[Generation | None] = [None] * len(prompts)
    batches = plan_batches(prompts, batch_size, sort_by_length, min_shared)
    for batch, outs in greedy_batches(model, prompts, batches, pad_id=pad_id, stop_ids=stop_ids,
                                      max_new_tokens=max_new_tokens, min_shared=min_shared,
                                      workers=resolve_workers(workers, model, len(batches)),
                                      constraints=constraints):
        for i, (toks, secs) in zip(batch, outs):
            body = toks[:-1] if toks and toks[-1] in stop_ids else toks
            results[i] = Generation(text=tokenizer.decode(body, skip_special_tokens=True),
                                    tokens_in=len(prompts[i]), tokens_out=len(toks), latency_s=secs,
                                    token_ids=toks)
        if on_batch:
            on_batch(len(batch))
    return results  # type: ignore[return-value]


# --- mlx-lm ------------------------------------------------------------------------------------

def load_mlx_model(path: str | Path) -> tuple[Any, Any, float]:
    from mlx_lm import load

    t0 = time.perf_counter()
    model, tokenizer = load(str(path))
    return model, tokenizer, time.perf_counter() - t0


def encode_chats_mlx(tokenizer: Any, conversations: Sequence[list[dict[str, str]]]) -> list[list[int]]:
    prompts = [tokenizer.apply_chat_template(list(m), add_generation_prompt=True, tokenize=True)
               for m in conversations]
    return [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]


def generate_mlx(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]], *,
                 max_new_tokens: int = 64, batch_size: int = 32, sort_by_length: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> list[Generation]:
    """mlx-lm's batch generation (greedy: its default sampler is argmax), one call per batch."""
    from mlx_lm.generate import batch_generate

    prompts = encode_chats_mlx(tokenizer, conversations)
    results: list[Generation | None] = [None] * len(prompts)
    for batch in plan_batches(prompts, batch_size, sort_by_length):
        t0 = time.perf_counter()
        resp = batch_generate(model, tokenizer, [prompts[i] for i in batch], max_tokens=max_new_tokens,
                              completion_batch_size=len(batch), return_token_ids=True)
        secs = time.perf_counter() - t0  # mlx-lm does not expose per-row finish times
        for i, text, toks in zip(batch, resp.texts, resp.token_ids):
            # mlx-lm leaves the stop token out; a row shorter than the limit ended on one, and it
            # is counted as generated, as in the torch path.
            stopped = len(toks) < max_new_tokens
            results[i] = Generation(text=text, tokens_in=len(prompts[i]), tokens_out=len(toks) + stopped,
                                    latency_s=secs, token_ids=list(toks))
        if on_batch:
            on_batch(len(batch))
    return results  # type: ignore[return-value]
