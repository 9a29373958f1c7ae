"""The neuron-ablation claims in the paper's unit, read only where they can hold (`configs/neurons.yaml`,
`configs/neurons-mixed.yaml`).

Every effect is a relative accuracy drop, (acc_reference - acc_set) / acc_clean
(`rmtension.ablation.stats.relative_drop`), at every claim p (`ablation.claim_ps`: the paper's 10, 20
and 30%) in the claim mode (`ablation.claim_mode`: zero, the paper's):

- `neurons_identified`: each objective's top set on its own objective's test pairs, in the RMs of that
  objective (the mixed RM where none was ablated), against matched random neurons, per control kind;
- `cross_ablation`: in the mixed RM, each objective's top set on the other objective's test pairs,
  against its matched random neurons, per control kind;
- `shared_outsized`: in the mixed RM, on each objective's test pairs, the shared neurons against as many
  of that objective's own neurons (`<o>_only`, the larger cut to a random subset of the smaller's size);
- `double_dissociation`: in the mixed RM, the 2x2 interaction of helpful_only and harmless_only on the
  two test sets (`rmtension.ablation.stats.double_dissociation_relative`).

Margins: `ablation.relative_margins`, fixed per p before the run. Seeds are the unit: a part's CI is the
random-effects interval over the RM's seeds (`rmtension.stats.seeds.seed_t_interval`; pair part: the
mean of the seeds' bootstrap SEs, squared, as every seed scores the same test pairs).

A part is read only where it can hold:

- the skill: the RM's length-controlled accuracy on that test set (`tension.json`, seeds as the
  unit) has a 95% CI above 0.5 (on both test sets for the interaction); otherwise "not testable here:
  RM lacks the skill";
- the positive control (`ablation.positive_control`, e.g. the top attribution neurons, selected on
  the scoring pairs of the train split, disjoint from the test pairs, compared with the same
  random controls; for cross_ablation the test set's own objective's control, for shared_outsized that
  objective's control against layer-matched neurons, for the interaction the weaker of the two): a
  part that would be "not supported" or "non-zero but small" needs the control's CI above the margin;
  otherwise "not testable here", with the control's effect as the reason. For shared_outsized and the
  interaction the control is the full top-p set, larger than the sets they compare (the shared set and
  as many objective-only neurons; the objective-only sets): it shows that the pipeline detects a drop
  of the margin's size at that p, not that it would for the smaller sets, so their "not supported" is
  weaker evidence than identified's and cross_ablation's;
- the seeds: a part needs at least `MIN_SEEDS` seeds (a seed whose shared set is empty has no
  size-matched comparison).

The claim holds only if every testable part does (`all_of`, an intersection-union test: no
multiplicity correction needed); not testable parts are listed with their reasons, and a claim with
no testable part is "not testable here".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.run.runio import read_json
from rmtension.stats.finding import (
    CROSS_ABLATION,
    DOUBLE_DISSOCIATION,
    NEURONS_IDENTIFIED,
    SHARED_OUTSIZED,
    Finding,
)
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
MIN_SEEDS = 2
"""A part read over fewer seeds is "not testable here": one seed has no seed variance to add."""
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


def _part_rows(
    frame: pd.DataFrame, scorer: str, p: float, mode: str, neuron_set: str, test: str, kind: str
) -> pd.DataFrame:
    return frame[
        (frame["scorer"] == scorer)
        & (frame["p"] == p)
        & (frame["mode"] == mode)
        & (frame["neuron_set"] == neuron_set)
        & (frame["test_set"] == test)
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


def _ci(e: dict) -> str:
    return f"{e['effect']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]"


class _Parts:
    """The parts of one claim, each decided by the equivalence rule behind the skill and positive-control
    gates (module docstring), with their words."""

    def __init__(self, positive: str | None):
        self.positive = positive
        self.parts: dict[str, dict] = {}
        self.controls: dict[str, dict] = {}
        self.verdicts: dict[str, str] = {}
        self.untestable: dict[str, str] = {}
        self.texts: list[str] = []

    def add(self, label: str, e: dict, m: float, pc: dict | None, skill: tuple[bool, str]) -> None:
        """Part `label`: effect `e` (`seed_effect`) against margin `m`; `pc` the positive control's effect
        (None: none was run); `skill` (whether the RM has the skill, its words)."""
        v = equivalence_verdict(e["ci95"], m, small=True)
        reaches = pc is not None and pc["ci95"][0] > m
        if pc is not None:
            self.controls[label] = {**pc, "scorer": self.positive, "reaches_margin": reaches, "min_effect": m}
        if e["seeds"] < MIN_SEEDS:
            why = f"seeds are the unit, and only {e['seeds']} seed(s) have this part (a set was empty in the others)"
            v, self.untestable[label] = NOT_TESTABLE, why
        elif not skill[0]:
            v, self.untestable[label] = NOT_TESTABLE, f"RM lacks the skill: {skill[1]}"
        elif v in (NOT_SUPPORTED, NON_ZERO_SMALL) and not reaches:
            why = (
                "no positive control was run"
                if pc is None
                else f"the positive control (top {self.positive} neurons) reaches only {_ci(pc)}, "
                f"not above the margin {m:g}"
            )
            v, self.untestable[label] = NOT_TESTABLE, why
        self.parts[label] = {**e, "min_effect": m}
        self.verdicts[label] = v
        self.texts.append(
            f"{label}: {_ci(e)} over {e['seeds']} seed(s) against ±{m:g}: {v}"
            + (f" ({self.untestable[label]})" if label in self.untestable else "")
            + (f"; positive control {_ci(pc)}" if pc is not None else "")
        )

    def finding(self, cid: str, source: str, setting: str, test: str, null: str, missing: str) -> Finding:
        texts = [t for t in self.texts if t]
        if not self.parts:
            return Finding(cid, NOT_TESTABLE, missing, source, test=test, null=null, setting=setting)
        testable = [v for v in self.verdicts.values() if v != NOT_TESTABLE]
        return Finding(
            cid,
            all_of(testable) if testable else NOT_TESTABLE,
            "; ".join(texts) + ".",
            source,
            effect={k: e["effect"] for k, e in self.parts.items()},
            ci95={k: e["ci95"] for k, e in self.parts.items()},
            min_effect=max(e["min_effect"] for e in self.parts.values()),
            min_detectable_effect=max(min_detectable_effect(e["ci95"]) for e in self.parts.values()),
            test=test,
            null=null,
            setting=setting,
            positive_control=self.controls or None,
            numbers={
                "verdicts": self.verdicts,
                "not_testable": self.untestable,
                "margins": {k: e["min_effect"] for k, e in self.parts.items()},
                "per_seed": {k: e["per_seed"] for k, e in self.parts.items()},
                "supported_parts": sum(v == SUPPORTED for v in self.verdicts.values()),
            },
        )


def _setting(scorer: str, mode: str, claim_ps: list[float], unit: str) -> str:
    return f"top {'/'.join(f'{p:g}' for p in claim_ps)}% by {scorer}, {mode} ablation; {unit}, seeds as the unit, 95% CI"


_TEST = (
    "equivalence rule on each part's 95% random-effects CI over seeds (t quantile), margins per top-p in "
    "the paper's unit; every testable part must hold; a part needs the skill, and a positive control "
    "above its margin before it can be not supported"
)


def _margin(margins: dict[float, float], q: float, p: float) -> float:
    return float(margins.get(q, margins.get(p, np.nan)))


def _claim_p(available, q: float) -> float:
    return float(nearest_p(available, q)) if len(available) else q


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
    acc = _Parts(positive)
    available = sorted(frame["p"].unique())
    for o in OBJECTIVES:
        rows, rm_obj = _rms_of(frame, o, fallback)
        has_skill = skill(run_dir, rm_obj, o)
        for q in claim_ps:
            p = _claim_p(available, q)
            _vs_random(acc, rows, rm_obj, o, o, p, _margin(margins, q, p), scorer, mode, has_skill)
            acc.texts.append(_beside(rows, scorer, p, mode, o))
    return acc.finding(
        NEURONS_IDENTIFIED,
        "ablation.csv, tension.json",
        _setting(scorer, mode, claim_ps, "relative accuracy drop against matched random neurons"),
        _TEST,
        "the set's relative accuracy drop is no larger than that of random neurons of the same layers (deciles)",
        "No rows at the claim settings in ablation.csv (ablation.claim_ps, claim_mode, the *_top sets).",
    )


def _positive(
    rows: pd.DataFrame, positive: str | None, p: float, mode: str, o: str, kind: str = "layer"
) -> dict | None:
    """The positive control on objective `o`'s test pairs: the top `positive` neurons of `o` against the
    claim sets' random controls of kind `kind` (None when none was run)."""
    return seed_effect(_part_rows(rows, positive, p, mode, f"{o}_top", o, kind)) if positive else None


