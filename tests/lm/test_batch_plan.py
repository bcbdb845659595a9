"""Batch planning (runner.lm.batch_plan): length order, and exact token-prefix groups."""
from __future__ import annotations

from runner.lm.batch_plan import (
    Pass,
    PrefixGroup,
    common_prefix_len,
    plan_batches,
    plan_order,
    prefill_plan,
    prefix_groups,
)


def test_common_prefix_len():
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([5], [6]) == 0


def test_length_order_without_sharing():
    prompts = [[0] * n for n in (5, 50, 7, 30, 6)]
    assert plan_batches(prompts, 2) == [[1, 3], [2, 4], [0]]
    assert plan_batches(prompts, 2, sort_by_length=False) == [[0, 1], [2, 3], [4]]


def test_groups_share_only_equal_leading_ids_and_keep_a_token_per_row():
    table_a = list(range(100, 140))
    table_b = list(range(200, 230))
    prompts = [table_a + [1, 2], table_b + [9], table_a + [3], table_a, [7, 8, 9]]
    groups = {g.rows: g.shared for g in prefix_groups(prompts, range(len(prompts)), min_shared=16)}
    # Row 3 is the bare prefix: the group shares one token less so every row still has a token to predict from.
    assert groups == {(3, 0, 2): 39, (1,): 0, (4,): 0}
    # Below the threshold nothing is shared.
    assert all(len(g.rows) == 1 for g in prefix_groups(prompts, range(5), min_shared=41))
    assert prefix_groups(prompts, [4, 1], min_shared=0) == [PrefixGroup((4,), 0), PrefixGroup((1,), 0)]


def test_order_keeps_groups_adjacent_and_longest_first():
    a = [1] * 30
    prompts = [a + [2] * 5, [3] * 50, a + [4] * 9, [5] * 10, a + [6]]
    order = plan_order(prompts, min_shared=16)
    assert order == [1, 2, 0, 4, 3]  # group {0,2,4} by its longest member (39), rows longest first
    assert sorted(order) == list(range(5))


def _rebuild(passes, row: int) -> tuple[list[int], list[int]]:
    """Row `row`'s tokens and positions, following its owner chain back through the passes."""
    chain = [row]
    for step in reversed(passes[1:]):
        chain.append(step.owner[chain[-1]])
    tokens, positions = [], []
    for step, r in zip(passes, reversed(chain)):
        seg = list(step.segments[r])
        assert step.starts[r] == len(tokens)  # positions continue where the row's tokens left off
        positions += range(step.starts[r], step.starts[r] + len(seg))
        tokens += seg
    return tokens, positions


def test_prefill_plan_encodes_every_prompt_exactly_once_per_row():
    header = list(range(1, 13))  # chat template + system prompt: every prompt starts with it
    table_a, table_b = list(range(100, 140)), list(range(200, 250))
    prompts = [header + table_a + [9, 9], header + table_b + [8], header + table_a + [7, 7, 7, 7],
               header + list(range(50, 60)), header + table_b + [6, 6], header + table_a + [5]]
    passes = prefill_plan(prompts, min_shared=16)
    assert len(passes) == 3  # header, group prefixes (and lone rows), tails
    assert passes[0].segments == (tuple(header),)
    for r, p in enumerate(prompts):
        tokens, positions = _rebuild(passes, r)
        assert tokens == p and positions == list(range(len(p)))
    # The header once for all 6 rows; table a once for its 3 rows; table b once for its 2 rows,
    # less its last 2 tokens: table b's prefix ends where its longest row has 4 tokens left, the
    # longest tail (table a's), so the last pass holds no padding for it.
    encoded = sum(len(s) for step in passes for s in step.segments)
    assert encoded == sum(map(len, prompts)) - 5 * len(header) - 2 * len(table_a) - (len(table_b) - 2)
    assert max(map(len, passes[-1].segments)) == 4


def test_prefill_plan_without_sharing_is_one_pass_of_whole_prompts():
    prompts = [[1, 2, 3], [4, 5], [6]]
    assert prefill_plan(prompts, min_shared=0) == [Pass(None, ((1, 2, 3), (4, 5), (6,)), (0, 0, 0))]
