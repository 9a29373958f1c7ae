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
hold (`rmtension.report.verdicts.all_of`).
"""

from __future__ import annotations

import math

from rmtension.report.finding import Finding
from rmtension.report.verdicts import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    all_of,
    any_of_parts,
    equivalence_verdict,
    min_detectable_effect,
)

DELTA_AIC = 2.0
"""AIC lead that counts as one form fitting better than another (Burnham & Anderson: ΔAIC < 2 is no real difference)."""


def form_verdict(compared: dict, slope_ci, min_effect: float) -> str:
    """The sqrt_kl rule for one curve: `compared` is `rmtension.optimise.fits.compare_forms`'s result."""
    slope = equivalence_verdict(slope_ci, min_effect)
    clear = compared["delta_aic"] >= DELTA_AIC
    if slope == NOT_SUPPORTED or (clear and compared["best"] != "sqrt_kl"):
        return NOT_SUPPORTED
    if clear and compared["best"] == "sqrt_kl" and slope == SUPPORTED:
        return SUPPORTED
    return INCONCLUSIVE


def current(bon: dict | None, rl: dict | None) -> tuple[dict, dict, list[str]]:
    """The entries written by this version's analysis, and the files that predate it (to rerun)."""
    old = []
    bon_ok = {o: f for o, f in (bon or {}).items() if "heldout_curve" in f}
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
        parts.append(
            {
                "where": f"RL {o}",
                "compared": s["curves"][s["trend_judge"]],
                "slope": s["trend"],
                "ci": s["trend_ci95"],
            }
        )
    return parts


def gap_parts(bon: dict, rl: dict) -> list[dict]:
    """One dict per curve: where, gap, rtm, excess and its CI, and (best-of-n) the roles swapped."""
    parts = []
    for o, f in bon.items():
        g, w = f["gap"], f["gap_swapped"]
        parts.append(
            {
                "where": f"best-of-{g['n'][-1]} {o}",
                "gap": g["gap"][-1],
                "rtm": g["rtm"][-1],
                "rho": g["rho"],
                "excess": g["excess"][-1],
                "ci": [g["excess_ci_low"][-1], g["excess_ci_high"][-1]],
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


def stale(paper: str, claim: str, old: list[str]) -> Finding:
    """ "not run": the run's files were written before the held-out analysis existed."""
    files = " and ".join(f"`{f}`" for f in old)
    return Finding(
        paper, claim, "not run", f"{files} predate the held-out analysis: rerun the bon / rl stages.", ""
    )


def _gao_text(o: str, g: dict) -> str:
    if not math.isfinite(g["peak_d"]):
        return f"best-of-n {o}: α {g['alpha']:+.3f}, β {g['beta']:+.3f}, no peak (β ≤ 0)"
    n = f"n ≈ {g['peak_n']:.0f}" if math.isfinite(g["peak_n"]) else "n > 10⁹"
    return f"best-of-n {o}: α {g['alpha']:+.3f}, β {g['beta']:+.3f}, peak at d* = {g['peak_d']:.2f} ({n})"


def _sources(bon: dict, rl: dict) -> str:
    return ", ".join(f for f, x in (("bon_fit.json", bon), ("rl.json", rl)) if x)


def sqrt_kl_finding(paper: str, claim: str, bon: dict | None, rl: dict | None, m: float) -> Finding:
    """The sqrt_kl finding from bon_fit.json's objectives and rl.json (either may be None)."""
    bon, rl, old = current(bon, rl)
    parts = sqrt_kl_parts(bon, rl)
    if not parts:
        return stale(paper, claim, old)
    verdicts = [form_verdict(p["compared"], p["ci"], m) for p in parts]
    texts = []
    for p, v in zip(parts, verdicts):
        c, forms = p["compared"], p["compared"]["forms"]
        aics = ", ".join(f"{k} {f['aic']:.1f}" for k, f in forms.items())
        texts.append(
            f"{p['where']} slope {p['slope']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}], best form {c['best']} "
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
        paper,
        claim,
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
            "prompts; RL: moving-block bootstrap over evaluations); every curve must hold"
        ),
        null="reward does not grow with sqrt(KL) (slope inside ±min_effect), or another form fits better",
        **d,
    )


def gap_finding(paper: str, claim: str, bon: dict | None, rl: dict | None, m: float) -> Finding:
    """The train_test_gap finding from bon_fit.json's objectives and rl.json (either may be None)."""
    bon, rl, old = current(bon, rl)
    parts = gap_parts(bon, rl)
    if not parts:
        return stale(paper, claim, old)
    verdicts = [equivalence_verdict(p["ci"], m) for p in parts]
    texts = []
    for p, v in zip(parts, verdicts):
        t = (
            f"{p['where']} gap {p['gap']:+.3f}, regression to the mean {p['rtm']:+.3f} (ρ̂ {p['rho']:.2f}), excess "
            f"{p['excess']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]"
        )
        if "swapped" in p:
            w = p["swapped"]
            t += f"; pm_test selecting: gap {w['gap']:+.3f}, excess {w['excess']:+.3f} [{w['ci'][0]:+.3f}, {w['ci'][1]:+.3f}]"
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
        paper,
        claim,
        d.pop("verdict"),
        evidence,
        _sources(bon, rl),
        "; ".join(
            f"{p['where']} excess {p['excess']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]" for p in parts
        ),
        test=(
            "equivalence rule on the 95% CI (bootstrap over prompts, SDs and ρ̂ re-estimated) of the gap's excess over "
            "regression to the mean; every curve must hold"
        ),
        null="the gap is no larger than (1 − ρ̂)·E[z of the pick], what two equally good judges correlated ρ̂ give",
        **d,
    )


