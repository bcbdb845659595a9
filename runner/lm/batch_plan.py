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
    """Decode order: longest first (the biggest batch, the memory peak, comes first), and
    (min_shared > 0) rows sharing a prefix kept adjacent.

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


@dataclass(frozen=True)
class Pass:
    """One forward pass of a shared-prefix prefill. `owner[i]`: the row of the previous pass whose
    KV cache row i continues (None for the first pass); `segments[i]`: the tokens row i encodes
    now, starting at position `starts[i]`."""
    owner: tuple[int, ...] | None
    segments: tuple[tuple[int, ...], ...]
    starts: tuple[int, ...]


def prefill_plan(prompts: Sequence[Sequence[int]], min_shared: int) -> list[Pass]:
    """Passes that encode every token of every prompt, shared prefixes once.

    Up to three levels: the header every prompt of the batch starts with (chat template, system
    prompt), then each group's shared prefix (a table's schema and rows), then each row's own
    tail (its question). Group prefixes end where the group's longest prompt has as many tokens
    left as the longest tail of any row, so the last pass's padded width is filled by each
    group's longest row. A level is skipped when it would save fewer than `min_shared` tokens."""
    rows = range(len(prompts))
    groups = prefix_groups(prompts, rows, min_shared) if min_shared > 0 else [PrefixGroup((r,), 0) for r in rows]
    if not any(len(g.rows) > 1 for g in groups):
        heads, owner, cuts = [list(p) for p in prompts], None, [len(p) for p in prompts]
    else:
        tail = max(len(prompts[r]) - g.shared for g in groups if len(g.rows) > 1 for r in g.rows)
        heads, owner, cuts = [], [0] * len(prompts), [0] * len(prompts)
        for gi, g in enumerate(groups):
            longest = max(len(prompts[r]) for r in g.rows)
            n = max(1, min(g.shared if len(g.rows) > 1 else longest, longest - tail))
            heads.append(list(prompts[g.rows[0]][:n]))
            for r in g.rows:
                owner[r], cuts[r] = gi, n
    # The common header of all heads, leaving each head at least one token of its own.
    header = min(common_prefix_len(heads[0], h) for h in heads) if len(heads) > 1 else 0
    header = min(header, min(map(len, heads)) - 1)
    passes = []
    if min_shared > 0 and header * (len(heads) - 1) >= min_shared:
        passes.append(Pass(None, (tuple(heads[0][:header]),), (0,)))
        passes.append(Pass((0,) * len(heads), tuple(tuple(h[header:]) for h in heads), (header,) * len(heads)))
    else:
        passes.append(Pass(None, tuple(map(tuple, heads)), (0,) * len(heads)))
    if owner is not None:
        passes.append(Pass(tuple(owner), tuple(tuple(p[c:]) for p, c in zip(prompts, cuts)), tuple(cuts)))
    return passes
