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


def reference_lm(model, tok, conv: list[dict[str, str]]) -> dict[str, float]:
    """Unbatched, token-by-token-indexed reference: one forward per condition, shifted log-softmax."""
    import math

    import numpy as np
    import torch

    last = max(i for i, m in enumerate(conv) if m["role"] == "assistant")
    conv = conv[: last + 1]
    text = tok.apply_chat_template(conv, tokenize=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = enc["offset_mapping"]
    ys = text.rindex(conv[last]["content"])
    ye = ys + len(conv[last]["content"])
    x_spans, pos = [], 0
    for m in conv[:last]:
        at = text.index(m["content"], pos)
        x_spans.append((at, at + len(m["content"])))
        pos = at + len(m["content"])

    def overl(t, a, b):
        s, e = offs[t]
        return e > s and s < b and e > a

    resp = [t for t in range(1, len(offs)) if overl(t, ys, ye)]
    prm = [t for t in range(1, len(offs)) if any(overl(t, a, b) for a, b in x_spans)]
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    nll = [-logp[t - 1, ids[0, t]].item() for t in resp]
    ent = [-(logp[t - 1].exp() * logp[t - 1]).sum().item() for t in resp]
    pnll = [-logp[t - 1, ids[0, t]].item() for t in prm]
    header = tok.apply_chat_template([{"role": "assistant", "content": "\x00"}], tokenize=False).split("\x00")[0]
    hid = tok(header, add_special_tokens=False)["input_ids"]
    ids_b = torch.tensor([hid + [int(ids[0, t]) for t in resp]])
    with torch.no_grad():
        logp_b = torch.log_softmax(model(ids_b).logits[0].double(), -1)
    nll_b = [-logp_b[len(hid) + k - 1, ids_b[0, len(hid) + k]].item() for k in range(len(resp))]
    loss, alone = float(np.mean(nll)), float(np.mean(nll_b))
    return {"lm_loss": loss, "lm_entropy": float(np.mean(ent)), "lm_prompt_ppl": math.exp(np.mean(pnll)),
            "lm_loss_noprompt": alone, "lm_ifd": loss / alone, "lm_ifd_ppl": math.exp(loss - alone),
            "lm_tokens": len(resp)}


GPT2_CORPUS = ["### Response:-1 apple", "Assistant: The cat sat.", "User: hello\n\nAssistant: The dog ran.",
               "Human: what?\nAssistant:-2 pears", "Below is an instruction that describes a task.",
               "The quick brown fox jumps over the lazy dog.", "Write a poem:- short and sweet.\n"]


def build_tiny_gpt2(folder: Path, *, bos: bool = False, seed: int = 0) -> Path:
    """A tiny random GPT-2 with a GPT-2-style byte-level BPE tokenizer (GPT-2's pre-tokenisation regex, no chat
    template). ``bos=False``: like GPT-2, encoding adds no special token; ``bos=True``: every encoding starts
    with ``<s>`` (a Llama-like tokenizer). Trained so that ``":-"`` and ``" The"`` are single tokens."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<|endoftext|>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(GPT2_CORPUS * 8, trainer)
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>",
                                  bos_token="<s>" if bos else "<|endoftext|>")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():   # larger logits (tied head), so scores differ clearly between tokens
        model.transformer.wte.weight.mul_(4.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
