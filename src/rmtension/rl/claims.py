"""The verdict rules of the optimisation claims, as functions of `bon_fit.json` and `rl.json`;
`rmtension.report.findings` (`sqrt_kl`, `train_test_gap`) states them.

sqrt_kl, per curve (best-of-n: pm_test's reading of pm_train's pick; RL: pm_train's reward on the
held-out prompts), with m = `claims.min_effect.sqrt_kl` (slope in within-prompt SD per sqrt(nat)):
    supported       a + b sqrt(KL) has the lowest AIC, ahead of the next form by ΔAIC >= 2, and the
                    slope's CI lies above 0 (and not inside ±m)
    not supported   another form (a + b KL; for best-of-n also a + b log n) wins by ΔAIC >= 2, or the
                    slope's CI lies inside ±m or below 0 (the equivalence rule)
    inconclusive    otherwise
train_test_gap, per curve: the equivalence rule on the CI of the gap's excess over regression to the
mean, with m = `claims.min_effect.train_test_gap` (within-prompt SD). Both claims: every curve must
hold (`rmtension.stats.verdicts.all_of`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.stats import t as t_dist


from rmtension.run.runio import read_json
from rmtension.stats.fits import form_verdict
from rmtension.stats.finding import SQRT_KL, TRAIN_TEST_GAP, Finding, not_run
from rmtension.stats.verdicts import (
    INCONCLUSIVE,
    NOT_RUN,
    all_of,
    claim_min_effect,
    equivalence_verdict,
    min_detectable_effect,
)


def current(bon: dict | None, rl: dict | None, needs: str = "heldout_curve") -> tuple[dict, dict, list[str]]:
    """The entries written by this version's analysis (a best-of-n entry must have `needs`), and the
    files that predate it (to rerun)."""
    old = []
    bon_ok = {o: f for o, f in (bon or {}).items() if "heldout_curve" in f and needs in f}
    rl_ok = {o: s for o, s in (rl or {}).items() if "trend_ci95" in s}
    if bon and not bon_ok:
        old.append("bon_fit.json")
    if rl and not rl_ok:
        old.append("rl.json")
    return bon_ok, rl_ok, old


def sqrt_kl_parts(bon: dict, rl: dict) -> list[dict]:
    """One dict per curve: where, the forms' comparison, the sqrt(KL) slope and its CI."""
    parts = []
    for o, f in bon.items():
        col = f["heldout_curve"]
        c = f["curves"][col]
        parts.append(
            {
                "where": f"best-of-n {o}",
                "compared": c,
                "slope": c["forms"]["sqrt_kl"]["slope"],
                "ci": f["slope_ci"][col],
            }
        )
    for o, s in rl.items():
        ci, seed_level = seed_unit_trend_ci(s)
        parts.append(
            {
                "where": f"RL {o}",
                "compared": s["curves"][s["trend_judge"]],
                "slope": s["trend"],
                "ci": ci,
                "seed_level": seed_level,
            }
        )
    return parts


def seed_unit_trend_ci(s: dict, level: float = 0.95) -> tuple[list[float], dict | None]:
    """The RL trend's CI with the seed as the unit: the hull of the pooled fit's CI (evaluations resampled
    within seeds, conditional on these seeds) and the t interval over the per-seed slopes,

        mean(b_k) +- t_{S-1, (1 + level) / 2} * sd(b_k) / sqrt(S)

    so another draw of seeds is inside what the verdict reads; with one seed only the pooled CI (and
    None: no seed-level interval). s: one objective of rl.json (`by_seed[k]["trend"]`)."""
    slopes = np.array([b["trend"] for b in s.get("by_seed", {}).values()], dtype=np.float64)
    if len(slopes) < 2:
        return list(s["trend_ci95"]), None
    se = float(slopes.std(ddof=1) / np.sqrt(len(slopes)))
    half = float(t_dist.ppf((1 + level) / 2, len(slopes) - 1)) * se
    mean = float(slopes.mean())
    pooled = s["trend_ci95"]
    hull = [min(pooled[0], mean - half), max(pooled[1], mean + half)]
    return hull, {"mean": mean, "ci95": [mean - half, mean + half], "se": se, "df": len(slopes) - 1}


