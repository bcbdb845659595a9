"""`student=scratch`: a small Llama initialised at random, with a BPE tokenizer trained on the run's data.

The offline default: no download, and the result is an ordinary Hugging Face folder
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json with the chat template),
loadable by transformers, mlx-lm and vLLM.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.core.stage import ConfigError, check_choice, check_range
from runner.lm.tokenizer import PRE_TOKENIZERS, chat_texts, train_bpe_tokenizer

ARCH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size")


class ScratchStudent:
    from_scratch = True

    def __init__(self, size: str, sizes: dict[str, dict[str, Any]], max_position_embeddings: int = 1024,
                 tie_word_embeddings: bool = True, rope_theta: float = 10000.0, min_frequency: int = 2,
                 pre_tokenizer: str = "bytelevel"):
        self.size, self.sizes = size, sizes
        self.max_position_embeddings = max_position_embeddings
        self.tie_word_embeddings = tie_word_embeddings
        self.rope_theta = rope_theta
        self.min_frequency = min_frequency
        self.pre_tokenizer = pre_tokenizer

    @property
    def description(self) -> str:
        return f"scratch:{self.size}"

    def validate(self, where: str) -> None:
        check_choice(where, "student.size", self.size, self.sizes.keys())
        arch = self.sizes[self.size]
        missing = [k for k in ARCH_KEYS if k not in arch]
        if missing:
            raise ConfigError(f"student.sizes.{self.size} lacks {missing}; every size needs {list(ARCH_KEYS)}")
        if arch["hidden_size"] % arch["num_attention_heads"]:
            raise ConfigError(f"student.sizes.{self.size}: hidden_size must be divisible by num_attention_heads")
        if arch["num_attention_heads"] % arch["num_key_value_heads"]:
            raise ConfigError(f"student.sizes.{self.size}: num_attention_heads must be a multiple of "
                              "num_key_value_heads")
        check_range(where, "student.max_position_embeddings", self.max_position_embeddings, 16)
        check_choice(where, "student.pre_tokenizer", self.pre_tokenizer, PRE_TOKENIZERS)

    def build(self, train_rows: list[dict], out_dir: Path, seed: int) -> dict[str, Any]:
        """Train the tokenizer on the training chats, build the model, save both to out_dir."""
        tokenizer = train_bpe_tokenizer(chat_texts(train_rows), self.sizes[self.size]["vocab_size"],
                                        self.min_frequency, self.pre_tokenizer)
        return self.build_with(tokenizer, out_dir, seed)

    def build_with(self, tokenizer, out_dir: Path, seed: int) -> dict[str, Any]:
        """A random-init model of this size over `tokenizer` (its vocabulary sets vocab_size), saved
        with the tokenizer to out_dir. Logit KD builds a student on its teacher's tokenizer here."""
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        arch = {k: v for k, v in self.sizes[self.size].items() if k != "vocab_size"}
        config = LlamaConfig(
            vocab_size=len(tokenizer), max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings, rope_theta=self.rope_theta,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **arch)
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        return {"params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer)}
