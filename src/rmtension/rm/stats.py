"""Statistics as pure numpy functions: bootstrap CIs, calibration, interference."""

from __future__ import annotations

import numpy as np


def correct(r_chosen: np.ndarray, r_rejected: np.ndarray) -> np.ndarray:
    """[N] per-pair correctness: 1 if chosen scores higher, 0.5 on a tie, else 0."""
    return (r_chosen > r_rejected) + 0.5 * (r_chosen == r_rejected)


def seed_pair_bootstrap(
    per_seed: np.ndarray, n_boot: int, rng: np.random.Generator, pair_idx: np.ndarray | None = None
) -> np.ndarray:
    """Two-level bootstrap replicates of the seed-averaged accuracy.

    per_seed: [S, N] correctness per seed and test pair. Each replicate resamples seeds with
    replacement and test pairs with replacement (`pair_idx` [n_boot, N] lets several models share
    the same pair resamples, which makes their differences paired). Returns [n_boot].
    """
    s, n = per_seed.shape
    if pair_idx is None:
        pair_idx = rng.integers(0, n, size=(n_boot, n))
    seed_idx = rng.integers(0, s, size=(n_boot, s)) if s > 1 else np.zeros((n_boot, 1), dtype=int)
    per_seed_means = per_seed[:, pair_idx].mean(axis=2).T  # [n_boot, S]
    return np.take_along_axis(per_seed_means, seed_idx, axis=1).mean(axis=1)


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
