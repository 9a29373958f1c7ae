"""cross_ablation, shared_outsized and double_dissociation in the paper's unit (`configs/neurons-mixed.yaml`):
the mixed RM's sets on both objectives, seeds as the unit, the skill and positive-control gates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rmtension.ablation.claims import findings as ablation_findings
from rmtension.ablation.stats import double_dissociation_relative

PS = (10.0, 20.0, 30.0)
SEEDS = 3
SKILLED = {"helpful": [0.55, 0.62], "harmless": [0.56, 0.66]}
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "neurons-mixed.yaml"


def test_relative_interaction_by_hand():
    # helpful test pairs: clean right on all 4 (accuracy 1); helpful_only right on 2 (0.5),
    # harmless_only right on 3 (0.75): within(helpful) = (0.75 - 0.5) / 1 = 0.25
    # harmless test pairs: clean right on 3 (0.75); harmless_only right on 2 (0.5), helpful_only on 3
    # (0.75): within(harmless) = (0.75 - 0.5) / 0.75 = 1/3
    clean = {"helpful": np.array([1.0, 1, 1, 1]), "harmless": np.array([1.0, 1, -1, 1])}
    margins = {
        "helpful_only": {"helpful": np.array([-1.0, -1, 1, 1]), "harmless": np.array([1.0, 1, -1, 1])},
        "harmless_only": {"helpful": np.array([1.0, 1, 1, -1]), "harmless": np.array([-1.0, 1, -1, 1])},
    }
    idx = {t: np.tile(np.arange(4), (3, 1)) for t in clean}  # each resample the sample itself
    out = double_dissociation_relative(margins, clean, idx)
    assert out["within"]["helpful"]["rel_drop"] == pytest.approx(0.25)
    assert out["within"]["harmless"]["rel_drop"] == pytest.approx(1 / 3)
    assert out["effect"] == pytest.approx((0.25 + 1 / 3) / 2)
    assert out["ci"] == pytest.approx([out["effect"]] * 2) and out["se"] == pytest.approx(0.0)
    # the sets swapped: each hurts the other objective more, so the interaction changes sign
    swapped = {"helpful_only": margins["harmless_only"], "harmless_only": margins["helpful_only"]}
    assert double_dissociation_relative(swapped, clean, idx)["effect"] == pytest.approx(-out["effect"])


def _row(
    seed: int, neuron_set: str, scorer: str, p: float, test: str, kind: str, e: float, se: float
) -> dict:
    return {
        "rm": f"mixed-seed{seed}",
        "neuron_set": neuron_set,
        "scorer": scorer,
        "p": p,
        "mode": "zero",
        "test_set": test,
        "control": kind,
        "n_draws": 5,
        "rel_drop_vs_random": e,
        "rel_drop_vs_random_se": se,
        "rel_drop_vs_base": e,
    }


def _run(
    tmp: Path, name: str, cross: float, shared: float, inter: float, control, skill=SKILLED, seeds=SEEDS
):
    """A mixed-RM run whose every seed has effect `cross` (the *_top sets on the other objective),
    `shared` (shared vs as many objective-only neurons), `inter` (the relative interaction), and whose
    positive control (attribution top sets on their own objective) is `control`, a number or
    {(objective, control kind): number}; seed spread +-0.01."""
    ctrl = (
        control
        if isinstance(control, dict)
        else {(o, k): control for o in SKILLED for k in ("layer", "magnitude")}
    )
    run = tmp / name
    run.mkdir()
    rows, influence, dissociation = [], [], []
    for seed in range(seeds):
        jitter = (seed - 1) * 0.01
        for p in PS:
            for kind in ("layer", "magnitude"):
                for o, other in (("helpful", "harmless"), ("harmless", "helpful")):
                    rows.append(_row(seed, f"{o}_top", "mean_act", p, other, kind, cross + jitter, 0.01))
                    rows.append(_row(seed, f"{o}_top", "mean_act", p, o, kind, 0.3 + jitter, 0.01))
                    rows.append(
                        _row(seed, f"{o}_top", "attribution", p, o, kind, ctrl[o, kind] + jitter, 0.01)
                    )
            head = {"rm": f"mixed-seed{seed}", "scorer": "mean_act", "p": p, "mode": "zero"}
            comps = [
                {
                    "test_set": o,
                    "other": f"{o}_only",
                    "own": True,
                    "matched_rel": {"rel_drop": shared + jitter, "se": 0.01, "ci": [0, 0]},
                }
                for o in ("helpful", "harmless")
            ]
            influence.append({**head, "comparisons": comps})
            dissociation.append({**head, "relative": {"effect": inter + jitter, "se": 0.01, "ci": [0, 0]}})
    pd.DataFrame(rows).to_csv(run / "ablation.csv", index=False)
    (run / "neurons").mkdir()
    (run / "neurons" / "influence.json").write_text(json.dumps({"records": influence}))
    (run / "neurons" / "dissociation.json").write_text(json.dumps({"records": dissociation}))
    acc = {
        "mixed": {
            o: {"length_controlled": {"estimable": True, "estimate": sum(ci) / 2, "ci95": ci}}
            for o, ci in skill.items()
        }
    }
    (run / "tension.json").write_text(json.dumps({"accuracy": acc}))
    (run / "config.yaml").write_text(yaml.safe_dump(yaml.safe_load(CONFIG.read_text())))
    return {f.id: f for f in ablation_findings(run)}


CLAIMS = ("cross_ablation", "shared_outsized", "double_dissociation")


def test_large_effects_are_supported_in_every_part(tmp_path):
    found = _run(tmp_path, "a", cross=0.3, shared=0.3, inter=0.3, control=0.3)
    assert {c: found[c].verdict for c in CLAIMS} == dict.fromkeys(CLAIMS, "supported")
    assert found["neurons_identified"].verdict == "supported"  # read inside the mixed RM here
    cross = found["cross_ablation"]
    # 2 directions x 3 p x 2 control kinds; shared: 2 objectives x 3 p; the interaction: 3 p
    assert len(cross.effect) == 12 and len(found["shared_outsized"].effect) == 6
    assert len(found["double_dissociation"].effect) == 3
    part = "helpful_top on harmless at top 20% vs magnitude (mixed RM)"
    assert cross.effect[part] == pytest.approx(0.3)  # the mean over seeds of 0.29, 0.30, 0.31
    lo, hi = cross.ci95[part]
    assert lo < 0.3 < hi and lo > 0.085  # above the 20% margin


def test_null_effects_are_not_supported_only_with_a_positive_control(tmp_path):
    found = _run(tmp_path, "a", cross=0.0, shared=0.0, inter=0.0, control=0.3)
    assert {c: found[c].verdict for c in CLAIMS} == dict.fromkeys(CLAIMS, "not supported")
    weak = _run(tmp_path, "b", cross=0.0, shared=0.0, inter=0.0, control=0.0)
    assert {c: weak[c].verdict for c in CLAIMS} == dict.fromkeys(CLAIMS, "not testable here")
    for c in CLAIMS:
        reasons = weak[c].numbers["not_testable"].values()
        assert reasons and all("positive control" in r for r in reasons), c


def test_the_mixed_rm_without_the_skill_is_not_testable(tmp_path):
    no_helpful = {"helpful": [0.45, 0.55], "harmless": [0.56, 0.66]}
    found = _run(tmp_path, "a", cross=0.3, shared=0.3, inter=0.3, control=0.3, skill=no_helpful)
    # the interaction needs both skills; cross_ablation's parts on helpful pairs and shared on helpful lack it
    assert found["double_dissociation"].verdict == "not testable here"
    cross = found["cross_ablation"].numbers["verdicts"]
    assert {v for k, v in cross.items() if " on helpful " in k} == {"not testable here"}
    assert {v for k, v in cross.items() if " on harmless " in k} == {"supported"}
    assert found["cross_ablation"].verdict == "supported"  # decided on its testable parts
    shared = found["shared_outsized"].numbers["verdicts"]
    assert {v for k, v in shared.items() if "on helpful" in k} == {"not testable here"}


def test_the_single_objective_design_leaves_the_three_claims_not_run(tmp_path):
    found = _run(tmp_path, "a", cross=0.3, shared=0.3, inter=0.3, control=0.3)
    assert found["cross_ablation"].verdict == "supported"
    run = tmp_path / "a"
    frame = pd.read_csv(run / "ablation.csv")
    # only own-objective rows, no influence or dissociation records: the configs/neurons.yaml design
    own = frame[[s.split("_")[0] == t for s, t in zip(frame["neuron_set"], frame["test_set"])]]
    own.to_csv(run / "ablation.csv", index=False)
    for name in ("influence.json", "dissociation.json"):
        (run / "neurons" / name).write_text(json.dumps({"records": []}))
    again = {f.id: f for f in ablation_findings(run)}
    for c in CLAIMS:
        assert again[c].verdict == "not run" and "neurons-mixed.yaml" in again[c].evidence, c


def test_each_claim_reads_the_positive_control_it_names(tmp_path):
    """Null effects with a control that reaches the margins only for harmless, layer-matched: the parts
    whose control is that one are "not supported", every other part "not testable here"."""
    control = {("harmless", "layer"): 0.3, ("harmless", "magnitude"): 0.0}
    control |= {("helpful", k): 0.0 for k in ("layer", "magnitude")}
    found = _run(tmp_path, "a", cross=0.0, shared=0.0, inter=0.0, control=control)
    cross = found["cross_ablation"].numbers["verdicts"]
    # cross_ablation's control is the test set's own objective's, of the same control kind
    for label, v in cross.items():
        want = "not supported" if " on harmless " in label and label.endswith("vs layer (mixed RM)") else None
        assert v == (want or "not testable here"), label
    # shared_outsized: that objective's control against layer-matched neurons
    shared = found["shared_outsized"].numbers["verdicts"]
    assert {v for k, v in shared.items() if " on harmless " in k} == {"not supported"}
    assert {v for k, v in shared.items() if " on helpful " in k} == {"not testable here"}
    # the interaction: the weaker of the two objectives' controls, so nothing is decided
    assert set(found["double_dissociation"].numbers["verdicts"].values()) == {"not testable here"}


def test_a_part_over_one_seed_is_not_testable(tmp_path):
    found = _run(tmp_path, "a", cross=0.3, shared=0.3, inter=0.3, control=0.3, seeds=1)
    for c in CLAIMS:
        reasons = found[c].numbers["not_testable"].values()
        assert found[c].verdict == "not testable here" and all("only 1 seed" in r for r in reasons), c


def test_relative_interaction_resamples_numerator_and_denominator_together():
    rng = np.random.default_rng(0)
    clean = {t: rng.normal(0.3, 1.0, 40) for t in ("helpful", "harmless")}
    margins = {
        s: {t: clean[t] + rng.normal(0, 1.0, 40) for t in clean} for s in ("helpful_only", "harmless_only")
    }
    idx = {t: rng.integers(0, 40, (200, 40)) for t in clean}

    def c(m):
        return (np.sign(m) + 1) / 2

    reps = []
    for b in range(200):  # each replicate's ratio on its own pairs, by the formula in the docstring
        w = []
        for t, own, other in (
            ("helpful", "helpful_only", "harmless_only"),
            ("harmless", "harmless_only", "helpful_only"),
        ):
            i = idx[t][b]
            w.append((c(margins[other][t][i]).mean() - c(margins[own][t][i]).mean()) / c(clean[t][i]).mean())
        reps.append(sum(w) / 2)
    out = double_dissociation_relative(margins, clean, idx)
    assert out["se"] == pytest.approx(np.std(reps, ddof=1))
    assert out["ci"] == pytest.approx(list(np.quantile(reps, [0.025, 0.975])))
