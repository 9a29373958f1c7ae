"""Sentences and table rows shared by the best-of-n and RL report sections: each curve's verdict
under the rules of the sqrt(KL) and train/test-gap claims, with its numbers."""

from __future__ import annotations

import numpy as np

from rmtension.stats.fits import form_verdict
from rmtension.stats.verdicts import equivalence_verdict

CURVES = {
    "reward_train_pm": ("pm_train (selects)", "-", "o"),
    "reward_test_pm": ("pm_test (held-out half)", "--", "s"),
    "reward_other_objective": ("other objective's RM", ":", "^"),
}
LABELS = {
    **{k: v[0] for k, v in CURVES.items()},
    "reward_helpful_rm": "study helpful RM",
    "reward_harmless_rm": "study harmless RM",
}
FORM_LABELS = {"sqrt_kl": "a + b·sqrt(KL)", "kl": "a + b·KL", "log_n": "a + b·log n"}
KL_LABEL = "sqrt(KL_bon), KL_bon = log n - (n-1)/n (an upper bound)"


def ci_text(ci) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def forms_sentence(where: str, compared: dict, slope: float, ci, m: float) -> str:
    """The sqrt(KL) rule applied to one held-out curve, with its numbers."""
    v = form_verdict(compared, ci, m)
    aics = ", ".join(f"{FORM_LABELS.get(k, k)} {f['aic']:.1f}" for k, f in compared["forms"].items())
    return (
        f"{where}: reward linear in sqrt(KL) is **{v}** on the held-out curve: slope {slope:+.3f} {ci_text(ci)} "
        f"(against ±{m:g}); best form {FORM_LABELS.get(compared['best'], compared['best'])}, "
        f"ΔAIC {compared['delta_aic']:.1f} to the next (AIC {aics}; ΔAIC ≥ 2 decides)."
    )


def gap_sentence(where: str, g: dict, m: float, swapped: dict | None = None, i: int = -1) -> str:
    """The gap, its regression-to-the-mean share and the excess (index i of each list, or scalars)."""
    pick = (lambda k: g[k][i]) if isinstance(g["gap"], list) else (lambda k: g[k])
    ci = [pick("excess_ci_low"), pick("excess_ci_high")]
    text = (
        f"{where}: pm_train − pm_test = {pick('gap'):+.3f} SD {ci_text([pick('gap_ci_low'), pick('gap_ci_high')])}; "
        f"regression to the mean (ρ̂ = {g['rho']:.2f}) expects {pick('rtm'):+.3f}, so the excess is "
        f"{pick('excess'):+.3f} {ci_text(ci)}: the train/test gap beyond regression to the mean is "
        f"**{equivalence_verdict(ci, m)}** (against ±{m:g})."
    )
    if swapped is not None:
        w = swapped
        text += (
            f" Roles swapped (pm_test selects, pm_train judges): gap {w['gap'][i]:+.3f}, excess "
            f"{w['excess'][i]:+.3f} {ci_text([w['excess_ci_low'][i], w['excess_ci_high'][i]])}."
        )
    return text


def forms_rows(objective: str, curves: dict, slope_ci: dict | None = None) -> list[dict]:
    rows = []
    for col, c in curves.items():
        f = c["forms"]
        rows.append(
            {
                "objective": objective,
                "curve": LABELS.get(col, col),
                **{f"AIC {FORM_LABELS[k]}": f"{v['aic']:.1f}" for k, v in f.items()},
                "best": FORM_LABELS.get(c["best"], c["best"]),
                "ΔAIC": f"{c['delta_aic']:.1f}",
                "sqrt(KL) slope": f"{f['sqrt_kl']['slope']:+.3f}",
                "slope CI": ci_text(slope_ci[col]) if slope_ci and col in slope_ci else "",
                "R² (sqrt)": f"{f['sqrt_kl']['r2']:.3f}",
            }
        )
    return rows


def gao_row(objective: str, curve: str, g: dict) -> dict:
    peak = np.isfinite(g["peak_d"])
    return {
        "objective": objective,
        "curve": curve,
        "α": f"{g['alpha']:+.3f}",
        "β": f"{g['beta']:+.3f}",
        "d* = α/(2β)": f"{g['peak_d']:.2f}" if peak else "no peak (β ≤ 0)",
        "peak n": f"{g['peak_n']:.0f}" if peak and np.isfinite(g.get("peak_n", np.inf)) else "",
        "R²": f"{g['r2']:.3f}",
        "AIC": f"{g['aic']:.1f}",
    }
