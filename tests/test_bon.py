import itertools
import math

import numpy as np
import pytest

from rmtension.optimise.bon import (
    bon_curve,
    bon_expectation,
    bon_weights,
    frontier,
    gao_fit,
    gap_onset,
    kl_bon,
    n_for_kl,
    n_grid,
    sqrt_kl_fit,
)


def brute_force(selector: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """[P] mean over every n-subset of the value of the subset's argmax (ties: larger index wins)."""
    out = []
    for sel, val in zip(selector, values):
        picks = [
            val[max((sel[j], j) for j in subset)[1]] for subset in itertools.combinations(range(len(sel)), n)
        ]
        out.append(np.mean(picks))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unbiased_estimator_equals_enumeration_over_subsets(seed):
    rng = np.random.default_rng(seed)
    p, big_n = 3, 7
    selector = rng.normal(size=(p, big_n))
    values = rng.normal(size=(p, big_n))
    for n in range(1, big_n + 1):
        np.testing.assert_allclose(
            bon_expectation(selector, values, n), brute_force(selector, values, n), atol=1e-12
        )


def test_estimator_with_ties_matches_enumeration():
    rng = np.random.default_rng(5)
    selector = rng.integers(0, 3, size=(4, 6)).astype(float)  # many ties
    values = rng.normal(size=(4, 6))
    for n in range(1, 7):
        np.testing.assert_allclose(
            bon_expectation(selector, values, n), brute_force(selector, values, n), atol=1e-12
        )


def test_estimator_end_points():
    rng = np.random.default_rng(0)
    selector, values = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    np.testing.assert_allclose(
        bon_expectation(selector, values, 1), values.mean(axis=1)
    )  # n=1: a random sample
    best = values[np.arange(5), selector.argmax(axis=1)]
    np.testing.assert_allclose(bon_expectation(selector, values, 8), best)  # n=N: the overall best
    # the selector judged by itself rises with n
    curve = bon_curve(selector, selector, n_grid(8)).mean(axis=1)
    assert np.all(np.diff(curve) > 0)


def test_weights_by_hand_and_normalised():
    # N = 4, n = 2: P(i-th smallest is the max) = (i - 1) / C(4, 2)
    np.testing.assert_allclose(bon_weights(4, 2), [0, 1 / 6, 2 / 6, 3 / 6])
    np.testing.assert_allclose(bon_weights(4, 1), [0.25] * 4)
    np.testing.assert_allclose(bon_weights(4, 4), [0, 0, 0, 1])
    assert math.isclose(bon_weights(2000, 37).sum(), 1.0, rel_tol=1e-9)
    with pytest.raises(ValueError):
        bon_weights(4, 5)


def test_kl_bon_formula():
    assert kl_bon(1) == 0.0
    assert math.isclose(kl_bon(2), math.log(2) - 0.5)
    assert math.isclose(kl_bon(64), math.log(64) - 63 / 64)
    np.testing.assert_allclose(kl_bon(np.array([1, 4])), [0.0, math.log(4) - 0.75])
    assert np.all(np.diff(kl_bon(np.arange(1, 100))) > 0)
    for kl in (0.1, 1.0, 3.2):
        assert math.isclose(kl_bon(n_for_kl(kl)), kl, rel_tol=1e-9)
    assert n_for_kl(0.0) == 1.0


def test_n_grid():
    assert n_grid(1) == [1]
    assert n_grid(16) == [1, 2, 4, 8, 16]
    assert n_grid(12) == [1, 2, 4, 8, 12]


def test_sqrt_kl_fit_recovers_a_line():
    kl = kl_bon(np.array(n_grid(64), dtype=float))
    fit = sqrt_kl_fit(kl, 0.3 + 0.8 * np.sqrt(kl))
    assert math.isclose(fit["intercept"], 0.3, abs_tol=1e-9)
    assert math.isclose(fit["slope"], 0.8, abs_tol=1e-9)
    assert math.isclose(fit["r2"], 1.0, abs_tol=1e-12)


def test_gao_fit_recovers_the_peak():
    kl = kl_bon(np.array(n_grid(1024), dtype=float))
    d = np.sqrt(kl)
    fit = gao_fit(kl, d * (1.0 - 0.25 * d))
    assert math.isclose(fit["alpha"], 1.0, abs_tol=1e-9) and math.isclose(fit["beta"], 0.25, abs_tol=1e-9)
    assert math.isclose(fit["peak_kl"], 4.0, rel_tol=1e-9)  # d* = alpha / (2 beta) = 2
    assert math.isclose(kl_bon(fit["peak_n"]), 4.0, rel_tol=1e-6)
    rising = gao_fit(kl, d * (1.0 + 0.1 * d))  # never turns down
    assert rising["peak_kl"] == float("inf")


def test_gap_onset_finds_the_first_significant_n():
    rng = np.random.default_rng(0)
    ns = [1, 2, 4, 8]
    test = rng.normal(size=(4, 200))
    train = test + np.array([0.0, 0.0, 0.5, 1.0])[:, None] + 0.05 * rng.normal(size=(4, 200))
    out = gap_onset(train, test, ns, 500, np.random.default_rng(1))
    assert out["onset_n"] == 4
    assert out["ci_low"][3] > 0.9 and out["ci_low"][0] < 0.05
    none = gap_onset(test, test, ns, 200, np.random.default_rng(1))
    assert none["onset_n"] is None


@pytest.mark.parametrize("seed", [0, 1])
def test_frontier_is_monotone(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(20, 16))
    b = -0.5 * a + rng.normal(size=(20, 16))  # objectives in tension
    weights = np.linspace(0, 1, 21)
    for n in (1, 4, 16):
        rows = frontier(a, b, {"a": a, "b": b}, weights, n)
        ra, rb = np.array([r["a"] for r in rows]), np.array([r["b"] for r in rows])
        assert np.all(np.diff(ra) >= -1e-12) and np.all(np.diff(rb) <= 1e-12)
        if n > 1:
            assert ra[-1] > ra[0] and rb[0] > rb[-1]
    # end points: w = 1 is best-of-n by a alone, w = 0 by b alone
    rows = frontier(a, b, {"a": a, "b": b}, [0.0, 1.0], 4)
    assert math.isclose(rows[1]["a"], bon_expectation(a, a, 4).mean())
    assert math.isclose(rows[0]["b"], bon_expectation(b, b, 4).mean())
