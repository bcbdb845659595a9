"""Constrained decoding, the generic half: a grammar over bytes, and the per-row state that picks
the model's most likely token the grammar allows (PICARD's idea), or samples among the allowed ones.

A grammar is anything with `state(text: bytes) -> (viable, complete)`: viable when `text` begins
some sentence of the language, complete when it is one. Grammars are named in config
(`pipeline.constrain: wikisql`) and built from the prompt the student sees; the table below
maps a name to its builder by dotted path, resolved like a Hydra `_target_`, so this room
imports no task room (the WikiSQL grammar lives in runner.text2sql.grammar).
"""
from __future__ import annotations

import importlib
from typing import Protocol, Sequence

from runner.core.stage import check_choice

# name -> "module:function(user_prompt) -> Grammar"
GRAMMARS = {"wikisql": "runner.text2sql.grammar:from_prompt"}
NAMES = (None, *GRAMMARS)


class Grammar(Protocol):
    def state(self, text: bytes) -> tuple[bool, bool]: ...


def check_name(scope: str, name: str | None) -> None:
    """ConfigError unless `name` is a known constraint (or None: plain greedy)."""
    check_choice(scope, "constrain", name, NAMES)


def builder(name: str):
    if name not in GRAMMARS:
        raise ValueError(f"unknown decoding constraint {name!r}; choose one of {sorted(GRAMMARS)} or null")
    module, fn = GRAMMARS[name].split(":")
    return getattr(importlib.import_module(module), fn)


def check_prompt(name: str, user: str) -> None:
    """ValueError when the grammar cannot be built from this prompt (e.g. no `Question:` line)."""
    builder(name)(user)


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id adds to the text; None for special tokens. Byte-level BPE maps
    each byte to a printable character (GPT-2's table); others are decoded one token at a time."""
    from tokenizers import decoders

    backend = getattr(tokenizer, "backend_tokenizer", None)
    special = set(tokenizer.all_special_ids)
    n = len(tokenizer)
    if backend is not None and isinstance(backend.decoder, decoders.ByteLevel):
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        table = {c: b for b, c in bytes_to_unicode().items()}  # printable character -> byte
        pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
        return [None if i in special or p is None else bytes(table[c] for c in p) for i, p in enumerate(pieces)]
    return [None if i in special else tokenizer.decode([i]).encode() for i in range(n)]


class ConstrainedRow:
    """One row's decoding state: the bytes written so far and the grammar they must follow."""

    def __init__(self, grammar: Grammar, pieces: list[bytes | None], stop_ids: Sequence[int]):
        self.grammar, self.pieces, self.stops = grammar, pieces, set(stop_ids)
        self.text = b""

    def allowed(self, token: int, first_ok: dict[int, bool] | None = None) -> bool:
        """May `token` come next? `first_ok` memoises, for this step, whether the text plus one
        byte is viable: a token whose first byte is not cannot be (viability is prefix-closed),
        which spares most parses when the model's favourites are far off (an untrained student)."""
        if token in self.stops:
            return self.grammar.state(self.text)[1]
        piece = self.pieces[token] if token < len(self.pieces) else None
        if not piece:
            return False
        if first_ok is not None:
            head = piece[0]
            if head not in first_ok:
                first_ok[head] = self.grammar.state(self.text + piece[:1])[0]
            if not first_ok[head]:
                return False
            if len(piece) == 1:
                return True
        return self.grammar.state(self.text + piece)[0]

    def pick(self, logits, first: int) -> int:
        """The most likely allowed token (`first` is the row's argmax). Scans the top 64, then all."""
        if self.allowed(first):
            return self._push(first)
        import torch

        first_ok: dict[int, bool] = {}
        for k in (min(64, logits.shape[-1]), logits.shape[-1]):
            for t in torch.topk(logits, k).indices.tolist():
                if self.allowed(t, first_ok):
                    return self._push(t)
        # Nothing fits (cannot happen with a byte-level vocabulary): end the answer.
        return self._push(min(self.stops))

    def sample(self, probs, drawn: int, generator=None, tries: int = 8) -> int:
        """A draw from `probs` restricted to the tokens the grammar allows, renormalised (what
        on-policy distillation samples under the constraint). `drawn` was drawn from `probs`:
        rejection sampling keeps the first allowed of up to `tries` draws; past that, one draw
        from the masked distribution. Both give exactly the restricted distribution, and the
        common case (the student's favourite fits) costs one grammar check."""
        import torch

        for attempt in range(tries):
            if self.allowed(drawn):
                return self._push(drawn)
            if attempt < tries - 1:
                drawn = int(torch.multinomial(probs, 1, generator=generator))
        first_ok: dict[int, bool] = {}
        ok = [t for t in probs.nonzero().flatten().tolist() if self.allowed(t, first_ok)]
        if not ok:  # nothing with mass fits: the greedy rule's answer (its scan covers every token)
            return self.pick(probs, int(probs.argmax()))
        pick = int(torch.multinomial(probs[torch.tensor(ok, device=probs.device)], 1, generator=generator))
        return self._push(ok[pick])

    def _push(self, token: int) -> int:
        if token not in self.stops:
            self.text += self.pieces[token] or b""
        return token


def constrained_rows(name: str, users: Sequence[str], tokenizer, stop_ids: Sequence[int]) -> list[ConstrainedRow]:
    """One ConstrainedRow per prompt, each with the grammar `name` builds from that prompt."""
    build = builder(name)
    pieces = token_bytes(tokenizer)
    return [ConstrainedRow(build(u), pieces, stop_ids) for u in users]
