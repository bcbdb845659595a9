"""Batched greedy generation (runner.lm.generate): same tokens as one at a time, real counts."""
from __future__ import annotations

import importlib.util

import pytest

from runner.lm.batch_plan import prefix_groups
from runner.lm.generate import (
    encode_chats,
    generate_mlx,
    generate_torch,
    load_mlx_model,
    stop_token_ids,
)
from tests.lm.tiny_lm import conversations, tiny_model, tiny_model_dir  # noqa: F401 (fixtures)


def _differences(batched, sequential, prompts_len):
    """Rows whose tokens differ, each with where and the likely reason."""
    out = []
    for i, (b, s) in enumerate(zip(batched, sequential)):
        if b.token_ids != s.token_ids:
            pos = next((k for k, (x, y) in enumerate(zip(b.token_ids, s.token_ids)) if x != y),
                       min(len(b.token_ids), len(s.token_ids)))
            out.append(f"row {i} (prompt {prompts_len[i]} tokens) differs at generated token {pos}: "
                       f"{b.token_ids[pos:pos + 3]} vs {s.token_ids[pos:pos + 3]} (left padding changes the "
                       "matmul shapes; in fp32 only a near-tie in the logits can flip an argmax)")
    return out


def test_batched_equals_sequential_fp32(tiny_model):
    model, tok = tiny_model
    convs = conversations(12)
    lens = [len(p) for p in encode_chats(tok, convs)]
    assert len(set(lens)) > 3, "the prompts must differ in length so padding is exercised"
    sequential = generate_torch(model, tok, convs, max_new_tokens=12, batch_size=1)
    batched = generate_torch(model, tok, convs, max_new_tokens=12, batch_size=5)
    diffs = _differences(batched, sequential, lens)
    assert not diffs, "\n".join(diffs)
    assert len({tuple(g.token_ids) for g in batched}) > 1, "a degenerate model would make this test vacuous"


def test_matches_transformers_generate(tiny_model):
    """Our greedy loop (one row) produces what model.generate(do_sample=False) produces."""
    import torch

    model, tok = tiny_model
    convs = conversations(3)
    ours = generate_torch(model, tok, convs, max_new_tokens=10, batch_size=1)
    stops = stop_token_ids(tok, model)
    for conv, g in zip(convs, ours):
        ids = torch.tensor([encode_chats(tok, [conv])[0]])
        with torch.inference_mode():
            ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                 do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)
        assert g.token_ids == ref[0, ids.shape[1]:].tolist()


def test_finished_rows_leave_the_batch_and_counts_are_real(tiny_model):
    model, tok = tiny_model
    convs = conversations(8)
    free = generate_torch(model, tok, convs, max_new_tokens=10, batch_size=8, stop_ids=[])
    assert all(g.tokens_out == 10 for g in free)
    # Make row 0's 3rd generated token a stop token: row 0 ends after 3 tokens, other rows only
    # where they produce that token too; the batch goes on without the finished rows.
    stop = free[0].token_ids[2]
    expected = []
    for g in free:
        cut = g.token_ids.index(stop) + 1 if stop in g.token_ids else 10
        expected.append(cut)
    batched = generate_torch(model, tok, convs, max_new_tokens=10, batch_size=8, stop_ids=[stop])
    sequential = generate_torch(model, tok, convs, max_new_tokens=10, batch_size=1, stop_ids=[stop])
    assert [g.tokens_out for g in batched] == expected
    assert [g.token_ids for g in batched] == [g.token_ids for g in sequential]
    assert any(e < 10 for e in expected) and any(e == 10 for e in expected), "both kinds of rows needed"
    # The stop token is counted (it was generated) but not part of the text.
    assert batched[0].token_ids[-1] == stop and batched[0].tokens_out == 3
    assert batched[0].text == tok.decode(free[0].token_ids[:2], skip_special_tokens=True)
    # A row that finished early has a shorter latency than the batch.
    assert batched[0].latency_s <= max(g.latency_s for g in batched)


def _questions_on_shared_tables(n: int) -> list[list[dict[str, str]]]:
    """Like a table-disjoint eval split: several questions per table, the table text first."""
    cols = ["player", "team", "year", "score", "school", "venue"]
    out = []
    for i in range(n):
        t = i % 4
        schema = "CREATE TABLE t (" + ", ".join(f'"{c}{t}" text' for c in cols[: 3 + t]) + ")"
        out.append([{"role": "system", "content": "Return only the SQL query."},
                    {"role": "user", "content": f"{schema}\nQuestion: what is the {cols[i % 6]} of row {i}?"
                                                + " really" * (i % 3)}])
    return out


