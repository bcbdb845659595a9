"""Chat JSONL -> token ids with assistant-only labels -> length-sorted, padded batches.

Rows are `{"messages": [system?, user, assistant]}` (mlx-lm / OpenAI fine-tuning format).
Only the final assistant turn is learned: every label before it is IGNORE, so the loss is
the student's error on the SQL, not on re-predicting the prompt.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

IGNORE = -100


def read_chat_jsonl(path: str | Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            msgs = row.get("messages")
            if not msgs or msgs[-1].get("role") != "assistant":
                raise ValueError(f"{path}:{n}: expected {{'messages': [..., {{'role': 'assistant', ...}}]}}")
            rows.append(row)
    return rows


@dataclass
class Example:
    input_ids: list[int]
    prompt_len: int  # tokens before the assistant's answer (masked out of the loss)
    user: str | None = None  # the prompt's last user message (constrained on-policy sampling builds its grammar)

    @property
    def n_target(self) -> int:
        return len(self.input_ids) - self.prompt_len


def encode_chat(tokenizer, messages: list[dict]) -> Example:
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True,
                                           return_dict=False)
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    if full[:len(prompt)] != prompt:
        raise ValueError("the tokenizer's chat template does not render the prompt as a prefix of the "
                         "full conversation, so the assistant turn cannot be isolated for the loss")
    user = next((m.get("content") for m in reversed(messages[:-1]) if m.get("role") == "user"), None)
    return Example(list(full), len(prompt), user)


def encode_rows(tokenizer, rows: list[dict], max_seq_length: int) -> tuple[list[Example], int]:
    """Encode rows; drop (and count) the ones longer than max_seq_length rather than cut their answer."""
    kept, dropped = [], 0
    for row in rows:
        ex = encode_chat(tokenizer, row["messages"])
        if len(ex.input_ids) > max_seq_length or ex.n_target == 0:
            dropped += 1
        else:
            kept.append(ex)
    return kept, dropped


def length_sorted_batches(examples: list[Example], batch_size: int, seed: int, epoch: int,
                          drop_last: bool = False) -> list[list[int]]:
    """Batches of indices with similar lengths (little padding), in a shuffled order per epoch.

    Shuffle, cut into chunks of 50 batches, sort each chunk by length, batch, shuffle the batches:
    the same seed and epoch give the same batches in every process (DDP relies on it).
    """
    rng = random.Random(seed * 1000 + epoch)
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: len(examples[i].input_ids))
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int):
    """Right-padded input_ids, attention_mask and labels (IGNORE on prompt and padding)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids)
        mask[r, :n] = 1
        labels[r, e.prompt_len:n] = ids[r, e.prompt_len:n]
    return ids, mask, labels
