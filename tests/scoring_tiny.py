"""A tiny randomly initialised causal LM + byte-level BPE tokenizer with a chat template, saved to a folder.

Used by the scoring tests: siftkit loads it through the real code path (``from_pretrained(folder)``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "What is the capital of France? Paris is the capital.",
    "Write a short poem about the sea and the sky.", "Two plus two equals four; 1 2 3 4 5 6 7 8 9 0.",
    "Explain how photosynthesis works in simple words.", "Sure! Here is a list: apples, pears, plums.",
    "User: hello there\nAssistant: hi, how can I help you today?", "### Instruction:\n### Response:\n",
]


def build_tiny_lm(folder: Path, *, seed: int = 0, chat_template: bool = True) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>",
                                  eos_token="<|im_end|>", chat_template=CHATML if chat_template else None)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():   # larger logits than the default init, so scores differ clearly between samples
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def msgs(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in turns]


def pool_table(convs: list[list[dict[str, str]]], ids: list[str] | None = None) -> pa.Table:
    n = len(convs)
    mtype = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    return pa.table({"id": ids or [f"r{i}" for i in range(n)], "source": ["t"] * n, "file": ["f"] * n,
                     "row": list(range(n)), "line": list(range(n)), "messages": pa.array(convs, type=mtype),
                     "original": [""] * n})


SAMPLES = [
    msgs(("user", "What is the capital of France?"), ("assistant", "Paris is the capital.")),
    msgs(("system", "You are terse."), ("user", "Write a short poem about the sea."),
         ("assistant", "The sea and the sky, blue on blue.")),
    msgs(("user", "hello there"), ("assistant", "hi, how can I help you today?"),
         ("user", "Explain how photosynthesis works in simple words."),
         ("assistant", "Plants use light to make sugar from water and air.")),
    msgs(("user", "Two plus two?"), ("assistant", "four")),
    msgs(("user", "Give a list of fruit."), ("assistant", "Sure! Here is a list: apples, pears, plums.")),
]