def tradeoff_finding(paper: str, claim: str, acc: dict, front, m: float) -> Finding:
    """The tradeoff finding: the equivalence rule on 0.5 minus each single-objective RM's accuracy on the
    other objective's test pairs (tension.json `accuracy`), supported when one part is, not supported
    when both are; with the best-of-n frontier's end points read by the held-out PMs (`frontier.csv`,
    a DataFrame or None; a frontier without `judged_by` was read by the selecting RMs and is left out)."""
    cross = [
        (a, b, acc[a][b])
        for a, b in (("helpful", "harmless"), ("harmless", "helpful"))
        if b in acc.get(a, {})
    ]
    below = {f"{a} RM on {b}": [0.5 - d["ci95"][1], 0.5 - d["ci95"][0]] for a, b, d in cross}  # below chance
    parts = [equivalence_verdict(ci, m) for ci in below.values()]
    if cross and all("p_vs_chance" in d for _, _, d in cross):  # Holm over the two parts (`any_of_parts`)
        effects = {k: (0.5 - d["mean"], below[k], d["p_vs_chance"]) for k, (_, _, d) in zip(below, cross)}
        verdict, by_part, _ = any_of_parts(effects, m)
        parts = list(by_part.values())
    elif SUPPORTED in parts:
        verdict = SUPPORTED
    elif parts and all(v == NOT_SUPPORTED for v in parts):
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    texts = [
        f"the {a} RM ranks {b} test pairs correctly {d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]: {v}"
        for (a, b, d), v in zip(cross, parts)
    ]
    evidence = (
        f"Accuracy across objectives (0.5 = chance), each judged by how far it lies below chance against ±{m:g}: "
        + "; ".join(texts)
        + "."
    )
    sources = ["tension.json"]
    w = front[front["kind"] == "weighted"].sort_values("w") if front is not None else []
    if len(w) >= 2 and "judged_by" in front:
        lo, hi = w.iloc[0], w.iloc[-1]
        evidence += (
            f" Best-of-{int(hi['n'])} read by the held-out PMs (pm_test): selecting by pm_train_helpful alone "
            f"reaches helpful z {hi['helpful']:+.2f} and harmless z {hi['harmless']:+.2f}; by pm_train_harmless "
            f"alone, {lo['helpful']:+.2f} and {lo['harmless']:+.2f}."
        )
        sources.append("frontier.csv")
    mde = max(map(min_detectable_effect, below.values()), default=0.0)
    if verdict == INCONCLUSIVE and below:
        evidence += f" This sample could detect {mde:.3f} below chance (80% power)."
    return Finding(
        paper,
        claim,
        verdict,
        evidence,
        ", ".join(sources),
        "; ".join(
            f"{a} RM on {b} {d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]" for a, b, d in cross
        ),
        effect={k: 0.5 - d["mean"] for k, (_, _, d) in zip(below, cross)},
        ci95=below,
        min_effect=m,
        min_detectable_effect=mde,
        test="equivalence rule on 0.5 minus each cross-objective accuracy's 95% CI; supported when one part is, "
        "Holm-adjusted over the two parts (bootstrap p against chance, `p_vs_chance`) where tension.json has them",
        null="each single-objective RM ranks the other objective's test pairs at chance or better",
        source_files=sources,
    )