def _vs_random(
    acc: _Parts,
    rows: pd.DataFrame,
    rm_obj: str,
    s_obj: str,
    test: str,
    p: float,
    m: float,
    scorer: str,
    mode: str,
    has_skill: tuple[bool, str],
) -> None:
    """The parts of `<s_obj>_top` on `test`'s pairs at top `p`% against each kind of matched random
    neurons, in `rows` (one RM's seeds), with the positive control of `test`'s own objective."""
    for kind in KINDS:
        e = seed_effect(_part_rows(rows, scorer, p, mode, f"{s_obj}_top", test, kind))
        if e is not None:
            label = f"{s_obj}_top on {test} at top {p:g}% vs {kind} ({rm_obj} RM)"
            acc.add(label, e, m, _positive(rows, acc.positive, p, mode, test, kind), has_skill)


def cross_relative(
    run_dir: Path,
    frame: pd.DataFrame,
    claim_ps: list[float],
    margins: dict[float, float],
    scorer: str,
    mode: str,
    positive: str | None,
    rm_obj: str = "mixed",
) -> Finding:
    """`cross_ablation` in the paper's unit: in the RMs of `rm_obj` (the mixed RM, which holds both
    objectives), each objective's top set on the **other** objective's test pairs, against its matched
    random controls, at every claim p. The skill gate reads the RM's accuracy on that test set; the
    positive control is the top `positive` neurons of the test set's own objective on those pairs."""
    acc = _Parts(positive)
    rows = frame[frame["rm"].astype(str).str.startswith(rm_obj + "-")]
    available = sorted(rows["p"].unique())
    for s_obj, test in (("helpful", "harmless"), ("harmless", "helpful")):
        has_skill = skill(run_dir, rm_obj, test)
        for q in claim_ps:
            p = _claim_p(available, q)
            _vs_random(acc, rows, rm_obj, s_obj, test, p, _margin(margins, q, p), scorer, mode, has_skill)
    return acc.finding(
        CROSS_ABLATION,
        "ablation.csv, tension.json",
        _setting(
            scorer,
            mode,
            claim_ps,
            "relative accuracy drop on the other objective's pairs against matched random neurons",
        ),
        _TEST,
        "the set's relative accuracy drop on the other objective's pairs is no larger than that of its random controls",
        f"No {rm_obj} RM rows of the *_top sets on the other objective's test pairs in ablation.csv.",
    )


