"""The ablation claims, each decided by the equivalence rule (`rmtension.stats.verdicts`).

Every effect is a drop in the margin r_chosen - r_rejected, in SDs of the unablated margin on the
test set (`std_*` columns of ablation.csv), signed so that a positive effect is what the claim says:

- identified (neurons_identified):    helpful_top on helpful and harmless_top on harmless test pairs,
  each against its layer-matched and its magnitude-matched random controls (the per-pair mean over
  the draws): drop of the set minus drop of the controls.
- cross_effect (cross_ablation):      helpful_top on harmless and harmless_top on helpful test pairs,
  against the same controls.
- influence (shared_outsized):        drop of the shared neurons minus that of as many helpful_only
  (harmless_only) neurons on the helpful (harmless) test pairs.
- double_dissociation:                the 2x2 interaction of helpful_only and harmless_only on the two
  test sets (`rmtension.ablation.stats.double_dissociation`): each objective-only set hurts its
  own objective more than the other's. This, not the *_top sets, is the specificity test.

A claim of several parts (objectives, control kinds, seeds) holds only if every part does
(`all_of`): not supported if any part is, supported if all are. Mean ablation is the headline;
the rows of another mode are used only where the run has no mean ablation, and the sentence says so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmtension.ablation.relative import (
    cross_relative,
    dissociation_relative,
    identified_relative,
    shared_relative,
)
from rmtension.neurons.config import AblationConfig, claim_settings
from rmtension.run.runio import read_json
from rmtension.run.saved_config import read_config
from rmtension.stats.pvalues import nearest_p, p_phrase
from rmtension.stats.finding import (
    CROSS_ABLATION,
    DOUBLE_DISSOCIATION,
    NEURONS_IDENTIFIED,
    SHARED_OUTSIZED,
    Finding,
    not_run,
)
from rmtension.stats.verdicts import (
    INCONCLUSIVE,
    NOT_RUN,
    all_of,
    claim_min_effect,
    equivalence_verdict,
    min_detectable_effect,
)

KIND_WORDS = {"layer": "layer-matched", "magnitude": "magnitude-matched"}
_RULE = "equivalence rule on each part's 95% paired bootstrap CI (test pairs resampled); every part must hold"
TESTS = {
    NEURONS_IDENTIFIED: (
        _RULE + "; parts: helpful_top on helpful and harmless_top on harmless test pairs x control kind",
        "the set's margin drop is no larger than that of random neurons of the same layers (layer-matched) or "
        "of the same layers and mean-|activation| deciles (magnitude-matched): per-pair mean over the draws",
    ),
    CROSS_ABLATION: (
        _RULE + "; parts: helpful_top on harmless and harmless_top on helpful test pairs x control kind",
        "the set's margin drop on the other objective's pairs is no larger than that of its random controls",
    ),
    SHARED_OUTSIZED: (
        _RULE + "; parts: shared against helpful_only (harmless_only) on the helpful (harmless) test pairs",
        "the shared neurons' margin drop is no larger than that of an equally large random subset of the "
        "objective-only neurons",
    ),
    DOUBLE_DISSOCIATION: (
        "equivalence rule on the 95% CI of the 2x2 interaction, each test set's pairs resampled (paired "
        "bootstrap)",
        "helpful_only and harmless_only hurt both objectives alike (interaction 0)",
    ),
}
"""Claim id -> (the test that decides it, what the effect is compared against), for findings.json."""


def pick_rows(
    frame: pd.DataFrame, rm_objective: str | None, scorer: str, p: float, mode: str
) -> tuple[pd.DataFrame, float, str]:
    """The set rows (not `none`, not `random:*`) of one scorer and mode at the p nearest `p`, for the
    RMs of `rm_objective` (all RMs when it has none), falling back to another mode when `mode` was not run."""
    sets = frame[
        (frame["scorer"] == scorer)
        & ~frame["neuron_set"].astype(str).str.startswith("random")
        & (frame["neuron_set"] != "none")
    ]
    if rm_objective is not None and sets["rm"].str.startswith(rm_objective + "-").any():
        sets = sets[sets["rm"].str.startswith(rm_objective + "-")]
    if not (sets["mode"] == mode).any() and not sets.empty:
        mode = sorted(sets["mode"].unique())[0]
    sets = sets[sets["mode"] == mode]
    if sets.empty:
        return sets, p, mode
    chosen = float(nearest_p(sets["p"].unique(), p))
    return sets[sets["p"] == chosen], chosen, mode


def _effect(rows: pd.DataFrame, neuron_set: str, test: str) -> list[dict]:
    """One part per (RM, control kind): the drop against the controls, standardised, with its CI."""
    r = rows[(rows["neuron_set"] == neuron_set) & (rows["test_set"] == test) & (rows["n_draws"] > 0)]
    return [
        {
            "rm": x.rm,
            "control": x.control,
            "effect": -float(x.std_vs_random),
            "ci": [-float(x.std_vs_random_ci_hi), -float(x.std_vs_random_ci_lo)],
            "p_value": float(x.p_value),
            "n_draws": int(x.n_draws),
            "n_neurons": int(x.n_neurons),
            "n_pairs": int(x.n_pairs),
        }
        for x in r.itertuples()
    ]


def _fmt(name: str, test: str, parts: list[dict], many_rms: bool) -> str:
    if not parts:
        return f"{name} on {test}: not run"
    return f"{name} on {test} ({parts[0]['n_neurons']} neurons): " + ", ".join(
        f"{e['effect']:+.3f} [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}] vs {KIND_WORDS.get(e['control'], e['control'])}"
        f" ({e['n_draws']} draws, paired t p {p_phrase(e['p_value'])})"
        + (f" in {e['rm']}" if many_rms else "")
        for e in parts
    )


SOURCES = {
    NEURONS_IDENTIFIED: "ablation.csv",
    CROSS_ABLATION: "ablation.csv",
    SHARED_OUTSIZED: "neurons/influence.json",
    DOUBLE_DISSOCIATION: "neurons/dissociation.json",
}
"""Claim id -> the file its numbers come from."""


def _undecided(cid: str, why: str, setting: str = "", numbers: dict | None = None) -> Finding:
    """An ablation claim that cannot be decided from its file (no rows, nothing to compare)."""
    test, null = TESTS[cid]
    return Finding(
        cid, INCONCLUSIVE, why, SOURCES[cid], test=test, null=null, setting=setting, numbers=numbers or {}
    )


def _decide(
    cid: str, setting: str, parts: dict[str, dict], texts: list[str], min_effect: float, extra: dict
) -> Finding:
    """A claim from its parts (label -> {effect, ci}): verdict, rendered evidence and the numbers findings.json needs."""
    if not parts:
        return _undecided(cid, "; ".join(texts) + ".", setting, extra)
    verdicts = {k: equivalence_verdict(e["ci"], min_effect) for k, e in parts.items()}
    verdict = all_of(list(verdicts.values()))
    mde = max(min_detectable_effect(e["ci"]) for e in parts.values())
    text = "; ".join(texts) + f". Judged against ±{min_effect:g} SD"
    if verdict == INCONCLUSIVE:
        text += f"; this sample could detect about {mde:.3f} SD (80% power)"
    test, null = TESTS[cid]
    return Finding(
        cid,
        verdict,
        f"{text}.",
        SOURCES[cid],
        "; ".join(
            f"{k} {e['effect']:+.3f} [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}] SD" for k, e in parts.items()
        ),
        effect={k: e["effect"] for k, e in parts.items()},
        ci95={k: e["ci"] for k, e in parts.items()},
        min_effect=min_effect,
        min_detectable_effect=mde,
        test=test,
        null=null,
        setting=setting,
        numbers={"verdicts": verdicts, **extra},
    )


def _against_controls(
    cid: str,
    rows: pd.DataFrame,
    cells: list[tuple[str, str]],
    p: float,
    mode: str,
    min_effect: float,
) -> Finding:
    many = rows["rm"].nunique() > 1 if not rows.empty else False
    parts, texts = {}, []
    for s, t in cells:
        found = _effect(rows, s, t)
        texts.append(_fmt(s, t, found, many))
        for e in found:
            parts[f"{s} on {t} vs {e['control']}" + (f" ({e['rm']})" if many else "")] = e
    setting = f"top {p:g}%, {mode} ablation; margin drop against random neurons, in SDs of the unablated margin, 95% CI"
    return _decide(cid, setting, parts, texts, min_effect, {"p": p, "mode": mode})


def claim_identified(rows: pd.DataFrame, p: float, mode: str, min_effect: float) -> Finding:
    cells = [("helpful_top", "helpful"), ("harmless_top", "harmless")]
    return _against_controls(NEURONS_IDENTIFIED, rows, cells, p, mode, min_effect)


def claim_cross(rows: pd.DataFrame, p: float, mode: str, min_effect: float) -> Finding:
    cells = [("helpful_top", "harmless"), ("harmless_top", "helpful")]
    return _against_controls(CROSS_ABLATION, rows, cells, p, mode, min_effect)


def _records(doc: dict, rm_objective: str | None, scorer: str, mode: str) -> list[dict]:
    recs = [r for r in doc.get("records", []) if r["scorer"] == scorer]
    mine = [r for r in recs if rm_objective is None or r["rm"].startswith(rm_objective + "-")]
    recs = mine or recs
    modes = {r["mode"] for r in recs}
    use = mode if mode in modes else (sorted(modes)[0] if modes else mode)
    return [r for r in recs if r["mode"] == use]


def _records_at_p(doc: dict, rm_objective: str | None, scorer: str, p: float, mode: str):
    """(records at the p nearest `p`, that p, the mode used), or None when there are no records."""
    recs = _records(doc, rm_objective, scorer, mode)
    if not recs:
        return None
    chosen = float(nearest_p({r["p"] for r in recs}, p))
    return [r for r in recs if r["p"] == chosen], chosen, recs[0]["mode"]


def _claim_at_p(
    cid: str, doc: dict, rm_objective: str | None, scorer: str, p: float, mode: str, missing: str, build
) -> Finding:
    """A claim read from a per-record JSON: `build(records, chosen p, mode used)` on the records at the
    p nearest `p`, or undecided with `missing` when there are none."""
    found = _records_at_p(doc, rm_objective, scorer, p, mode)
    if found is None:
        return _undecided(cid, missing)
    return build(*found)


def claim_influence(
    influence: dict, rm_objective: str | None, scorer: str, p: float, mode: str, min_effect: float
) -> Finding:
    build = lambda recs, chosen, used: _influence(recs, chosen, used, min_effect)  # noqa: E731
    return _claim_at_p(
        SHARED_OUTSIZED, influence, rm_objective, scorer, p, mode, "No ablation results.", build
    )


def _influence(recs: list[dict], chosen: float, used: str, min_effect: float) -> Finding:
    comps = [(r["rm"], c) for r in recs for c in r["comparisons"] if c["own"]]
    setting = (
        f"top {chosen:g}%, {used} ablation; margin drop of the shared neurons minus that of as many "
        "objective-only neurons on their objective's test pairs, in SDs of the unablated margin, 95% CI"
    )
    if not comps:
        why = "The shared set or both objective-only sets are empty, so there is nothing to compare."
        return _undecided(SHARED_OUTSIZED, why, setting, {"p": chosen, "mode": used})
    if not all("matched_std" in c for _, c in comps):
        why = "No size-matched comparison; set ablation.influence_matched."
        return _undecided(SHARED_OUTSIZED, why, setting, {"p": chosen, "mode": used})
    many = len({rm for rm, _ in comps}) > 1
    parts, texts = {}, []
    for rm, c in comps:
        m = c["matched_std"]
        label = f"shared vs {c['other']} on {c['test_set']}" + (f" ({rm})" if many else "")
        parts[label] = {"effect": m["diff"], "ci": m["ci"]}
        texts.append(
            f"{label} ({m['n_shared']} vs {m['n_other']} neurons): {m['diff']:+.3f} [{m['ci'][0]:+.3f}, "
            f"{m['ci'][1]:+.3f}] (drops {m['drop_shared']:+.3f} and {m['drop_other']:+.3f}, paired t p "
            f"{p_phrase(m['p_value'])})"
        )
    return _decide(
        SHARED_OUTSIZED, setting, parts, texts, min_effect, {"p": chosen, "mode": used, "kind": "matched_std"}
    )


def claim_double_dissociation(
    doc: dict, rm_objective: str | None, scorer: str, p: float, mode: str, min_effect: float
) -> Finding:
    build = lambda recs, chosen, used: _dissociation(recs, chosen, used, min_effect)  # noqa: E731
    return _claim_at_p(
        DOUBLE_DISSOCIATION, doc, rm_objective, scorer, p, mode, "No dissociation results.", build
    )


def _dissociation(recs: list[dict], chosen: float, used: str, min_effect: float) -> Finding:
    setting = (
        f"top {chosen:g}%, {used} ablation; the mean over helpful_only and harmless_only of the set's "
        "margin drop on its own objective's test pairs minus that on the other's, in SDs of the unablated "
        "margin, 95% CI"
    )
    many = len(recs) > 1
    parts, texts = {}, []
    for r in recs:
        d = r["drops"]
        label = "interaction" + (f" ({r['rm']})" if many else "")
        parts[label] = {"effect": r["effect"], "ci": r["ci"]}
        texts.append(
            f"{label} {r['effect']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]: helpful_only "
            f"({r['n_neurons']['helpful_only']} neurons) drops helpful {d['helpful_only']['helpful']:+.3f}, harmless "
            f"{d['helpful_only']['harmless']:+.3f}; harmless_only ({r['n_neurons']['harmless_only']}) drops harmless "
            f"{d['harmless_only']['harmless']:+.3f}, helpful {d['harmless_only']['helpful']:+.3f}"
        )
    return _decide(DOUBLE_DISSOCIATION, setting, parts, texts, min_effect, {"p": chosen, "mode": used})


def ablation_claims(
    run_dir: str | Path,
    p: float = 5.0,
    scorer: str = "mean_act",
    mode: str = "mean",
    rm_objective: str | None = "mixed",
) -> list[Finding]:
    """`neurons_identified`, `cross_ablation`, `shared_outsized` and `double_dissociation` from
    ablation.csv, neurons/influence.json and neurons/dissociation.json ("not run" where a file is absent).

    `rm_objective` picks the RMs (every seed is a part that must hold); it falls back to every ablated
    RM when none of that objective was ablated. `mode`: the ablation mode the claims read (mean, the
    headline; another mode where the run has none).
    """
    run_dir = Path(run_dir)
    out: dict[str, Finding] = {}
    if (run_dir / "ablation.csv").exists():
        rows, chosen, used = pick_rows(pd.read_csv(run_dir / "ablation.csv"), rm_objective, scorer, p, mode)
        out[NEURONS_IDENTIFIED] = claim_identified(
            rows, chosen, used, claim_min_effect(run_dir, NEURONS_IDENTIFIED)
        )
        out[CROSS_ABLATION] = claim_cross(rows, chosen, used, claim_min_effect(run_dir, CROSS_ABLATION))
    for cid, fn in ((SHARED_OUTSIZED, claim_influence), (DOUBLE_DISSOCIATION, claim_double_dissociation)):
        if (run_dir / SOURCES[cid]).exists():
            doc = read_json(run_dir / SOURCES[cid])
            out[cid] = fn(doc, rm_objective, scorer, p, mode, claim_min_effect(run_dir, cid))
    return [out.get(cid) or not_run(cid, ("ablation",), run_dir, SOURCES[cid]) for cid in SOURCES]


MIXED_CONFIG = "configs/neurons-mixed.yaml"
"""The config that ablates the mixed RM's sets on both objectives (cross_ablation, shared_outsized,
double_dissociation in the paper's unit)."""

