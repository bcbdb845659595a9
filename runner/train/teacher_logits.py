"""The teacher side of logit distillation: tokenizer check, online teacher, offline top-k store.

Offline store (`teacher_logits/` artifact, and the same folder under `<cache_dir>/teacher_logits/<key>/`):
    ids.npy    [positions, k]  int16 (|V| < 32768) or int32: the teacher's top-k token ids
    logp.npy   [positions, k]  float16 (default) / bfloat16-as-float32 / float32: log-probs at tau,
                               taken over the full vocabulary *before* truncation
    index.json meta (teacher hash, tau, k, dtype, bytes_per_token) and rows: row key -> [offset, n]
A position is one assistant token of one row (the CE term's positions, in order). The row key is a
hash of the row's token ids and prompt length, so a changed tokenizer, prompt or template can never
reuse stale targets; the folder key adds the teacher's weights, tau, k and dtype (notes: "keyed by
the exact token ids of the row").
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from runner.train.kd_loss import KDConfig, teacher_targets

FORMAT = 1


def tokenizer_difference(teacher_dir: Path, student_dir: Path) -> str | None:
    """None when the tokenizers give the same ids for the same strings (same vocab and special
    tokens); else the first difference, named. KL over mismatched ids compares unrelated tokens."""
    from transformers import AutoTokenizer

    t, s = AutoTokenizer.from_pretrained(teacher_dir), AutoTokenizer.from_pretrained(student_dir)
    if len(t) != len(s):
        return f"vocabulary size differs: teacher {len(t)}, student {len(s)}"
    for name in ("pad_token", "bos_token", "eos_token", "unk_token"):
        a, b = getattr(t, name), getattr(s, name)
        if a != b:
            return f"special token {name} differs: teacher {a!r}, student {b!r}"
    if sorted(t.all_special_tokens) != sorted(s.all_special_tokens):
        return f"special tokens differ: teacher {sorted(t.all_special_tokens)}, student {sorted(s.all_special_tokens)}"
    tv, sv = t.get_vocab(), s.get_vocab()
    if tv != sv:
        tok = next(k for k in sorted(set(tv) | set(sv)) if tv.get(k) != sv.get(k))
        return f"vocabulary differs: token {tok!r} is id {tv.get(tok)} for the teacher, {sv.get(tok)} for the student"
    return None


def weights_hash(model_dir: Path) -> str:
    """sha256 over the weight files and config: the teacher's identity in cache keys."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).iterdir()):
        if f.suffix in (".safetensors", ".bin", ".json") and f.is_file():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def row_key(example) -> str:
    import numpy as np

    ids = np.asarray(example.input_ids, dtype=np.int32).tobytes()
    return hashlib.sha1(ids + example.prompt_len.to_bytes(4, "little")).hexdigest()


def store_key(teacher_hash: str, kd: KDConfig, keys: list[str]) -> str:
    h = hashlib.sha256(json.dumps([FORMAT, teacher_hash, kd.temperature, kd.top_k, kd.store_dtype]).encode())
    for k in keys:
        h.update(k.encode())
    return h.hexdigest()[:24]


def load_teacher(teacher_dir: Path, device: str):
    """The teacher in eval mode (dropout off), fp32, no gradients."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def teacher_logits_at(model, ids, mask, start: int):
    """Teacher logits aligned with the trainer's student logits (same shift, same logits_to_keep)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=ids.size(1) - start).logits
    return logits[:, :-1].float()


