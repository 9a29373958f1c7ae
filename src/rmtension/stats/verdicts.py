"""The decision rule every claim with a smallest effect of interest uses.

A claim states a direction (the effect is positive). With its CI and its smallest effect of
interest m (`claims.min_effect`, in the claim's own units):

    not supported   the CI lies inside [-m, m] (equivalence: any effect is too small to matter),
                    or wholly below 0 (the opposite direction)
    supported       otherwise, when the CI lies wholly above 0
    inconclusive    otherwise; the verdict then states the effect this sample could have detected

so "not supported" is never read off a point estimate or a non-significant test. Claims that opt in
(`small=True`) label a CI wholly above 0 but inside [-m, m] "non-zero but small": the effect is there,
in the claimed direction, and too small to matter.

Two guards keep a verdict off the bootstrap's own noise and off the number of parts:
- Monte Carlo error (`rmtension.stats.montecarlo`): a verdict whose deciding CI bound (or Holm-adjusted
  p-value) lies within 2 Monte Carlo SEs of its margin is "inconclusive", whatever the side.
- Multiplicity within a claim (`any_of`): "supported when some part is" is a union of tests, so the
  parts' p-values are Holm-adjusted; "not supported when every part is" is an intersection-union test
  (each part's equivalence at level alpha already bounds the claim's error at alpha), so it needs none.
  Across claims there is no correction: each claim is its own hypothesis.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scipy import stats

from rmtension.config import MIN_EFFECT
from rmtension.run.runio import read_config
from rmtension.stats.montecarlo import (
    DecidingBound,
    equivalence_deciding_bounds,
    guard,
    p_value_mc_se,
)

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN = "supported", "not supported", "inconclusive", "not run"
NON_ZERO_SMALL = "non-zero but small"
"""The CI excludes 0 but lies inside the margin."""
NOT_TESTABLE = "not testable here"
"""The margin was out of the study's reach, so a "not supported" could not have been told apart: the
positive control did not reach it (neuron claims), or the measure had no room to move that far (the
loop's shortcut claims, `rmtension.loop.results.headroom`)."""
ECE_WELL_CALIBRATED = 0.05
"""An RM counts as well calibrated when the upper end of its ECE's CI is at most this."""
VERDICTS = (SUPPORTED, NON_ZERO_SMALL, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE, NOT_RUN)
"""Every verdict a finding may carry (findings.json, the summary's counts)."""


def equivalence_verdict(ci: Sequence[float], min_effect: float, small: bool = False) -> str:
    """The verdict for one directional effect from its CI [lo, hi] and the smallest effect of interest.

    small: a CI wholly above 0 but inside [-m, m] is "non-zero but small" instead of "not supported".
    """
    lo, hi = float(ci[0]), float(ci[1])
    if small and 0 < lo and hi <= min_effect:
        return NON_ZERO_SMALL
    if (-min_effect <= lo and hi <= min_effect) or hi < 0:
        return NOT_SUPPORTED
    if lo > 0:
        return SUPPORTED
    return INCONCLUSIVE


def all_of(verdicts: Sequence[str]) -> str:
    """A claim made of parts that must all hold: not supported if any part is, supported if all are;
    else non-zero but small if some part is (that part holds, too weakly to matter)."""
    if any(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    if any(v == NON_ZERO_SMALL for v in verdicts):
        return NON_ZERO_SMALL
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return INCONCLUSIVE


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        out[i] = running
    return out


def any_of(
    effects: dict[str, tuple[float, Sequence[float], float]],
    min_effect: float,
    alpha: float = 0.05,
    mc_se: dict[str, Sequence[float]] | None = None,
    n_boot: int | None = None,
) -> str:
    """A claim that holds when the effect is positive on some of several test sets (`any_of_parts`)."""
    return any_of_parts(effects, min_effect, alpha, mc_se, n_boot)[0]


def any_of_parts(
    effects: dict[str, tuple[float, Sequence[float], float]],
    min_effect: float,
    alpha: float = 0.05,
    mc_se: dict[str, Sequence[float]] | None = None,
    n_boot: int | None = None,
) -> tuple[str, dict[str, str], dict[str, DecidingBound | None]]:
    """A claim that holds when the effect is positive on some part: its verdict, each part's, and what decided each.

    effects[name] = (estimate, ci95, two-sided p). A part is supported when its Holm-adjusted p < alpha
    with a positive estimate and its CI reaches past m (inside [-m, m]: "non-zero but small"); otherwise
    the equivalence rule decides it, where "supported" (significant alone, not after Holm) becomes
    inconclusive. The claim: supported when some part is; not supported when every part is; non-zero but
    small when every part is that or not supported; else inconclusive.

    mc_se[name]: the Monte Carlo SEs of the part's CI bounds; with `n_boot` (the p-values' bootstrap
    size) the adjusted p's Monte Carlo SE too. A part whose deciding bound or adjusted p lies within 2 of
    its SEs of the margin is inconclusive (`rmtension.stats.montecarlo.guard`). Without them no guard.
    """
    names = list(effects)
    adjusted = dict(zip(names, holm([effects[n][2] for n in names])))
    order = sorted(names, key=lambda n: effects[n][2])
    parts, deciding = {}, {}
    for n in names:
        est, ci, p = effects[n]
        if adjusted[n] < alpha and est > 0:
            v = SUPPORTED if float(ci[1]) > min_effect else NON_ZERO_SMALL
        else:
            v = equivalence_verdict(ci, min_effect, small=True)
            v = INCONCLUSIVE if v in (SUPPORTED, NON_ZERO_SMALL) else v  # significant alone, not after Holm
        bounds = []
        if mc_se is not None and n in mc_se:
            bounds = equivalence_deciding_bounds(ci, mc_se[n], min_effect, v)
            if v in (SUPPORTED, NON_ZERO_SMALL):  # the lower bound vs 0 is the p-value's job here
                bounds = [b for b in bounds if not (b.name == "lower" and b.margin == 0.0)]
        if n_boot is not None and v in (SUPPORTED, NON_ZERO_SMALL):
            factor = len(names) - order.index(n)  # Holm's multiplier of this part's p
            bounds.append(DecidingBound("holm p", adjusted[n], alpha, factor * p_value_mc_se(p, n_boot)))
        parts[n] = guard(v, bounds)
        deciding[n] = min(bounds, key=lambda b: b.distance_in_se, default=None)
    return _combine_any(list(parts.values())), parts, deciding


def _combine_any(parts: Sequence[str]) -> str:
    if SUPPORTED in parts:
        return SUPPORTED
    if parts and all(v == NOT_SUPPORTED for v in parts):
        return NOT_SUPPORTED
    if parts and all(v in (NOT_SUPPORTED, NON_ZERO_SMALL) for v in parts):
        return NON_ZERO_SMALL
    return INCONCLUSIVE


def min_detectable_effect(ci: Sequence[float], level: float = 0.95, power: float = 0.8) -> float:
    """The effect a two-sided test at `1 - level` detects with `power`, given the CI's width.

    The CI's half-width is z_{(1+level)/2} * SE, and the detectable effect is
    (z_{(1+level)/2} + z_power) * SE: 2.80 SE at 95% and 80% power.
    """
    z = stats.norm.ppf((1 + level) / 2)
    se = (float(ci[1]) - float(ci[0])) / (2 * z)
    return float((z + stats.norm.ppf(power)) * se)


POST_HOC_MARGINS = {
    "avoidant_vs_misuse": "set after the default run had been seen, from its should-respond difference's CI "
    "half-width (0.17 over 100 prompts): the smallest 0.05 step at or above (1.96 + 0.84) / 1.96 x 0.17 = 0.243",
}
"""Default margins fixed after seeing data, and how: a finding that uses one says so (`post_hoc_margin`)."""


def post_hoc_margin(run_dir: Path, claim: str) -> str:
    """How the claim's margin was set after seeing data, when the run uses that default; "" otherwise."""
    note = POST_HOC_MARGINS.get(claim, "")
    return note if note and claim_min_effect(run_dir, claim) == MIN_EFFECT[claim] else ""


def claim_min_effect(run_dir: Path, claim: str) -> float:
    """The run's `claims.min_effect[claim]` (its config.yaml), else the default (`rmtension.config.MIN_EFFECT`)."""
    return float(read_config(run_dir).get("claims", {}).get("min_effect", {}).get(claim, MIN_EFFECT[claim]))
