"""Length-controlled accuracy: the accuracy within strata of which reply is longer, the strata weighted equally.

An RM that only prefers the longer reply scores 1 on the pairs whose chosen reply is longer and 0 on
the others; its raw accuracy is the share of chosen-longer pairs, its length-controlled accuracy 0.5.
With per-pair correctness c and the strata L (chosen reply longer) and S (chosen reply shorter), in
tokens of the backbone's tokenizer over whole replies (as the length baselines count them):

    length-controlled accuracy = (mean_{i in L} c_i + mean_{i in S} c_i) / 2

Pairs of equal length are dropped and counted. A stratum with fewer than `MIN_STRATUM_PAIRS` pairs
makes the estimate "not estimable" (`LengthControlled.estimable`, with the reason), never a NaN.

The CI is the two-level bootstrap of the raw accuracies (`rmtension.stats.bootstrap.seed_pair_bootstrap`)
with the same pair and seed resamples: each replicate's pair weights are rescaled within each
stratum to sum to 1/2, so its weighted mean is the mean of the two stratum accuracies. Differences
between RMs (interference) and between the raw and the length-controlled value (the length prior)
are then paired at both levels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rmtension.stats.bootstrap import (
    bootstrap_p,
    ece_pair_gaps,
    interval,
    seed_pair_bootstrap,
    seed_resamples,
)
from rmtension.stats.montecarlo import interval_mc_se
from rmtension.stats.seeds import pairs_only_replicates, seed_t_interval

MIN_STRATUM_PAIRS = 30
"""Fewest pairs a length stratum needs for the length-controlled accuracy to be estimated."""
CHOSEN_LONGER, CHOSEN_SHORTER, TIE = 1, -1, 0


def length_strata(len_chosen: np.ndarray, len_rejected: np.ndarray) -> np.ndarray:
    """[N] int: +1 where the chosen reply is longer, -1 where it is shorter, 0 on a tie (token counts)."""
    return np.sign(np.asarray(len_chosen, dtype=np.int64) - np.asarray(len_rejected, dtype=np.int64))


def not_estimable_reason(strata: np.ndarray, min_pairs: int = MIN_STRATUM_PAIRS) -> str:
    """Why the length-controlled accuracy cannot be estimated on these strata; "" when it can."""
    short = [
        f"{name} {int((strata == s).sum())}"
        for name, s in (("chosen longer", CHOSEN_LONGER), ("chosen shorter", CHOSEN_SHORTER))
        if (strata == s).sum() < min_pairs
    ]
    if not short:
        return ""
    return f"fewer than {min_pairs} pairs in a length stratum ({', '.join(short)} pairs)"


def resample_counts(pair_idx: np.ndarray, n: int) -> np.ndarray:
    """[B, n] how often each of n pairs is drawn in each of B resamples `pair_idx` [B, M] (float64)."""
    b = pair_idx.shape[0]
    flat = (pair_idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def stratum_weights(pair_weights: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """[B, N] pair weights [B, N] rescaled to sum to 1/2 within each length stratum per replicate; ties get 0.

    A weighted mean over pairs with these weights is the equal-weight mean of the two stratum means.
    A replicate that drew no pair of a stratum (chance about exp(-30) at 30 pairs) gets NaN weights there.
    """
    out = np.zeros_like(pair_weights, dtype=np.float64)
    for s in (CHOSEN_LONGER, CHOSEN_SHORTER):
        sel = strata == s
        total = pair_weights[:, sel].sum(axis=1, keepdims=True)  # [B, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, sel] = pair_weights[:, sel] / (2 * total)
    return out


def per_stratum_accuracy(c: np.ndarray, strata: np.ndarray) -> dict[str, float]:
    """Accuracy (mean over seeds and pairs) in each length stratum. `c`: [S, N] per-pair correctness."""
    return {
        "chosen_longer": float(c[:, strata == CHOSEN_LONGER].mean()),
        "chosen_shorter": float(c[:, strata == CHOSEN_SHORTER].mean()),
    }


def length_controlled_per_seed(c: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """[S] each seed's length-controlled accuracy. `c`: [S, N] per-pair correctness, `strata`: [N]."""
    longer = c[:, strata == CHOSEN_LONGER].mean(axis=1)
    shorter = c[:, strata == CHOSEN_SHORTER].mean(axis=1)
    return (longer + shorter) / 2


