"""`student=hf`: a pretrained model from a local Hugging Face folder or a hub id, loaded the same way."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runner.stage import ConfigError


class HFStudent:
    from_scratch = False

    def __init__(self, model: str, revision: str | None = None, trust_remote_code: bool = False,
                 link_local: bool = True):
        self.model, self.revision = model, revision
        self.trust_remote_code = trust_remote_code
        self.link_local = link_local

    @property
    def description(self) -> str:
        return f"hf:{self.model}"

    def validate(self, where: str) -> None:
        if not self.model:
            raise ConfigError(f"{where}: student.model is empty; give a local folder or a hub id such as "
                              "Qwen/Qwen2.5-0.5B-Instruct")
        p = Path(os.path.expanduser(self.model))
        looks_local = self.model.startswith((".", "/", "~")) or p.exists()
        if looks_local and not (p / "config.json").exists():
            raise ConfigError(f"{where}: student.model={self.model!r} is not a Hugging Face model folder "
                              f"(no {p / 'config.json'}); give a folder saved with save_pretrained or a hub id")

    def build(self, train_rows: list[dict], out_dir: Path, seed: int) -> dict[str, Any]:
        """Link a local folder (no copy of the weights); download/load a hub id and save it."""
        src = Path(os.path.expanduser(self.model))
        if src.exists() and self.link_local:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            out_dir.symlink_to(src.resolve(), target_is_directory=True)
            return {"params": None, "source": str(src.resolve()), "linked": True}
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw = {"revision": self.revision, "trust_remote_code": self.trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(self.model, **kw)
        if tokenizer.chat_template is None:
            raise ConfigError(f"student.model={self.model!r} has no chat template; use an instruct model")
        model = AutoModelForCausalLM.from_pretrained(self.model, dtype="auto", **kw)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        return {"params": sum(p.numel() for p in model.parameters()), "source": self.model, "linked": False}
