"""Scorers against values worked out by hand and against a slow per-sequence computation."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_reward_model

from rmtension.model.encode import EncodedPairs
from rmtension.judges.hooks import capture, hook_names
from rmtension.judges.neurons import (
    BASE_SCORERS,
    SCORERS,
    NeuronSums,
    at_positions,
    attribution_sums,
    fire_counts,
    read_positions,
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


def test_read_position_mean_by_hand():
    # last real token of each row: positions 1, 0, 2, 0; values (3, 0), (2, 2), (5, -3), (-1, 0.5)
    assert read_positions(MASK, first=False).tolist() == [1, 0, 2, 0]
    assert read_positions(MASK, first=True).tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(
        at_positions(ACTS, read_positions(MASK, False)),
        torch.tensor([[3.0, 0.0], [2.0, 2.0], [5.0, -3.0], [-1.0, 0.5]]),
    )
    for first, want in ((False, [2.25, -0.125]), (True, [0.5, 1.375])):  # means of the four rows
        s = NeuronSums.zeros(1, 2)
        s.add_batch(MASK)
        s.read_at = read_positions(MASK, first)
        s.add_layer(0, ACTS, MASK)
        got = s.finalize(["mean_act"])
        torch.testing.assert_close(got["mean_act_read"][0], torch.tensor(want))
        # the token mean over the 7 real tokens is another number: (8 / 7, 0.5)
        torch.testing.assert_close(got["mean_act"][0], torch.tensor([8 / 7, 0.5]))


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
    fires = {
        "c": [],
        "r": [],
    }  # what fires: the activation, or the gate for gated MLPs (SiLU(g) > 0 iff g > 0)
    gated = model.config.model_type == "llama"
    assert not gated or model.config.hidden_act == "silu"
    attr = torch.zeros(len(names), 64)
    attr_read = torch.zeros(len(names), 64)
    read = []  # [L, N] per row: the activation where the head reads (BERT: position 0; else the last token)
    at = 0 if model.config.model_type == "bert" else -1
    sq = torch.zeros(len(names), 64)
    for i in range(len(enc)):
        per_side, rewards = {}, {}
        for side, ids in (("c", enc.chosen[i]), ("r", enc.rejected[i])):
            x = torch.tensor([ids])
            gate_out = []
            handles = (
                [
                    m.mlp.gate_proj.register_forward_hook(lambda m, a, o: gate_out.append(o[0].detach()))
                    for m in model.model.layers
                ]
                if gated
                else []
            )
            with torch.enable_grad(), capture(model, detach=False) as cap:
                rewards[side] = model(input_ids=x).logits[0, 0]
            for h in handles:
                h.remove()
            per_side[side] = [cap[n] for n in names]  # [1, T, N] per layer, in the graph
            with torch.no_grad(), capture(base) as cap_b:
                base(input_ids=x)
            for layer, n in enumerate(names):
                sq[layer] += ((cap[n][0].detach() - cap_b[n][0]) ** 2).sum(0)
            acts[side].append(torch.stack([a.detach()[0] for a in per_side[side]]))  # [L, T, N]
            fires[side].append(torch.stack(gate_out) if gated else acts[side][-1])
        margin = rewards["c"] - rewards["r"]
        flat = per_side["c"] + per_side["r"]
        grads = torch.autograd.grad(margin, flat)
        for k, (a, g) in enumerate(zip(flat, grads)):
            attr[k % len(names)] += (a.detach() * g)[0].sum(0)
            attr_read[k % len(names)] += (a.detach() * g)[0, at]
        read += [acts[side][-1][:, at] for side in ("c", "r")]
    chosen = torch.cat(acts["c"], dim=1)  # [L, Tc_total, N]
    rejected = torch.cat(acts["r"], dim=1)
    every = torch.cat([chosen, rejected], dim=1)
    fire = torch.cat(fires["c"] + fires["r"], dim=1)
    return {
        "mean_act": every.mean(1),
        "fire_rate": (fire > 0).float().mean(1),
        "rms_change": (sq / every.shape[1]).sqrt(),
        "attribution": attr / len(enc),
        "contrast": chosen.mean(1) - rejected.mean(1),
        "mean_act_read": torch.stack(read).mean(0),
        "attribution_read": attr_read / len(enc),
    }


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2", "gpt_neox"])
def test_streaming_scores_match_slow_computation(family):
    model = tiny_reward_model(family, seed=0)
    base = tiny_reward_model(family, seed=1)
    enc = _pairs()
    expected = _slow_scores(model, base, enc)
    got = score_neurons({"rm": model}, enc, pad_id=0, base=base, batch_size=2, bf16=False)["rm"]
    assert got.n_pairs == 5 and got.n_tokens == sum(map(len, enc.chosen + enc.rejected))
    for name in (*SCORERS, "mean_act_read", "attribution_read"):
        assert got.scores[name].shape == (2, 64)
        torch.testing.assert_close(got.scores[name], expected[name], atol=2e-5, rtol=1e-4, msg=name)
    assert all(p.requires_grad for p in model.parameters()), "parameters must be unfrozen afterwards"
    # Forward-only scorers stop each forward after the last layer's activations: same values.
    quick = score_neurons(
        {"rm": model}, enc, pad_id=0, scorers=["mean_act", "fire_rate", "contrast"], batch_size=3, bf16=False
    )["rm"]
    assert "attribution_read" not in quick.scores
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
    assert set(out.scores) == {"mean_act", "contrast", "mean_act_read"}  # the read position beside
    with pytest.raises(ValueError, match="base backbone"):
        score_neurons({"m": model}, enc, 0, scorers=["rms_change"])
    with pytest.raises(ValueError, match="unknown scorers"):
        score_neurons({"m": model}, enc, 0, scorers=["absolute"])


# ---- per-pair sums: a re-split is a re-aggregation --------------------------------------------


def test_per_pair_sums_by_hand():
    """The batch's pairs sit at positions [1, 0]: batch row 0 is pair 1, batch row 1 is pair 0."""
    sums = NeuronSums.zeros(1, 2, pairs=2)
    sums.add_batch(MASK, [1, 0])
    sums.add_layer(0, ACTS, MASK, base=torch.ones_like(ACTS))
    sums.add_attribution(0, ACTS, torch.full_like(ACTS, 2.0), MASK)
    pp = sums.per_pair
    assert pp.chosen_tokens.tolist() == [1, 2] and pp.rejected_tokens.tolist() == [1, 3]
    # pair 1: chosen [1,-1],[3,0]; rejected [0,4],[-2,1],[5,-3]. pair 0: chosen [2,2]; rejected [-1,0.5]
    assert pp.stats["act_chosen"][:, 0].tolist() == [[2, 2], [4, -1]]
    assert pp.stats["act_rejected"][:, 0].tolist() == [[-1, 0.5], [3, 2]]
    assert pp.stats["fire"][:, 0].tolist() == [[1, 2], [3, 2]]
    # (a - 1)^2: pair 0 -> [1 + 4, 1 + 0.25]; pair 1 -> [0 + 4 + 1 + 9 + 16, 4 + 1 + 9 + 0 + 16]
    assert pp.stats["sq_change"][:, 0].tolist() == [[5, 1.25], [30, 30]]
    assert pp.stats["attr"][:, 0].tolist() == [[2, 5], [14, 2]]
    got = pp.aggregate(torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]]), SCORERS)
    # pair 0 alone, and pair 0 twice (a bootstrap weight of 2 leaves every ratio as it is)
    for r in (0, 2):
        torch.testing.assert_close(got["mean_act"][r, 0], torch.tensor([0.5, 1.25], dtype=torch.float64))
        torch.testing.assert_close(got["contrast"][r, 0], torch.tensor([3.0, 1.5], dtype=torch.float64))
        torch.testing.assert_close(got["fire_rate"][r, 0], torch.tensor([0.5, 1.0], dtype=torch.float64))
        torch.testing.assert_close(got["attribution"][r, 0], torch.tensor([2.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(
        got["rms_change"][0, 0], torch.tensor([2.5**0.5, 0.625**0.5], dtype=torch.float64)
    )
    for name, value in sums.finalize().items():  # weights all 1: the full-data scores
        torch.testing.assert_close(got[name][1].float(), value, msg=name)
    with pytest.raises(ValueError, match="positions"):
        NeuronSums.zeros(1, 2, pairs=2).add_batch(MASK)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_resplit_equals_rescoring_from_scratch(family):
    enc = _pairs()
    model, base = tiny_reward_model(family, seed=0), tiny_reward_model(family, seed=1)
    full = score_neurons({"rm": model}, enc, 0, base=base, batch_size=2, bf16=False, per_pair=True)["rm"]
    pp = full.pair_sums
    assert pp.n_pairs == 5 and pp.stats["act_chosen"].shape == (5, 2, 64)
    # a subset (a pseudo-objective) and a bootstrap resample (pair 0 twice, pair 2 once, pair 4 once)
    cases = [([0, 3, 4], [1, 0, 0, 1, 1]), ([0, 0, 2, 4], [2, 0, 1, 0, 1]), (list(range(5)), [1] * 5)]
    weights = torch.tensor([w for _, w in cases], dtype=torch.float64)
    got = pp.aggregate(weights, SCORERS)
    for r, (idx, _) in enumerate(cases):
        again = score_neurons({"rm": model}, enc.subset(idx), 0, base=base, batch_size=3, bf16=False)["rm"]
        for name in SCORERS:
            torch.testing.assert_close(
                got[name][r].float(), again.scores[name], atol=2e-5, rtol=1e-4, msg=name
            )


def test_base_backbone_scored_in_the_same_pass():
    enc = _pairs()
    model, base = tiny_reward_model("gpt2", seed=0), tiny_reward_model("gpt2", seed=1)
    out = score_neurons({"rm": model}, enc, 0, base=base, batch_size=2, bf16=False, score_base=True)
    alone = score_neurons({"b": base}, enc, 0, scorers=BASE_SCORERS, batch_size=4, bf16=False)["b"]
    assert set(BASE_SCORERS) == {"mean_act", "fire_rate", "contrast"}
    assert set(out["base"].scores) == {*BASE_SCORERS, "mean_act_read"}
    for name in (*BASE_SCORERS, "mean_act_read"):
        torch.testing.assert_close(out["base"].scores[name], alone.scores[name], atol=2e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="base backbone"):
        score_neurons({"rm": model}, enc, 0, score_base=True)


# ---- gated MLPs: the sign of act(gate) * up is not identifiable -------------------------------


def test_gated_flip_leaves_output_ranking_and_fire_rate_unchanged():
    import copy

    from rmtension.model.encode import collate_pairs
    from rmtension.judges.select import ranked_by_magnitude, top_percent

    enc = _pairs()
    model = tiny_reward_model("llama", seed=0)
    before = score_neurons({"m": model}, enc, 0, scorers=["mean_act", "fire_rate"], bf16=False)["m"]
    assert before.meta["gated"] == "true"
    layer, j = 0, int(before.scores["mean_act"][0].argmax())  # the top neuron of layer 0 by signed mean
    flipped = copy.deepcopy(model)
    mlp = flipped.model.layers[layer].mlp
    with torch.no_grad():
        mlp.up_proj.weight[j] *= -1
        mlp.down_proj.weight[:, j] *= -1
    batch = collate_pairs(enc, range(len(enc)), 0)
    with torch.no_grad():
        torch.testing.assert_close(flipped(**batch).logits, model(**batch).logits, atol=1e-6, rtol=1e-6)
    after = score_neurons({"m": flipped}, enc, 0, scorers=["mean_act", "fire_rate"], bf16=False)["m"]
    torch.testing.assert_close(after.scores["fire_rate"], before.scores["fire_rate"], atol=0, rtol=0)
    assert after.scores["mean_act"][layer, j] == pytest.approx(-float(before.scores["mean_act"][layer, j]))
    torch.testing.assert_close(after.scores["mean_act"].abs(), before.scores["mean_act"].abs())
    assert ranked_by_magnitude("mean_act", [], gated=True) and not ranked_by_magnitude(
        "mean_act", [], gated=False
    )
    for p in (5, 20):
        same = [top_percent(s.scores["mean_act"], p, magnitude=True) for s in (before, after)]
        assert torch.equal(same[0], same[1])
    # the signed ranking is not invariant: the flipped neuron leaves the signed top set
    signed = [top_percent(s.scores["mean_act"], 5) for s in (before, after)]
    assert signed[0][layer, j] and not signed[1][layer, j]


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_scores_over_a_trunk_cache_equal_the_full_forward_on_the_blocks_above_it(family):
    """RMs that trained their top two blocks of three over the base's frozen block 0: scored from the
    cached trunk, every scorer (base and gradient ones too) gives the full pass's values there."""
    from rmtension.model.trunk import TrunkCache, trunk_fingerprint

    base = tiny_reward_model(family, seed=1, layers=3)
    model = tiny_reward_model(family, seed=1, layers=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".0." not in name and "embed" not in name and "wte" not in name and "wpe" not in name:
                p.add_(0.05 * torch.randn_like(p))  # training changed everything above block 0
    enc = _pairs()
    cache = TrunkCache(2, trunk_fingerprint(model, 2))
    assert cache.fingerprint == trunk_fingerprint(base, 2)  # the trunk is the base's
    cache.add(model, enc, 0, batch_size=2, bf16=False)
    full = score_neurons({"rm": model}, enc, 0, base=base, batch_size=2, bf16=False, per_pair=True)["rm"]
    top = score_neurons(
        {"rm": model}, enc, 0, base=base, batch_size=2, bf16=False, per_pair=True, cache=cache
    )["rm"]
    for name in SCORERS:
        assert top.scores[name].shape == (2, 64)
        torch.testing.assert_close(top.scores[name], full.scores[name][1:], atol=2e-5, rtol=1e-4, msg=name)
    for stat, v in top.pair_sums.stats.items():
        torch.testing.assert_close(v, full.pair_sums.stats[stat][:, 1:], atol=1e-4, rtol=1e-4, msg=stat)
    assert len(list(model.base_model.modules())) == len(list(base.base_model.modules()))  # restored
    other = tiny_reward_model(family, seed=3, layers=3)  # another trunk: refused
    with pytest.raises(ValueError, match="trunk cache"):
        score_neurons({"rm": other}, enc, 0, scorers=["mean_act"], batch_size=2, bf16=False, cache=cache)
