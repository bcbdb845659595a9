"""runner.lm.constraint: sampling under a grammar draws from the model's distribution restricted to
the allowed tokens, renormalised, whether the favourite fits (rejection path) or not (masked path)."""
from __future__ import annotations

import torch

from runner.lm.constraint import ConstrainedRow


class OnlyAB:
    """Viable: any text of a's and b's; complete: non-empty."""

    def state(self, text: bytes) -> tuple[bool, bool]:
        ok = set(text) <= set(b"ab")
        return ok, ok and bool(text)


PIECES = [b"a", b"b", b"c", b"d", None]  # token 4: the stop token
STOP = 4


def _draws(probs: list[float], n: int = 4000, seed: int = 0) -> list[int]:
    p = torch.tensor(probs)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        row = ConstrainedRow(OnlyAB(), PIECES, [STOP])
        first = int(torch.multinomial(p, 1, generator=gen))
        out.append(row.sample(p, first, gen))
    return out


def test_sampling_follows_the_restricted_distribution_when_the_favourites_fit():
    draws = _draws([0.2, 0.6, 0.1, 0.1, 0.0])  # allowed a, b: restricted (0.25, 0.75)
    assert set(draws) == {0, 1}
    assert abs(draws.count(0) / len(draws) - 0.25) < 0.025  # 4000 draws: sd 0.007


def test_sampling_follows_the_restricted_distribution_when_they_do_not():
    # 0.4 % of the mass is allowed: rejection gives up after its tries and the masked draw decides
    draws = _draws([0.001, 0.003, 0.496, 0.5, 0.0])
    assert set(draws) == {0, 1}
    assert abs(draws.count(0) / len(draws) - 0.25) < 0.025


def test_the_stop_token_only_where_the_text_is_complete():
    p = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])  # the model only wants to stop
    gen = torch.Generator().manual_seed(0)
    empty = ConstrainedRow(OnlyAB(), PIECES, [STOP])
    assert empty.sample(p, STOP, gen) != STOP  # "" is not complete: the greedy rule's allowed token
    done = ConstrainedRow(OnlyAB(), PIECES, [STOP])
    done.text = b"ab"
    assert done.sample(p, STOP, gen) == STOP


def test_sampling_is_seeded():
    assert _draws([0.3, 0.3, 0.2, 0.2, 0.0], n=200, seed=5) == _draws([0.3, 0.3, 0.2, 0.2, 0.0], n=200, seed=5)
    assert _draws([0.3, 0.3, 0.2, 0.2, 0.0], n=200, seed=5) != _draws([0.3, 0.3, 0.2, 0.2, 0.0], n=200, seed=6)