@dataclass
class LengthControlled:
    """A length-controlled estimate (an accuracy or a difference of them), or why there is none."""

    estimable: bool
    estimate: float | None
    ci95: list[float] | None
    n_chosen_longer: int
    n_chosen_shorter: int
    n_ties: int
    """Pairs of equal length, dropped."""
    reason: str = ""
    """Why it is not estimable ("" when it is)."""
    per_stratum: dict[str, float] | None = None
    """Accuracy in each stratum (accuracies only)."""
    p_value: float | None = None
    """Two-sided bootstrap p against 0 (differences only)."""
    difference: str = ""
    """What is subtracted from what (differences only)."""
    ci95_mc_se: list[float] | None = None
    """Monte Carlo SE of each CI bound (`rmtension.stats.montecarlo.interval_mc_se`)."""
    p_vs_chance: float | None = None
    """Two-sided bootstrap p of the accuracy against 0.5 (accuracies only)."""
    seed_t: dict | None = None
    """Seeds as the unit: the random-effects t interval (`rmtension.stats.seeds`), as beside the raw estimate."""

    def as_dict(self) -> dict:
        return asdict(self)


def _counts(strata: np.ndarray) -> dict:
    return {
        "n_chosen_longer": int((strata == CHOSEN_LONGER).sum()),
        "n_chosen_shorter": int((strata == CHOSEN_SHORTER).sum()),
        "n_ties": int((strata == TIE).sum()),
    }


def length_controlled_accuracy(
    c: np.ndarray,
    strata: np.ndarray,
    pair_weights: np.ndarray,
    seed_idx: np.ndarray,
    level: float,
    min_pairs: int = MIN_STRATUM_PAIRS,
) -> tuple[LengthControlled, np.ndarray | None]:
    """One RM's length-controlled accuracy on one test set, and its bootstrap replicates [B] (None if not estimable).

    c: [S, N] per-pair correctness; strata: [N] (`length_strata`); pair_weights: [B, N] the raw CIs'
    pair resamples as counts (`resample_counts`) or cluster weights; seed_idx: [B, S] the raw CIs'
    seed resamples (`rmtension.stats.bootstrap.seed_resamples`).
    """
    reason = not_estimable_reason(strata, min_pairs)
    if reason:
        return LengthControlled(False, None, None, **_counts(strata), reason=reason), None
    reps = seed_pair_bootstrap(
        c, len(seed_idx), None, pair_weights=stratum_weights(pair_weights, strata), seed_idx=seed_idx
    )
    est = float(length_controlled_per_seed(c, strata).mean())
    return (
        LengthControlled(
            True,
            est,
            interval(reps, level),
            **_counts(strata),
            per_stratum=per_stratum_accuracy(c, strata),
            ci95_mc_se=interval_mc_se(reps, level),
            p_vs_chance=bootstrap_p(reps - 0.5),
        ),
        reps,
    )


def length_controlled_seed_t(
    per_rm: dict[str, np.ndarray], strata: np.ndarray, pair_weights: np.ndarray, a: str, b: str, level: float
) -> dict:
    """The random-effects t interval (`rmtension.stats.seeds.seed_t_interval`) of LC(a) - LC(b).

    per_rm[rm]: [S, N] correctness; pair_weights: [B, N] the pair resamples as counts. The pair part
    is the pairs-only bootstrap variance of the difference with each replicate's weights rescaled
    within the strata (`stratum_weights`); the seed part, each RM's per-seed length-controlled accuracies.
    """
    w = stratum_weights(pair_weights, strata)
    diff = pairs_only_replicates(per_rm[a], w) - pairs_only_replicates(per_rm[b], w)
    per_seed = [length_controlled_per_seed(per_rm[rm], strata) for rm in (a, b)]
    return seed_t_interval(
        float(per_seed[0].mean() - per_seed[1].mean()), float(np.nanvar(diff, ddof=1)), per_seed, level
    )


def stratum_ece_replicates(gaps: np.ndarray, weights: np.ndarray, n_seeds: int) -> np.ndarray:
    """[B] ECE under pair weights [B, N] from per-pair bin gaps [N, bins] (`ece_pair_gaps`) of `n_seeds` seeds."""
    return np.abs(weights @ gaps).sum(axis=1) / (2 * n_seeds * weights.sum(axis=1))


def length_controlled_ece(
    margins: np.ndarray, strata: np.ndarray, bins: int, pair_weights: np.ndarray, level: float
) -> LengthControlled:
    """The length-controlled expected calibration error: the mean of the ECEs within the two length strata.

    margins: [S, N] r_chosen - r_rejected per seed and pair (pooled over seeds as
    `rmtension.stats.bootstrap.calibration` pools them); pair_weights: [B, N] the accuracies' pair
    resamples as counts, so the CI shares their resamples. An RM whose confidence tracks the length
    prior is calibrated overall and off within each stratum; this estimate sees that.
    """
    reason = not_estimable_reason(strata)
    if reason:
        return LengthControlled(False, None, None, **_counts(strata), reason=reason)
    gaps = ece_pair_gaps(np.atleast_2d(margins), bins)  # [N, bins]
    s = np.atleast_2d(margins).shape[0]
    per, reps = {}, []
    for name, code in (("chosen_longer", CHOSEN_LONGER), ("chosen_shorter", CHOSEN_SHORTER)):
        sel = strata == code
        per[name] = float(stratum_ece_replicates(gaps[sel], np.ones((1, int(sel.sum()))), s)[0])
        reps.append(stratum_ece_replicates(gaps[sel], pair_weights[:, sel], s))
    with np.errstate(invalid="ignore"):
        r = (reps[0] + reps[1]) / 2  # a replicate that drew no pair of a stratum is NaN (chance ~exp(-30))
    r = r[np.isfinite(r)]
    return LengthControlled(
        True,
        (per["chosen_longer"] + per["chosen_shorter"]) / 2,
        interval(r, level),
        **_counts(strata),
        per_stratum=per,
        ci95_mc_se=interval_mc_se(r, level),
    )


