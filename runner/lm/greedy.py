"""The torch greedy decoding loop: prefill a batch, then decode it token by token.

Prefill encodes a prefix shared by several rows once (batch_plan.prefill_plan). The KV cache
appends into preallocated room (`new_cache`) rather than concatenating per step. On a CPU,
`workers` batches run at once, each in its own thread on one torch thread (torch releases the
GIL inside its kernels): decoding a small model's batch is many small matrix products whose
threads mostly wait on each other (1 thread decodes faster than 2 here), so one batch per core
beats every core on one batch (measured on 2 cores, 256 rows at batch 32: 3.6 s vs 5.6 s for
the two phases in turn and 4.5 s for prefilling the next batch while this one decodes).
Results are the same tokens either way.
"""
from __future__ import annotations

import functools
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from runner.lm.batch_plan import prefill_plan


@functools.cache
def _append_layer_class():
    """A DynamicLayer that appends into spare capacity instead of concatenating.

    transformers' DynamicLayer concatenates the whole cache with each new token: for a batch of 32
    with ~220 cached positions that copies ~90 MB per step on the default 6.2M student, and
    decoding became memory-bound on the copy (measured: decode 2.54 s -> 1.43 s for 128 rows,
    2 threads). Here the keys/values live in a buffer with room for `reserve` more positions;
    `keys`/`values` are views of its filled part. The arithmetic is unchanged."""
    from transformers.cache_utils import DynamicLayer

    class AppendLayer(DynamicLayer):
        def __init__(self, reserve: int):
            super().__init__()
            self.reserve, self._kbuf, self._vbuf = reserve, None, None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.keys.shape[-2] if self.keys.numel() else 0
            need = n + key_states.shape[-2]
            if self._kbuf is None or need > self._kbuf.shape[-2]:
                b, h, _, d = key_states.shape
                kbuf = key_states.new_empty((b, h, need + self.reserve, d))
                vbuf = value_states.new_empty((b, h, need + self.reserve, value_states.shape[-1]))
                if n:
                    kbuf[:, :, :n], vbuf[:, :, :n] = self.keys, self.values
                self._kbuf, self._vbuf = kbuf, vbuf
            self._kbuf[:, :, n:need] = key_states
            self._vbuf[:, :, n:need] = value_states
            self.keys, self.values = self._kbuf[:, :, :need], self._vbuf[:, :, :need]
            return self.keys, self.values

        def batch_select_indices(self, indices) -> None:
            if self.get_seq_length() > 0:
                n = self.keys.shape[-2]
                self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]
                self.keys, self.values = self._kbuf[:, :, :n], self._vbuf[:, :, :n]

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("AppendLayer caches are used for greedy decoding only")

        def batch_repeat_interleave(self, repeats: int) -> None:
            raise NotImplementedError("AppendLayer caches are used for greedy decoding only")

    return AppendLayer


@functools.lru_cache(maxsize=None)
def _cache_arg(model_cls: type) -> str:
    """The KV-cache keyword of forward(): `cache` in transformers >= 5.x (where `past_key_values`
    is deprecated with a FutureWarning and will be removed), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model_cls.forward).parameters else "past_key_values"


def new_cache(model: Any, reserve: int):
    """DynamicCache whose plain (full-attention) layers append in place; others stay as they are."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    layer = _append_layer_class()
    cache.layers = [layer(reserve) if type(x) is DynamicLayer else x for x in cache.layers]
    return cache


