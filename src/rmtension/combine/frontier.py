"""The helpful-harmless frontier: every judge's accuracy on the two HH test sets with two-level
bootstrap CIs (seeds, then pairs; the same resamples for every judge, so differences are paired),
and beside it the length-controlled accuracy (`rmtension.stats.length`: the chosen-longer and
chosen-shorter strata weighted equally, the same resamples; NaN where a stratum has fewer than 30
pairs); each method's Pareto points and hypervolume, and the `combined_keeps_both` comparison, which
the length-controlled differences decide."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rmtension.judges.dials import hypervolume, pareto_mask
from rmtension.stats.bootstrap import interval, seed_pair_bootstrap, seed_resamples
from rmtension.stats.length import (
    length_controlled_accuracy,
    not_estimable_reason,
    resample_counts,
)
from rmtension.stats.montecarlo import MC_SE_MULTIPLE, interval_mc_se
from rmtension.stats.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED

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
    "lc_acc_helpful",
    "lc_ci_helpful_lo",
    "lc_ci_helpful_hi",
    "lc_acc_harmless",
    "lc_ci_harmless_lo",
    "lc_ci_harmless_hi",
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

    def __init__(
        self, sizes: dict[str, int], n_boot: int, seed: int, strata: dict[str, np.ndarray] | None = None
    ):
        rng = np.random.default_rng(seed)
        self.pair_idx = {t: rng.integers(0, n, size=(n_boot, n)) for t, n in sizes.items()}
        self.n_boot, self.seed = n_boot, seed
        self.strata = strata or {}
        """[N_t] length stratum of each test pair (`rmtension.stats.length.length_strata`); absent: no control."""

    def replicates(self, per_seed: np.ndarray, test: str) -> np.ndarray:
        """[B] replicates of the seed-averaged accuracy; per_seed: [S, N_t]."""
        rng = np.random.default_rng(self.seed + 1)
        return seed_pair_bootstrap(per_seed, self.n_boot, rng, pair_idx=self.pair_idx[test])

    def controlled(self, per_seed: np.ndarray, test: str):
        """(`LengthControlled`, [B] replicates or None) of the length-controlled accuracy, with the pair and
        seed resamples `replicates` uses, so raw and controlled values are paired across judges alike."""
        seed_idx = seed_resamples(len(per_seed), self.n_boot, np.random.default_rng(self.seed + 1))
        weights = resample_counts(self.pair_idx[test], per_seed.shape[1])
        return length_controlled_accuracy(per_seed, self.strata[test], weights, seed_idx, 0.95)


def frontier_table(
    points: list[Point], res: Resamples
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """frontier.csv's rows (one per point, `COLUMNS`, Pareto-optimal within its method) and each
    point's bootstrap replicates per test set, keyed `method@dial` (the length-controlled ones as
    `lc:<test>`, where estimable)."""
    rows, reps = [], {}
    for p in points:
        row = {"method": p.method, "dial": p.dial}
        reps[key(p.method, p.dial)] = {}
        for t in TESTS:
            r = res.replicates(p.correct[t], t)
            reps[key(p.method, p.dial)][t] = r
            lo, hi = interval(r)
            row |= {f"seed_mean_acc_{t}": float(p.correct[t].mean()), f"ci_{t}_lo": lo, f"ci_{t}_hi": hi}
            lc, lc_r = res.controlled(p.correct[t], t) if t in res.strata else (None, None)
            if lc_r is not None:
                reps[key(p.method, p.dial)][f"lc:{t}"] = lc_r
            est, (lc_lo, lc_hi) = (lc.estimate, lc.ci95) if lc_r is not None else (np.nan, (np.nan, np.nan))
            row |= {f"lc_acc_{t}": est, f"lc_ci_{t}_lo": lc_lo, f"lc_ci_{t}_hi": lc_hi}
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
    val_acc: dict[str, dict[str, float]] | None = None,
    strata: dict[str, np.ndarray] | None = None,
) -> dict:
    """Each method at its selected dial (chosen on validation pairs) minus the best single RM on each
    test set: the paired bootstrap difference's estimate and CI at level 1 - alpha / M (Bonferroni
    over the M methods), raw and length-controlled (`length_controlled`, which decides the claim
    where present). The best single RM on each test set is chosen on validation accuracy
    (`val_acc["rm:helpful"|"rm:harmless"][test]`), never on the test pairs; without it, by its test
    point estimate (said so in `best_single_chosen_by`). `keeps_both_verdict` decides the claim."""
    level = 1 - alpha / max(len(selected), 1)
    ref = table[table["method"].str.startswith("rm:")].set_index("method")
    by = (lambda r, t: val_acc[r][t]) if val_acc else (lambda r, t: ref.loc[r, f"seed_mean_acc_{t}"])  # noqa: E731
    best = {t: max(("rm:helpful", "rm:harmless"), key=lambda r: by(r, t)) for t in TESTS}
    methods = {}
    for method, dial in selected.items():
        parts = {}
        for t in TESTS:
            mine, theirs = reps[key(method, dial)], reps[best[t]]
            diff = mine[t] - theirs[t]
            row = table.loc[_row(table, method, dial)]
            parts[t] = {
                "estimate": float(row[f"seed_mean_acc_{t}"] - ref.loc[best[t], f"seed_mean_acc_{t}"]),
                "ci": interval(diff, level),
                "ci_mc_se": interval_mc_se(diff, level),
            }
            if strata is not None and t in strata:
                parts[t]["length_controlled"] = _controlled_shortfall(
                    mine.get(f"lc:{t}"),
                    theirs.get(f"lc:{t}"),
                    row[f"lc_acc_{t}"],
                    ref.loc[best[t], f"lc_acc_{t}"],
                    strata[t],
                    level,
                )
        methods[method] = {"dial": None if np.isnan(dial) else float(dial), **parts}
    chosen_by = "validation accuracy" if val_acc else "test point estimate"
    return {
        "best_single": {t: best[t][3:] for t in TESTS},
        "best_single_chosen_by": chosen_by,
        "level": level,
        "methods": methods,
    }


def _controlled_shortfall(
    mine, theirs, est_mine: float, est_theirs: float, strata: np.ndarray, level: float
) -> dict:
    """LC(method) - LC(best single) from the paired length-controlled replicates, or why it is not estimable."""
    reason = not_estimable_reason(strata)
    if reason or mine is None or theirs is None:
        return {"estimable": False, "reason": reason or "not estimable", "n_ties": int((strata == 0).sum())}
    diff = mine - theirs
    return {
        "estimable": True,
        "estimate": float(est_mine - est_theirs),
        "ci": interval(diff, level),
        "ci_mc_se": interval_mc_se(diff, level),
        "n_ties": int((strata == 0).sum()),
    }


def keeps_both_verdict(doc: dict, min_effect: float) -> tuple[str, dict[str, str]]:
    """The `combined_keeps_both` verdict from `shortfalls`' output, and each method's standing.

    Each difference read is the length-controlled one where `shortfalls` computed it (not estimable:
    it decides nothing), else the raw one. A method keeps both when each difference's CI lies above
    -min_effect (non-inferior on both test sets); it loses one when some difference's CI lies wholly
    below -min_effect. Supported if some method keeps both, not supported if every method loses one,
    inconclusive otherwise. A bound within 2 Monte Carlo SEs of -min_effect (`ci_mc_se`,
    `rmtension.stats.montecarlo`) decides nothing."""

    standing = {}
    for method, m in doc["methods"].items():
        read = [m[t].get("length_controlled", m[t]) for t in TESTS]
        cis = [d["ci"] if d.get("estimable", True) else [-np.inf, np.inf] for d in read]
        ses = [d.get("ci_mc_se", [0.0, 0.0]) if d.get("estimable", True) else [0.0, 0.0] for d in read]
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
