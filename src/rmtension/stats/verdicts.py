"""The decision rule every claim with a smallest effect of interest uses.

A claim states a direction (the effect is positive). With its CI and its smallest effect of
interest m (`claims.min_effect`, in the claim's own units):

    not supported   the CI lies inside [-m, m] (equivalence: any effect is too small to matter),
                    or wholly below 0 (the opposite direction)
    supported       otherwise, when the CI lies wholly above 0
    inconclusive    otherwise; the verdict then states the effect this sample could have detected

so "not supported" is never read off a point estimate or a non-significant test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scipy import stats

from rmtension.config import MIN_EFFECT
from rmtension.run.runio import read_config

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN = "supported", "not supported", "inconclusive", "not run"
NON_ZERO_SMALL = "non-zero but small"
"""The CI excludes 0 but lies inside the margin (the verdicts issue's label; no rule gives it yet)."""
NOT_TESTABLE = "not testable here"
"""The positive control did not reach the margin, so a "not supported" could not have been told apart."""
ECE_WELL_CALIBRATED = 0.05
"""An RM counts as well calibrated when the upper end of its ECE's CI is at most this."""
VERDICTS = (SUPPORTED, NOT_SUPPORTED, NON_ZERO_SMALL, INCONCLUSIVE, NOT_TESTABLE, NOT_RUN)
"""Every verdict a finding can have, in the order the summary counts them."""


def equivalence_verdict(ci: Sequence[float], min_effect: float) -> str:
    """The verdict for one directional effect from its CI [lo, hi] and the smallest effect of interest."""
    lo, hi = float(ci[0]), float(ci[1])
    if (-min_effect <= lo and hi <= min_effect) or hi < 0:
        return NOT_SUPPORTED
    if lo > 0:
        return SUPPORTED
    return INCONCLUSIVE


def all_of(verdicts: Sequence[str]) -> str:
    """A claim made of parts that must all hold: not supported if any part is, supported if all are."""
    if any(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
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
    effects: dict[str, tuple[float, Sequence[float], float]], min_effect: float, alpha: float = 0.05
) -> str:
    """A claim that holds when the effect is positive on some of several test sets, Holm-corrected.

    effects[name] = (estimate, ci95, two-sided p). Supported when some Holm-adjusted p < alpha with a
    positive estimate; not supported when every CI is equivalent to 0 or wholly negative
    (`equivalence_verdict`); otherwise inconclusive.
    """
    names = list(effects)
    adjusted = holm([effects[n][2] for n in names])
    if any(adjusted[i] < alpha and effects[n][0] > 0 for i, n in enumerate(names)):
        return SUPPORTED
    if names and all(equivalence_verdict(effects[n][1], min_effect) == NOT_SUPPORTED for n in names):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def min_detectable_effect(ci: Sequence[float], level: float = 0.95, power: float = 0.8) -> float:
    """The effect a two-sided test at `1 - level` detects with `power`, given the CI's width.

    The CI's half-width is z_{(1+level)/2} * SE, and the detectable effect is
    (z_{(1+level)/2} + z_power) * SE: 2.80 SE at 95% and 80% power.
    """
    z = stats.norm.ppf((1 + level) / 2)
    se = (float(ci[1]) - float(ci[0])) / (2 * z)
    return float((z + stats.norm.ppf(power)) * se)


def claim_min_effect(run_dir: Path, claim: str) -> float:
    """The run's `claims.min_effect[claim]` (its config.yaml), else the default (`rmtension.config.MIN_EFFECT`)."""
    return float(read_config(run_dir).get("claims", {}).get("min_effect", {}).get(claim, MIN_EFFECT[claim]))