@dataclass
class Prefilled:
    """A batch after prefill: its KV cache and what decoding starts from."""
    cache: Any
    logits: Any      # last-position logits, one row per prompt
    mask: Any        # attention mask over the cache
    last_pos: Any    # position id of each row's last token
    started: float   # perf_counter when the batch's prefill began (row latency counts from here)


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    """(ids, mask, position ids): left padding with explicit positions, so a padded row computes
    what it would alone."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p):] = torch.tensor(list(p))
            mask[i, width - len(p):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def prefill(model: Any, prompts: list[list[int]], pad_id: int, min_shared: int = 0, reserve: int = 64) -> Prefilled:
    """Encode the prompts (logits for the last position only).

    With prefix sharing (runner.lm.batch_plan.prefill_plan), a prefix common to several rows
    is encoded once; before the next pass its KV rows are copied to every row that continues it,
    and positions continue after it. Each row attends to exactly its own tokens at their own
    positions, as in a single pass; padding may sit between passes, masked like left padding."""
    import torch

    started = time.perf_counter()
    device = model.device
    cache = new_cache(model, reserve)
    mask = None
    with torch.inference_mode():
        for step in prefill_plan(prompts, min_shared):
            if step.owner is not None:
                index = torch.tensor(step.owner, device=device)
                cache.batch_select_indices(index)
                mask = mask[index]
            ids, seg_mask, pos = (t.to(device) for t in _left_pad(step.segments, pad_id))
            pos = pos + torch.tensor(step.starts, device=device)[:, None]
            mask = seg_mask if mask is None else torch.cat([mask, seg_mask], dim=1)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                           **{_cache_arg(type(model)): cache}).logits
    return Prefilled(cache, logits, mask, pos[:, -1], started)


def decode(model: Any, state: Prefilled, stop_ids: Sequence[int], max_new_tokens: int,
           constraints: Sequence[Any] | None = None, temperature: float = 0.0,
           generator: Any = None) -> list[tuple[list[int], float]]:
    """Greedy tokens per row and seconds from the batch's start until the row finished. Rows that
    emit a stop token leave the batch (and the KV cache) at once. `constraints`: one
    runner.lm.constraint.ConstrainedRow per row, which picks the most likely allowed token.
    `temperature` > 0 samples from softmax(logits / temperature) instead, drawing from `generator`
    (a seeded torch.Generator: the same seed gives the same tokens), under `constraints` from that
    distribution restricted to the allowed tokens; on-policy distillation uses it."""
    import torch

    n = state.logits.shape[0]
    stops = torch.tensor(list(stop_ids), device=state.logits.device)
    out_tokens: list[list[int]] = [[] for _ in range(n)]
    finished_s = [0.0] * n
    alive = list(range(n))  # original index of each row still in the batch
    logits, mask, last_pos, cache = state.logits, state.mask, state.last_pos, state.cache
    with torch.inference_mode():
        for step in range(max_new_tokens):
            if temperature > 0:
                probs = torch.softmax(logits[:, -1].float() / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=generator).flatten()
            else:
                nxt = logits[:, -1].argmax(-1)
            if constraints is not None and temperature > 0:
                nxt = torch.tensor([constraints[alive[r]].sample(probs[r], t, generator)
                                    for r, t in enumerate(nxt.tolist())], device=nxt.device)
            elif constraints is not None:
                last = logits[:, -1]
                nxt = torch.tensor([constraints[alive[r]].pick(last[r], t) for r, t in enumerate(nxt.tolist())],
                                   device=nxt.device)
            done = torch.isin(nxt, stops) if stops.numel() else torch.zeros_like(nxt, dtype=torch.bool)
            now = time.perf_counter() - state.started
            for r, tok in enumerate(nxt.tolist()):
                out_tokens[alive[r]].append(tok)
            if step == max_new_tokens - 1:
                for r in alive:
                    finished_s[r] = now
                break
            done_rows = done.nonzero().flatten().tolist()
            if done_rows:
                for r in done_rows:
                    finished_s[alive[r]] = now
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    break
                cache.batch_select_indices(keep)
                alive = [alive[r] for r in keep.tolist()]
                nxt, mask, last_pos = nxt[keep], mask[keep], last_pos[keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            last_pos = last_pos + 1
            logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                           use_cache=True, **{_cache_arg(type(model)): cache}).logits
    return [(out_tokens[i], finished_s[i]) for i in range(n)]


def greedy_batch(model: Any, prompts: list[list[int]], *, pad_id: int, stop_ids: Sequence[int],
                 max_new_tokens: int, min_shared: int = 0, constraints: Sequence[Any] | None = None,
                 temperature: float = 0.0, generator: Any = None) -> list[tuple[list[int], float]]:
    """Greedy-decode one batch (or sample it: `temperature` > 0, see decode). Returns (generated
    ids, seconds until the row finished)."""
    return decode(model, prefill(model, prompts, pad_id, min_shared, max_new_tokens), stop_ids, max_new_tokens,
                  constraints, temperature, generator)


def auto_workers(device: str) -> int:
    """On a CPU, one worker per torch thread (each then runs on one thread); elsewhere 1."""
    import torch

    return torch.get_num_threads() if device == "cpu" else 1


def resolve_workers(workers: int | str, model: Any, n_batches: int) -> int:
    if workers == "auto":
        workers = auto_workers(model.device.type)
    return max(1, min(int(workers), n_batches))


def greedy_batches(model: Any, prompts: list[list[int]], batches: list[list[int]], *, pad_id: int,
                   stop_ids: Sequence[int], max_new_tokens: int, min_shared: int = 0,
                   workers: int = 1, constraints: Sequence[Any] | None = None,
                   temperature: float = 0.0, seed: int = 0
                   ) -> Iterator[tuple[list[int], list[tuple[list[int], float]]]]:
    """(batch, its results) for each batch, in order. With `workers` > 1, that many batches are
    decoded at once in threads that use one torch thread each (restored afterwards).
    `constraints`: one per prompt (runner.text2sql.grammar), or None for plain greedy.
    `temperature` > 0 samples; batch j draws from its own generator seeded `seed + j`, so the
    tokens do not depend on which thread ran first."""
    import torch

    rows = [[prompts[i] for i in b] for b in batches]
    starts = {id(b): j for j, b in enumerate(batches)}

    def run(b: list[int], p: list[list[int]]) -> list[tuple[list[int], float]]:
        gen = (torch.Generator(device=model.device).manual_seed(seed + starts[id(b)])
               if temperature > 0 else None)
        return greedy_batch(model, p, pad_id=pad_id, stop_ids=stop_ids, max_new_tokens=max_new_tokens,
                            min_shared=min_shared,
                            constraints=None if constraints is None else [constraints[i] for i in b],
                            temperature=temperature, generator=gen)

    if workers <= 1:
        for b, p in zip(batches, rows):
            yield b, run(b, p)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    try:
        futures = [pool.submit(run, b, p) for b, p in zip(batches, rows)]  # at most `workers` KV caches alive at once
        for b, f in zip(batches, futures):
            yield b, f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
