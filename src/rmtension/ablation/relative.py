"""`neurons_identified` in the paper's unit, read only where it can hold (`configs/neurons.yaml`).

The effect is the relative accuracy drop against matched random neurons,
(acc_controls - acc_set) / acc_clean (`rmtension.ablation.stats.relative_drop`), of each objective's
top set on its own objective's test pairs, in the RMs of that objective (the mixed RM where none
was ablated), at every claim p (`ablation.claim_ps`: the paper's 10, 20 and 30%) in the claim mode
(`ablation.claim_mode`: zero, the paper's), per control kind. Margins: `ablation.relative_margins`,
fixed per p before the run. Seeds are the unit: a part's CI is the random-effects interval over the
RM's seeds (`rmtension.stats.seeds.seed_t_interval`; pair part: the mean of the seeds' bootstrap SEs,
squared, as every seed scores the same test pairs).

A part is read only where it can hold:

- the skill: the RM's length-controlled accuracy on that test set (`tension.json`, seeds as the
  unit) has a 95% CI above 0.5; otherwise "not testable here: RM lacks the skill";
- the positive control (`ablation.positive_control`, e.g. the top attribution neurons, selected on
  the scoring pairs of the train split, disjoint from the test pairs, compared with the same
  random controls): a part that would be "not supported" or "non-zero but small" needs the control's
  CI above the margin; otherwise "not testable here", with the control's effect as the reason.

The claim holds only if every testable part does (`all_of`, an intersection-union test: no
multiplicity correction needed); not testable parts are listed with their reasons, and a claim with
no testable part is "not testable here".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.run.runio import read_json
from rmtension.stats.finding import NEURONS_IDENTIFIED, Finding
from rmtension.stats.pvalues import nearest_p
from rmtension.stats.seeds import seed_t_interval
from rmtension.stats.verdicts import (
    NON_ZERO_SMALL,
    NOT_SUPPORTED,
    NOT_TESTABLE,
    SUPPORTED,
    all_of,
    equivalence_verdict,
    min_detectable_effect,
)

OBJECTIVES = ("helpful", "harmless")
KINDS = {"layer": "layer-matched", "magnitude": "magnitude-matched"}


def seed_effect(rows: pd.DataFrame, column: str = "rel_drop_vs_random") -> dict | None:
    """{effect, ci95, seeds, per_seed} of one part over its RMs' seeds (one row per seed), or None."""
    rows = rows[rows[column].notna()]
    if rows.empty:
        return None
    per_seed = rows[column].to_numpy(dtype=float)
    se = rows.get(f"{column}_se")
    pair_var = float(np.nanmean(se.to_numpy(dtype=float))) ** 2 if se is not None else 0.0
    est = float(per_seed.mean())
    iv = seed_t_interval(est, pair_var if np.isfinite(pair_var) else 0.0, [per_seed])
    return {"effect": est, "ci95": iv["ci95"], "seeds": len(per_seed), "per_seed": per_seed.tolist()}


def skill(run_dir: Path, rm_objective: str, test: str) -> tuple[bool, str]:
    """Whether the RM of `rm_objective` has the skill on `test` (length-controlled CI above 0.5), and why not."""
    path = run_dir / "tension.json"
    if not path.exists():
        return False, "no tension.json, so the RM's length-controlled accuracy is unknown"
    acc = read_json(path).get("accuracy", {}).get(rm_objective, {}).get(test, {})
    lc = acc.get("length_controlled")
    if not lc or not lc.get("estimable"):
        why = (lc or {}).get("reason") or "no length-controlled accuracy"
        return False, f"the {rm_objective} RM's length-controlled accuracy on {test} is not estimable ({why})"
    lo, hi = lc["ci95"]
    words = f"the {rm_objective} RM's length-controlled accuracy on {test} is {lc['estimate']:.3f} [{lo:.3f}, {hi:.3f}]"
    return lo > 0.5, words


def _part_rows(frame: pd.DataFrame, scorer: str, p: float, mode: str, o: str, kind: str) -> pd.DataFrame:
    return frame[
        (frame["scorer"] == scorer)
        & (frame["p"] == p)
        & (frame["mode"] == mode)
        & (frame["neuron_set"] == f"{o}_top")
        & (frame["test_set"] == o)
        & (frame["control"].fillna("") == kind)
        & (frame["n_draws"] > 0)
    ]


def _rms_of(frame: pd.DataFrame, o: str, fallback: str) -> tuple[pd.DataFrame, str]:
    """The rows of the RMs trained on objective `o` (`<o>-seed*`), else of the `fallback` objective."""
    for obj in (o, fallback):
        mine = frame[frame["rm"].astype(str).str.startswith(obj + "-")]
        if not mine.empty:
            return mine, obj
    return frame.iloc[:0], o


