"""BERT self-attention with a fused QKV projection: the module's own rewards and gradients."""

import pytest
import torch
import torch.nn.functional as F

from rmtension.model.arch import blocks
from rmtension.model.attention import fused_attention
from rmtension.model.readout import read_first
from tiny import FAMILIES, rewards_and_grads, tiny_reward_model, tiny_tokenizer, word_batch


def assert_same(got, want, atol=1e-5, rtol=1e-4):
    (r, g), (r0, g0) = got, want
    torch.testing.assert_close(r, r0, atol=atol, rtol=rtol)
    assert set(g) == set(g0)
    for name in g0:
        if name.endswith("key.bias"):  # softmax ignores a shift of every key: its gradient is rounding noise
            continue
        torch.testing.assert_close(g[name], g0[name], atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize("last_read_first", [False, True])
def test_fused_attention_gives_the_modules_rewards_and_gradients(last_read_first):
    tok = tiny_tokenizer("bert")
    model = tiny_reward_model("bert", layers=3)
    b = word_batch(tok)
    assert b["attention_mask"].min() == 0  # padded rows: the mask must reach the fused attention
    want = rewards_and_grads(model, b)
    with read_first(model, last_read_first), fused_attention(model) as on:
        assert on
        patched = ["forward" in vars(block.attention.self) for block in blocks(model)]
        got = rewards_and_grads(model, b)
    assert patched == [True, True, True]
    assert_same(got, want)
    assert not any("forward" in vars(block.attention.self) for block in blocks(model))  # restored


def test_read_first_keeps_its_own_last_block():
    model = tiny_reward_model("bert", layers=2)
    with read_first(model):
        mine = vars(blocks(model)[-1].attention.self)["forward"]
        with fused_attention(model):
            assert vars(blocks(model)[-1].attention.self)["forward"] is mine
        assert vars(blocks(model)[-1].attention.self)["forward"] is mine  # not removed by fused_attention


def test_under_cpu_autocast_the_attention_runs_in_fp32(monkeypatch):
    tok = tiny_tokenizer("bert")
    model = tiny_reward_model("bert", layers=2)
    b = word_batch(tok)
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return sdpa(q, k, v, **kwargs)

    want = rewards_and_grads(model, b, bf16=True)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with fused_attention(model):
        got = rewards_and_grads(model, b, bf16=True)
    assert seen == [(torch.float32, torch.float32, torch.float32, False)] * 2
    assert_same(got, want, atol=3e-2, rtol=3e-2)  # bf16 projections either way; fp32 attention is closer


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "bert"])
def test_other_families_are_left_whole(family):
    model = tiny_reward_model(family)
    with fused_attention(model) as on:
        assert not on
        assert not any("forward" in vars(m) for m in model.modules())


def test_eager_attention_masks_work_too():
    tok = tiny_tokenizer("bert")
    model = tiny_reward_model("bert", layers=2)
    model.config._attn_implementation = "eager"  # additive float masks instead of boolean ones
    b = word_batch(tok)
    want = rewards_and_grads(model, b)
    with fused_attention(model) as on:
        assert on
        got = rewards_and_grads(model, b)
    assert_same(got, want)
