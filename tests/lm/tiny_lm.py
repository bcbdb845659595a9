"""A random-init Llama with a byte-level BPE tokenizer trained on the spot, saved in HF format.

Used by the generation/provider/evaluation tests and by bench/student_generation.py (offline,
seeded, about a second). The fixtures at the end are imported by the test modules that use them.
"""
from __future__ import annotations

from pathlib import Path

import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus(n: int = 400) -> list[str]:
    cols = ["player", "team", "position", "year", "score", "country", "nationality", "school"]
    out = []
    for i in range(n):
        a, b = cols[i % len(cols)], cols[(i * 3 + 1) % len(cols)]
        out.append(f"What is the {a} when the {b} is value {i}? "
                   f'SELECT "{a}" FROM table_{i % 17} WHERE "{b}" = \'v{i}\' '
                   f"CREATE TABLE t (\"{a}\" text, \"{b}\" real)")
    return out


def build_tiny_lm(path: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                  intermediate: int | None = None, vocab: int = 512, seed: int = 0,
                  init_std: float = 0.3) -> Path:
    """Write tokenizer + chat template + random-init LlamaForCausalLM (fp32) to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>",
                                     bos_token="<|endoftext|>")
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(path)

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      pad_token_id=hf_tok.pad_token_id, eos_token_id=hf_tok.eos_token_id,
                      bos_token_id=hf_tok.bos_token_id)
    model = LlamaForCausalLM(cfg)
    # The default init (std 0.02) makes every row emit the same token; std 0.3 gives varied, decisive
    # greedy choices (as in a trained model), so batched-vs-sequential comparisons mean something.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, init_std)
    model.save_pretrained(path)
    return path


def conversations(n: int) -> list[list[dict[str, str]]]:
    """Chat prompts of clearly different lengths (so batches need padding)."""
    cols = ["player", "team", "year", "score", "school"]
    return [[{"role": "system", "content": "Return only the SQL query."},
             {"role": "user", "content": f'CREATE TABLE t ("{cols[i % 5]}" text)\n'
                                         + "Question: what is the " + " and the ".join(cols[:1 + i % 5])
                                         + f" for row {i}?" * (1 + i % 3)}]
            for i in range(n)]


# Fixtures (import them into a test module to use them).

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm") / "model")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from runner.lm.generate import load_torch_model

    model, tok, _ = load_torch_model(str(tiny_model_dir), device="cpu", dtype="float32")
    return model, tok
