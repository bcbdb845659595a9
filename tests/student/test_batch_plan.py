"""Batch planning (runner.student.batch_plan): length order, and exact token-prefix groups."""
from __future__ import annotations

from runner.student.batch_plan import PrefixGroup, common_prefix_len, plan_batches, plan_order, prefix_groups


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
