"""Statistics of the optimisation curves, as pure numpy: within-prompt standardisation, the
train/test gap beyond regression to the mean, functional forms compared by AIC, and bootstrap CIs
of slopes (over prompts for best-of-n, over blocks of evaluations for RL).

Units. A judge's scores are standardised within prompts: each prompt's mean is removed and the
result divided by the pooled within-prompt SD, sqrt(sum_ij (s_ij - mean_i)^2 / (P (N - 1))). A
per-prompt offset between two judges then vanishes, and best-of-n, which only compares responses
to one prompt, is measured against the spread it actually selects from.

Regression to the mean. Let a select and b judge. If, within prompts, E[z_b | z_a] = rho z_a (two
judges of one latent quality with correlated errors, rho their within-prompt correlation), then
any selection by a gives E[z_b(pick)] = rho E[z_a(pick)], so a gap of (1 - rho) E[z_a(pick)] is
expected with no over-optimisation at all. The excess over it, rho E[z_a] - E[z_b], is zero for
such judges, and positive when the selector's own high scores are worse than its correlation with
the held-out judge says: the over-optimisation signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from rmtension.stats.best_of_n import bon_curve
from rmtension.stats.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, equivalence_verdict


def within_prompt_z(x: np.ndarray) -> tuple[np.ndarray, float]:
    """[P, N] -> (z [P, N], pooled within-prompt SD). SD 0 -> 1, so a constant judge stays finite."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=1, keepdims=True)
    sd = math.sqrt(float((centred**2).sum()) / (x.shape[0] * (x.shape[1] - 1)))
    sd = sd if sd > 0 else 1.0
    return centred / sd, sd


def within_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two [P, N] judges after removing each prompt's mean from each (NaN if one is constant)."""
    ca = a - a.mean(axis=1, keepdims=True)
    cb = b - b.mean(axis=1, keepdims=True)
    den = math.sqrt(float((ca**2).sum()) * float((cb**2).sum()))
    return float((ca * cb).sum()) / den if den > 0 else float("nan")


def percentile_ci(reps: np.ndarray, level: float, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - level) / 2
    return np.quantile(reps, a, axis=axis), np.quantile(reps, 1 - a, axis=axis)