def gap_parts(bon: dict, rl: dict) -> list[dict]:
    """One dict per curve: where, gap, rtm, excess and its CI, and (best-of-n) the roles swapped."""
    parts = []
    for o, f in bon.items():
        g, w, both = f["gap"], f["gap_swapped"], f["gap_both_roles"]
        parts.append(
            {
                "where": f"best-of-{g['n'][-1]} {o}",
                "gap": g["gap"][-1],
                "rtm": g["rtm"][-1],
                "rho": g["rho"],
                "excess": both["excess"][-1],  # averaged over both role assignments: the verdict reads it
                "ci": [both["excess_ci_low"][-1], both["excess_ci_high"][-1]],
                "one_role": {
                    "excess": g["excess"][-1],
                    "ci": [g["excess_ci_low"][-1], g["excess_ci_high"][-1]],
                },
                "swapped": {
                    "gap": w["gap"][-1],
                    "excess": w["excess"][-1],
                    "ci": [w["excess_ci_low"][-1], w["excess_ci_high"][-1]],
                },
            }
        )
    for o, s in rl.items():
        g = s["gap"]
        parts.append(
            {
                "where": f"RL {o}",
                "gap": g["gap"],
                "rtm": g["rtm"],
                "rho": g["rho"],
                "excess": g["excess"],
                "ci": [g["excess_ci_low"], g["excess_ci_high"]],
            }
        )
    return parts


def decided(parts: list[dict], verdicts: list[str], min_effect: float) -> dict:
    """The Finding fields of a claim made of parts (each with where, effect, ci): the verdict (`all_of`),
    effect and ci95 of the parts whose CI is finite, min_effect and the largest detectable effect."""
    ok = [p for p in parts if all(math.isfinite(x) for x in p["ci"])]
    return {
        "verdict": all_of(verdicts),
        "effect": {p["where"]: float(p["effect"]) for p in ok},
        "ci95": {p["where"]: [float(x) for x in p["ci"]] for p in ok},
        "min_effect": min_effect,
        "min_detectable_effect": max((min_detectable_effect(p["ci"]) for p in ok), default=0.0),
    }


def stale(claim_id: str, old: list[str]) -> Finding:
    """ "not run": the run's files were written before the held-out analysis existed."""
    files = " and ".join(f"`{f}`" for f in old)
    return Finding(claim_id, NOT_RUN, f"{files} predate the held-out analysis: rerun the bon / rl stages.")


def _gao_text(o: str, g: dict) -> str:
    if not math.isfinite(g["peak_d"]):
        return f"best-of-n {o}: α {g['alpha']:+.3f}, β {g['beta']:+.3f}, no peak (β ≤ 0)"
    n = f"n ≈ {g['peak_n']:.0f}" if math.isfinite(g["peak_n"]) else "n > 10⁹"
    return f"best-of-n {o}: α {g['alpha']:+.3f}, β {g['beta']:+.3f}, peak at d* = {g['peak_d']:.2f} ({n})"


def _sources(bon: dict, rl: dict) -> str:
    return ", ".join(f for f, x in (("bon_fit.json", bon), ("rl.json", rl)) if x)


def sqrt_kl_finding(bon: dict | None, rl: dict | None, m: float) -> Finding:
    """The sqrt_kl finding from bon_fit.json's objectives and rl.json (either may be None)."""
    bon, rl, old = current(bon, rl)
    parts = sqrt_kl_parts(bon, rl)
    if not parts:
        return stale(SQRT_KL, old)
    verdicts = [form_verdict(p["compared"], p["ci"], m) for p in parts]
    texts = []
    for p, v in zip(parts, verdicts):
        c, forms = p["compared"], p["compared"]["forms"]
        aics = ", ".join(f"{k} {f['aic']:.1f}" for k, f in forms.items())
        sl = p.get("seed_level")
        seeds = (
            f" (seeds as the unit: per-seed slopes' mean {sl['mean']:+.3f}, t interval [{sl['ci95'][0]:+.3f}, "
            f"{sl['ci95'][1]:+.3f}] with {sl['df']} df; the CI is the hull of it and the pooled fit's)"
            if sl
            else ""
        )
        texts.append(
            f"{p['where']} slope {p['slope']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]{seeds}, best form {c['best']} "
            f"by ΔAIC {c['delta_aic']:.1f} (AIC {aics}; R² of sqrt(KL) {forms['sqrt_kl']['r2']:.3f}): {v}"
        )
    gao = [_gao_text(o, f["gao_test_pm"]) for o, f in bon.items()]
    d = decided([{**p, "effect": p["slope"]} for p in parts], verdicts, m)
    evidence = (
        "Held-out curves (best-of-n: pm_test's reward of pm_train's pick; RL: pm_train's reward on held-out prompts), "
        "in within-prompt SD per sqrt(nat): "
        + "; ".join(texts)
        + ". "
        + (f"Gao et al.'s d(α − βd) on the best-of-n held-out curves: {'; '.join(gao)}. " if gao else "")
        + f"Slopes are judged against ±{m:g}."
    )
    if d["verdict"] == INCONCLUSIVE:
        evidence += f" This sample could detect slopes of about {d['min_detectable_effect']:.3f} (80% power)."
    return Finding(
        SQRT_KL,
        d.pop("verdict"),
        evidence,
        _sources(bon, rl),
        "; ".join(
            f"{p['where']} {p['slope']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] ({p['compared']['best']})"
            for p in parts
        ),
        test=(
            "per curve, a + b·sqrt(KL) against a + b·KL (best-of-n: and a + b·log n) by Gaussian least-squares AIC "
            "(ΔAIC ≥ 2 decides), and the equivalence rule on the sqrt(KL) slope's 95% CI (best-of-n: bootstrap over "
            "prompts; RL: moving-block bootstrap over evaluations, widened to the t interval over the per-seed slopes, "
            "seeds as the unit); every curve must hold"
        ),
        null="reward does not grow with sqrt(KL) (slope inside ±min_effect), or another form fits better",
        **d,
    )


