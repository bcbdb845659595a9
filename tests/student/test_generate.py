"""Batched greedy generation (runner.student.generate): same tokens as one at a time, real counts."""
from __future__ import annotations

import importlib.util

import pytest

from runner.student.generate import (encode_chats, generate_mlx, generate_torch, length_sorted_batches,
                                     load_mlx_model, stop_token_ids)
from tests.student.tiny_lm import conversations, tiny_model, tiny_model_dir  # noqa: F401 (fixtures)


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


def test_length_sorted_batches():
    assert length_sorted_batches([5, 50, 7, 30, 6], 2) == [[1, 3], [2, 4], [0]]
    assert length_sorted_batches([5, 50, 7], 2, sort_by_length=False) == [[0, 1], [2]]


@pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None, reason="mlx-lm is not installed")
def test_mlx_batch_generation_matches_torch(tiny_model_dir, tiny_model):
    model, tok, _ = load_mlx_model(tiny_model_dir)
    convs = conversations(5)
    gens = generate_mlx(model, tok, convs, max_new_tokens=6, batch_size=4)
    ref = generate_torch(*tiny_model, convs, max_new_tokens=6, batch_size=4)
    assert [g.tokens_in for g in gens] == [r.tokens_in for r in ref]
    assert [g.token_ids for g in gens] == [r.token_ids for r in ref]  # fp32 greedy on both backends
