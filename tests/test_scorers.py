"""Scorers against values worked out by hand and against a slow per-sequence computation."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_reward_model

from rmtension.model.encode import EncodedPairs
from rmtension.neurons.hooks import capture, hook_names
from rmtension.neurons.scorers import (
    SCORERS,
    NeuronSums,
    attribution_sums,
    fire_counts,
    real_tokens,
    score_neurons,
    sq_change_sums,
)

# ---- hand-made tensors -----------------------------------------------------------------------

# 2 pairs -> 4 rows (chosen 0-1, rejected 2-3), T = 3, N = 2. Padded positions hold 100 so any
# leak of padding into a score is obvious.
ACTS = torch.tensor(
    [
        [[1.0, -1.0], [3.0, 0.0], [100.0, 100.0]],  # chosen 0, 2 real tokens
        [[2.0, 2.0], [100.0, 100.0], [100.0, 100.0]],  # chosen 1, 1 real token
        [[0.0, 4.0], [-2.0, 1.0], [5.0, -3.0]],  # rejected 0, 3 real tokens
        [[-1.0, 0.5], [100.0, 100.0], [100.0, 100.0]],  # rejected 1, 1 real token
    ]
)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])


def test_real_tokens_and_fire_counts_ignore_padding():
    real = real_tokens(ACTS, MASK)
    assert real.dtype == torch.float32
    assert real.tolist() == [
        [1.0, -1.0],
        [3.0, 0.0],
        [2.0, 2.0],
        [0.0, 4.0],
        [-2.0, 1.0],
        [5.0, -3.0],
        [-1.0, 0.5],
    ]
    # activations > 0 over the 7 real tokens: neuron 0 -> 1, 3, 2, 5 ; neuron 1 -> 2, 4, 1, 0.5
    assert fire_counts(real).tolist() == [4, 4]


def test_bf16_activations_accumulate_like_float32():
    """Under autocast the hook sees bf16; the sums must equal those of the same values in float32."""
    acts = ACTS.to(torch.bfloat16)  # every value in ACTS is exact in bf16
    low, high = NeuronSums.zeros(1, 2), NeuronSums.zeros(1, 2)
    for sums, a in ((low, acts), (high, acts.float())):
        sums.add_batch(MASK)
        sums.add_layer(0, a, MASK, base=torch.ones_like(a))
        sums.add_attribution(0, a, torch.full_like(a, 2.0), MASK)
    for name, value in low.finalize().items():
        torch.testing.assert_close(value, high.finalize()[name], msg=name)


def test_sq_change_and_attribution_by_hand():
    real = real_tokens(ACTS, MASK)
    base = torch.ones_like(real)
    # (a - 1)^2 over real tokens, neuron 0: 0 + 4 + 1 + 1 + 9 + 16 + 4 = 35
    # neuron 1: 4 + 1 + 1 + 9 + 0 + 16 + 0.25 = 31.25
    assert sq_change_sums(real, base).tolist() == [35.0, 31.25]
    grads = real_tokens(torch.full_like(ACTS, 2.0), MASK)
    # 2 * sum of real activations: neuron 0: 2 * 8 = 16 ; neuron 1: 2 * 3.5 = 7
    assert attribution_sums(real, grads).tolist() == [16.0, 7.0]


def test_finalize_by_hand():
    sums = NeuronSums.zeros(1, 2)
    sums.add_batch(MASK)
    sums.add_layer(0, ACTS, MASK, base=torch.ones_like(ACTS))
    sums.add_attribution(0, ACTS, torch.full_like(ACTS, 2.0), MASK)
    s = sums.finalize()
    assert sums.tokens == 7 and sums.chosen_tokens == 3 and sums.pairs == 2
    torch.testing.assert_close(s["mean_act"], torch.tensor([[8 / 7, 3.5 / 7]]))
    torch.testing.assert_close(s["fire_rate"], torch.tensor([[4 / 7, 4 / 7]]))
    torch.testing.assert_close(s["rms_change"], torch.tensor([[(35 / 7) ** 0.5, (31.25 / 7) ** 0.5]]))
    torch.testing.assert_close(s["attribution"], torch.tensor([[16 / 2, 7 / 2]]))
    # chosen tokens: neuron 0 (1 + 3 + 2) / 3, rejected (0 - 2 + 5 - 1) / 4
    torch.testing.assert_close(s["contrast"], torch.tensor([[6 / 3 - 2 / 4, 1 / 3 - 2.5 / 4]]))
    assert set(s) == set(SCORERS) and all(v.dtype == torch.float32 and v.shape == (1, 2) for v in s.values())


# ---- a tiny model, the slow way --------------------------------------------------------------


def _pairs() -> EncodedPairs:
    g = torch.Generator().manual_seed(0)
    lengths = [(9, 4), (3, 7), (6, 6), (2, 10), (5, 3)]
    tok = lambda n: (torch.randint(4, 260, (n,), generator=g)).tolist()  # noqa: E731  (no pad id 0 inside)
    return EncodedPairs(
        [f"p{i}" for i in range(len(lengths))],
        [tok(a) for a, _ in lengths],
        [tok(b) for _, b in lengths],
        0,
        0,
    )


def _slow_scores(model, base, enc: EncodedPairs) -> dict[str, torch.Tensor]:
    """Every sequence alone (no padding), full activations kept, scores computed directly."""
    names = hook_names(model)
    acts = {"c": [], "r": []}
    attr = torch.zeros(len(names), 64)
    sq = torch.zeros(len(names), 64)
    for i in range(len(enc)):
        per_side, rewards = {}, {}
        for side, ids in (("c", enc.chosen[i]), ("r", enc.rejected[i])):
            x = torch.tensor([ids])
            with torch.enable_grad(), capture(model, detach=False) as cap:
                rewards[side] = model(input_ids=x).logits[0, 0]
            per_side[side] = [cap[n] for n in names]  # [1, T, N] per layer, in the graph
            with torch.no_grad(), capture(base) as cap_b:
                base(input_ids=x)
            for layer, n in enumerate(names):
                sq[layer] += ((cap[n][0].detach() - cap_b[n][0]) ** 2).sum(0)
            acts[side].append(torch.stack([a.detach()[0] for a in per_side[side]]))  # [L, T, N]
        margin = rewards["c"] - rewards["r"]
        flat = per_side["c"] + per_side["r"]
        grads = torch.autograd.grad(margin, flat)
        for k, (a, g) in enumerate(zip(flat, grads)):
            attr[k % len(names)] += (a.detach() * g)[0].sum(0)
    chosen = torch.cat(acts["c"], dim=1)  # [L, Tc_total, N]
    rejected = torch.cat(acts["r"], dim=1)
    every = torch.cat([chosen, rejected], dim=1)
    return {
        "mean_act": every.mean(1),
        "fire_rate": (every > 0).float().mean(1),
        "rms_change": (sq / every.shape[1]).sqrt(),
        "attribution": attr / len(enc),
        "contrast": chosen.mean(1) - rejected.mean(1),
    }


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2", "gpt_neox"])
def test_streaming_scores_match_slow_computation(family):
    model = tiny_reward_model(family, seed=0)
    base = tiny_reward_model(family, seed=1)
    enc = _pairs()
    expected = _slow_scores(model, base, enc)
    got = score_neurons({"rm": model}, enc, pad_id=0, base=base, batch_size=2, bf16=False)["rm"]
    assert got.n_pairs == 5 and got.n_tokens == sum(map(len, enc.chosen + enc.rejected))
    for name in SCORERS:
        assert got.scores[name].shape == (2, 64)
        torch.testing.assert_close(got.scores[name], expected[name], atol=2e-5, rtol=1e-4, msg=name)
    assert all(p.requires_grad for p in model.parameters()), "parameters must be unfrozen afterwards"
    # Forward-only scorers stop each forward after the last layer's activations: same values.
    quick = score_neurons(
        {"rm": model}, enc, pad_id=0, scorers=["mean_act", "fire_rate", "contrast"], batch_size=3, bf16=False
    )["rm"]
    for name in quick.scores:
        torch.testing.assert_close(quick.scores[name], expected[name], atol=2e-5, rtol=1e-4, msg=name)
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_several_models_in_one_pass_match_separate_passes():
    enc = _pairs()
    models = {"a": tiny_reward_model("llama", seed=0), "b": tiny_reward_model("llama", seed=2)}
    base = tiny_reward_model("llama", seed=1)
    together = score_neurons(models, enc, 0, base=base, batch_size=3, bf16=False)
    for name, m in models.items():
        alone = score_neurons({name: m}, enc, 0, base=base, batch_size=3, bf16=False)[name]
        for s in SCORERS:
            torch.testing.assert_close(together[name].scores[s], alone.scores[s], atol=1e-6, rtol=1e-6)


def test_scorer_subset_and_errors():
    enc = _pairs()
    model = tiny_reward_model("gpt_neox")
    out = score_neurons({"m": model}, enc, 0, scorers=["mean_act", "contrast"], batch_size=4)["m"]
    assert set(out.scores) == {"mean_act", "contrast"}
    with pytest.raises(ValueError, match="base backbone"):
        score_neurons({"m": model}, enc, 0, scorers=["rms_change"])
    with pytest.raises(ValueError, match="unknown scorers"):
        score_neurons({"m": model}, enc, 0, scorers=["absolute"])