def gap_finding(bon: dict | None, rl: dict | None, m: float) -> Finding:
    """The train_test_gap finding from bon_fit.json's objectives and rl.json (either may be None)."""
    bon, rl, old = current(bon, rl, needs="gap_both_roles")
    parts = gap_parts(bon, rl)
    if not parts:
        return stale(TRAIN_TEST_GAP, old)
    verdicts = [equivalence_verdict(p["ci"], m) for p in parts]
    texts = []
    for p, v in zip(parts, verdicts):
        if "swapped" in p:
            r, w = p["one_role"], p["swapped"]
            t = (
                f"{p['where']} excess averaged over both role assignments {p['excess']:+.3f} "
                f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] (pm_train selecting: gap {p['gap']:+.3f}, regression to "
                f"the mean {p['rtm']:+.3f} (ρ̂ {p['rho']:.2f}), excess {r['excess']:+.3f} [{r['ci'][0]:+.3f}, "
                f"{r['ci'][1]:+.3f}]; pm_test selecting: gap {w['gap']:+.3f}, excess {w['excess']:+.3f} "
                f"[{w['ci'][0]:+.3f}, {w['ci'][1]:+.3f}])"
            )
        else:
            t = (
                f"{p['where']} gap {p['gap']:+.3f}, regression to the mean {p['rtm']:+.3f} (ρ̂ {p['rho']:.2f}), "
                f"excess {p['excess']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]"
            )
        texts.append(f"{t}: {v}")
    d = decided([{**p, "effect": p["excess"]} for p in parts], verdicts, m)
    evidence = (
        "pm_train − pm_test reward of the optimised policy in within-prompt SD (best-of-n: of pm_train's pick at the "
        "largest n; RL: gain from step 0 to the last held-out evaluation), against (1 − ρ̂)·E[z of the pick], the gap "
        "regression to the mean gives two equally good judges correlated ρ̂: "
        + "; ".join(texts)
        + f". The excess is judged against ±{m:g}."
    )
    if d["verdict"] == INCONCLUSIVE:
        evidence += (
            f" This sample could detect an excess of about {d['min_detectable_effect']:.3f} (80% power)."
        )
    return Finding(
        TRAIN_TEST_GAP,
        d.pop("verdict"),
        evidence,
        _sources(bon, rl),
        "; ".join(
            f"{p['where']} excess {p['excess']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]" for p in parts
        ),
        test=(
            "equivalence rule on the 95% CI (bootstrap over prompts, SDs and ρ̂ re-estimated) of the gap's excess over "
            "regression to the mean, for best-of-n averaged over both role assignments of the two PMs (the same "
            "prompt resamples); every curve must hold"
        ),
        null="the gap is no larger than (1 − ρ̂)·E[z of the pick], what two equally good judges correlated ρ̂ give",
        **d,
    )


def _optimisation(run_dir: Path) -> tuple[dict | None, dict | None]:
    bon = read_json(run_dir / "bon_fit.json")["objectives"] if (run_dir / "bon_fit.json").exists() else None
    rl = read_json(run_dir / "rl.json") if (run_dir / "rl.json").exists() else None
    return bon, rl


def sqrt_kl(run_dir: Path) -> Finding:
    bon, rl = _optimisation(run_dir)
    if bon is None and rl is None:
        return not_run(SQRT_KL, ("bon", "rl"), run_dir, "bon_fit.json")
    return sqrt_kl_finding(bon, rl, claim_min_effect(run_dir, SQRT_KL))


def train_test_gap(run_dir: Path) -> Finding:
    bon, rl = _optimisation(run_dir)
    if bon is None and rl is None:
        return not_run(TRAIN_TEST_GAP, ("bon", "rl"), run_dir, "bon_fit.json")
    return gap_finding(bon, rl, claim_min_effect(run_dir, TRAIN_TEST_GAP))
