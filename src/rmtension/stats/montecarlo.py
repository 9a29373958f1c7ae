"""Monte Carlo error of bootstrap CI bounds and p-values, and the rule that keeps verdicts off the bootstrap seed.

A percentile bound is the q-quantile of B replicates; rerun with another bootstrap seed, it moves. Its
Monte Carlo standard error comes from the order-statistic (binomial) argument: of B iid replicates, the
number below the bootstrap distribution's true q-quantile is Binomial(B, q), SD sqrt(B q (1 - q)), so
the estimated quantile's rank is uncertain by about d = sqrt(B q (1 - q)) places, and

    MC SE(bound) ~= (Q(q + d/B) - Q(q - d/B)) / 2        Q: the empirical quantile of the replicates

that is, half the spread of the replicates between the ranks one binomial SD either side. It needs no
density estimate (the asymptotic SE sqrt(q (1 - q) / B) / f(xi_q) does, and f is poorly estimated in a
tail) and holds for any shape of bootstrap distribution. Batch means, the other choice, is for
correlated draws (MCMC); bootstrap replicates are independent, and a 2.5% quantile of a batch of
B / 10 = 100 replicates rests on 2 or 3 of them, so its batch spread is both biased and noisy.

A bootstrap p-value, twice the smaller tail share pi of B replicates, has MC SE 2 sqrt(pi (1 - pi) / B)
(binomial); Holm's adjustment multiplies it by the same factor as the p-value.

The rule (`guard`): when a bound that decides a verdict lies within `MC_SE_MULTIPLE` = 2 Monte Carlo
standard errors of the margin it is compared with, the verdict is "inconclusive", whatever side the
bound is on: a rerun with another bootstrap seed could give the other verdict (at 2 SE, about one
time in 40 on a side, against one in two at 0 SE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MC_SE_MULTIPLE = 2.0
"""A deciding bound closer to its margin than this many Monte Carlo SEs makes the verdict inconclusive."""


def quantile_mc_se(replicates: np.ndarray, q: float) -> float:
    """The Monte Carlo SE of the q-quantile of B iid replicates [B], by the order-statistic argument."""
    r = np.asarray(replicates, dtype=np.float64)
    b = len(r)
    half = np.sqrt(q * (1 - q) / b)  # one binomial SD of the rank, as a share of B
    hi, lo = np.quantile(r, [min(1.0, q + half), max(0.0, q - half)])
    return float((hi - lo) / 2)


def interval_mc_se(replicates: np.ndarray, level: float = 0.95) -> list[float]:
    """[MC SE of the lower bound, MC SE of the upper bound] of the percentile CI at `level` (`stats.bootstrap.interval`)."""
    a = (1 - level) / 2
    return [quantile_mc_se(replicates, a), quantile_mc_se(replicates, 1 - a)]


def p_value_mc_se(p_value: float, n_boot: int) -> float:
    """The Monte Carlo SE of a two-sided bootstrap p-value (twice a tail share of `n_boot` replicates)."""
    tail = min(0.5, p_value / 2)
    return float(2 * np.sqrt(tail * (1 - tail) / n_boot))


@dataclass
class DecidingBound:
    """The bound (or p-value) that decided a verdict, the margin it was compared with, and its Monte Carlo SE."""

    name: str
    """e.g. "lower", "upper", "p"."""
    value: float
    margin: float
    mc_se: float

    @property
    def distance_in_se(self) -> float:
        """|value - margin| in Monte Carlo SEs (inf when the SE is 0 and the value is off the margin)."""
        gap = abs(self.value - self.margin)
        if self.mc_se > 0:
            return gap / self.mc_se
        return float("inf") if gap > 0 else 0.0

    def near_margin(self, multiple: float = MC_SE_MULTIPLE) -> bool:
        return self.distance_in_se < multiple

    def as_dict(self) -> dict:
        return {**asdict(self), "distance_in_se": self.distance_in_se}


def equivalence_deciding_bounds(
    ci: Sequence[float], mc_se: Sequence[float], min_effect: float, verdict: str
) -> list[DecidingBound]:
    """The bounds that decided an equivalence-rule verdict (`rmtension.stats.verdicts.equivalence_verdict`).

    supported: lower > 0 and upper > m; non-zero but small: lower > 0 and upper <= m; not supported:
    upper < 0 (the wrong side), else -m <= lower and upper <= m; inconclusive: none decides.
    """
    lo, hi = float(ci[0]), float(ci[1])
    se_lo, se_hi = float(mc_se[0]), float(mc_se[1])
    lower = lambda margin: DecidingBound("lower", lo, margin, se_lo)  # noqa: E731
    upper = lambda margin: DecidingBound("upper", hi, margin, se_hi)  # noqa: E731
    if verdict in ("supported", "non-zero but small"):
        return [lower(0.0), upper(min_effect)]
    if verdict == "not supported":  # by either route that held: the one farthest from flipping decides
        routes = []
        if -min_effect <= lo and hi <= min_effect:
            routes.append([lower(-min_effect), upper(min_effect)])
        if hi < 0:
            routes.append([upper(0.0)])
        return max(routes, key=lambda r: min(d.distance_in_se for d in r), default=[])
    return []


def guard(verdict: str, deciding: Sequence[DecidingBound], multiple: float = MC_SE_MULTIPLE) -> str:
    """The verdict, or "inconclusive" when one of its deciding bounds lies within `multiple` MC SEs of its margin.

    For a verdict that two routes reach (not supported: equivalent, or wholly below 0), pass the bounds
    of the route farthest from flipping (`equivalence_deciding_bounds` does).
    """
    if any(d.near_margin(multiple) for d in deciding):
        return "inconclusive"
    return verdict


def closest(deciding: Sequence[DecidingBound]) -> DecidingBound | None:
    """The deciding bound nearest its margin in Monte Carlo SEs (the one a rerun is likeliest to flip)."""
    return min(deciding, key=lambda d: d.distance_in_se, default=None)