def controlled_difference(
    estimate: float,
    replicates: np.ndarray | None,
    difference: str,
    strata: np.ndarray,
    level: float,
    reason: str,
) -> LengthControlled:
    """A difference of length-controlled values (or of a raw and a controlled one) from its paired replicates."""
    if replicates is None:
        return LengthControlled(False, None, None, **_counts(strata), reason=reason, difference=difference)
    return LengthControlled(
        True,
        estimate,
        interval(replicates, level),
        **_counts(strata),
        p_value=bootstrap_p(replicates),
        difference=difference,
        ci95_mc_se=interval_mc_se(replicates, level),
    )


def length_controlled_interference(
    per_rm: dict[str, np.ndarray],
    raw_reps: dict[str, np.ndarray],
    lc_reps: dict[str, np.ndarray | None],
    strata: np.ndarray,
    best: str,
    level: float,
    pair_weights: np.ndarray | None = None,
) -> dict:
    """The length-controlled interference on one test set, its split, and the length prior.

    per_rm[rm]: [S, N] correctness; raw_reps / lc_reps[rm]: [B] raw / length-controlled replicates
    sharing pair and seed resamples per RM; `best`: the raw interference's best single RM (the same
    contrast in both, so their difference is the length prior):

        length_controlled = LC(mixed) - LC(best)                      (+ dilution, negative_transfer)
        length_prior      = (mixed - best) - (LC(mixed) - LC(best))   the part length explains
                                                              (+ the same for dilution, negative_transfer)

    With `pair_weights` ([B, N] the pair resamples as counts) each length-controlled difference also
    gets its seed-level t interval (`seed_t`, `length_controlled_seed_t`), as the raw ones have.
    """
    reason = not_estimable_reason(strata)
    lc = {
        rm: float(length_controlled_per_seed(c, strata).mean()) if not reason else None
        for rm, c in per_rm.items()
    }

    def diff(a: str, b: str, prior: bool = False) -> LengthControlled:
        name = f"length-controlled accuracy({a}) - ({b})"
        if prior:
            name = f"(accuracy({a}) - accuracy({b})) - ({name})"
        if reason:
            return controlled_difference(0.0, None, name, strata, level, reason)
        est, reps = lc[a] - lc[b], lc_reps[a] - lc_reps[b]
        if prior:
            raw = float(per_rm[a].mean() - per_rm[b].mean())
            est, reps = raw - est, (raw_reps[a] - raw_reps[b]) - reps
        out = controlled_difference(est, reps, name, strata, level, reason)
        if not prior and pair_weights is not None:
            out.seed_t = length_controlled_seed_t(per_rm, strata, pair_weights, a, b, level)
        return out

    controlled = diff("mixed", best).as_dict()
    prior = diff("mixed", best, prior=True).as_dict()
    half = f"{best}_half"
    if half in per_rm and not reason:
        for key, a, b in (("dilution", half, best), ("negative_transfer", "mixed", half)):
            controlled[key] = diff(a, b).as_dict()
            prior[key] = diff(a, b, prior=True).as_dict()
    return {"length_controlled": controlled, "length_prior": prior}


def length_controlled(
    c: np.ndarray,
    len_chosen: np.ndarray,
    len_rejected: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    level: float = 0.95,
    pair_weights: np.ndarray | None = None,
) -> LengthControlled:
    """One judge's length-controlled accuracy with its own two-level bootstrap (seeds and pairs).

    c: [S, N] (or [N], one seed) per-pair correctness; len_chosen, len_rejected: [N] reply lengths in
    tokens; pair_weights: [B, N] cluster weights (`rmtension.stats.bootstrap.cluster_weights`), else pairs are
    resampled. For one judge alone; the tension table shares its raw CIs' resamples instead.
    """
    c = np.atleast_2d(np.asarray(c, dtype=np.float64))
    n = c.shape[1]
    if pair_weights is None:
        pair_weights = resample_counts(rng.integers(0, n, size=(n_boot, n)), n)
    strata = length_strata(len_chosen, len_rejected)
    seed_idx = seed_resamples(len(c), n_boot, rng)
    return length_controlled_accuracy(c, strata, pair_weights, seed_idx, level)[0]