def _seed_frame(values: list[tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(values, columns=["v", "v_se"])


def shared_relative(
    run_dir: Path,
    frame: pd.DataFrame,
    influence: dict,
    claim_ps: list[float],
    margins: dict[float, float],
    scorer: str,
    mode: str,
    positive: str | None,
    rm_obj: str = "mixed",
) -> Finding:
    """`shared_outsized` in the paper's unit: on each objective's test pairs, the relative accuracy drop
    of the shared neurons minus that of as many of that objective's own neurons (`<o>_only`, cut to the
    same size; influence.json `matched_rel`), per seed of the `rm_obj` RM, at every claim p. Positive
    control: the top `positive` neurons of that objective against layer-matched random neurons."""
    acc = _Parts(positive)
    rows = frame[frame["rm"].astype(str).str.startswith(rm_obj + "-")]
    recs = [
        r
        for r in influence.get("records", [])
        if r["scorer"] == scorer and r["mode"] == mode and str(r["rm"]).startswith(rm_obj + "-")
    ]
    available = sorted({r["p"] for r in recs})
    for o in OBJECTIVES:
        has_skill = skill(run_dir, rm_obj, o)
        for q in claim_ps:
            p = _claim_p(available, q)
            per_seed = [
                (c["matched_rel"]["rel_drop"], c["matched_rel"]["se"])
                for r in recs
                if r["p"] == p
                for c in r["comparisons"]
                if c["test_set"] == o and c["other"] == f"{o}_only" and "matched_rel" in c
            ]
            e = seed_effect(_seed_frame(per_seed), "v")
            if e is not None:
                label = f"shared vs {o}_only on {o} at top {p:g}% ({rm_obj} RM)"
                acc.add(label, e, _margin(margins, q, p), _positive(rows, positive, p, mode, o), has_skill)
    return acc.finding(
        SHARED_OUTSIZED,
        "neurons/influence.json, ablation.csv, tension.json",
        _setting(
            scorer,
            mode,
            claim_ps,
            "relative accuracy drop of the shared neurons minus that of as many objective-only neurons",
        ),
        _TEST,
        "the shared neurons' relative accuracy drop is no larger than that of an equally large random subset of "
        "the objective-only neurons",
        "No size-matched comparisons in neurons/influence.json (the shared set is empty at every claim p, "
        "or ablation.influence_matched is off).",
    )


def dissociation_relative(
    run_dir: Path,
    frame: pd.DataFrame,
    dissociation: dict,
    claim_ps: list[float],
    margins: dict[float, float],
    scorer: str,
    mode: str,
    positive: str | None,
    rm_obj: str = "mixed",
) -> Finding:
    """`double_dissociation` in the paper's unit: the 2x2 interaction of helpful_only and harmless_only
    on the two test sets (`rmtension.ablation.stats.double_dissociation_relative`), per seed of the
    `rm_obj` RM, at every claim p. It needs the skill on both test sets, and a positive control on both."""
    acc = _Parts(positive)
    rows = frame[frame["rm"].astype(str).str.startswith(rm_obj + "-")]
    recs = [
        r
        for r in dissociation.get("records", [])
        if r["scorer"] == scorer
        and r["mode"] == mode
        and str(r["rm"]).startswith(rm_obj + "-")
        and "relative" in r
    ]
    available = sorted({r["p"] for r in recs})
    skills = [skill(run_dir, rm_obj, o) for o in OBJECTIVES]
    both_skill = (all(ok for ok, _ in skills), "; ".join(w for ok, w in skills if not ok))
    for q in claim_ps:
        p = _claim_p(available, q)
        per_seed = [(r["relative"]["effect"], r["relative"]["se"]) for r in recs if r["p"] == p]
        e = seed_effect(_seed_frame(per_seed), "v")
        if e is None:
            continue
        pcs = [_positive(rows, positive, p, mode, o) for o in OBJECTIVES]
        # the weaker of the two objectives' positive controls: both must reach the margin
        pc = None if any(c is None for c in pcs) else min(pcs, key=lambda c: c["ci95"][0])
        label = f"helpful_only x harmless_only interaction at top {p:g}% ({rm_obj} RM)"
        acc.add(label, e, _margin(margins, q, p), pc, both_skill)
    return acc.finding(
        DOUBLE_DISSOCIATION,
        "neurons/dissociation.json, ablation.csv, tension.json",
        _setting(scorer, mode, claim_ps, "2x2 interaction of relative accuracy drops"),
        _TEST,
        "helpful_only and harmless_only hurt both objectives alike (interaction 0)",
        "No relative interaction in neurons/dissociation.json (helpful_only and harmless_only ablated on both "
        "test sets).",
    )


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
