"""Which prompts decode together, and which token prefixes they can share.

Batched decoding is cheapest when a batch holds prompts of similar length (little padding) and
when prompts that begin with the same tokens are encoded once. Text2SQL eval sets are both: the
schema and sample rows of a table open every question on it, and a table-disjoint eval split
holds whole tables (about three questions each on WikiSQL), so those rows share ~80% of their
prompt. Everything here works on token ids, so sharing is exact: two rows share a prefix only
where their ids are equal position by position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

# A row joins a group only if the shared prefix is at least this share of its own prompt. A
# prefix every prompt has (chat header, system prompt, "CREATE TABLE t (") is short next to a
# table's schema and rows; without this floor it would merge all rows into one group sharing
# only that header, and the per-table sharing, the part worth having, would be lost.
MIN_SHARED_FRACTION = 0.5


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(frozen=True)
class PrefixGroup:
    rows: tuple[int, ...]  # indices into the prompt list
    shared: int            # leading tokens all rows hold in common (0 for a lone row)


def prefix_groups(prompts: Sequence[Sequence[int]], rows: Sequence[int], min_shared: int) -> list[PrefixGroup]:
    """Partition `rows` into groups whose prompts share at least `min_shared` leading tokens
    (and MIN_SHARED_FRACTION of each member's prompt).

    Sorting the prompts puts every set of rows with a common prefix next to each other; a group
    grows while the prefix its rows share stays long enough. The shared length is capped one
    token short of the shortest member, because each row needs a token of its own to predict from.
    """
    order = sorted(rows, key=lambda r: tuple(prompts[r]))
    groups: list[PrefixGroup] = []
    i = 0
    while i < len(order):
        members, shared = [order[i]], len(prompts[order[i]])
        for r in order[i + 1:]:
            lcp = common_prefix_len(prompts[members[0]], prompts[r])
            floor = max(min_shared, MIN_SHARED_FRACTION * len(prompts[r]), MIN_SHARED_FRACTION * len(prompts[members[0]]))
            if min_shared <= 0 or lcp < floor:
                break
            members.append(r)
            shared = min(shared, lcp)
        if len(members) > 1:
            shared = min(shared, min(len(prompts[r]) for r in members) - 1)
        groups.append(PrefixGroup(tuple(members), shared if len(members) > 1 else 0))
        i += len(members)
    return groups


def plan_order(prompts: Sequence[Sequence[int]], min_shared: int = 0) -> list[int]:
    """Decode order: longest first (the biggest batch, the memory peak, comes first), and (min_shared > 0) rows sharing a prefix kept adjacent.

    Groups are ordered by their longest prompt and rows inside a group by length, so cutting the
    order into consecutive batches keeps both the length sorting and most of the sharing (a group
    cut by a batch boundary still shares within each part)."""
    if min_shared <= 0:
        return sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    groups = [sorted(g.rows, key=lambda r: -len(prompts[r]))
              for g in prefix_groups(prompts, range(len(prompts)), min_shared)]
    groups.sort(key=lambda g: -len(prompts[g[0]]))
    return [r for g in groups for r in g]


def plan_batches(prompts: Sequence[Sequence[int]], batch_size: int, sort_by_length: bool = True,
                 min_shared: int = 0) -> list[list[int]]:
    """Consecutive index batches of `plan_order` (or of the input order)."""
    order = plan_order(prompts, min_shared) if sort_by_length else list(range(len(prompts)))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
