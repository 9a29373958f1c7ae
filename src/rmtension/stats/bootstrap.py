"""Statistics as pure numpy functions: bootstrap CIs, calibration, interference."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def correct(r_chosen: np.ndarray, r_rejected: np.ndarray) -> np.ndarray:
    """[N] per-pair correctness: 1 if chosen scores higher, 0.5 on a tie, else 0."""
    return (r_chosen > r_rejected) + 0.5 * (r_chosen == r_rejected)


def seed_pair_bootstrap(
    per_seed: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    pair_idx: np.ndarray | None = None,
    pair_weights: np.ndarray | None = None,
    seed_idx: np.ndarray | None = None,
) -> np.ndarray:
    """Two-level bootstrap replicates of the seed-averaged accuracy.

    per_seed: [S, N] correctness per seed and test pair. Each replicate resamples seeds with
    replacement and test pairs with replacement (`pair_idx` [n_boot, N] lets several models share
    the same pair resamples, which makes their differences paired). `pair_weights` [n_boot, N]
    replaces the pair resamples by resampled clusters (`cluster_weights`). Returns [n_boot].
    """
    s, n = per_seed.shape
    if pair_idx is None and pair_weights is None:
        pair_idx = rng.integers(0, n, size=(n_boot, n))
    if seed_idx is None:
        seed_idx = seed_resamples(s, n_boot, rng)
    if pair_weights is not None:
        per_seed_means = (pair_weights @ per_seed.T) / pair_weights.sum(axis=1, keepdims=True)  # [n_boot, S]
    else:
        per_seed_means = per_seed[:, pair_idx].mean(axis=2).T  # [n_boot, S]
    return np.take_along_axis(per_seed_means, seed_idx, axis=1).mean(axis=1)


def seed_resamples(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, S] seed indices drawn with replacement (all 0 for one seed), as `seed_pair_bootstrap` draws them."""
    if n_seeds > 1:
        return rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return np.zeros((n_boot, 1), dtype=int)


def cluster_weights(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, N] pair weights of a cluster bootstrap: each replicate draws the G groups with replacement.

    A pair's weight is how often its group was drawn, so a weighted mean over pairs is the mean over
    the resampled groups' pairs. Use it when pairs of one group (e.g. one XSTest prompt) are not
    independent. `groups`: [N] group label per pair.
    """
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    g = int(inverse.max()) + 1
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot)  # [n_boot, G]
    return counts[:, inverse].astype(np.float64)


def length_baselines(len_chosen: np.ndarray, len_rejected: np.ndarray) -> dict:
    """Accuracy of "prefer the longer reply" and of "prefer the shorter reply" (ties count 0.5 for both)."""
    longer = correct(len_chosen.astype(float), len_rejected.astype(float))
    return {
        "longer": float(longer.mean()),
        "shorter": float((1.0 - longer).mean()),
        "ties": int((len_chosen == len_rejected).sum()),
        "n": int(len(len_chosen)),
    }


def beats_chance(accuracy: float, n: int, z: float = 1.96) -> bool:
    """Whether an accuracy on n pairs is above 0.5 by a two-sided binomial (normal) test at 0.05."""
    return n > 0 and (accuracy - 0.5) / (0.25 / n) ** 0.5 > z


def length_matched(len_chosen: np.ndarray, len_rejected: np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """[N] bool: the two replies differ by at most `tolerance` of the longer one's length."""
    longest = np.maximum(len_chosen, len_rejected)
    return np.abs(len_chosen - len_rejected) <= tolerance * longest


def bootstrap_p(replicates: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference against 0: twice the smaller tail, with +1 in both counts."""
    r = np.asarray(replicates)
    tail = min((r <= 0).sum(), (r >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (len(r) + 1)))


def interval(replicates: np.ndarray, level: float = 0.95) -> list[float]:
    a = (1 - level) / 2
    return [float(np.quantile(replicates, a)), float(np.quantile(replicates, 1 - a))]


def calibration(margins: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error of P(chosen preferred) = sigmoid(r_c - r_r).

    Each pair counts in both orientations, (p, outcome 1) and (1 - p, outcome 0), so the
    reliability diagram spans [0, 1] and is symmetric, as for a pairwise preference model
    (Bai et al. 2022, fig. 9). Returns ECE and per-bin points (mean predicted, observed, count).
    """
    p = 1.0 / (1.0 + np.exp(-margins))
    probs = np.concatenate([p, 1 - p])
    outcome = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    edges = np.linspace(0, 1, bins + 1)
    which_p = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    which = np.concatenate([which_p, bins - 1 - which_p])  # mirrored bins keep the diagram exactly symmetric
    points, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        pred, obs = float(probs[sel].mean()), float(outcome[sel].mean())
        ece += sel.mean() * abs(pred - obs)
        points.append({"bin": b, "predicted": pred, "observed": obs, "count": int(sel.sum())})
    return {"ece": float(ece), "points": points}


def ece_pair_gaps(margins: np.ndarray, bins: int) -> np.ndarray:
    """[N, bins] per pair and bin: predicted minus observed, summed over seeds and both orientations.

    margins: [S, N] r_chosen - r_rejected. With it, the ECE of `calibration` on the seeds' pooled
    margins is sum_bins |sum_pairs gaps| / (2 S N), and a bootstrap replicate's is the same with
    each pair weighted by how often it is drawn (`rmtension.report.core.ece_replicates`).
    """
    s, n = margins.shape
    p = 1.0 / (1.0 + np.exp(-margins))  # [S, N]
    which = np.clip(np.digitize(p, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    gap = np.zeros((n, bins))
    for k in range(s):
        np.add.at(gap, (np.arange(n), which[k]), p[k] - 1.0)  # (p, outcome 1)
        np.add.at(gap, (np.arange(n), bins - 1 - which[k]), 1.0 - p[k])  # (1 - p, outcome 0), mirrored bin
    return gap


def spearman_ci(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, list[float]]:
    """Spearman's rho and a Fisher-z CI with the Fieller et al. (1957) SE 1.06 / sqrt(n - 3); [-1, 1] for n <= 3."""
    rho = float(stats.spearmanr(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else 0.0
    n = len(x)
    if n <= 3:
        return rho, [-1.0, 1.0]
    z, half = (
        math.atanh(max(min(rho, 0.999999), -0.999999)),
        stats.norm.ppf((1 + level) / 2) * 1.06 / math.sqrt(n - 3),
    )
    return rho, [math.tanh(z - half), math.tanh(z + half)]
