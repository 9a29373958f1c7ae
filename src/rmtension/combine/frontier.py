"""The helpful-harmless frontier: every judge's accuracy on the two HH test sets with two-level
bootstrap CIs (seeds, then pairs; the same resamples for every judge, so differences are paired),
each method's Pareto points and hypervolume, and the `combined_keeps_both` comparison."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rmtension.judges.dials import hypervolume, pareto_mask
from rmtension.stats.bootstrap import interval, seed_pair_bootstrap
from rmtension.stats.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from rmtension.stats.montecarlo import MC_SE_MULTIPLE, interval_mc_se

TESTS = ("helpful", "harmless")
COLUMNS = [
    "method",
    "dial",
    "seed_mean_acc_helpful",
    "ci_helpful_lo",
    "ci_helpful_hi",
    "seed_mean_acc_harmless",
    "ci_harmless_lo",
    "ci_harmless_hi",
    "pareto",
]
REFERENCES = ("helpful", "harmless", "mixed")
"""RMs drawn as points beside the methods' curves (`method` is `rm:<name>`)."""


@dataclass
class Point:
    """One judge: a method at one dial value (NaN: a method without a dial), and its per-seed
    correctness on each test set, [S, N_t]."""

    method: str
    dial: float
    correct: dict[str, np.ndarray]


class Resamples:
    """Shared bootstrap resamples: one [B, N_t] pair index per test set, and one seed-index stream
    (a fresh generator with the same seed for every judge), so every judge's replicates are paired."""

    def __init__(self, sizes: dict[str, int], n_boot: int, seed: int):
        rng = np.random.default_rng(seed)
        self.pair_idx = {t: rng.integers(0, n, size=(n_boot, n)) for t, n in sizes.items()}
        self.n_boot, self.seed = n_boot, seed

    def replicates(self, per_seed: np.ndarray, test: str) -> np.ndarray:
        """[B] replicates of the seed-averaged accuracy; per_seed: [S, N_t]."""
        rng = np.random.default_rng(self.seed + 1)
        return seed_pair_bootstrap(per_seed, self.n_boot, rng, pair_idx=self.pair_idx[test])


def frontier_table(
    points: list[Point], res: Resamples
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """frontier.csv's rows (one per point, `COLUMNS`, Pareto-optimal within its method) and each
    point's bootstrap replicates per test set, keyed `method@dial`."""
    rows, reps = [], {}
    for p in points:
        row = {"method": p.method, "dial": p.dial}
        reps[key(p.method, p.dial)] = {}
        for t in TESTS:
            r = res.replicates(p.correct[t], t)
            reps[key(p.method, p.dial)][t] = r
            lo, hi = interval(r)
            row |= {f"seed_mean_acc_{t}": float(p.correct[t].mean()), f"ci_{t}_lo": lo, f"ci_{t}_hi": hi}
        rows.append(row)
    table = pd.DataFrame(rows)
    table["pareto"] = False
    for _, idx in table.groupby("method", sort=False).groups.items():
        xy = table.loc[idx, ["seed_mean_acc_helpful", "seed_mean_acc_harmless"]].to_numpy()
        table.loc[idx, "pareto"] = pareto_mask(xy)
    return table[COLUMNS], reps


def key(method: str, dial: float) -> str:
    return method if np.isnan(dial) else f"{method}@{dial:g}"


def hypervolumes(table: pd.DataFrame) -> dict[str, float]:
    """Each method's hypervolume above (0.5, 0.5) on the points' seed-mean accuracies."""
    out = {}
    for method, g in table.groupby("method", sort=False):
        out[method] = hypervolume(g[["seed_mean_acc_helpful", "seed_mean_acc_harmless"]].to_numpy())
    return out


def shortfalls(
    selected: dict[str, float],
    reps: dict[str, dict[str, np.ndarray]],
    table: pd.DataFrame,
    alpha: float = 0.05,
) -> dict:
    """Each method at its selected dial (chosen on validation pairs) minus the best single RM on each
    test set (by point estimate): the paired bootstrap difference's estimate and CI at level
    1 - alpha / M (Bonferroni over the M methods). `keeps_both_verdict` decides the claim."""
    level = 1 - alpha / max(len(selected), 1)
    ref = table[table["method"].str.startswith("rm:")].set_index("method")
    best = {
        t: max(("rm:helpful", "rm:harmless"), key=lambda r: ref.loc[r, f"seed_mean_acc_{t}"]) for t in TESTS
    }
    methods = {}
    for method, dial in selected.items():
        parts = {}
        for t in TESTS:
            diff = reps[key(method, dial)][t] - reps[best[t]][t]
            at = table.loc[_row(table, method, dial), f"seed_mean_acc_{t}"]
            parts[t] = {
                "estimate": float(at - ref.loc[best[t], f"seed_mean_acc_{t}"]),
                "ci": interval(diff, level),
                "ci_mc_se": interval_mc_se(diff, level),
            }
        methods[method] = {"dial": None if np.isnan(dial) else float(dial), **parts}
    return {"best_single": {t: best[t][3:] for t in TESTS}, "level": level, "methods": methods}


def keeps_both_verdict(doc: dict, min_effect: float) -> tuple[str, dict[str, str]]:
    """The `combined_keeps_both` verdict from `shortfalls`' output, and each method's standing.

    A method keeps both when each difference's CI lies above -min_effect (non-inferior on both test
    sets); it loses one when some difference's CI lies wholly below -min_effect. Supported if some
    method keeps both, not supported if every method loses one, inconclusive otherwise. A bound within
    2 Monte Carlo SEs of -min_effect (`ci_mc_se`, `rmtension.stats.montecarlo`) decides nothing."""

    standing = {}
    for method, m in doc["methods"].items():
        cis = [m[t]["ci"] for t in TESTS]
        ses = [m[t].get("ci_mc_se", [0.0, 0.0]) for t in TESTS]
        if all(ci[0] > -min_effect + MC_SE_MULTIPLE * se[0] for ci, se in zip(cis, ses)):
            standing[method] = "keeps both"
        elif any(ci[1] < -min_effect - MC_SE_MULTIPLE * se[1] for ci, se in zip(cis, ses)):
            standing[method] = "loses one"
        else:
            standing[method] = "undecided"
    if any(v == "keeps both" for v in standing.values()):
        return SUPPORTED, standing
    if standing and all(v == "loses one" for v in standing.values()):
        return NOT_SUPPORTED, standing
    return INCONCLUSIVE, standing


def _row(table: pd.DataFrame, method: str, dial: float):
    same = table["dial"].isna() if np.isnan(dial) else np.isclose(table["dial"], dial)
    return table.index[(table["method"] == method) & same][0]


def select_dial(val_acc: dict[float, dict[str, float]], own: dict[str, float]) -> float:
    """The dial whose worst validation shortfall, min over test sets of (accuracy - the single RM's
    own accuracy), is largest; ties go to the dial nearer 0.5. val_acc[dial][test]: seed-mean
    accuracy on that objective's validation pairs; own[test]: that objective's RM's."""
    score = lambda d: (min(val_acc[d][t] - own[t] for t in TESTS), -abs(d - 0.5))  # noqa: E731
    return max(val_acc, key=score)