def identified_relative(
    run_dir: Path,
    frame: pd.DataFrame,
    claim_ps: list[float],
    margins: dict[float, float],
    scorer: str,
    mode: str,
    positive: str | None,
    fallback: str = "mixed",
) -> Finding:
    """`neurons_identified` read as the module docstring says, from ablation.csv's rows `frame`."""
    parts, controls, verdicts, texts, untestable = {}, {}, {}, [], {}
    available = sorted(frame["p"].unique())
    for o in OBJECTIVES:
        rows, rm_obj = _rms_of(frame, o, fallback)
        has_skill, skill_words = skill(run_dir, rm_obj, o)
        for q in claim_ps:
            p = float(nearest_p(available, q)) if available else q
            m = float(margins.get(q, margins.get(p, np.nan)))
            for kind in KINDS:
                label = f"{o}_top on {o} at top {p:g}% vs {kind} ({rm_obj} RM)"
                e = seed_effect(_part_rows(rows, scorer, p, mode, o, kind))
                if e is None:
                    continue
                pc = seed_effect(_part_rows(rows, positive, p, mode, o, kind)) if positive else None
                v = equivalence_verdict(e["ci95"], m, small=True)
                reaches = pc is not None and pc["ci95"][0] > m
                if pc is not None:
                    controls[label] = {**pc, "scorer": positive, "reaches_margin": reaches, "min_effect": m}
                if not has_skill:
                    v, untestable[label] = NOT_TESTABLE, f"RM lacks the skill: {skill_words}"
                elif v in (NOT_SUPPORTED, NON_ZERO_SMALL) and not reaches:
                    why = (
                        "no positive control was run"
                        if pc is None
                        else f"the positive control (top {positive} neurons) reaches only {pc['effect']:+.3f} "
                        f"[{pc['ci95'][0]:+.3f}, {pc['ci95'][1]:+.3f}], not above the margin {m:g}"
                    )
                    v, untestable[label] = NOT_TESTABLE, why
                parts[label] = {**e, "min_effect": m}
                verdicts[label] = v
                texts.append(
                    f"{label}: {e['effect']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}] over {e['seeds']} "
                    f"seed(s) against ±{m:g}: {v}"
                    + (f" ({untestable[label]})" if label in untestable else "")
                    + (
                        f"; positive control {pc['effect']:+.3f} [{pc['ci95'][0]:+.3f}, {pc['ci95'][1]:+.3f}]"
                        if pc is not None
                        else ""
                    )
                )
            texts.append(_beside(rows, scorer, p, mode, o))
    return _finding(parts, controls, verdicts, untestable, [t for t in texts if t], scorer, mode, claim_ps)


def _beside(rows: pd.DataFrame, scorer: str, p: float, mode: str, o: str) -> str:
    """The other ablation mode's relative accuracy drop against the clean model, reported beside the claim."""
    other = rows[
        (rows["scorer"] == scorer)
        & (rows["p"] == p)
        & (rows["mode"] != mode)
        & (rows["neuron_set"] == f"{o}_top")
        & (rows["test_set"] == o)
    ].drop_duplicates(["rm", "mode"])
    out = []
    for other_mode, g in other.groupby("mode"):
        e = seed_effect(g, "rel_drop_vs_base")
        if e is not None:
            out.append(
                f"beside it, {other_mode} ablation of {o}_top at top {p:g}% drops {o} accuracy by {e['effect']:+.3f} "
                f"[{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}] relative to the clean RM"
            )
    return "; ".join(out)


def _finding(parts, controls, verdicts, untestable, texts, scorer, mode, claim_ps) -> Finding:
    setting = (
        f"top {'/'.join(f'{p:g}' for p in claim_ps)}% by {scorer}, {mode} ablation; relative accuracy drop "
        "against matched random neurons, seeds as the unit, 95% CI"
    )
    test = (
        "equivalence rule on each part's 95% random-effects CI over seeds (t quantile), margins per top-p in "
        "the paper's unit; every testable part must hold; a part needs the skill, and a positive control "
        "above its margin before it can be not supported"
    )
    null = "the set's relative accuracy drop is no larger than that of random neurons of the same layers (deciles)"
    if not parts:
        why = "No rows at the claim settings in ablation.csv (ablation.claim_ps, claim_mode, the *_top sets)."
        return Finding(
            NEURONS_IDENTIFIED, NOT_TESTABLE, why, "ablation.csv", test=test, null=null, setting=setting
        )
    testable = [v for v in verdicts.values() if v != NOT_TESTABLE]
    verdict = all_of(testable) if testable else NOT_TESTABLE
    mde = max(min_detectable_effect(e["ci95"]) for e in parts.values())
    margin = max(e["min_effect"] for e in parts.values())
    return Finding(
        NEURONS_IDENTIFIED,
        verdict,
        "; ".join(texts) + ".",
        "ablation.csv, tension.json",
        effect={k: e["effect"] for k, e in parts.items()},
        ci95={k: e["ci95"] for k, e in parts.items()},
        min_effect=margin,
        min_detectable_effect=mde,
        test=test,
        null=null,
        setting=setting,
        positive_control=controls or None,
        numbers={
            "verdicts": verdicts,
            "not_testable": untestable,
            "margins": {k: e["min_effect"] for k, e in parts.items()},
            "per_seed": {k: e["per_seed"] for k, e in parts.items()},
            "supported_parts": sum(v == SUPPORTED for v in verdicts.values()),
        },
    )
