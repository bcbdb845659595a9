"""`student=hf`: a pretrained model from a local Hugging Face folder or a hub id, loaded the same way."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runner.core.stage import ConfigError


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
            raise ConfigError("student.model is empty; give a local folder or a hub id such as "
                              "Qwen/Qwen2.5-0.5B-Instruct")
        p = Path(os.path.expanduser(self.model))
        looks_local = self.model.startswith((".", "/", "~")) or p.exists()
        if looks_local and not (p / "config.json").exists():
            raise ConfigError(f"student.model={self.model!r} is not a Hugging Face model folder "
                              f"(no {p / 'config.json'}); give a folder saved with save_pretrained or a hub id")
        if not looks_local:
            hub_reachable(self.model, self.revision)


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


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(model: str, revision: str | None, timeout_s: float = 5.0) -> None:
    """A hub id must be in the local HF cache or downloadable NOW, at validation: otherwise the
    run would fail at student_init, after the teacher's requests were paid for."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json", revision=revision), str):
        return  # cached (weights are fetched with it; transformers loads it offline)
    fix = (f"Fix: student.model=/path/to/a/local/folder (saved with save_pretrained), or fetch it once with "
           f"network: `huggingface-cli download {model}`")
    if _offline():
        raise ConfigError(f"student.model={model!r} is a hub id that is not in the local Hugging Face cache, "
                          f"and HF_HUB_OFFLINE is set, so it cannot be downloaded. {fix} (without HF_HUB_OFFLINE).")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(model, revision=revision, timeout=timeout_s)
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise ConfigError(f"student.model={model!r} was not found on the Hugging Face hub "
                          f"({type(e).__name__}; a private model needs HF_TOKEN). {fix}") from None
    except Exception as e:  # noqa: BLE001 - DNS, refused, timeout, proxy: the hub is unreachable
        raise ConfigError(f"student.model={model!r} is a hub id that is not in the local Hugging Face cache, "
                          f"and the hub is unreachable ({type(e).__name__}: {str(e)[:160]}). {fix}") from None
