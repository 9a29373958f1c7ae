"""Is the overlap of two objectives' top-p sets what sampling noise alone would give?

The uniform floor of `rmtension.neurons.overlap` (random neuron sets of the same sizes) is a weak
null: the neurons most active on any text are the top neurons of every objective, so two samples
of one objective overlap far above it. A placebo (helpful vs helpful) came out "shared" at Jaccard
0.673 against a uniform 0.026. These nulls are drawn from the scoring pairs themselves, from the
per-pair sums of `rmtension.judges.pairsums`, so every draw is a re-aggregation (one matrix
product per statistic), never another forward pass:

- permutation (`jaccard_permutation`): pool the two objectives' pairs, split them at random into
  two pseudo-objectives of the same sizes (n_a, n_b), rescore both and take the Jaccard of their
  top-p sets; R draws. If the two objectives' pairs were exchangeable (one distribution, as far
  as the scores go), the observed split would be one more draw, so
  p = (1 + #{J_null <= J_obs}) / (R + 1) is a valid one-sided p-value for "the sets differ more
  than sampling noise" (an observed Jaccard this low).
- split half (`jaccard_split_half`): each objective's pairs split at random into two disjoint
  halves (floor(n/2) and the rest); the Jaccard of the halves' sets is the overlap sampling noise
  allows between two samples of one objective (of half the size: a lower bound on the ceiling).
- bootstrap (`jaccard_bootstrap`): pairs resampled with replacement within each objective; the
  spread of the observed Jaccard.
- base (`jaccard_base`): each objective's set against the base backbone's top-p set on the pooled
  pairs: how much of a set is "active on any text" rather than learned.

The effect of the claim `neuron_sets_differ` is d = mean(J_null) - J_obs (Jaccard units, > 0: the
sets differ more than noise), with the 95% CI d +- 1.96 * sqrt(sd_null^2 + sd_boot^2). sd_boot is
the observed Jaccard's sampling spread; sd_null bounds the sampling spread of the null's mean over
data sets (the mean of R draws from one data set varies less than one draw), so the CI is
conservative. On a placebo J_obs is itself a draw from the null: d is about 0 and the CI covers 0
(about 99% of the time), so the verdict is "inconclusive", or "not supported" when the CI lies
inside +-min_effect (`rmtension.stats.verdicts.equivalence_verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats

from rmtension.neurons.config import p_key
from rmtension.judges.pairsums import PairSums
from rmtension.judges.select import top_percent_rows

CI_LEVEL = 0.95


# ---- random splits as weight matrices -------------------------------------------------------


def permutation_weights(
    n_a: int, n_b: int, draws: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 0/1 [R, n_a + n_b] matrices: row r marks pseudo-objective a's n_a pairs and b's n_b (the rest)."""
    n = n_a + n_b
    a = torch.zeros(draws, n)
    for r in range(draws):
        a[r, torch.randperm(n, generator=gen)[:n_a]] = 1.0
    return a, 1.0 - a


def split_half_weights(n: int, draws: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint 0/1 [R, n] halves of n pairs per draw: floor(n/2) pairs and the other ceil(n/2)."""
    return permutation_weights(n // 2, n - n // 2, draws, gen)


def bootstrap_weights(n: int, draws: int, gen: torch.Generator) -> torch.Tensor:
    """[R, n] counts: how often each pair is drawn in a resample of n pairs with replacement."""
    picks = torch.randint(0, n, (draws, n), generator=gen)
    w = torch.zeros(draws, n)
    w.scatter_add_(1, picks, torch.ones(draws, n))
    return w


# ---- statistics -------------------------------------------------------------------------------


def jaccard_rows(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """bool [R, L, N] x2 -> [R] Jaccard of each row's two sets; NaN where both are empty."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.nan).numpy()


def permutation_p(null: np.ndarray, observed: float) -> float:
    """One-sided p of an observed value this low: (1 + #{null <= observed}) / (R + 1); NaN draws dropped."""
    null = null[np.isfinite(null)]
    if not len(null) or observed != observed:
        return float("nan")
    return float((1 + np.sum(null <= observed)) / (len(null) + 1))


def summary(values: np.ndarray) -> dict:
    """{mean, sd, p2_5, p97_5, n} of the finite values (NaN when none)."""
    v = values[np.isfinite(values)]
    if not len(v):
        return {"mean": float("nan"), "sd": float("nan"), "p2_5": float("nan"), "p97_5": float("nan"), "n": 0}
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "p2_5": float(np.percentile(v, 2.5)),
        "p97_5": float(np.percentile(v, 97.5)),
        "n": int(len(v)),
    }


def sets_differ_effect(observed: float, null: dict, boot: dict, level: float = CI_LEVEL) -> dict:
    """d = null mean - observed Jaccard and its CI d +- z * sqrt(sd_null^2 + sd_boot^2) (module docstring)."""
    d = null["mean"] - observed
    se = float(np.sqrt(null["sd"] ** 2 + boot["sd"] ** 2))
    z = float(stats.norm.ppf((1 + level) / 2))
    return {"effect": float(d), "ci95": [float(d - z * se), float(d + z * se)], "se": se}


# ---- the nulls of one model and scorer --------------------------------------------------------


