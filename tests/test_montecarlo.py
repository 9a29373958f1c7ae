"""Monte Carlo error of bootstrap bounds (`rmtension.stats.montecarlo`) and the near-margin rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rmtension.stats.verdicts import equivalence_verdict
from rmtension.stats.montecarlo import (
    DecidingBound,
    equivalence_deciding_bounds,
    guard,
    interval_mc_se,
    p_value_mc_se,
    quantile_mc_se,
)


def test_quantile_se_on_evenly_spaced_replicates_by_hand():
    # replicates 0, 1, ..., B-1: the empirical p-quantile is p (B - 1), so the SE is (B - 1) sqrt(q (1 - q) / B)
    b, q = 1000, 0.025
    assert quantile_mc_se(np.arange(b), q) == pytest.approx((b - 1) * np.sqrt(q * (1 - q) / b))
    assert interval_mc_se(np.arange(b) * 2.0, 0.95) == pytest.approx([2 * 999 * np.sqrt(q * (1 - q) / b)] * 2)


def test_quantile_se_matches_the_spread_of_reruns():
    # an independent check: rerun a 1,000-replicate bootstrap of N(0, 1) 400 times; the SD of its 2.5% bound
    # is the Monte Carlo SE, close to the asymptotic sqrt(q (1 - q) / B) / phi(z_q) = 0.0845
    rng = np.random.default_rng(0)
    b, q = 1000, 0.025
    runs = rng.normal(size=(400, b))
    spread = np.quantile(runs, q, axis=1).std(ddof=1)
    estimated = np.mean([quantile_mc_se(r, q) for r in runs])
    asymptotic = np.sqrt(q * (1 - q) / b) / stats.norm.pdf(stats.norm.ppf(q))
    assert asymptotic == pytest.approx(0.0845, abs=5e-4)
    assert estimated == pytest.approx(spread, rel=0.15) and estimated == pytest.approx(asymptotic, rel=0.15)


def test_p_value_se_by_hand():
    # p = 0.05 from 2,000 replicates: tail share 0.025, SE 2 sqrt(0.025 * 0.975 / 2000) = 0.00698
    assert p_value_mc_se(0.05, 2000) == pytest.approx(0.006982, abs=1e-6)
    assert p_value_mc_se(1.0, 100) == pytest.approx(2 * 0.5 / 10)


def _replicates_with_bound_at(value: float, q: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    """A bootstrap distribution (1,000 normal replicates) shifted so that its empirical q-quantile is exactly `value`."""
    r = rng.normal(0.0, sd, size=1000)
    return r - np.quantile(r, q) + value


@pytest.mark.parametrize(
    "bound, q, sd, margin, raw_verdict",
    [
        (0.0002, 0.025, 0.03, 0.0, "supported"),  # lower bound just above 0, upper far above m
        (
            0.0698,
            0.975,
            0.01,
            0.07,
            "not supported",
        ),  # equivalence: upper bound just inside m, lower near +0.03
    ],
)
def test_a_bound_on_its_margin_is_inconclusive_and_one_far_from_it_is_decided(
    bound, q, sd, margin, raw_verdict
):
    m = 0.07
    rng = np.random.default_rng(1)
    near = _replicates_with_bound_at(bound, q, sd, rng)
    ci = np.quantile(near, [0.025, 0.975])
    if raw_verdict == "not supported":  # keep the lower bound inside -m: only the upper bound decides
        assert ci[0] > -m
    se = interval_mc_se(near)
    assert equivalence_verdict(ci, m) == raw_verdict
    deciding = equivalence_deciding_bounds(ci, se, m, raw_verdict)
    assert any(d.margin == margin and d.near_margin() for d in deciding)
    assert guard(raw_verdict, deciding) == "inconclusive"
    # why: the same bootstrap distribution, resampled afresh, lands on both sides of the margin
    reruns = {equivalence_verdict(np.quantile(rng.choice(near, 1000), [0.025, 0.975]), m) for _ in range(60)}
    assert len(reruns) > 1
    # the control: the same distribution moved 10 MC SEs away from the margin, on the same side, stays decided
    side = 1 if raw_verdict == "supported" else -1
    se_q = se[0] if q < 0.5 else se[1]
    far = near + side * 10 * se_q
    far_ci = np.quantile(far, [0.025, 0.975])
    assert equivalence_verdict(far_ci, m) == raw_verdict
    assert (
        guard(raw_verdict, equivalence_deciding_bounds(far_ci, interval_mc_se(far), m, raw_verdict))
        == raw_verdict
    )
    reruns = {equivalence_verdict(np.quantile(rng.choice(far, 1000), [0.025, 0.975]), m) for _ in range(60)}
    assert reruns == {raw_verdict}


def test_deciding_bounds_by_route():
    se = [0.001, 0.001]
    # wholly below 0 and far outside ±m: only the upper bound against 0 decides
    assert [
        (d.name, d.margin) for d in equivalence_deciding_bounds([-0.3, -0.2], se, 0.07, "not supported")
    ] == [("upper", 0.0)]
    # inside ±m and below 0: the route farther from flipping decides (upper at -0.0005 is 0.5 SE from 0;
    # the equivalence route's bounds are 20 and 70 SE from ±m)
    route = equivalence_deciding_bounds([-0.05, -0.0005], se, 0.07, "not supported")
    assert {(d.name, d.margin) for d in route} == {("lower", -0.07), ("upper", 0.07)}
    assert guard("not supported", route) == "not supported"
    assert equivalence_deciding_bounds([-0.1, 0.2], se, 0.07, "inconclusive") == []
    assert DecidingBound("p", 0.05, 0.05, 0.0).distance_in_se == 0.0
