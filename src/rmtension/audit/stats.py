"""Audit accuracy with CIs that resample scenarios: overall, by label pair and by tag.

A scenario's comparisons share a conversation (and replies), so they are not independent: every CI
here is a cluster bootstrap that draws whole scenarios with replacement
(`rmtension.stats.bootstrap.cluster_weights`); the point estimate is the accuracy over the pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rmtension.data.types import Pair
from rmtension.stats.bootstrap import cluster_weights, interval, seed_pair_bootstrap


def scenario_replicates(
    correct: np.ndarray, scenarios: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """[B] bootstrap replicates of the accuracy that draw whole scenarios (and seeds) with replacement.

    correct: [N] per-pair correctness, or [S, N] per seed; scenarios: [N] scenario id of each pair.
    A replicate's value is the accuracy over the drawn scenarios' pairs (each as often as its scenario
    was drawn), averaged over the drawn seeds.
    """
    c = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    return seed_pair_bootstrap(c, n_boot, rng, pair_weights=cluster_weights(scenarios, n_boot, rng))


def scenario_accuracy(
    correct: np.ndarray, scenarios: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95
) -> dict:
    """Accuracy over pairs (and seeds) and its scenario-bootstrap CI (`scenario_replicates`).

    correct: [N] per-pair correctness (1, 0.5 on a reward tie, 0) or [S, N] per seed; scenarios: [N].
    Returns accuracy, ci95, n_pairs, n_scenarios.
    """
    correct = np.asarray(correct, dtype=np.float64)
    if correct.shape[-1] == 0:
        return {"accuracy": None, "ci95": None, "n_pairs": 0, "n_scenarios": 0}
    reps = scenario_replicates(correct, scenarios, n_boot, rng)
    return {
        "accuracy": float(correct.mean()),
        "ci95": interval(reps, level),
        "n_pairs": int(correct.shape[-1]),
        "n_scenarios": int(len(np.unique(scenarios))),
    }


def audit_breakdown(
    pairs: Sequence[Pair], correct: np.ndarray, n_boot: int, seed: int = 0, level: float = 0.95
) -> dict:
    """Overall, per label pair and per tag accuracy of one judge on a suite's pairs (`suite_pairs` order).

    correct: [N], or [S, N] for one RM trained with S seeds (the CIs then resample seeds too)."""
    rng = np.random.default_rng(seed)
    correct = np.asarray(correct, dtype=np.float64)
    scen = np.array([p.metadata["scenario"] for p in pairs])
    out = {"overall": scenario_accuracy(correct, scen, n_boot, rng, level), "by_label_pair": {}, "by_tag": {}}
    for lp in sorted({p.subset for p in pairs}):
        sel = np.array([p.subset == lp for p in pairs])
        out["by_label_pair"][lp] = scenario_accuracy(correct[..., sel], scen[sel], n_boot, rng, level)
    for tag in sorted({t for p in pairs for t in p.metadata["tags"]}):
        sel = np.array([tag in p.metadata["tags"] for p in pairs])
        out["by_tag"][tag] = scenario_accuracy(correct[..., sel], scen[sel], n_boot, rng, level)
    return out


def wrong_pairs(pairs: Sequence[Pair], r_chosen: np.ndarray, r_rejected: np.ndarray) -> dict[str, list[dict]]:
    """Scenario id -> the pairs the judge got wrong (worse reply scored at least as high), with both replies."""
    out: dict[str, list[dict]] = {}
    for p, rc, rr in zip(pairs, r_chosen, r_rejected):
        if rc > rr:
            continue
        out.setdefault(p.metadata["scenario"], []).append(
            {
                "pair_id": p.pair_id,
                "labels": p.subset,
                "better": p.chosen,
                "worse": p.rejected,
                "r_better": float(rc),
                "r_worse": float(rr),
            }
        )
    return out
