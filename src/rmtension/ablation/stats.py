"""Margin statistics of ablations, as pure numpy functions over per-pair margins.

A pair's margin is r_chosen - r_rejected. Every comparison is paired: the same test pairs are
scored clean, ablated and under each random control draw. Effects are in margin units, and
*standardised* ones (columns `std_*` of ablation.csv) are divided by `margin_sd`, the SD of the
unablated margin on that test set (held fixed in the bootstrap: it is the unit, not an estimate).

The set-against-control comparison: v_i = m_set,i - mean over draws of m_control,i (the clean
margins cancel), so `delta_vs_random` = mean(v) and `p_value` is the two-sided paired t-test of
mean(v) = 0 on those same v_i (the one-sample t-test of the per-pair differences, n - 1 degrees
of freedom).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rmtension.stats.bootstrap import interval


def paired_t(diff: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test that the per-pair differences `diff` [P] average 0.

    t = mean / (sd / sqrt(P)) with the sample SD (ddof 1), against Student's t with P - 1 degrees
    of freedom. All-equal differences: 1.0 when they are 0, else 0.0. NaN for fewer than 2 pairs.
    """
    diff = np.asarray(diff, dtype=np.float64)
    n = len(diff)
    if n < 2:
        return float("nan")
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        return 1.0 if abs(mean) <= 1e-12 else 0.0
    t = mean / (sd / np.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def margin_sd(clean: np.ndarray) -> float:
    """SD (ddof 1) of the unablated margins of one test set: the unit of the standardised effects."""
    return float(np.std(clean, ddof=1)) if len(clean) > 1 else float("nan")


def mean_ci(values: np.ndarray, idx: np.ndarray, level: float = 0.95) -> list[float]:
    """Bootstrap CI of mean(values) [P] from the resamples idx [B, P] (shared by a test set's statistics)."""
    return interval(np.asarray(values)[idx].mean(1), level)


def margin_change(clean: np.ndarray, ablated: np.ndarray, idx: np.ndarray, level: float, sd: float) -> dict:
    """Mean margin change ablated - clean, its paired bootstrap CI, and both standardised."""
    d = ablated - clean
    lo, hi = mean_ci(d, idx, level)
    return {
        "delta_margin": float(d.mean()),
        "margin_ci_lo": lo,
        "margin_ci_hi": hi,
        "std_delta_margin": float(d.mean()) / sd,
        "std_ci_lo": lo / sd,
        "std_ci_hi": hi / sd,
    }


def versus_controls(
    ablated: np.ndarray, controls: list[np.ndarray], idx: np.ndarray, level: float, sd: float
) -> dict:
    """The set against the per-pair mean of its control draws: mean difference, t-test, standardised CI."""
    v = ablated - np.mean(controls, axis=0)
    lo, hi = mean_ci(v, idx, level)
    return {
        "delta_vs_random": float(v.mean()),
        "p_value": paired_t(v),
        "std_vs_random": float(v.mean()) / sd,
        "std_vs_random_ci_lo": lo / sd,
        "std_vs_random_ci_hi": hi / sd,
    }


def relative_drop(
    clean: np.ndarray,
    ablated: np.ndarray,
    controls: list[np.ndarray] | None,
    idx: np.ndarray,
    level: float = 0.95,
) -> dict:
    """The paper's unit: the relative accuracy drop (acc_ref - acc_set) / acc_clean, with its CI and SE.

    clean, ablated [P] and each control draw [P]: margins; correctness c = 1 (margin > 0), 0.5 (tie),
    0 (margin < 0). acc_ref is the per-pair mean correctness over the control draws, or the clean
    model's where `controls` is None; so with controls

        rel_drop = (mean_i mean_d c(control_d)_i - mean_i c(set)_i) / mean_i c(clean)_i

    idx [B, P]: bootstrap resamples of the pairs; each replicate recomputes numerator and denominator on
    its pairs (a ratio estimate), `se` is the SD of the replicates.
    """
    c_clean = (np.sign(clean) + 1) / 2
    c_set = (np.sign(ablated) + 1) / 2
    c_ref = c_clean if controls is None else np.mean([(np.sign(x) + 1) / 2 for x in controls], axis=0)
    v = c_ref - c_set
    reps = v[idx].mean(1) / np.maximum(c_clean[idx].mean(1), 1e-12)
    lo, hi = interval(reps, level)
    return {
        "rel_drop": float(v.mean() / max(c_clean.mean(), 1e-12)),
        "ci": [lo, hi],
        "se": float(np.std(reps, ddof=1)) if len(reps) > 1 else float("nan"),
    }


def standardised_drop(clean: np.ndarray, ablated: np.ndarray, sd: float) -> np.ndarray:
    """[P] per-pair drop (clean - ablated) / sd: positive where the ablation hurts."""
    return (clean - ablated) / sd


def double_dissociation(
    margins: dict[str, dict[str, np.ndarray]],
    clean: dict[str, np.ndarray],
    idx: dict[str, np.ndarray],
    level: float = 0.95,
) -> dict:
    """The 2x2 interaction of two objective-only sets on the two objectives' test sets.

    `margins[set][test]` [P_test] for set in (helpful_only, harmless_only) and test in (helpful,
    harmless); `clean[test]`; `idx[test]` [B, P_test] bootstrap resamples. With drop(S, T) the
    mean standardised drop of set S on test set T (`standardised_drop`):

        interaction = ((drop(HO, helpful) - drop(HO, harmless)) + (drop(SO, harmless) - drop(SO, helpful))) / 2

    (HO helpful_only, SO harmless_only): the mean of the two sets' own-minus-other drops, in SDs of
    the unablated margin. Regrouped, it is the mean of two paired within-test differences,
    (drop(HO, helpful) - drop(SO, helpful)) and (drop(SO, harmless) - drop(HO, harmless)), so the
    CI resamples the pairs of each test set (independently of the other) and keeps every pair's
    two ablations together. Positive: each set hurts its own objective more than the other set does.
    """
    sets, tests = ("helpful_only", "harmless_only"), ("helpful", "harmless")
    sd = {t: margin_sd(clean[t]) for t in tests}
    drop = {s: {t: standardised_drop(clean[t], margins[s][t], sd[t]) for t in tests} for s in sets}
    within = {
        "helpful": drop["helpful_only"]["helpful"] - drop["harmless_only"]["helpful"],
        "harmless": drop["harmless_only"]["harmless"] - drop["helpful_only"]["harmless"],
    }
    reps = {t: within[t][idx[t]].mean(1) for t in tests}  # [B] each
    effect = float((within["helpful"].mean() + within["harmless"].mean()) / 2)
    return {
        "effect": effect,
        "ci": interval((reps["helpful"] + reps["harmless"]) / 2, level),
        "drops": {s: {t: float(drop[s][t].mean()) for t in tests} for s in sets},
        "within": {t: {"diff": float(within[t].mean()), "ci": interval(reps[t], level)} for t in tests},
        "margin_sd": sd,
        "n_pairs": {t: len(clean[t]) for t in tests},
    }


def double_dissociation_relative(
    margins: dict[str, dict[str, np.ndarray]],
    clean: dict[str, np.ndarray],
    idx: dict[str, np.ndarray],
    level: float = 0.95,
) -> dict:
    """The 2x2 interaction of `double_dissociation` in the paper's unit, relative accuracy drops.

    Inputs as `double_dissociation`. With acc(S, T) the accuracy of set S's ablation on test set T
    and acc(T) the clean accuracy there:

        within(helpful)  = (acc(SO, helpful) - acc(HO, helpful)) / acc(helpful)
        within(harmless) = (acc(HO, harmless) - acc(SO, harmless)) / acc(harmless)
        interaction      = (within(helpful) + within(harmless)) / 2

    (HO helpful_only, SO harmless_only): on each test set, how much more its own objective's set
    drops the accuracy than the other set does, relative to the clean accuracy. Each test set's
    pairs are resampled on their own (`idx[t]` [B, P_t]), numerator and denominator together (a
    ratio estimate); `se` is the SD of the replicates.
    """
    own = {"helpful": "helpful_only", "harmless": "harmless_only"}
    other = {"helpful": "harmless_only", "harmless": "helpful_only"}

    def correct(m: np.ndarray) -> np.ndarray:  # 1 right, 0.5 tie, 0 wrong, as `relative_drop`
        return (np.sign(m) + 1) / 2

    within, reps = {}, {}
    for t in ("helpful", "harmless"):
        v = correct(margins[other[t]][t]) - correct(margins[own[t]][t])  # [P_t]
        c = correct(clean[t])
        within[t] = float(v.mean() / max(c.mean(), 1e-12))
        reps[t] = v[idx[t]].mean(1) / np.maximum(c[idx[t]].mean(1), 1e-12)  # [B]
    both = (reps["helpful"] + reps["harmless"]) / 2
    return {
        "effect": (within["helpful"] + within["harmless"]) / 2,
        "ci": interval(both, level),
        "se": float(np.std(both, ddof=1)) if len(both) > 1 else float("nan"),
        "within": {t: {"rel_drop": within[t], "ci": interval(reps[t], level)} for t in within},
    }