def test_prefix_sharing_gives_the_same_tokens_as_one_at_a_time(tiny_model):
    model, tok = tiny_model
    convs = _questions_on_shared_tables(14)
    prompts = encode_chats(tok, convs)
    groups = prefix_groups(prompts, range(len(prompts)), min_shared=16)
    assert sum(len(g.rows) > 1 for g in groups) >= 3, "the prompts must share table prefixes"
    sequential = generate_torch(model, tok, convs, max_new_tokens=12, batch_size=1)
    for bs in (5, 14):  # groups cut by batch boundaries, and whole groups in one batch
        shared = generate_torch(model, tok, convs, max_new_tokens=12, batch_size=bs, min_shared=16)
        diffs = _differences(shared, sequential, [len(p) for p in prompts])
        assert not diffs, "\n".join(diffs)
        assert [g.tokens_in for g in shared] == [len(p) for p in prompts]
    assert len({tuple(g.token_ids) for g in sequential}) > 3, "a degenerate model would make this test vacuous"


@pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None, reason="mlx-lm is not installed")
def test_mlx_batch_generation_matches_torch(tiny_model_dir, tiny_model):
    model, tok, _ = load_mlx_model(tiny_model_dir)
    convs = conversations(5)
    gens = generate_mlx(model, tok, convs, max_new_tokens=6, batch_size=4)
    ref = generate_torch(*tiny_model, convs, max_new_tokens=6, batch_size=4)
    assert [g.tokens_in for g in gens] == [r.tokens_in for r in ref]
    assert [g.token_ids for g in gens] == [r.token_ids for r in ref]  # fp32 greedy on both backends


def test_parallel_batches_give_the_same_tokens_in_order_and_restore_threads(tiny_model):
    import torch

    model, tok = tiny_model
    convs = conversations(11)
    threads = torch.get_num_threads()
    plain = generate_torch(model, tok, convs, max_new_tokens=8, batch_size=3, workers=1)
    parallel = generate_torch(model, tok, convs, max_new_tokens=8, batch_size=3, workers=3)
    assert [g.token_ids for g in parallel] == [g.token_ids for g in plain]
    assert [g.tokens_in for g in parallel] == [g.tokens_in for g in plain]
    assert torch.get_num_threads() == threads


def test_a_failing_batch_in_a_worker_is_raised_to_the_caller(tiny_model, monkeypatch):
    import torch

    from runner.lm import greedy
    model, tok = tiny_model
    threads = torch.get_num_threads()
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("prefill broke on batch 2")
        return real(*args, **kwargs)

    real = greedy.prefill
    monkeypatch.setattr(greedy, "prefill", failing)
    with pytest.raises(RuntimeError, match="batch 2"):
        generate_torch(model, tok, conversations(9), max_new_tokens=4, batch_size=3, workers=2)
    assert torch.get_num_threads() == threads


def test_append_cache_matches_the_concatenating_cache(tiny_model):
    """The in-place KV cache gives the logits transformers' own DynamicCache gives, also after
    rows leave the batch."""
    import torch
    from transformers import DynamicCache

    from runner.lm.greedy import _cache_arg, new_cache

    model, tok = tiny_model
    kv = _cache_arg(type(model))  # `cache` (transformers 5) or `past_key_values` (4.x)
    prompts = encode_chats(tok, conversations(4))
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    outs = []
    for cache in (DynamicCache(config=model.config), new_cache(model, reserve=2)):  # reserve 2: regrows
        with torch.inference_mode():
            steps = [model(input_ids=ids, attention_mask=mask, position_ids=pos, **{kv: cache}).logits[:, -1]]
            m, p, nxt = mask, pos[:, -1], steps[0].argmax(-1)
            for step in range(5):
                if step == 2:  # rows 1 and 3 leave
                    keep = torch.tensor([0, 2])
                    cache.batch_select_indices(keep)
                    m, p, nxt = m[keep], p[keep], nxt[keep]
                m, p = torch.cat([m, m.new_ones((m.shape[0], 1))], 1), p + 1
                steps.append(model(input_ids=nxt[:, None], attention_mask=m, position_ids=p[:, None],
                                   **{kv: cache}).logits[:, -1])
                nxt = steps[-1].argmax(-1)
        outs.append(steps)
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5)
