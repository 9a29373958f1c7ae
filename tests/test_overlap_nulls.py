"""The overlap nulls drawn from the scoring pairs: splits, statistics against brute force, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from rmtension.neurons.claims import claim_sets_differ
from rmtension.neurons.overlap_stage import learning_effects
from rmtension.neurons.nulls import (
    Draws,
    base_overlap,
    bootstrap_weights,
    jaccard_rows,
    mean_nulls,
    null_jaccards,
    overlap_nulls,
    permutation_p,
    permutation_weights,
    sets_differ_effect,
    split_half_weights,
    summary,
)
from rmtension.judges.pairsums import PairSums


def simulated(n: int, mu: torch.Tensor, noise: float, gen: torch.Generator) -> PairSums:
    """n pairs whose token activations are mu [L, N] plus noise: the per-pair sums of such data."""
    tc = torch.randint(5, 30, (n,), generator=gen).double()
    tr = torch.randint(5, 30, (n,), generator=gen).double()

    def side(t):
        eps = torch.randn(n, *mu.shape, generator=gen, dtype=torch.float64)
        return t[:, None, None] * mu + t.sqrt()[:, None, None] * noise * eps

    return PairSums({"act_chosen": side(tc), "act_rejected": side(tr)}, tc, tr)


def brute_top(scores: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The k largest of [L, N] (no ties in continuous data), as a set of (layer, index)."""
    flat = np.argsort(-scores.reshape(-1), kind="stable")[:k]
    return {divmod(int(i), scores.shape[1]) for i in flat}


def brute_mean_act(x: PairSums, idx: list[int]) -> np.ndarray:
    """mean_act from scratch over the pairs idx (repeats count again): all activation over all tokens."""
    act = sum(x.stats["act_chosen"][i] + x.stats["act_rejected"][i] for i in idx)
    tokens = sum(float(x.chosen_tokens[i] + x.rejected_tokens[i]) for i in idx)
    return (act / tokens).numpy()


def members(w: torch.Tensor) -> list[int]:
    """Row of weights -> the pairs it takes, each as often as its weight."""
    return [i for i, c in enumerate(w.tolist()) for _ in range(int(c))]


def test_splits_are_the_documented_partitions():
    g = torch.Generator().manual_seed(0)
    a, b = permutation_weights(7, 5, 30, g)
    assert a.shape == (30, 12) and (a.sum(1) == 7).all() and torch.equal(a + b, torch.ones(30, 12))
    assert len({tuple(r.tolist()) for r in a}) > 20  # the draws differ
    h1, h2 = split_half_weights(9, 30, g)
    assert (h1 * h2).sum() == 0, "split halves must be disjoint"
    assert torch.equal(h1 + h2, torch.ones(30, 9)) and (h1.sum(1) == 4).all() and (h2.sum(1) == 5).all()
    boot = bootstrap_weights(6, 400, g)
    assert (boot.sum(1) == 6).all() and (boot >= 0).all() and torch.equal(boot, boot.round())
    # each pair is drawn Binomial(6, 1/6) times: mean 1
    assert boot.mean().item() == pytest.approx(1.0, abs=0.05)


