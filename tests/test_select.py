"""Selection, random controls and overlap statistics against hand values and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from rmtension.neurons.overlap import (
    expected_jaccard,
    hypergeom_p,
    intersection_null,
    jaccard,
    overlap_stats,
    scorer_agreement,
    spearman,
)
from rmtension.judges.select import (
    mask_from_json,
    mask_to_json,
    mask_to_pairs,
    matched_random,
    matched_subset,
    neuron_sets,
    pairs_to_mask,
    per_layer_counts,
    random_controls,
    stable_seed,
    top_count,
    top_percent,
)

SCORES = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.8, 0.2, 0.7, 0.0]])


def test_top_percent_global_and_per_layer_by_hand():
    # 8 neurons, 25% -> 2: the two largest overall are 0.9 (0,0) and 0.8 (1,0)
    assert mask_to_pairs(top_percent(SCORES, 25)) == [(0, 0), (1, 0)]
    # per layer, 50% of 4 -> 2 per layer
    assert mask_to_pairs(top_percent(SCORES, 50, per_layer=True)) == [(0, 0), (0, 2), (1, 0), (1, 2)]
    # magnitude ranks |score|
    signed = torch.tensor([[-5.0, 1.0], [2.0, 0.5]])
    assert mask_to_pairs(top_percent(signed, 25, magnitude=True)) == [(0, 0)]
    assert mask_to_pairs(top_percent(signed, 25)) == [(1, 0)]
    # ties at the threshold are all kept; NaN never selected
    tied = torch.tensor([[1.0, 1.0, 0.0, float("nan")]])
    assert mask_to_pairs(top_percent(tied, 25)) == [(0, 0), (0, 1)]
    # a constant score ranks nothing: no neuron is "top"
    assert not top_percent(torch.zeros(3, 10), 5).any()
    assert not top_percent(torch.zeros(3, 10), 20, per_layer=True).any()
    assert top_count(9216, 1) == 92 and top_count(10, 1) == 1 and top_count(10, 0) == 0
    with pytest.raises(ValueError):
        top_count(10, 101)


def test_neuron_sets_algebra():
    helpful = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    harmless = torch.tensor([[0.0, 2.0, 3.0, 1.0]])
    sets = neuron_sets(helpful, harmless, 50)
    assert mask_to_pairs(sets["helpful_top"]) == [(0, 0), (0, 1)]
    assert mask_to_pairs(sets["harmless_top"]) == [(0, 1), (0, 2)]
    assert mask_to_pairs(sets["shared"]) == [(0, 1)]
    assert mask_to_pairs(sets["helpful_only"]) == [(0, 0)]
    assert mask_to_pairs(sets["harmless_only"]) == [(0, 2)]


def test_random_controls_match_per_layer_counts_and_are_seeded():
    mask = torch.zeros(4, 50, dtype=torch.bool)
    mask[0, :7] = True
    mask[2, 10:13] = True
    mask[3, :] = True
    draws = random_controls(mask, 5, seed=11)
    for d in draws:
        assert per_layer_counts(d) == [7, 0, 3, 50]
    assert not torch.equal(draws[0], draws[1])
    again = random_controls(mask, 5, seed=11)
    assert all(torch.equal(a, b) for a, b in zip(draws, again))


def test_stable_seed_is_pinned_across_machines_and_processes():
    # golden values: the first 4 bytes, little-endian, of sha256 of the "/"-joined parts; a change of
    # hash or of joining would move every random control of every study
    assert stable_seed("mixed-seed0", "mean_act", 5) == 112564589
    assert stable_seed("a") == 310482890
    assert stable_seed("helpful", 0, 1.5) == 1784696488
    assert stable_seed("a", "b") != stable_seed("a/b", "") and stable_seed("ab") != stable_seed("a", "b")


def test_random_controls_are_uniform_within_a_layer():
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, :3] = True
    g = torch.Generator().manual_seed(0)
    freq = torch.stack([matched_random(mask, g)[0] for _ in range(4000)]).float().mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.3), atol=0.04)


def test_matched_subset():
    source = torch.zeros(2, 10, dtype=torch.bool)
    source[0, :6] = True
    source[1, :1] = True
    like = torch.zeros(2, 10, dtype=torch.bool)
    like[0, 5:7] = True
    like[1, 2:5] = True  # wants 3 in layer 1, source has 1: the shortfall comes from layer 0
    sub = matched_subset(source, like, seed=3)
    assert int(sub.sum()) == 5 and bool((sub & ~source).sum() == 0)
    assert per_layer_counts(sub) == [4, 1]


def test_mask_round_trips():
    mask = top_percent(SCORES, 50)
    assert torch.equal(pairs_to_mask(mask_to_pairs(mask), (2, 4)), mask)
    assert torch.equal(mask_from_json(mask_to_json(mask), (2, 4)), mask)
    assert mask_to_json(mask)["per_layer"] == [2, 2]


def test_jaccard_by_hand():
    a = torch.tensor([[1, 1, 0, 0, 1]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0, 1]], dtype=torch.bool)
    assert jaccard(a, b) == 2 / 4
    assert np.isnan(jaccard(torch.zeros_like(a), torch.zeros_like(b)))


@pytest.mark.parametrize("k,M,n,N", [(3, 20, 7, 5), (0, 10, 3, 3), (5, 50, 10, 12), (2, 9216, 92, 92)])
def test_hypergeom_matches_scipy(k, M, n, N):
    assert hypergeom_p(k, M, n, N) == pytest.approx(stats.hypergeom.sf(k - 1, M, n, N))
    # brute force for the small cases: P(X >= k) summed from the pmf
    assert hypergeom_p(k, M, n, N) == pytest.approx(
        sum(stats.hypergeom.pmf(j, M, n, N) for j in range(k, min(n, N) + 1))
    )


def test_hypergeom_against_counting_and_fisher():
    """P(|a & b| >= k) by counting subsets, and scipy's one-sided Fisher exact test on the 2x2 table."""
    from math import comb

    M, n, N = 12, 5, 6  # 12 neurons, 5 helpful, 6 harmless
    for k in range(0, 6):
        count = sum(comb(n, j) * comb(M - n, N - j) for j in range(k, min(n, N) + 1))
        assert hypergeom_p(k, M, n, N) == pytest.approx(count / comb(M, N))
    a = torch.zeros(3, 40, dtype=torch.bool)
    b = torch.zeros(3, 40, dtype=torch.bool)
    a[0, :9], a[2, :4] = True, True
    b[0, 5:15], b[1, :3], b[2, 2:6] = True, True, True
    o = overlap_stats(a, b)
    k, n_a, n_b, total = o["n_shared"], o["n_helpful"], o["n_harmless"], 120
    table = [[k, n_a - k], [n_b - k, total - n_a - n_b + k]]
    assert o["p_value"] == pytest.approx(stats.fisher_exact(table, alternative="greater").pvalue)


