import itertools
import math

import numpy as np
import pytest

from rmtension.stats.best_of_n import (
    bon_curve,
    bon_expectation,
    bon_weights,
    frontier,
    gao_fit,
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
    assert math.isclose(fit["peak_d"], 2.0, rel_tol=1e-9)  # d* = alpha / (2 beta) = 2
    assert math.isclose(fit["peak_kl"], 4.0, rel_tol=1e-9)
    assert math.isclose(kl_bon(fit["peak_n"]), 4.0, rel_tol=1e-6)
    rising = gao_fit(kl, d * (1.0 + 0.1 * d))  # never turns down
    assert rising["peak_kl"] == float("inf") and rising["peak_d"] == float("inf")


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


# --- within-prompt units, the gap beyond regression to the mean, forms and slope CIs ---------------

from rmtension.stats import fits  # noqa: E402


def test_within_prompt_z_gives_no_gap_for_a_per_prompt_offset():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(30, 8))
    test = train + 5.0 * rng.normal(size=(30, 1))  # the same judge, shifted by a different amount per prompt
    ns = n_grid(8)
    g = fits.gap_beyond_rtm(fits.gap_pieces(train, test, ns), ns, 200, np.random.default_rng(1))
    np.testing.assert_allclose(g["gap"], 0.0, atol=1e-12)
    np.testing.assert_allclose(g["excess"], 0.0, atol=1e-12)
    assert g["rho"] == pytest.approx(1.0)
    # z over all samples (the old units) would see the offsets: between-prompt spread inflates one SD
    z_all = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    old = bon_curve(train, z_all(train), ns).mean(1) - bon_curve(train, z_all(test), ns).mean(1)
    assert old[-1] > 0.5


def test_gap_point_estimate_matches_a_direct_computation():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 6)), rng.normal(size=(12, 6))
    b += 0.5 * a
    ns = n_grid(6)
    g = fits.gap_beyond_rtm(fits.gap_pieces(a, b, ns), ns, 100, np.random.default_rng(0))
    # by hand: centre each prompt, pool the within-prompt variance over P (N - 1) degrees of freedom
    ca, cb = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    za, zb = ca / np.sqrt((ca**2).sum() / (12 * 5)), cb / np.sqrt((cb**2).sum() / (12 * 5))
    rho = np.corrcoef(ca.ravel(), cb.ravel())[0, 1]
    for i, n in enumerate(ns):
        sel = bon_expectation(a, za, n).mean()
        judged = bon_expectation(a, zb, n).mean()
        assert g["gap"][i] == pytest.approx(sel - judged, abs=1e-12)
        assert g["rtm"][i] == pytest.approx((1 - rho) * sel, abs=1e-12)
        assert g["excess"][i] == pytest.approx(rho * sel - judged, abs=1e-12)
    assert g["rho"] == pytest.approx(rho)
    assert g["gap"][0] == pytest.approx(0.0, abs=1e-12)  # n = 1 picks at random


def judges(rng, p, n, rho, spikes=0.0):
    """Two noisy readings of one latent quality, correlated rho within prompts; `spikes` adds rare huge
    errors to the first (an exploitable judge: its top picks are often its own mistakes)."""
    t = rng.normal(size=(p, n))
    s = math.sqrt(1 / rho - 1)  # corr(t + s e1, t + s e2) = 1 / (1 + s^2) = rho
    a = t + s * rng.normal(size=(p, n))
    b = t + s * rng.normal(size=(p, n))
    if spikes:
        a += 8.0 * (rng.random((p, n)) < spikes)
    return a, b


def test_two_equally_good_judges_have_a_gap_but_no_excess():
    rng = np.random.default_rng(3)
    a, b = judges(rng, 600, 16, 0.9)
    ns = n_grid(16)
    g = fits.gap_beyond_rtm(fits.gap_pieces(a, b, ns), ns, 400, np.random.default_rng(4))
    assert g["rho"] == pytest.approx(0.9, abs=0.02)
    # best-of-16 of unit normals sits ~1.77 SD up; regression to the mean alone leaves (1 - 0.9) of it
    assert g["gap"][-1] == pytest.approx(0.1 * 1.77, abs=0.05) and g["gap_ci_low"][-1] > 0.1
    assert abs(g["excess"][-1]) < 0.05
    assert g["excess_ci_low"][-1] < 0 < g["excess_ci_high"][-1]
    assert g["onset_n"] is None