NEURONS_CONFIG = "configs/neurons.yaml"
"""The config whose design can decide the neuron-ablation claims (the paper's top-p, zero mode, seeds,
skill and positive-control gates, margins in the paper's unit)."""


def findings(run_dir: Path) -> list[Finding]:
    """The ablation stage's claims at the run's claim settings.

    A run whose `ablation.relative_margins` is set decides the claims in the paper's unit where they can
    hold (`rmtension.ablation.relative`): `neurons_identified` (`configs/neurons.yaml`, and
    `configs/neurons-mixed.yaml` in the mixed RM); `cross_ablation`, `shared_outsized` and
    `double_dissociation` where the mixed RM's sets were ablated on both objectives
    (`configs/neurons-mixed.yaml`), else "not run" with a pointer to it. Any other run (the default: one trained block, top 5%, mean mode, one seed, margins in
    SDs) describes its smaller analysis: each claim keeps its numbers, with the verdict "not run" and a
    pointer to `configs/neurons.yaml`.
    """
    raw = read_config(run_dir).get("ablation") or {}
    acfg = AblationConfig.model_validate(raw)
    if acfg.relative_margins and (run_dir / "ablation.csv").exists():
        st = claim_settings(run_dir)
        frame = pd.read_csv(run_dir / "ablation.csv")
        args = (
            acfg.claim_points(),
            acfg.relative_margins,
            acfg.scorers[0],
            acfg.claim_mode,
            acfg.positive_control,
        )
        out = [identified_relative(run_dir, frame, *args, st["rm"])]
        mixed = frame[frame["rm"].astype(str).str.startswith("mixed-")]
        docs = {
            cid: read_json(run_dir / SOURCES[cid])
            for cid in (SHARED_OUTSIZED, DOUBLE_DISSOCIATION)
            if (run_dir / SOURCES[cid]).exists()
        }
        ran = {
            CROSS_ABLATION: (
                (mixed["neuron_set"] == "helpful_top") & (mixed["test_set"] == "harmless")
            ).any(),
            SHARED_OUTSIZED: any(
                "matched_rel" in c
                for r in docs.get(SHARED_OUTSIZED, {}).get("records", [])
                if str(r["rm"]).startswith("mixed-")
                for c in r["comparisons"]
            ),
            DOUBLE_DISSOCIATION: any(
                "relative" in r
                for r in docs.get(DOUBLE_DISSOCIATION, {}).get("records", [])
                if str(r["rm"]).startswith("mixed-")
            ),
        }
        for cid in (CROSS_ABLATION, SHARED_OUTSIZED, DOUBLE_DISSOCIATION):
            if not ran[cid]:
                why = (
                    "Not run in this design: the claim needs the mixed RM's sets ablated on both objectives' "
                    f"test pairs (`{MIXED_CONFIG}` runs it)."
                )
                out.append(Finding(cid, NOT_RUN, why, SOURCES[cid], test=TESTS[cid][0], null=TESTS[cid][1]))
            elif cid == CROSS_ABLATION:
                out.append(cross_relative(run_dir, frame, *args))
            elif cid == SHARED_OUTSIZED:
                out.append(shared_relative(run_dir, frame, docs[cid], *args))
            else:
                out.append(dissociation_relative(run_dir, frame, docs[cid], *args))
        return out
    st = claim_settings(run_dir)
    described = ablation_claims(run_dir, st["p"], st["scorer"], "mean", st["rm"])
    return [_described(f) for f in described]


def _described(f: Finding) -> Finding:
    """A claim of the smaller analysis kept as description: "not run", its numbers and a pointer."""
    if f.verdict == NOT_RUN:
        return f
    f.numbers = {**f.numbers, "described_verdict": f.verdict}
    f.evidence = (
        f"Not run: this design cannot decide it (it lacks the paper's top-p and zero mode, seeds as the unit, "
        f"the skill and positive-control gates and margins in the paper's unit); `{NEURONS_CONFIG}` can. "
        f"Its own numbers, as description (the equivalence rule would say {f.verdict}): {f.evidence}"
    )
    f.verdict = NOT_RUN
    return f