def test_overlap_stats_by_hand():
    a = torch.zeros(2, 5, dtype=torch.bool)
    b = torch.zeros(2, 5, dtype=torch.bool)
    a[0, :3] = True
    b[0, 1:4] = True
    b[1, 0] = True
    o = overlap_stats(a, b)
    assert (o["n_shared"], o["n_helpful"], o["n_harmless"]) == (2, 3, 4)
    assert o["jaccard"] == 2 / 5
    assert o["p_value"] == pytest.approx(stats.hypergeom.sf(1, 10, 3, 4))
    assert o["expected_shared"] == pytest.approx(3 * 4 / 10)
    assert o["per_layer"] == {"shared": [2, 0], "helpful": [3, 0], "harmless": [3, 1]}
    # exact expected Jaccard of random sets of 3 and 4 among 10
    k = np.arange(4)
    ej = float((stats.hypergeom.pmf(k, 10, 3, 4) * k / (7 - k)).sum())
    assert o["jaccard_random"] == pytest.approx(ej)
    per_layer = overlap_stats(a, b, per_layer=True)
    # stratified null: layer 0 draws 3 and 3 of 5, layer 1 draws 0 and 1 of 5
    assert per_layer["p_value"] == pytest.approx(stats.hypergeom.sf(1, 5, 3, 3))


def test_expected_jaccard_by_simulation():
    rng = np.random.default_rng(0)
    sims = []
    for _ in range(20000):
        a, b = set(rng.choice(30, 6, replace=False)), set(rng.choice(30, 9, replace=False))
        sims.append(len(a & b) / len(a | b))
    assert expected_jaccard([6], [9], [30]) == pytest.approx(np.mean(sims), abs=0.005)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 12), st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=4)
)
def test_intersection_null_is_a_distribution(strata):
    sizes = [m for m, _, _ in strata]
    n_a = [min(a, m) for m, a, _ in strata]
    n_b = [min(b, m) for m, _, b in strata]
    pmf = intersection_null(n_a, n_b, sizes)
    assert pmf.sum() == pytest.approx(1.0)
    mean = sum(a * b / m for a, b, m in zip(n_a, n_b, sizes))
    assert (np.arange(len(pmf)) * pmf).sum() == pytest.approx(mean)


def test_scorer_agreement():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert spearman(x, x * 2 + 1) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, torch.zeros_like(x)))
    agree = scorer_agreement({"mean_act": x, "attribution": -x}, [50])
    assert agree["spearman"]["mean_act"]["attribution"] == pytest.approx(-1.0)
    assert agree["top_jaccard"]["50"]["mean_act"]["attribution"] == 0.0
    assert agree["top_jaccard"]["50"]["mean_act"]["mean_act"] == 1.0