def test_small_statistics_by_hand():
    null = np.array([0.1, 0.2, 0.3, np.nan])
    assert permutation_p(null, 0.2) == pytest.approx((1 + 2) / 4)  # 0.1 and 0.2 are <= 0.2
    assert permutation_p(null, 0.05) == pytest.approx(1 / 4)
    s = summary(np.array([1.0, 2.0, 3.0, 4.0, np.nan]))
    assert (s["mean"], s["n"]) == (2.5, 4) and s["sd"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s["p2_5"] == pytest.approx(1.075) and s["p97_5"] == pytest.approx(3.925)
    e = sets_differ_effect(0.5, {"mean": 0.7, "sd": 0.03}, {"sd": 0.04})
    assert e["effect"] == pytest.approx(0.2) and e["se"] == pytest.approx(0.05)
    assert e["ci95"] == pytest.approx([0.2 - 1.959964 * 0.05, 0.2 + 1.959964 * 0.05], abs=1e-6)
    a = torch.tensor([[[True, True, False, False]], [[False, False, False, False]]])
    b = torch.tensor([[[True, False, True, False]], [[False, False, False, False]]])
    j = jaccard_rows(a, b)
    assert j[0] == pytest.approx(1 / 3) and np.isnan(j[1])
    top = base_overlap(
        torch.tensor([[4.0, 3.0, 2.0, 1.0]]), {"helpful": a[0], "harmless": b[0]}, 50, False, False
    )
    assert top == pytest.approx({"helpful": 1.0, "harmless": 1 / 3, "mean": 2 / 3})


def test_nulls_equal_brute_force_on_small_arrays():
    g = torch.Generator().manual_seed(1)
    L, N, k_pct = 2, 10, 20  # top 20% of 20 neurons: 4
    mu = torch.randn(L, N, generator=g, dtype=torch.float64)
    a, b = simulated(6, mu, 3.0, g), simulated(5, mu + 0.5 * torch.randn(L, N, generator=g).double(), 3.0, g)
    draws = Draws(6, 5, 8, seed=3)
    observed = 0.25
    got = overlap_nulls(a, b, "mean_act", [k_pct], {"20": observed}, draws)["20"]
    pool_idx = [("a", i) for i in range(6)] + [("b", i) for i in range(5)]

    def score(part: list[tuple[str, int]]) -> set:
        src = {"a": a, "b": b}
        act = sum(src[s].stats["act_chosen"][i] + src[s].stats["act_rejected"][i] for s, i in part)
        tok = sum(float(src[s].chosen_tokens[i] + src[s].rejected_tokens[i]) for s, i in part)
        return brute_top((act / tok).numpy(), 4)

    def jac(x: set, y: set) -> float:
        return len(x & y) / len(x | y)

    perm = [
        jac(score([pool_idx[i] for i in members(wa)]), score([pool_idx[i] for i in members(wb)]))
        for wa, wb in zip(*draws.perm)
    ]
    assert got["jaccard_permutation"]["mean"] == pytest.approx(np.mean(perm))
    assert got["jaccard_permutation"]["p_value"] == pytest.approx((1 + sum(x <= observed for x in perm)) / 9)
    assert got["jaccard_permutation"]["n"] == 8
    for name, x, (w1, w2) in (("helpful", a, draws.half_a), ("harmless", b, draws.half_b)):
        halves = [
            jac(brute_top(brute_mean_act(x, members(r1)), 4), brute_top(brute_mean_act(x, members(r2)), 4))
            for r1, r2 in zip(w1, w2)
        ]
        assert got["jaccard_split_half"][name]["mean"] == pytest.approx(np.mean(halves))
    boot = [
        jac(brute_top(brute_mean_act(a, members(ra)), 4), brute_top(brute_mean_act(b, members(rb)), 4))
        for ra, rb in zip(*draws.boot)
    ]
    assert got["jaccard_bootstrap"]["sd"] == pytest.approx(np.std(boot, ddof=1))
    se = np.sqrt(np.var(perm, ddof=1) + np.var(boot, ddof=1))
    assert got["sets_differ"]["effect"] == pytest.approx(np.mean(perm) - observed)
    assert got["sets_differ"]["se"] == pytest.approx(se)


def _placebo_p(
    gen: torch.Generator, mu: torch.Tensor, shift: torch.Tensor | None = None
) -> tuple[float, dict]:
    """One simulated study: helpful and harmless pairs from one distribution (or shifted), its nulls at top 20%."""
    a = simulated(20, mu, 12.0, gen)
    b = simulated(20, mu if shift is None else mu + shift, 12.0, gen)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    sa, sb = (x.scores(["mean_act"])["mean_act"] for x in (a, b))
    from rmtension.judges.select import top_percent

    observed = float(jaccard_rows(top_percent(sa, 20)[None], top_percent(sb, 20)[None])[0])
    out = overlap_nulls(a, b, "mean_act", [20], {"20": observed}, Draws(20, 20, 50, seed))["20"]
    return out["jaccard_permutation"]["p_value"], {**out, "jaccard": observed}


def test_permutation_p_values_are_uniform_on_placebo_data():
    """200 placebo studies (the two objectives' pairs from one distribution): p-values ~ U(0, 1).

    Ties (null Jaccards equal to the observed one) make the p-value conservative; with sets of 500
    neurons, the size of a real study's, they are rare (about 5% of the draws) and the KS test sees
    uniform p-values (with 120-neuron sets the ties are frequent enough to make it fail).
    """
    gen = torch.Generator().manual_seed(2026)
    mu = torch.randn(1, 2500, generator=gen, dtype=torch.float64)
    n, ps = 12, []
    for _ in range(200):
        a, b = simulated(n, mu, 12.0, gen), simulated(n, mu, 12.0, gen)
        pool = PairSums.pool([a, b])
        observed = null_jaccards(a, b, torch.ones(1, n), torch.ones(1, n), "mean_act", [20])["20"][0]
        null = null_jaccards(pool, pool, *permutation_weights(n, n, 50, gen), "mean_act", [20])["20"]
        ps.append(permutation_p(null, observed))
    ps = np.array(ps)
    assert stats.kstest(ps, "uniform").pvalue > 0.01
    assert 0.4 < ps.mean() < 0.6 and (ps <= 0.05).mean() < 0.1


def _study(gen: torch.Generator, mu: torch.Tensor, rm_shift=None, base_shift=None) -> dict:
    """An RM's overlap entry at top 20% with its `learning` (trained minus base, `learning_effects`): the RM's
    pairs and the untrained base's come from `mu`, the harmless ones moved by `rm_shift` / `base_shift`."""
    n = 20
    rm = {
        "helpful": simulated(n, mu, 12.0, gen),
        "harmless": simulated(n, mu if rm_shift is None else mu + rm_shift, 12.0, gen),
    }
    base = {
        "helpful": simulated(n, mu, 12.0, gen),
        "harmless": simulated(n, mu if base_shift is None else mu + base_shift, 12.0, gen),
    }
    draws = Draws(n, n, 50, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    from rmtension.judges.select import top_percent

    sa, sb = (rm[o].scores(["mean_act"])["mean_act"] for o in ("helpful", "harmless"))
    observed = float(jaccard_rows(top_percent(sa, 20)[None], top_percent(sb, 20)[None])[0])
    entry = {
        **overlap_nulls(rm["helpful"], rm["harmless"], "mean_act", [20], {"20": observed}, draws)["20"],
        "jaccard": observed,
    }
    doc = {"ps": [20], "per_layer": False}
    entry["learning"] = learning_effects(base, "mean_act", doc, False, draws, {"20": entry})["20"]
    # the base's own effect, recomputed: its sets' Jaccard and its permutation null on the same draws
    bh, bs = (base[o].scores(["mean_act"])["mean_act"] for o in ("helpful", "harmless"))
    base_obs = float(jaccard_rows(top_percent(bh, 20)[None], top_percent(bs, 20)[None])[0])
    b = overlap_nulls(base["helpful"], base["harmless"], "mean_act", [20], {"20": base_obs}, draws)["20"]
    d = entry["learning"]
    assert d["base_jaccard"] == pytest.approx(base_obs)
    assert d["effect"] == pytest.approx(entry["sets_differ"]["effect"] - b["sets_differ"]["effect"])
    assert d["se"] == pytest.approx(np.hypot(entry["sets_differ"]["se"], b["sets_differ"]["se"]))
    return {**entry, "rm": "mixed"}


def test_sets_differ_verdicts_placebo_text_and_learning():
    gen = torch.Generator().manual_seed(7)
    mu = torch.randn(2, 1000, generator=gen, dtype=torch.float64)
    shift = torch.zeros(2, 1000, dtype=torch.float64)
    shift[:, :500] = 1.5 * torch.randn(2, 500, generator=gen, dtype=torch.float64)
    placebo_verdicts = []
    for _ in range(3):
        c = claim_sets_differ({"mean_act": {"20": _study(gen, mu)}}, "mean_act", 20, 0.05, 0.1)
        placebo_verdicts.append(c.verdict)
        assert abs(c.effect["sets_differ"]) < 0.1
        assert c.min_effect == 0.1 and c.min_detectable_effect > 0 and set(c.ci95) == {"sets_differ"}
    assert "supported" not in placebo_verdicts
    assert "not supported" in placebo_verdicts  # the equivalence rule makes "not supported" reachable
    # text alone: the two objectives' inputs differ alike in the RM and in the untrained base: not learning
    text = _study(gen, mu, shift, shift)
    assert text["sets_differ"]["ci95"][0] > 0.1  # the RM's own difference is large ...
    c = claim_sets_differ({"mean_act": {"20": text}}, "mean_act", 20, 0.05, 0.1)
    assert (
        c.verdict != "supported" and abs(c.effect["sets_differ"]) < 0.1
    )  # ... but no larger than the base's
    # learning: the RM's sets differ where the base's do not
    c = claim_sets_differ({"mean_act": {"20": _study(gen, mu, shift)}}, "mean_act", 20, 0.05, 0.1)
    assert c.verdict == "supported" and c.ci95["sets_differ"][0] > 0
    assert (
        "the objectives' neuron sets differ more than sampling noise (top 20%, mean_act): **supported**."
        in c.sentence()
    )
    # the summary table's numbers: the observed and null Jaccard and the effect with its CI, from the claim
    n, ci = c.numbers, c.ci95["sets_differ"]
    assert f"Jaccard {n['jaccard']:.3f} vs {n['jaccard_permutation']:.3f}" in c.key
    assert f"{n['rm_effect'] - n['base_effect']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" in c.key
    # without the base's difference the claim cannot tell learning from text
    bare = {k: v for k, v in _study(gen, mu, shift).items() if k != "learning"}
    c = claim_sets_differ({"mean_act": {"20": bare}}, "mean_act", 20, 0.05, 0.1)
    assert c.verdict == "not testable here" and "trained-minus-base" in c.evidence
    assert c.test and c.null  # what would have been tested, for findings.json's schema
    # an old overlap.json without the null: inconclusive, with the reason
    old = claim_sets_differ({"mean_act": {"5": {"jaccard": 0.5}}}, "mean_act", 5, 0.05, 0.1)
    assert old.verdict == "inconclusive" and "no permutation null" in old.evidence


def test_mean_nulls_over_seeds():
    def entry(mean, p, lo, hi):
        s = {"mean": mean, "sd": 0.1, "p2_5": mean - 0.2, "p97_5": mean + 0.2, "n": 50}
        return {
            "jaccard_permutation": {**s, "p_value": p},
            "jaccard_split_half": {"helpful": s, "harmless": s, "mean": mean},
            "jaccard_bootstrap": s,
            "sets_differ": {"effect": (lo + hi) / 2, "ci95": [lo, hi], "se": 0.1},
        }

    m = mean_nulls([entry(0.6, 0.02, 0.1, 0.3), entry(0.8, 0.2, -0.1, 0.2)])
    assert (
        m["jaccard_permutation"]["mean"] == pytest.approx(0.7) and m["jaccard_permutation"]["p_value"] == 0.2
    )
    assert m["sets_differ"]["ci95"] == [-0.1, 0.3] and m["sets_differ"]["effect"] == pytest.approx(0.125)
    assert m["jaccard_split_half"]["mean"] == pytest.approx(0.7)
