"""Seeds as the unit: a random-effects interval with a t quantile for seed-averaged accuracies and their differences.

The two-level percentile bootstrap (`rmtension.stats.bootstrap.seed_pair_bootstrap`) resamples 3 seeds with
replacement: its seed variance is (S - 1) / S of the sample's, and its percentiles act like a normal
quantile, so with 3 seeds it understates how far another 3 seeds could land. Here the seed-averaged
estimate's variance has two parts,

    var = v_pairs + sum_k s_k^2 / S_k

v_pairs: the test-pair sampling variance of the estimate with the seeds held fixed (a pairs-only
bootstrap); s_k^2: the between-seed variance (ddof 1) of RM k's per-seed accuracies, over its S_k seeds
(a difference of two RMs, trained on independent seeds, has two such terms). The interval is

    estimate +- t_{df, (1 + level) / 2} * sqrt(var)

with Welch-Satterthwaite degrees of freedom, the pair part counted as having infinitely many:

    df = var^2 / sum_k (s_k^2 / S_k)^2 / (S_k - 1)

so df is S - 1 when the seeds dominate (t_2 = 4.30 at 95% for 3 seeds, against 1.96) and grows
toward the normal quantile as the pair part takes over. One seed: no seed part, df infinite.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def pairs_only_replicates(per_seed: np.ndarray, pair_weights: np.ndarray) -> np.ndarray:
    """[B] the seed-averaged accuracy under pair resamples only. per_seed: [S, N]; pair_weights: [B, N] counts."""
    per_seed_means = (pair_weights @ per_seed.T) / pair_weights.sum(axis=1, keepdims=True)  # [B, S]
    return per_seed_means.mean(axis=1)


def seed_t_interval(
    estimate: float, pair_var: float, seed_parts: Sequence[np.ndarray], level: float = 0.95
) -> dict:
    """The random-effects interval: {"ci95", "se", "df"}.

    pair_var: the pairs-only bootstrap variance of the estimate; seed_parts: each RM's [S_k] per-seed
    accuracies (one array for an accuracy, two for a difference of independently seeded RMs).
    """
    seed_terms = [
        (float(np.var(v, ddof=1)) / len(v), len(v) - 1) for v in map(np.asarray, seed_parts) if len(v) > 1
    ]
    var = pair_var + sum(term for term, _ in seed_terms)
    denominator = sum(term**2 / dof for term, dof in seed_terms)
    df = var**2 / denominator if denominator > 0 else float("inf")
    se = float(np.sqrt(var))
    q = float(stats.t.ppf((1 + level) / 2, df)) if np.isfinite(df) else float(stats.norm.ppf((1 + level) / 2))
    return {"ci95": [estimate - q * se, estimate + q * se], "se": se, "df": float(df)}
