"""The neuron claims where they can hold: the paper's unit, seeds as the unit, the skill and positive-control gates,
and the default's smaller analysis kept as description."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from rmtension.ablation.claims import findings as ablation_findings
from rmtension.ablation.stats import relative_drop

MARGINS = {10.0: 0.06, 20.0: 0.085, 30.0: 0.1}


def test_relative_drop_by_hand():
    clean = np.array([1.0, 1.0, 1.0, -1.0])  # correct 1, 1, 1, 0: accuracy 0.75
    ablated = np.array([1.0, -1.0, -1.0, -1.0])  # 1, 0, 0, 0: 0.25
    draws = [np.array([1.0, 1.0, -1.0, -1.0]), np.array([1.0, -1.0, 1.0, -1.0])]  # per pair 1, .5, .5, 0: 0.5
    idx = np.tile(np.arange(4), (3, 1))  # three resamples, each the sample itself
    vs_random = relative_drop(clean, ablated, draws, idx)
    assert vs_random["rel_drop"] == pytest.approx((0.5 - 0.25) / 0.75)
    assert vs_random["ci"] == pytest.approx([1 / 3, 1 / 3]) and vs_random["se"] == pytest.approx(0.0)
    assert relative_drop(clean, ablated, None, idx)["rel_drop"] == pytest.approx((0.75 - 0.25) / 0.75)
    # a tie counts half: margin 0 on pair 0 of the set
    tie = relative_drop(clean, np.array([0.0, 1.0, 1.0, -1.0]), None, idx)
    assert tie["rel_drop"] == pytest.approx((0.75 - 0.625) / 0.75)


def _rows(obj: str, scorer: str, effects: list[float], se: float, mode: str = "zero") -> list[dict]:
    out = []
    for seed, e in enumerate(effects):
        for p in MARGINS:
            for kind in ("layer", "magnitude"):
                out.append(
                    {
                        "rm": f"{obj}-seed{seed}",
                        "neuron_set": f"{obj}_top",
                        "scorer": scorer,
                        "p": p,
                        "mode": mode,
                        "test_set": obj,
                        "control": kind,
                        "n_draws": 5,
                        "rel_drop_vs_random": e,
                        "rel_drop_vs_random_se": se,
                        "rel_drop_vs_base": e + 0.01,
                    }
                )
    return out


def _run(
    tmp: Path, name: str, effects: dict, control: dict, skill: dict, se: float = 0.01
) -> dict[str, object]:
    run = tmp / name
    run.mkdir()
    rows = []
    for obj in ("helpful", "harmless"):
        rows += _rows(obj, "mean_act", effects[obj], se)
        rows += _rows(obj, "attribution", control[obj], se)
    pd.DataFrame(rows).to_csv(run / "ablation.csv", index=False)
    acc = {
        o: {o: {"length_controlled": {"estimable": True, "estimate": sum(ci) / 2, "ci95": ci}}}
        for o, ci in skill.items()
    }
    (run / "tension.json").write_text(json.dumps({"accuracy": acc}))
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "neurons.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return {f.id: f for f in ablation_findings(run)}


SKILLED = {"helpful": [0.55, 0.62], "harmless": [0.56, 0.66]}


def test_seed_level_interval_by_hand_and_supported(tmp_path):
    effects = {"helpful": [0.20, 0.25, 0.30], "harmless": [0.22, 0.24, 0.26]}
    found = _run(tmp_path, "a", effects, effects, SKILLED)
    ident = found["neurons_identified"]
    assert ident.verdict == "supported"
    part = "helpful_top on helpful at top 10% vs layer (helpful RM)"
    # random effects over 3 seeds: var = se^2 (pairs) + s^2 / 3; Welch-Satterthwaite df; t quantile
    x = np.array(effects["helpful"])
    seed_term = x.var(ddof=1) / 3
    var = 0.01**2 + seed_term
    df = var**2 / (seed_term**2 / 2)
    half = stats.t.ppf(0.975, df) * np.sqrt(var)
    assert ident.effect[part] == pytest.approx(0.25)
    assert ident.ci95[part] == pytest.approx([0.25 - half, 0.25 + half])
    assert ident.positive_control[part]["reaches_margin"] is True
    assert "beside it, mean ablation" not in ident.evidence  # no mean rows in this fixture
    rest = {k: f.verdict for k, f in found.items() if k != "neurons_identified"}
    assert set(rest.values()) == {"not run"}


def test_not_supported_needs_a_positive_control_that_reaches_the_margin(tmp_path):
    null = {"helpful": [0.0, 0.005, -0.005], "harmless": [0.002, -0.002, 0.0]}
    strong = {"helpful": [0.3, 0.32, 0.34], "harmless": [0.3, 0.31, 0.29]}
    # the control reaches every margin: the null effect is "not supported"
    ok = _run(tmp_path, "a", null, strong, SKILLED, se=0.005)["neurons_identified"]
    assert ok.verdict == "not supported" and not ok.numbers["not_testable"]
    # the same effects with a weak control: "not testable here", the control's effect as the reason
    weak = _run(tmp_path, "b", null, null, SKILLED, se=0.005)["neurons_identified"]
    assert weak.verdict == "not testable here"
    reason = next(iter(weak.numbers["not_testable"].values()))
    assert "positive control" in reason and "not above the margin" in reason
    assert weak.positive_control and all(not c["reaches_margin"] for c in weak.positive_control.values())


def test_rm_without_the_skill_is_not_testable(tmp_path):
    effects = {"helpful": [0.2, 0.25, 0.3], "harmless": [0.0, 0.0, 0.0]}
    no_harm = {"helpful": [0.55, 0.62], "harmless": [0.45, 0.6]}  # harmless RM: CI not above 0.5
    ident = _run(tmp_path, "a", effects, effects, no_harm)["neurons_identified"]
    verdicts = ident.numbers["verdicts"]
    assert {v for k, v in verdicts.items() if k.startswith("harmless")} == {"not testable here"}
    assert all("RM lacks the skill" in why for why in ident.numbers["not_testable"].values())
    assert ident.verdict == "supported"  # decided on the testable parts (the helpful RM's), which all hold
    none = _run(tmp_path, "b", effects, effects, {"helpful": [0.4, 0.5], "harmless": [0.45, 0.6]})
    assert none["neurons_identified"].verdict == "not testable here"


def test_default_design_keeps_its_numbers_as_description(tmp_path):
    run = tmp_path / "d"
    run.mkdir()
    row = {
        "rm": "mixed-seed0",
        "scorer": "mean_act",
        "p": 5.0,
        "mode": "mean",
        "control": "layer",
        "n_draws": 20,
        "n_neurons": 92,
        "n_pairs": 400,
        "std_vs_random": -0.3,
        "std_vs_random_ci_lo": -0.35,
        "std_vs_random_ci_hi": -0.25,
        "p_value": 0.01,
    }
    rows = [
        {**row, "neuron_set": s, "test_set": t}
        for s, t in (("helpful_top", "helpful"), ("harmless_top", "harmless"))
    ]
    pd.DataFrame(rows).to_csv(run / "ablation.csv", index=False)
    ident = {f.id: f for f in ablation_findings(run)}["neurons_identified"]
    assert ident.verdict == "not run" and "configs/neurons.yaml" in ident.evidence
    assert ident.numbers["described_verdict"] == "supported" and "+0.300" in ident.evidence


def test_claim_draws_positive_control_and_own_objective_in_the_plan():
    from rmtension.ablation.plan import borrow_controls, draws_for
    from rmtension.ablation.run import rm_config
    from rmtension.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "neurons.yaml").ablation
    claim = [10.0, 20.0, 30.0]
    assert draws_for(cfg, 20.0, claim, "zero", "helpful_top", "mean_act") == 5  # claim mode: 5 per kind
    assert draws_for(cfg, 20.0, claim, "mean", "helpful_top", "mean_act") == 0  # beside: the set alone
    assert draws_for(cfg, 20.0, claim, "zero", "helpful_top", "attribution") == 0  # borrows
    assert draws_for(cfg, 5.0, claim, "zero", "helpful_top", "mean_act") == 0  # not a claim p: sweep_draws
    plan = [
        {
            "scorer": "mean_act",
            "p": 10.0,
            "set": "helpful_top",
            "mode": "zero",
            "n": 7,
            "key": "a",
            "controls": {"layer": ["a|l0"]},
        },
        {
            "scorer": "attribution",
            "p": 10.0,
            "set": "helpful_top",
            "mode": "zero",
            "n": 7,
            "key": "b",
            "controls": {},
        },
        {
            "scorer": "attribution",
            "p": 20.0,
            "set": "helpful_top",
            "mode": "zero",
            "n": 9,
            "key": "c",
            "controls": {},
        },
    ]
    borrow_controls(plan, cfg)
    assert plan[1]["controls"] == {"layer": ["a|l0"]} and plan[1]["controls_of"] == "a"
    assert plan[2]["controls"] == {}  # no claim entry of that p: nothing to borrow
    helpful = rm_config(cfg, "helpful")
    assert helpful.sets == ["helpful_top"] and helpful.test_sets == ["helpful"]
    assert rm_config(cfg, "mixed") is cfg


def test_shuffled_labels_never_make_the_sets_differ_supported(tmp_path):
    """The negative control of `neuron_sets_differ`: RMs trained on shuffled labels learn no preference, so the
    trained-minus-base difference of their contrast sets must not come out "supported"."""
    from studykit import tiny_config, write_config

    from rmtension.cli import main
    from rmtension.neurons.claims import overlap_claims
    from rmtension.run.runio import read_json

    cfg = tiny_config(
        tmp_path,
        helpful=(("helpful-base", 60),),
        harmless=(("harmless-base", 60),),
        max_train_pairs=32,
        max_length=40,
        train={"seeds": [0, 1], "epochs": 2},
        neurons={
            "rms": ["mixed"],
            "max_seeds": 2,
            "max_pairs": 24,
            "ps": [20],
            "scorers": ["mean_act", "contrast"],
            "permutations": 50,
            "batch_size": 8,
        },
    )
    cfg["data"]["shuffle_labels"] = True
    out = tmp_path / "run"
    assert main(["study", "--config", str(write_config(tmp_path, cfg)), "--out", str(out)]) == 0
    summary = read_json(out / "data" / "summary.json")["shuffled_labels"]
    assert 0 < summary["mixed"]["flipped"] < summary["mixed"]["of"]
    entry = read_json(out / "neurons" / "overlap.json")["contrast"]["20"]
    assert (
        "learning" in entry
    )  # decided on the trained-minus-base difference, not on the RM's text-driven one
    found = {f.id: f for f in overlap_claims(out, 20, "mean_act")}["neuron_sets_differ"]
    assert found.verdict in ("not supported", "inconclusive"), found.evidence
    assert "contrast" in found.setting and "base backbone" in found.evidence