def gap_pieces(sel: np.ndarray, other: np.ndarray, ns: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-prompt sums from which `gap_beyond_rtm` builds the gap, for best-of-n selecting by `sel`.

    sel, other: [P, N] raw scores. e_a, e_b: [len(ns), P] best-of-n expectations of the centred
    scores of the selector and the other judge; ss_a, ss_b, sp: [P] within-prompt sums of squares
    and cross-products; dof: within-prompt degrees of freedom per prompt (N - 1).
    """
    sel, other = np.asarray(sel, dtype=np.float64), np.asarray(other, dtype=np.float64)
    ca = sel - sel.mean(axis=1, keepdims=True)
    cb = other - other.mean(axis=1, keepdims=True)
    return {
        "e_a": bon_curve(sel, ca, ns),
        "e_b": bon_curve(sel, cb, ns),
        "ss_a": (ca**2).sum(axis=1),
        "ss_b": (cb**2).sum(axis=1),
        "sp": (ca * cb).sum(axis=1),
        "dof": float(sel.shape[1] - 1),
    }


def _gap_stats(pieces: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """idx [B, P] prompt resamples -> each statistic as [M, B] (rho as [B])."""
    dof = pieces["dof"] * idx.shape[1]
    ss_a, ss_b, sp = (pieces[k][idx].sum(axis=-1) for k in ("ss_a", "ss_b", "sp"))  # [B]
    sd_a = np.where(ss_a > 0, np.sqrt(ss_a / dof), 1.0)
    sd_b = np.where(ss_b > 0, np.sqrt(ss_b / dof), 1.0)
    den = np.sqrt(ss_a * ss_b)
    rho = np.divide(sp, den, out=np.zeros_like(sp), where=den > 0)
    za = pieces["e_a"][:, idx].mean(axis=-1) / sd_a  # [M, B]
    zb = pieces["e_b"][:, idx].mean(axis=-1) / sd_b
    return {
        "selected": za,
        "judged": zb,
        "gap": za - zb,
        "rtm": (1 - rho) * za,
        "excess": rho * za - zb,
        "rho": rho,
    }


def gap_beyond_rtm(
    pieces: Mapping[str, np.ndarray],
    ns: Sequence[int],
    n_boot: int,
    rng: np.random.Generator,
    level: float = 0.95,
) -> dict:
    """The train/test gap in within-prompt z, its regression-to-the-mean expectation and the excess.

    pieces: `gap_pieces` (or the same sums from RL). Every statistic, the SDs and rho included, is
    recomputed on each percentile-bootstrap resample of prompts (the same resamples for every n).
    `onset_n`: the first n whose excess CI lies above 0.
    """
    n_p = len(pieces["ss_a"])
    point = _gap_stats(pieces, np.arange(n_p)[None])
    reps = _gap_stats(pieces, rng.integers(0, n_p, size=(n_boot, n_p)))
    out = {"n": [int(n) for n in ns], "level": level, "rho": float(point["rho"][0])}
    for key in ("selected", "judged", "rtm"):
        out[key] = point[key][:, 0].tolist()
    for key in ("gap", "excess"):
        lo, hi = percentile_ci(reps[key], level)
        out[key], out[f"{key}_ci_low"], out[f"{key}_ci_high"] = (
            point[key][:, 0].tolist(),
            lo.tolist(),
            hi.tolist(),
        )
    out["ci_low"], out["ci_high"] = out["gap_ci_low"], out["gap_ci_high"]
    out["onset_n"] = next((int(n) for n, low in zip(ns, out["excess_ci_low"]) if low > 0), None)
    return out


def gap_both_roles(
    pieces: Mapping[str, np.ndarray],
    swapped: Mapping[str, np.ndarray],
    ns: Sequence[int],
    n_boot: int,
    rng: np.random.Generator,
    level: float = 0.95,
) -> dict:
    """The excess over regression to the mean averaged over both role assignments (pm_train selects and
    pm_test judges; pm_test selects and pm_train judges), with a percentile CI from the same prompt
    resamples for both, so the two are paired. Which PM is "train" is an arbitrary label when both are
    trained alike on halves of one objective; the average takes the choice off the verdict.

    pieces, swapped: `gap_pieces` of the two assignments. Returns {"n", "level", "excess",
    "excess_ci_low", "excess_ci_high", "by_role"} (lists over n; by_role: each assignment's point excess).
    """
    n_p = len(pieces["ss_a"])
    idx = rng.integers(0, n_p, size=(n_boot, n_p))
    point = [_gap_stats(x, np.arange(n_p)[None])["excess"][:, 0] for x in (pieces, swapped)]
    reps = (_gap_stats(pieces, idx)["excess"] + _gap_stats(swapped, idx)["excess"]) / 2  # [M, B]
    lo, hi = percentile_ci(reps, level)
    return {
        "n": [int(n) for n in ns],
        "level": level,
        "excess": ((point[0] + point[1]) / 2).tolist(),
        "excess_ci_low": lo.tolist(),
        "excess_ci_high": hi.tolist(),
        "by_role": {"pm_train selects": point[0].tolist(), "pm_test selects": point[1].tolist()},
    }


def aic(rss: float, m: int, k: int) -> float:
    """Gaussian least-squares AIC, m log(RSS / m) + 2 (k + 1): k coefficients plus the noise variance."""
    return m * math.log(rss / m) + 2 * (k + 1)


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least squares y ~ a + b x, with R^2 and AIC (RSS floored at 1e-12 of the total, so exact fits stay finite)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    rss = float(np.sum((y - design @ np.array([a, b])) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    floor = 1e-12 * ss_tot if ss_tot > 0 else 1e-300
    return {
        "intercept": float(a),
        "slope": float(b),
        "r2": 1.0 - rss / ss_tot if ss_tot > 0 else float("nan"),
        "rss": rss,
        "aic": aic(max(rss, floor), len(y), 2),
    }


def compare_forms(forms: Mapping[str, np.ndarray], y: np.ndarray) -> dict:
    """Fit y ~ a + b f(x) for each form (name -> f(x) at the curve's points) and rank them by AIC.

    Every form has two coefficients, so the AIC differences equal those of AICc and BIC.
    `best`: the lowest AIC; `delta_aic`: how far the runner-up is behind it (inf with one form).
    """
    fits = {name: linear_fit(x, y) for name, x in forms.items()}
    order = sorted(fits, key=lambda k: fits[k]["aic"])
    delta = fits[order[1]]["aic"] - fits[order[0]]["aic"] if len(order) > 1 else float("inf")
    return {"forms": fits, "best": order[0], "delta_aic": float(delta), "points": int(len(y))}


def slope_weights(x: np.ndarray) -> np.ndarray:
    """w with w @ y = the least-squares slope of y on x (w_i = (x_i - mean x) / sum (x - mean x)^2)."""
    x = np.asarray(x, dtype=np.float64)
    d = x - x.mean()
    return d / float((d**2).sum())


def prompt_bootstrap_slope(
    e: np.ndarray, ss: np.ndarray, dof: float, x: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """[n_boot] slopes of the mean best-of-n curve (within-prompt z) on x, prompts resampled.

    e: [M, P] per-prompt curves of the centred raw judge; ss: [P] its within-prompt sums of squares;
    dof: within-prompt degrees of freedom per prompt. The SD is re-estimated on each resample.
    """
    n_p = e.shape[1]
    idx = rng.integers(0, n_p, size=(n_boot, n_p))
    sd = np.sqrt(ss[idx].sum(axis=-1) / (dof * n_p))
    sd = np.where(sd > 0, sd, 1.0)
    return slope_weights(x) @ (e[:, idx].mean(axis=-1) / sd)


def block_length(m: int, block: int | None = None) -> int:
    """The moving-block length for m consecutive evaluations: `block`, else ceil(m^(1/3))."""
    return max(1, min(m, block or math.ceil(m ** (1 / 3))))


def block_bootstrap_slope(
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    n_boot: int,
    rng: np.random.Generator,
    block: int | None = None,
) -> tuple[dict, np.ndarray | None]:
    """Pooled fit y ~ a + b x over several runs (seeds) and [n_boot] bootstrap slopes, or None.

    Residual moving-block bootstrap: each run's residuals from the pooled fit are resampled as
    blocks of consecutive evaluations (starts uniform on 0..m-L, blocks joined and cut to m), added
    back to the fitted values and the pooled slope refitted. Consecutive evaluations of one run
    share a slowly drifting policy, so their errors are not independent; blocks keep that
    dependence. None when a run has fewer than 3 evaluations (its residuals say nothing).
    """
    x_all = np.concatenate([np.asarray(x, dtype=np.float64) for x in xs])
    y_all = np.concatenate([np.asarray(y, dtype=np.float64) for y in ys])
    fit = linear_fit(x_all, y_all)
    if min(len(x) for x in xs) < 3 or float(np.ptp(x_all)) == 0:
        return fit, None
    fitted = fit["intercept"] + fit["slope"] * x_all
    resid = y_all - fitted
    draws, start = [], 0
    for x in xs:
        m = len(x)
        length = block_length(m, block)
        n_blocks = math.ceil(m / length)
        starts = rng.integers(0, m - length + 1, size=(n_boot, n_blocks))
        idx = (starts[:, :, None] + np.arange(length)).reshape(n_boot, -1)[:, :m]  # [B, m]
        draws.append(resid[start + idx])
        start += m
    y_star = fitted + np.concatenate(draws, axis=1)  # [B, M]
    return fit, y_star @ slope_weights(x_all)


DELTA_AIC = 2.0
"""AIC lead that counts as one form fitting better than another (Burnham & Anderson: ΔAIC < 2 is no real difference)."""


def form_verdict(compared: dict, slope_ci, min_effect: float) -> str:
    """The sqrt_kl rule for one curve: `compared` is `rmtension.stats.fits.compare_forms`'s result."""
    slope = equivalence_verdict(slope_ci, min_effect)
    clear = compared["delta_aic"] >= DELTA_AIC
    if slope == NOT_SUPPORTED or (clear and compared["best"] != "sqrt_kl"):
        return NOT_SUPPORTED
    if clear and compared["best"] == "sqrt_kl" and slope == SUPPORTED:
        return SUPPORTED
    return INCONCLUSIVE
