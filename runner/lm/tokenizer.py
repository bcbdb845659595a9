"""A byte-level BPE tokenizer trained on the run's own training text, saved in Hugging Face format.

Byte-level means every string round-trips (no unknown token), which matters for SQL literals.
The chat template is ChatML-like; `<|im_end|>` is the end-of-turn and eos token, so generation
stops after the assistant's SQL exactly as it does for Qwen-style instruct models.
"""
from __future__ import annotations

from typing import Iterable

BOS, EOS, PAD = "<|bos|>", "<|im_end|>", "<|pad|>"
IM_START = "<|im_start|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START]

# The rendering of messages[:-1] + generation prompt is a strict prefix of the full rendering,
# which is what lets the trainers mask everything before the assistant's answer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


PRE_TOKENIZERS = ("bytelevel", "words")
# `words`: letters, digits, each punctuation mark and each space are separate pieces before BPE,
# so a word is the same tokens wherever it stands: ` Kilda` in a question and `Kilda'` in a SQL
# literal share their ids. GPT-2's byte-level regex glues the space to the word (`Ġkilda`) and
# reads `'s` as a contraction (`'st kilda'` -> `'s` `t`), so a value copied from the question
# into SQL needs different tokens: a small scratch student then learns to copy much more slowly.
_WORDS = r"\p{L}+|\p{N}+|[^\s\p{L}\p{N}]|\s"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                        pre_tokenizer: str = "bytelevel"):
    """Train a byte-level BPE on `texts`; return a transformers PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if pre_tokenizer == "words":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_WORDS), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                 model_max_length=4096, padding_side="left", clean_up_tokenization_spaces=False)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def chat_texts(rows: Iterable[dict]) -> Iterable[str]:
    """Every message content of chat rows: the text the tokenizer is trained on."""
    for row in rows:
        for m in row["messages"]:
            yield m["content"]