class Draws:
    """The random splits of one model's pairs, shared by every scorer and p (paired comparisons)."""

    def __init__(self, n_a: int, n_b: int, draws: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.n_a, self.n_b = n_a, n_b
        self.perm = permutation_weights(n_a, n_b, draws, g)
        self.half_a = split_half_weights(n_a, draws, g)
        self.half_b = split_half_weights(n_b, draws, g)
        self.boot = (bootstrap_weights(n_a, draws, g), bootstrap_weights(n_b, draws, g))


def null_jaccards(
    x: PairSums,
    y: PairSums,
    wx: torch.Tensor,
    wy: torch.Tensor,
    scorer: str,
    ps: Sequence[float],
    per_layer: bool = False,
    magnitude: bool = False,
) -> dict[str, np.ndarray]:
    """p key -> [R] Jaccard of the top-p sets of x re-aggregated by wx [R, P_x] and y by wy [R, P_y].

    Permutation null: x = y = the pooled pairs, (wx, wy) = `permutation_weights`; split half: x = y =
    one objective's pairs; bootstrap: x, y = the two objectives, each with its `bootstrap_weights`.
    """
    sx, sy = x.aggregate(wx, [scorer])[scorer], y.aggregate(wy, [scorer])[scorer]
    return {
        p_key(p): jaccard_rows(
            top_percent_rows(sx, p, per_layer, magnitude), top_percent_rows(sy, p, per_layer, magnitude)
        )
        for p in ps
    }


def overlap_nulls(
    a: PairSums,
    b: PairSums,
    scorer: str,
    ps: Sequence[float],
    observed: dict[str, float],
    draws: Draws,
    per_layer: bool = False,
    magnitude: bool = False,
) -> dict[str, dict]:
    """The nulls of one model's two objectives (a: helpful pairs, b: harmless pairs) for one scorer.

    observed: p key -> the observed Jaccard of the two objectives' top-p sets.
    Returns p key -> {jaccard_permutation: {mean, sd, p2_5, p97_5, n, p_value}, jaccard_split_half:
    {helpful, harmless: summary, mean}, jaccard_bootstrap: summary, sets_differ: {effect, ci95, se}}.
    """
    if (a.n_pairs, b.n_pairs) != (draws.n_a, draws.n_b):
        raise ValueError(f"draws are for {draws.n_a} + {draws.n_b} pairs, got {a.n_pairs} + {b.n_pairs}")
    pool = PairSums.pool([a, b])
    args = (scorer, ps, per_layer, magnitude)
    perm = null_jaccards(pool, pool, *draws.perm, *args)
    half_a = null_jaccards(a, a, *draws.half_a, *args)
    half_b = null_jaccards(b, b, *draws.half_b, *args)
    boots = null_jaccards(a, b, *draws.boot, *args)
    out = {}
    for p in ps:
        k = p_key(p)
        null = {**summary(perm[k]), "p_value": permutation_p(perm[k], observed[k])}
        boot = summary(boots[k])
        ha, hb = summary(half_a[k]), summary(half_b[k])
        out[k] = {
            "jaccard_permutation": null,
            "jaccard_split_half": {
                "helpful": ha,
                "harmless": hb,
                "mean": float(np.nanmean([ha["mean"], hb["mean"]])),
            },
            "jaccard_bootstrap": boot,
            "sets_differ": sets_differ_effect(observed[k], null, boot),
        }
    return out


def base_overlap(
    base_scores: torch.Tensor, sets: dict[str, torch.Tensor], p: float, per_layer: bool, magnitude: bool
) -> dict:
    """Jaccard of each objective's top-p set (sets: objective -> bool [L, N]) with the base backbone's
    top-p set (base_scores [L, N], on the pooled pairs), and their mean."""
    top = top_percent_rows(base_scores.unsqueeze(0), p, per_layer, magnitude)
    out = {o: float(jaccard_rows(s.unsqueeze(0), top)[0]) for o, s in sets.items()}
    out["mean"] = float(np.nanmean(list(out.values())))
    return out


def mean_nulls(entries: Sequence[dict]) -> dict:
    """Several seeds' nulls of one scorer and p as one: means of the numbers, the largest p-value,
    and the CI that spans every seed's CI (a verdict then needs every seed's interval)."""
    if len(entries) == 1:
        return entries[0]

    def avg(xs):
        if isinstance(xs[0], dict):
            return {k: avg([x[k] for x in xs]) for k in xs[0]}
        return float(np.nanmean(xs))

    out = {
        k: avg([e[k] for e in entries])
        for k in ("jaccard_permutation", "jaccard_split_half", "jaccard_bootstrap")
    }
    out["jaccard_permutation"]["p_value"] = max(e["jaccard_permutation"]["p_value"] for e in entries)
    out["sets_differ"] = {
        "effect": float(np.mean([e["sets_differ"]["effect"] for e in entries])),
        "ci95": [
            min(e["sets_differ"]["ci95"][0] for e in entries),
            max(e["sets_differ"]["ci95"][1] for e in entries),
        ],
        "se": float(np.sqrt(np.mean([e["sets_differ"]["se"] ** 2 for e in entries]))),
    }
    if all("learning" in e for e in entries):  # the trained-minus-base effect, spanning every seed's CI
        ls = [e["learning"] for e in entries]
        out["learning"] = {
            **{k: float(np.mean([x[k] for x in ls])) for k in ls[0] if k != "ci95"},
            "ci95": [min(x["ci95"][0] for x in ls), max(x["ci95"][1] for x in ls)],
            "n_seeds": len(ls),
        }
    return out