def compute_store(examples, teacher_dir: Path, kd: KDConfig, out_dir: Path, device: str = "cpu",
                  batch_size: int = 16, pad_id: int = 0) -> dict:
    """Run the teacher once over `examples`, write the top-k store to out_dir; return its meta."""
    import numpy as np

    from runner.train.chat_data import IGNORE, collate

    model = load_teacher(teacher_dir, device)
    vocab = model.config.vocab_size
    id_dtype = np.int16 if vocab < 32768 else np.int32
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # little padding
    ids_parts, logp_parts, rows, offset = [], [], {}, 0
    t0 = time.perf_counter()
    for b in range(0, len(order), batch_size):
        exs = [examples[i] for i in order[b:b + batch_size]]
        ids, mask, labels = (t.to(device) for t in collate(exs, pad_id))
        start = min(e.prompt_len for e in exs) - 1
        logits = teacher_logits_at(model, ids, mask, start)
        sel = labels[:, start + 1:] != IGNORE
        top_ids, top_logp = teacher_targets(logits[sel], kd.temperature, kd.top_k)
        ids_parts.append(top_ids.cpu().numpy().astype(id_dtype))
        logp_parts.append(_to_store(top_logp.cpu(), kd.store_dtype))
        counts = sel.sum(1).tolist()  # row-major selection: each row's positions are consecutive
        for e, n in zip(exs, counts):
            rows[row_key(e)] = [offset, int(n)]
            offset += int(n)
    forward_s = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    all_ids = np.concatenate(ids_parts) if ids_parts else np.zeros((0, kd.top_k), id_dtype)
    all_logp = np.concatenate(logp_parts) if logp_parts else np.zeros((0, kd.top_k), np.float16)
    np.save(out_dir / "ids.npy", all_ids)
    np.save(out_dir / "logp.npy", all_logp)
    meta = {"format": FORMAT, "temperature": kd.temperature, "top_k": kd.top_k, "store_dtype": kd.store_dtype,
            "vocab_size": vocab, "rows": len(rows), "positions": int(offset),
            "bytes": int(all_ids.nbytes + all_logp.nbytes),
            "bytes_per_token": (all_ids.itemsize + all_logp.itemsize) * (kd.top_k or vocab),
            "teacher_forward_s": round(forward_s, 3)}
    (out_dir / "index.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    return meta


def _to_store(logp, dtype: str):
    import torch

    if dtype == "float16":
        return logp.to(torch.float16).numpy()
    if dtype == "bfloat16":  # numpy has no bfloat16: round to bf16, keep as float32 on disk
        return logp.to(torch.bfloat16).float().numpy()
    return logp.numpy()


def cached_store(examples, teacher_dir: Path, kd: KDConfig, cache_root: Path, out_dir: Path,
                 device: str = "cpu", pad_id: int = 0, batch_size: int = 16, log=None) -> tuple[dict, bool]:
    """The store for these rows from `<cache_root>/teacher_logits/<key>/` (computed once, shared by
    every job of a sweep), copied to out_dir. Returns (meta, cache_hit)."""
    key = store_key(weights_hash(teacher_dir), kd, [row_key(e) for e in examples])
    cached = cache_root / "teacher_logits" / key
    hit = (cached / "index.json").exists()
    if not hit:
        tmp = cached.with_name(f".{key}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        compute_store(examples, teacher_dir, kd, tmp, device=device, batch_size=batch_size, pad_id=pad_id)
        try:
            os.replace(tmp, cached)  # atomic: a concurrent job that got there first wins
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    if log is not None:
        log.info("teacher logits %s: %s", "cache hit" if hit else "computed", cached)
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(cached, out_dir)
    meta = json.loads((out_dir / "index.json").read_text())["meta"]
    return {**meta, "cache_key": key}, hit


class OfflineTargets:
    """Looks up each example's stored positions: (ids [N,k], logp [N,k]) in batch row order."""

    def __init__(self, store_dir: Path, kd: KDConfig):
        import numpy as np

        index = json.loads((Path(store_dir) / "index.json").read_text())
        meta = index["meta"]
        for key in ("temperature", "top_k", "store_dtype"):
            if meta[key] != getattr(kd, key):
                raise ValueError(f"teacher_logits in {store_dir} were stored with {key}={meta[key]}, "
                                 f"the trainer asks for {getattr(kd, key)}; rerun the teacher_logits stage")
        self.meta, self.rows = meta, index["rows"]
        self.ids = np.load(Path(store_dir) / "ids.npy", mmap_mode="r")
        self.logp = np.load(Path(store_dir) / "logp.npy", mmap_mode="r")

    def targets(self, examples, device: str):
        import numpy as np
        import torch

        parts_i, parts_l = [], []
        for e in examples:
            hit = self.rows.get(row_key(e))
            if hit is None:
                raise KeyError("a training row has no stored teacher logits (its token ids differ from the "
                               "rows the teacher_logits stage saw: another tokenizer or train.jsonl?)")
            off, n = hit
            parts_i.append(self.ids[off:off + n])
            parts_l.append(self.logp[off:off + n])
        ids = torch.from_numpy(np.concatenate(parts_i).astype(np.int64)).to(device)
        logp = torch.from_numpy(np.concatenate(parts_l).astype(np.float32)).to(device)
        return ids, logp
