"""Tiny in-process models and a byte-level tokenizer, so tests need no downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

FAMILIES = ("bert", "llama", "gpt2", "gpt_neox")
SPECIALS = ["<pad>", "<eos>", "<cls>", "<unk>"]
WORDS = ["apple", "tree", "house", "river", "sky", "stone", "cloud"]


def tiny_tokenizer(family: str = "llama", pad: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: every UTF-8 byte is a token (vocab 256 + specials)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    kwargs = dict(eos_token="<eos>", unk_token="<unk>")
    if family == "bert":
        tk.post_processor = processors.TemplateProcessing(
            single="<cls> $A <eos>", special_tokens=[("<cls>", vocab["<cls>"]), ("<eos>", vocab["<eos>"])]
        )
        kwargs["cls_token"] = "<cls>"
    if pad:
        kwargs["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tk, **kwargs)


def tiny_config(family: str, vocab_size: int = 260, layers: int = 2, hidden: int = 32, mlp: int = 64):
    common = dict(vocab_size=vocab_size, num_labels=1, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if family == "bert":
        return BertConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=mlp,
            max_position_embeddings=512,
            **common,
        )
    if family == "llama":
        return LlamaConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=mlp,
            max_position_embeddings=512,
            **common,
        )
    if family == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=2, n_inner=mlp, n_positions=512, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=mlp,
            max_position_embeddings=512,
            **common,
        )
    raise ValueError(family)


def tiny_reward_model(family: str = "llama", seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(family, **kw))
    model.eval()
    return model


def tiny_causal_lm(family: str = "llama", seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = tiny_config(family, **kw)
    model = AutoModelForCausalLM.from_config(cfg)
    model.eval()
    return model


def save_tiny(dirpath: Path, family: str = "llama", causal: bool = False, seed: int = 0) -> Path:
    """A loadable HF folder (safetensors + tokenizer) for CLI and study tests."""
    model = (tiny_causal_lm if causal else tiny_reward_model)(family, seed=seed)
    model.save_pretrained(dirpath, safe_serialization=True)
    tiny_tokenizer(family).save_pretrained(dirpath)
    return Path(dirpath)


def word_batch(tok, n=6, seed=0) -> dict[str, torch.Tensor]:
    """n sequences of random WORDS, of different lengths (so rows are padded), as a collated batch."""
    from rmtension.model.encode import collate, encode_texts

    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, 2 + 3 * i)) for i in range(n)]
    ids, _ = encode_texts(texts, tok, 64)
    return collate(ids, tok.pad_token_id)


def rewards_and_grads(model, b, bf16=False):
    """[B] rewards of batch `b` (first half chosen, second rejected) and the gradient of the pairwise loss
    w.r.t. every parameter that gets one; under CPU bf16 autocast if `bf16`."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        r = model(**b).logits.squeeze(-1).float()
    half = len(r) // 2
    (-F.logsigmoid(r[:half] - r[half:]).mean()).backward()
    return r.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