def test_an_exploitable_selector_shows_an_excess():
    rng = np.random.default_rng(5)
    a, b = judges(rng, 400, 16, 0.9, spikes=0.03)
    ns = n_grid(16)
    g = fits.gap_beyond_rtm(fits.gap_pieces(a, b, ns), ns, 400, np.random.default_rng(6))
    assert g["excess_ci_low"][-1] > 0.2 and g["onset_n"] is not None
    swapped = fits.gap_beyond_rtm(fits.gap_pieces(b, a, ns), ns, 400, np.random.default_rng(6))
    assert swapped["excess"][-1] < g["excess"][-1] - 0.2  # the clean judge does not overrate its picks


def test_aic_and_the_forms_by_hand():
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.1, 0.9, 2.2, 2.8])
    slope, intercept = np.polyfit(x, y, 1)
    rss = float(((y - (intercept + slope * x)) ** 2).sum())
    f = fits.linear_fit(x, y)
    assert (f["slope"], f["intercept"]) == (pytest.approx(slope), pytest.approx(intercept))
    assert f["aic"] == pytest.approx(4 * math.log(rss / 4) + 2 * 3)
    ns = n_grid(256)
    kl = kl_bon(np.array(ns, dtype=float))
    forms = {"sqrt_kl": np.sqrt(kl), "kl": kl, "log_n": np.log(ns)}
    noise = 0.01 * np.random.default_rng(0).normal(size=len(ns))
    for name, x in forms.items():
        c = fits.compare_forms(forms, 0.2 + 0.5 * x + noise)
        assert c["best"] == name and c["delta_aic"] > 2, (name, c)


def test_the_selectors_own_curve_is_a_line_for_gaussian_scores_whatever_it_learnt():
    rng = np.random.default_rng(7)
    ns = n_grid(64)
    d = np.sqrt(kl_bon(np.array(ns, dtype=float)))
    r2 = {}
    for name, draw in {"gaussian": rng.normal, "lognormal": lambda size: rng.lognormal(0, 1, size)}.items():
        z, _ = fits.within_prompt_z(draw(size=(1000, 64)))
        r2[name] = sqrt_kl_fit(d**2, bon_curve(z, z, ns).mean(1))["r2"]
    assert r2["gaussian"] > 0.999 and r2["lognormal"] < 0.97


def test_prompt_bootstrap_slope_equals_refits_on_resampled_prompts():
    rng = np.random.default_rng(8)
    a, b = judges(rng, 20, 8, 0.7)
    ns = n_grid(8)
    x = np.sqrt(kl_bon(np.array(ns, dtype=float)))
    pieces = fits.gap_pieces(a, b, ns)
    reps = fits.prompt_bootstrap_slope(
        pieces["e_b"], pieces["ss_b"], pieces["dof"], x, 5, np.random.default_rng(9)
    )
    idx = np.random.default_rng(9).integers(0, 20, size=(5, 20))
    for r, i in zip(reps, idx):
        zb, _ = fits.within_prompt_z(b[i])
        expected = np.polyfit(x, bon_curve(a[i], zb, ns).mean(1), 1)[0]
        assert r == pytest.approx(expected, abs=1e-10)


def test_block_bootstrap_slope():
    x = np.linspace(0, 1, 40)
    rng = np.random.default_rng(10)
    y = 1.0 + 2.0 * x + 0.3 * rng.normal(size=40)
    fit, reps = fits.block_bootstrap_slope([x], [y], 4000, np.random.default_rng(11), block=1)
    assert fit["slope"] == pytest.approx(np.polyfit(x, y, 1)[0])
    # blocks of one on independent errors: the residual bootstrap's SE is the OLS SE (RSS / m)
    se = math.sqrt(fit["rss"] / 40 / ((x - x.mean()) ** 2).sum())
    assert reps.std() == pytest.approx(se, rel=0.1)
    # a slowly drifting error (a random walk) inflates the slope's spread; blocks see more of it
    walk = 1.0 + 2.0 * x + np.cumsum(0.1 * rng.normal(size=40))
    one = fits.block_bootstrap_slope([x], [walk], 4000, np.random.default_rng(12), block=1)[1].std()
    eight = fits.block_bootstrap_slope([x], [walk], 4000, np.random.default_rng(12), block=8)[1].std()
    assert eight > 1.5 * one
    assert fits.block_length(40) == 4 and fits.block_length(7) == 2 and fits.block_length(2, 5) == 2
    assert fits.block_bootstrap_slope([x[:2]], [y[:2]], 10, rng)[1] is None  # two points: no residuals
    # two runs pooled: one common line
    f2, r2 = fits.block_bootstrap_slope([x, x], [y, y + 0.01], 100, np.random.default_rng(0))
    assert f2["slope"] == pytest.approx(fit["slope"]) and r2.shape == (100,)
