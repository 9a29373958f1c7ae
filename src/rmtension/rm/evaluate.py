"""Evaluation: per-pair scores of every RM on every test set, and the tension table.

The table reads only the per-pair score files, so it can be recomputed (and traced) without
touching a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.config import EvalConfig
from rmtension.rm.stats import calibration, correct, interval, seed_pair_bootstrap

RMS = ("helpful", "harmless", "mixed")


def scores_frame(pair_ids: list[str], subsets: list[str], r_c: np.ndarray, r_r: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"pair_id": pair_ids, "subset": subsets, "r_chosen": r_c, "r_rejected": r_r})


def tension_table(scores: dict[str, dict[str, list[pd.DataFrame]]], cfg: EvalConfig, seed: int = 0) -> dict:
    """The three-objective tension table.

    scores[rm][test_set] is one frame per seed, rows aligned by pair id. Accuracy: mean and sd
    over seeds, and a CI from a two-level bootstrap (seeds and test pairs). Interference per test
    set = acc(mixed) - max(acc(helpful RM), acc(harmless RM)); its CI uses the same test-pair
    resamples for all three RMs (paired) and resamples each RM's seeds independently.
    """
    rng = np.random.default_rng(seed)
    test_sets = sorted({t for by_test in scores.values() for t in by_test})
    out: dict = {
        "accuracy": {},
        "interference": {},
        "calibration": {},
        "method": {
            "ci": f"{cfg.ci:.0%} percentile bootstrap over test pairs and seeds ({cfg.bootstrap} resamples)",
            "interference": "accuracy(mixed) - max(accuracy(helpful RM), accuracy(harmless RM)), paired over test pairs",
            "calibration": f"ECE over {cfg.ece_bins} bins of sigmoid(r_chosen - r_rejected), both orientations",
        },
    }
    for test in test_sets:
        frames = {rm: scores[rm][test] for rm in scores if test in scores[rm]}
        ids = frames[next(iter(frames))][0].pair_id.to_numpy()
        per_rm = {}
        for rm, fs in frames.items():
            for f in fs:
                if not np.array_equal(f.pair_id.to_numpy(), ids):
                    raise ValueError(f"score files of {rm} on {test} are not aligned by pair id")
            per_rm[rm] = np.stack(
                [correct(f.r_chosen.to_numpy(), f.r_rejected.to_numpy()) for f in fs]
            )  # [S, N]
        pair_idx = rng.integers(0, len(ids), size=(cfg.bootstrap, len(ids)))
        reps = {rm: seed_pair_bootstrap(c, cfg.bootstrap, rng, pair_idx) for rm, c in per_rm.items()}
        for rm, c in per_rm.items():
            seeds_acc = c.mean(axis=1)
            margins = np.concatenate([(f.r_chosen - f.r_rejected).to_numpy() for f in frames[rm]])  # [S * N]
            out["accuracy"].setdefault(rm, {})[test] = {
                "mean": float(seeds_acc.mean()),
                "sd": float(seeds_acc.std(ddof=1)) if len(seeds_acc) > 1 else 0.0,
                "ci95": interval(reps[rm], cfg.ci),
                "n": int(len(ids)),
                "per_seed": [float(a) for a in seeds_acc],
                "mean_margin": float(margins.mean()),
                "per_subset": _per_subset(frames[rm][0].subset.to_numpy(), c),
            }
            out["calibration"].setdefault(rm, {})[test] = calibration(margins, cfg.ece_bins)
        if all(rm in per_rm for rm in RMS):
            point = per_rm["mixed"].mean() - max(per_rm["helpful"].mean(), per_rm["harmless"].mean())
            diff = reps["mixed"] - np.maximum(reps["helpful"], reps["harmless"])
            out["interference"][test] = {
                "mixed_minus_best_single": float(point),
                "ci95": interval(diff, cfg.ci),
                "best_single": "helpful"
                if per_rm["helpful"].mean() >= per_rm["harmless"].mean()
                else "harmless",
            }
    return out


def _per_subset(subsets: np.ndarray, c: np.ndarray) -> dict[str, dict]:
    """Accuracy per data subset, mean over seeds. `c`: [S, N] per-pair correctness."""
    return {
        str(sub): {"accuracy": float(c[:, subsets == sub].mean()), "n": int((subsets == sub).sum())}
        for sub in sorted(set(subsets))
    }


def read_scores(path: Path) -> pd.DataFrame:
    from rmtension.errors import ArtifactError

    try:
        frame = pd.read_csv(path)
    except Exception as e:
        raise ArtifactError(f"{path}: unreadable score file ({e})") from None
    if (
        list(frame.columns[:4]) != ["pair_id", "subset", "r_chosen", "r_rejected"]
        or frame[["r_chosen", "r_rejected"]].isna().any().any()
    ):
        raise ArtifactError(f"{path}: truncated or malformed score file")
    return frame
