"""Best-of-n as pure numpy functions: the unbiased subset estimator, the KL bound, fits and the frontier.

Sample N responses per prompt once; every best-of-n curve for n <= N is then an exact expectation
over uniformly random n-subsets of those N, with no regeneration. Shapes: P prompts, N samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def kl_bon(n: float | np.ndarray) -> float | np.ndarray:
    """log n - (n - 1) / n: the analytic KL(best-of-n || base) of Stiennon et al. (2020).

    Beirami et al. (2024, "Theoretical guarantees on the best-of-n alignment policy") prove it is
    an *upper bound* on the true KL, loose when single responses carry sizeable probability (short
    or repeated replies); label it as a bound.
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.log(n) - (n - 1.0) / n
    return float(out) if out.ndim == 0 else out


def n_for_kl(kl: float, n_max: float = 1e9) -> float:
    """The (real) n >= 1 with kl_bon(n) = kl, by bisection on log n (kl_bon is increasing)."""
    if kl <= 0:
        return 1.0
    lo, hi = 0.0, math.log(n_max)
    if kl_bon(math.exp(hi)) < kl:
        return float("inf")
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kl_bon(math.exp(mid)) < kl else (lo, mid)
    return math.exp((lo + hi) / 2)


def n_grid(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max, with n_max itself appended when it is not a power of two."""
    ns = [1]
    while ns[-1] * 2 <= n_max:
        ns.append(ns[-1] * 2)
    return ns if ns[-1] == n_max else ns + [n_max]


def bon_weights(n_total: int, n: int) -> np.ndarray:
    """[N] probability that the i-th smallest of N (i = 1..N) is the maximum of a uniform n-subset.

    w_i = C(i - 1, n - 1) / C(N, n): the subset must contain item i and n - 1 of the i - 1 items
    below it. Computed in log space so N in the thousands stays finite. Sums to 1.
    """
    if not 1 <= n <= n_total:
        raise ValueError(f"need 1 <= n <= N, got n={n}, N={n_total}")
    i = np.arange(1, n_total + 1)
    w = np.zeros(n_total)
    ok = i >= n
    lg = lambda a, b: math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)  # noqa: E731  log C(a, b)
    log_total = lg(n_total, n)
    w[ok] = [math.exp(lg(k - 1, n - 1) - log_total) for k in i[ok]]
    return w


def selection_order(selector: np.ndarray) -> np.ndarray:
    """[P, N] -> [P, N] sample indices sorted by selector, ascending.

    Ties are broken by sample index (a stable sort), so among equal selector scores the sample
    with the *larger* index ranks higher and wins: deterministic, and the same rule as
    `max((selector[j], j) for j in subset)`.
    """
    return np.argsort(selector, axis=-1, kind="stable")


def bon_expectation(selector: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """[P] E[values of the argmax-by-selector sample of a uniform n-subset], per prompt.

    selector, values: [P, N]. Unbiased for the best-of-n of the sampling policy, given the N draws.
    """
    selector, values = np.atleast_2d(selector), np.atleast_2d(values)
    order = selection_order(selector)
    ranked = np.take_along_axis(values, order, axis=-1)  # [P, N], ascending by selector
    return ranked @ bon_weights(selector.shape[-1], n)


def bon_curve(selector: np.ndarray, values: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """[len(ns), P] per-prompt best-of-n expectations for each n."""
    return np.stack([bon_expectation(selector, values, n) for n in ns])


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def sqrt_kl_fit(kl: np.ndarray, reward: np.ndarray) -> dict[str, float]:
    """Least squares reward ~ a + b sqrt(KL) (Bai et al. 2022, sec. 4.3: reward grows ~linearly in sqrt(KL))."""
    d = np.sqrt(np.asarray(kl, dtype=np.float64))
    y = np.asarray(reward, dtype=np.float64)
    design = np.stack([np.ones_like(d), d], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return {"intercept": float(a), "slope": float(b), "r2": _r2(y, design @ np.array([a, b]))}


def gao_fit(kl: np.ndarray, reward: np.ndarray) -> dict[str, float]:
    """Least squares reward ~ d (alpha - beta d), d = sqrt(KL): Gao et al. (2023)'s best-of-n form.

    The curve peaks at `peak_d` d* = alpha / (2 beta) when beta > 0 (and alpha > 0); `peak_kl` = d*^2
    and `peak_n` is the n whose KL bound equals it (inf when the fitted curve never turns down).
    `aic` is the Gaussian least-squares AIC (`rmtension.stats.fits.aic`) with two coefficients.
    """
    d = np.sqrt(np.asarray(kl, dtype=np.float64))
    y = np.asarray(reward, dtype=np.float64)
    design = np.stack([d, -(d**2)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, y, rcond=None)
    peak_d = alpha / (2 * beta) if beta > 0 and alpha > 0 else float("inf")
    pred = design @ np.array([alpha, beta])
    rss = float(np.sum((y - pred) ** 2))
    floor = 1e-12 * float(np.sum((y - y.mean()) ** 2)) or 1e-300
    return {
        "alpha": float(alpha),
        "beta": float(beta),
        "r2": _r2(y, pred),
        "aic": len(y) * math.log(max(rss, floor) / len(y)) + 2 * 3,  # two coefficients and the variance
        "peak_d": float(peak_d),
        "peak_kl": float(peak_d**2),
        "peak_n": n_for_kl(peak_d**2) if math.isfinite(peak_d) else float("inf"),
    }


def frontier(
    select_a: np.ndarray, select_b: np.ndarray, evals: dict[str, np.ndarray], weights: Sequence[float], n: int
) -> list[dict]:
    """Best-of-n under the scalarised selector w * a + (1 - w) * b, for each w.

    select_a, select_b: [P, N] z-scored selector rewards (helpful and harmless PMs; z-scoring puts
    them on one scale so w is a trade-off weight, not a unit conversion). evals: name -> [P, N]
    values to report for the selected sample. Returns one row per w with each eval averaged over
    prompts. With the selector's own rewards as evals, `a` is non-decreasing and `b`
    non-increasing in w: true for every subset's argmax, so also for the expectation.
    """
    rows = []
    for w in weights:
        sel = w * select_a + (1 - w) * select_b
        rows.append(
            {
                "w": float(w),
                "n": int(n),
                **{k: float(bon_expectation(sel, v, n).mean()) for k, v in evals.items()},
            }
        )
    return rows
