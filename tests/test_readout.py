"""The last block run at the position the score head reads: the same rewards and gradients as in full."""

import numpy as np
import pytest
import torch

from rmtension.model.arch import blocks
from rmtension.model.encode import EncodedPairs, encode_texts
from rmtension.model.forward import PairForward
from rmtension.model.readout import read_first, reads_first
from rmtension.model.scope import set_trainable
from rmtension.model.trunk import TrunkCache, trunk_fingerprint
from tiny import FAMILIES, WORDS, rewards_and_grads, tiny_reward_model, tiny_tokenizer, word_batch


def test_bert_last_block_at_position_0_gives_the_full_rewards_and_gradients():
    tok = tiny_tokenizer("bert")
    model = tiny_reward_model("bert", layers=3)
    set_trainable(model, "top:2")
    b = word_batch(tok)
    assert b["attention_mask"].min() == 0  # padded rows: the mask must be cut with the query
    full_r, full_g = rewards_and_grads(model, b)
    with read_first(model) as on:
        assert on
        cut_r, cut_g = rewards_and_grads(model, b)
    torch.testing.assert_close(cut_r, full_r, atol=1e-5, rtol=1e-5)
    assert set(cut_g) == set(full_g) and any("layer.1" in n for n in full_g)
    for name in full_g:
        torch.testing.assert_close(cut_g[name], full_g[name], atol=1e-5, rtol=1e-4, msg=name)


def test_inside_the_block_only_position_0_is_computed_and_everything_is_restored_after():
    tok = tiny_tokenizer("bert")
    model = tiny_reward_model("bert")
    b = word_batch(tok)
    seen = []
    handle = blocks(model)[-1].output.dense.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    with read_first(model):
        model(**b)
    model(**b)
    handle.remove()
    t = b["input_ids"].shape[1]
    assert seen[0][1] == 1 and seen[1][1] == t  # the MLP ran at one position inside, at every one after
    attn = blocks(model)[-1].attention
    assert "forward" not in vars(attn.self) and not attn.output._forward_pre_hooks


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "bert"])
def test_models_whose_head_reads_elsewhere_are_left_whole(family):
    model = tiny_reward_model(family)
    assert not reads_first(model)
    with read_first(model) as on:
        assert not on
        assert not any(m._forward_pre_hooks for m in model.modules())


def test_a_model_with_another_head_class_is_left_whole():
    class Other(torch.nn.Module):  # the same BERT body under a head that might read other positions
        def __init__(self, inner):
            super().__init__()
            self.bert = inner.bert

        @property
        def base_model(self):
            return self.bert

    assert reads_first(tiny_reward_model("bert"))
    assert not reads_first(Other(tiny_reward_model("bert")))


def test_pair_forward_over_a_trunk_cache_scores_as_the_full_model():
    tok = tiny_tokenizer("bert")
    rng = np.random.default_rng(1)
    ctx = [" ".join(rng.choice(WORDS, 1 + i % 5)) for i in range(10)]
    c, _ = encode_texts([f"H: {x} A: good" for x in ctx], tok, 48)
    r, _ = encode_texts([f"H: {x} A: bad {x}" for x in ctx], tok, 48)
    enc = EncodedPairs([f"p{i}" for i in range(10)], c, r, 0, 0)
    model = tiny_reward_model("bert", layers=3)
    k = set_trainable(model, "top:1")
    full = PairForward(model, tok.pad_token_id, False, read_first=False).score(enc, batch_size=4)
    cache = TrunkCache(k, trunk_fingerprint(model, k))
    cache.add(model, enc, tok.pad_token_id, batch_size=3, bf16=False)
    with PairForward(model, tok.pad_token_id, False, cache) as fwd:
        assert "forward" in vars(blocks(model)[-1].attention.self)  # the cut is on
        cut = fwd.score(enc, batch_size=4)
    np.testing.assert_allclose(cut[0], full[0], atol=1e-5)
    np.testing.assert_allclose(cut[1], full[1], atol=1e-5)
