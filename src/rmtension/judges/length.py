"""Length-controlled accuracy of one judge on one set, as a pure function.

Accuracy within the strata of which reply is longer (sign of the reply-length difference in tokenizer
tokens), the two strata weighted equally: a judge that only prefers the longer reply scores 0.5.
Pairs of equal length are dropped and counted; a stratum under `MIN_STRATUM_PAIRS` pairs makes the
estimate "not estimable" (with the reason), never a number from a handful of pairs.
"""

from __future__ import annotations

import numpy as np

from rmtension.rm.stats import interval

MIN_STRATUM_PAIRS = 30
STRATA = {"chosen_longer": 1, "chosen_shorter": -1}


def length_strata(len_chosen: np.ndarray, len_rejected: np.ndarray) -> np.ndarray:
    """[N] +1 where the chosen reply is longer, -1 where shorter, 0 on a tie."""
    return np.sign(np.asarray(len_chosen, dtype=np.int64) - np.asarray(len_rejected, dtype=np.int64))


def length_controlled(
    correct: np.ndarray,
    strata: np.ndarray,
    weights: np.ndarray,
    level: float = 0.95,
    min_pairs: int = MIN_STRATUM_PAIRS,
) -> dict:
    """The length-controlled accuracy and its bootstrap CI.

    correct: [N] per-pair correctness (1, 0.5 on a reward tie, 0); strata: [N] (`length_strata`);
    weights: [B, N] resampling weights of the set's bootstrap (pair counts, or cluster weights that
    resample prompts or scenarios). Each replicate takes the weighted accuracy within each stratum and
    averages the two.

    >>> c = np.array([1.0, 1.0, 0.0, 1.0]); s = np.array([1, 1, -1, 0])
    >>> length_controlled(c, s, np.ones((3, 4)), min_pairs=1)["estimate"]  # (1 + 0) / 2, tie dropped
    0.5
    """
    counts = {name: int((strata == s).sum()) for name, s in STRATA.items()}
    out = {**{f"n_{k}": v for k, v in counts.items()}, "n_ties": int((strata == 0).sum())}
    short = [f"{name.replace('_', ' ')} {n}" for name, n in counts.items() if n < min_pairs]
    if short:
        reason = f"not estimable: fewer than {min_pairs} pairs in a length stratum ({', '.join(short)})"
        return {**out, "estimate": None, "ci95": None, "per_stratum": None, "reason": reason}
    per_stratum = {name: float(correct[strata == s].mean()) for name, s in STRATA.items()}
    reps = np.zeros(len(weights))
    for s in STRATA.values():
        sel = strata == s
        w = weights[:, sel]  # [B, n_s]
        with np.errstate(invalid="ignore", divide="ignore"):
            reps += (w @ correct[sel]) / w.sum(axis=1) / 2
    reps = reps[np.isfinite(reps)]  # a replicate that drew no pair of a stratum
    return {
        **out,
        "estimate": float(np.mean(list(per_stratum.values()))),
        "ci95": interval(reps, level),
        "per_stratum": per_stratum,
        "reason": "",
    }
