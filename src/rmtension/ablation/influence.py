"""Statistics of ablation effects as pure numpy functions over per-pair margins.

Every comparison is paired: the same test pairs are scored clean, ablated and under the random
controls, so tests and CIs work on per-pair differences.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rmtension.stats.bootstrap import correct, interval


def correctness(margins: np.ndarray) -> np.ndarray:
    """[P] margins r_c - r_r -> [P] 1 (right), 0.5 (tie), 0 (wrong)."""
    return correct(margins, np.zeros_like(margins))


def mcnemar_exact(a_margins: np.ndarray, b_margins: np.ndarray) -> float:
    """Exact McNemar test (two-sided) that conditions a and b are right on the same share of pairs.

    Only discordant pairs count: under the null each is equally likely to favour a or b, so
    the number favouring a is Binomial(discordant, 1/2). Ties count as wrong. 1.0 when no pair
    is discordant.
    """
    a, b = a_margins > 0, b_margins > 0
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n = a_only + b_only
    return 1.0 if n == 0 else float(stats.binomtest(a_only, n, 0.5).pvalue)


def resample_index(n_pairs: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_pairs] bootstrap indices, shared by every statistic of one test set (paired CIs)."""
    return rng.integers(0, n_pairs, size=(n_boot, n_pairs))


def delta_ci(clean: np.ndarray, ablated: np.ndarray, idx: np.ndarray, level: float = 0.95) -> list[float]:
    """CI of accuracy(ablated) - accuracy(clean) from per-pair margins [P] and resamples idx [B, P]."""
    diff = correctness(ablated) - correctness(clean)
    return interval(diff[idx].mean(1), level)


def drop_per_neuron(
    clean: np.ndarray, ablated: np.ndarray, n_neurons: int, idx: np.ndarray, level: float = 0.95
) -> dict:
    """Accuracy drop (clean - ablated, so positive hurts) in total and per ablated neuron, with CIs."""
    diff = correctness(clean) - correctness(ablated)
    reps = diff[idx].mean(1)
    n = max(n_neurons, 1)
    return {
        "n_neurons": int(n_neurons),
        "drop": float(diff.mean()),
        "drop_ci": interval(reps, level),
        "drop_per_neuron": float(diff.mean()) / n,
        "per_neuron_ci": interval(reps / n, level),
    }


def compare_per_neuron(
    clean: np.ndarray, a: np.ndarray, n_a: int, b: np.ndarray, n_b: int, idx: np.ndarray, level: float = 0.95
) -> dict:
    """Per-neuron drop of set a minus that of set b, with a paired bootstrap CI, and their ratio."""
    da = (correctness(clean) - correctness(a)) / max(n_a, 1)
    db = (correctness(clean) - correctness(b)) / max(n_b, 1)
    reps = da[idx].mean(1) - db[idx].mean(1)
    ratio = float(da.mean() / db.mean()) if db.mean() != 0 else float("nan")
    return {"diff": float(da.mean() - db.mean()), "ci": interval(reps, level), "ratio": ratio}


def compare_matched(
    clean: np.ndarray, a: np.ndarray, b: np.ndarray, idx: np.ndarray, level: float = 0.95
) -> dict:
    """Drop of set a minus drop of an equally large set b (paired CI) and the exact McNemar p-value."""
    diff = correctness(b) - correctness(a)  # = drop(a) - drop(b); the clean terms cancel
    return {
        "diff": float(diff.mean()),
        "ci": interval(diff[idx].mean(1), level),
        "p_value": mcnemar_exact(a, b),
        "drop_a": float((correctness(clean) - correctness(a)).mean()),
        "drop_b": float((correctness(clean) - correctness(b)).mean()),
    }
