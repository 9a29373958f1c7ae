"""How much two neuron sets overlap, against what chance would give; agreement between scorers.

Uniform null, the floor: each set is a uniformly random set of its size among all neurons (global
selection) or, for per-layer selection, among each layer's neurons with each layer's count fixed.
The intersection is then hypergeometric (a sum of independent hypergeometrics per layer). It is
a weak null, since the most active neurons top every objective's list; `rmtension.neurons.nulls`
draws the stronger ones (permutation, split half) from the scoring pairs themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from rmtension.judges.select import per_layer_counts, top_percent


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a & b| / |a | b| for bool masks of the same shape; NaN when both are empty."""
    union = int((a | b).sum())
    return float("nan") if union == 0 else int((a & b).sum()) / union


def hypergeom_p(k: int, M: int, n: int, N: int) -> float:
    """P(intersection >= k) when a set of N is drawn at random from M items of which n are marked."""
    return float(stats.hypergeom.sf(k - 1, M, n, N))


def intersection_null(n_a: Sequence[int], n_b: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """[K+1] pmf of the total intersection of two random sets drawn independently per stratum.

    Stratum i has `size[i]` items; set a takes n_a[i] of them, set b takes n_b[i].
    """
    pmf = np.ones(1)
    for a, b, m in zip(n_a, n_b, size):
        k = np.arange(min(a, b) + 1)
        pmf = np.convolve(pmf, stats.hypergeom.pmf(k, m, a, b))
    return pmf


def expected_jaccard(n_a: Sequence[int], n_b: Sequence[int], size: Sequence[int]) -> float:
    """E[Jaccard] of two random sets under `intersection_null` (exact, not |E a&b| / |E a|b|)."""
    pmf = intersection_null(n_a, n_b, size)
    k = np.arange(len(pmf))
    union = sum(n_a) + sum(n_b) - k
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(union > 0, k / np.maximum(union, 1), np.nan)
    return float(np.nansum(pmf * ratio)) if np.any(union > 0) else float("nan")


def overlap_stats(a: torch.Tensor, b: torch.Tensor, per_layer: bool = False) -> dict:
    """Overlap of set `a` (helpful) and `b` (harmless), both bool [L, N], with its chance level.

    `per_layer` must match how the sets were selected: it fixes each layer's counts in the null.
    """
    L, N = a.shape
    k, n_a, n_b = int((a & b).sum()), int(a.sum()), int(b.sum())
    if per_layer:
        ca, cb = per_layer_counts(a), per_layer_counts(b)
        pmf = intersection_null(ca, cb, [N] * L)
        p_value = float(min(1.0, max(0.0, pmf[k:].sum())))
        expected_k = float((np.arange(len(pmf)) * pmf).sum())
        j_random = expected_jaccard(ca, cb, [N] * L)
    else:
        p_value = hypergeom_p(k, L * N, n_a, n_b)
        expected_k = n_a * n_b / (L * N)
        j_random = expected_jaccard([n_a], [n_b], [L * N])
    return {
        "jaccard": jaccard(a, b),
        "jaccard_random": j_random,
        "p_value": p_value,
        "n_shared": k,
        "n_helpful": n_a,
        "n_harmless": n_b,
        "expected_shared": expected_k,
        "per_layer": {
            "shared": per_layer_counts(a & b),
            "helpful": per_layer_counts(a),
            "harmless": per_layer_counts(b),
        },
    }


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation over all neurons of two score tensors [L, N]; NaN when one is constant."""
    a, b = x.flatten().double().numpy(), y.flatten().double().numpy()
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # e.g. rms_change of an RM whose MLPs did not train
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def spearman_per_layer(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """[L] Spearman correlation within each layer of two score tensors [L, N] (NaN where one is constant)."""
    return [spearman(x[i : i + 1], y[i : i + 1]) for i in range(x.shape[0])]


def _nanmean(xs: Sequence[float]) -> float:
    finite = [v for v in xs if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def scorer_agreement(
    scores: Mapping[str, torch.Tensor],
    ps: Sequence[float],
    per_layer: bool = False,
    magnitude: Sequence[str] = (),
) -> dict:
    """Do two scorers pick the same neurons? Within-layer Spearman and the Jaccard of their top-p sets.

    scores: scorer -> [L, N] for one model on one data set. Scores differ in scale from layer to
    layer (activations grow with depth), so a correlation pooled over all neurons mostly says that
    two scorers agree on which *layers* are large. Hence:

    - `spearman`: the mean over layers of the within-layer Spearman correlation (`spearman_layers`
      holds each layer's); `spearman_pooled` is the pooled one, for reference only.
    - `top_jaccard`: Jaccard of the two scorers' top-p sets, and `top_jaccard_chance` its chance
      level: the expected Jaccard of two random sets with the same number of neurons in every
      layer as the two top-p sets (`expected_jaccard`), so layer concentration alone is chance.
    """
    names = list(scores)
    layers = {s: {t: spearman_per_layer(scores[s], scores[t]) for t in names} for s in names}
    rho = {s: {t: _nanmean(layers[s][t]) for t in names} for s in names}
    pooled = {s: {t: spearman(scores[s], scores[t]) for t in names} for s in names}
    tops = {p: {s: top_percent(scores[s], p, per_layer, s in magnitude) for s in names} for p in ps}
    top_j = {str(p): {s: {t: jaccard(tops[p][s], tops[p][t]) for t in names} for s in names} for p in ps}
    chance: dict = {}
    for p in ps:
        counts = {s: per_layer_counts(tops[p][s]) for s in names}
        c = {s: {} for s in names}
        for i, s in enumerate(names):
            for t in names[i:]:
                size = [scores[s].shape[1]] * scores[s].shape[0]
                c[s][t] = c[t][s] = expected_jaccard(counts[s], counts[t], size)
        chance[str(p)] = c
    return {
        "spearman": rho,
        "spearman_layers": layers,
        "spearman_pooled": pooled,
        "top_jaccard": top_j,
        "top_jaccard_chance": chance,
    }
