"""The neuron and ablation stages inside `rmtension study`: outputs, report sections, cheap reruns, CLI errors."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
import yaml
from studykit import tiny_config

from rmtension.cli import main
from rmtension.config import StudyConfig, load_config
from rmtension.errors import ConfigError
from rmtension.ablation.plan import build_conditions
from rmtension.study import extra_stages
from rmtension.run.runio import load_tensors, read_json


def test_study_stages_follow_the_config():
    study_stages = lambda cfg: [s for s in extra_stages(cfg) if s[0] in ("neurons", "ablation")]  # noqa: E731
    assert study_stages(StudyConfig()) == []
    both = StudyConfig.model_validate({"neurons": {}, "ablation": {}})
    assert [name for name, _ in study_stages(both)] == ["neurons", "ablation"]
    assert [name for name, _ in study_stages(StudyConfig.model_validate({"neurons": {}}))] == ["neurons"]
    off = {"neurons": {"enabled": False}}
    assert study_stages(StudyConfig.model_validate(off)) == []
    bad = [
        ({**off, "ablation": {}}, "needs the neuron sets"),
        ({"neurons": {"ps": [5]}, "ablation": {"ps": [10]}}, "ablation.ps"),
        ({"neurons": {"rms": ["helpful"]}, "ablation": {"rms": ["mixed"]}}, "ablation.rms"),
        (
            {
                "neurons": {"scorers": ["fire_rate"]},
                "ablation": {"scorers": ["fire_rate"], "modes": ["mean"]},
            },
            "mean_act",
        ),
        ({"bon": {}}, "needs a `policy:` section"),
        ({"policy": {}, "rl": {}}, "needs a `pm_halves:` section"),
    ]
    for raw, message in bad:
        with pytest.raises(ConfigError, match=message):  # in the validator, before any work starts
            StudyConfig.model_validate(raw)


def test_study_writes_neuron_outputs_and_reruns_cheaply(tmp_path, capsys):
    cfg = tiny_config(
        tmp_path,
        helpful=(("helpful-base", 50),),
        harmless=(("harmless-base", 50),),
        max_train_pairs=24,
        max_length=48,
        neurons={
            "max_pairs": 8,
            "ps": [5, 20],
            "scorers": ["mean_act", "attribution"],
            "rms": ["mixed", "helpful"],
            "batch_size": 4,
            "bf16": False,
            "layers": "all",
        },
        ablation={
            "max_test_pairs": 8,
            "random_draws": 2,
            "bootstrap": 100,
            "bf16": False,
            "sweep_sets": ["helpful_top", "harmless_top"],
        },
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    capsys.readouterr()  # drop what building the tiny model printed: the assertions are about the study's console
    assert main(["study", "--config", str(path), "--out", str(out)]) == 0
    first = capsys.readouterr()
    console = first.out + first.err  # one bar per long stage of rmtension's own, none of transformers'
    assert "[rmtension] training" in console and "[rmtension] train: 100%" in console
    assert "Loading weights" not in console and "Writing model shards" not in console
    scores = load_tensors(out / "neurons" / "mixed-seed0" / "scores.safetensors")
    # each scorer over tokens and where the score head reads (`<scorer>_read`), on each objective
    assert set(scores) == {
        f"{scorer}{where}/{objective}"
        for scorer in ("mean_act", "attribution")
        for where in ("", "_read")
        for objective in ("helpful", "harmless")
    }
    assert set(read_json(out / "neurons" / "sets.json")["sets"]) == {"mixed-seed0", "helpful-seed0"}
    overlap = read_json(out / "neurons" / "overlap.json")
    assert set(overlap["attribution"]) == {"5", "20"}
    # the uniform floor and the nulls drawn from the scoring pairs, headline and per RM
    entry = overlap["mean_act"]["5"]
    for key in (
        "jaccard_random",
        "jaccard_permutation",
        "jaccard_split_half",
        "jaccard_bootstrap",
        "sets_differ",
    ):
        assert key in entry and key in entry["per_rm"]["mixed-seed0"], key
    perm = entry["jaccard_permutation"]
    assert set(perm) == {"mean", "sd", "p2_5", "p97_5", "n", "p_value"} and perm["n"] == 50
    assert 1 / 51 <= perm["p_value"] <= 1 and perm["p2_5"] <= perm["mean"] <= perm["p97_5"]
    assert set(entry["jaccard_split_half"]) == {"helpful", "harmless", "mean"}
    lo, hi = entry["sets_differ"]["ci95"]
    assert lo <= entry["sets_differ"]["effect"] <= hi
    assert entry["sets_differ"]["effect"] == pytest.approx(perm["mean"] - entry["jaccard"])
    assert set(entry["jaccard_base"]) == {"helpful", "harmless", "mean"}  # mean_act of the base backbone
    assert "untrained" in overlap["attribution"]["5"]["jaccard_base"]["skipped"]
    pair = load_tensors(out / "neurons" / "mixed-seed0" / "pair_sums.safetensors")
    assert pair["act_chosen/helpful"].shape == (8, 2, 64) and pair["chosen_tokens/harmless"].shape == (8,)
    assert (out / "neurons" / "base" / "pair_sums.safetensors").is_file()
    assert not (out / "neurons" / "base" / "scores.safetensors").exists()  # never taken for an RM
    agree = read_json(out / "neurons" / "scorer_agreement.json")["mean_act_vs_attribution"]["mixed-seed0"]
    assert len(agree["helpful"]["spearman_layers"]) == 2
    assert set(agree["helpful"]["top_jaccard_chance"]) == {"5.0", "20.0"}
    frame = pd.read_csv(out / "ablation.csv")
    assert list(frame.columns[:11]) == [
        "rm",
        "neuron_set",
        "scorer",
        "p",
        "mode",
        "test_set",
        "accuracy",
        "delta_vs_base",
        "delta_vs_random",
        "n_neurons",
        "p_value",
    ]
    assert set(frame["rm"]) == {"mixed-seed0"} and set(frame["p"]) == {0.0, 5.0, 20.0}
    # the sweep (p = 20) ablates only the sweep sets; the claims' p = 5 ablates every set
    assert set(frame[frame["p"] == 20]["neuron_set"]) == {
        "helpful_top",
        "harmless_top",
        "random:helpful_top",
        "random:harmless_top",
    }
    assert {"shared", "helpful_only", "random:shared"} <= set(frame[frame["p"] == 5]["neuron_set"])
    report = (out / "report.md").read_text()
    for title in (
        "## Summary of findings",
        "## Neurons\n\n### Shared neurons: overlap",
        "## Ablations\n\n### Ablating the neuron sets",
        "### Ablation across top-p",
        "### Cross-effects",
    ):
        assert title in report, title
    for claim in (
        "identify each objective's MLP neurons",
        "many neurons are shared",
        "differ more than sampling noise",
        "shared neurons have outsized",
        "also hurts the other",
    ):
        assert re.search(
            re.escape(claim)
            + r"[^:]*: \*\*(supported|not supported|inconclusive|non-zero but small|not testable here|not run)\*\*",
            report,
        ), claim
    assert "hypergeometric p" in report
    for fig in ("neuron_overlap", "ablation_heatmap_zero", "ablation_sweep"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000

    capsys.readouterr()
    assert main(["study", "--config", str(path), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "neurons: up to date" in log and "ablation: up to date" in log

    # A changed ablation setting reruns the ablation only.
    assert main(["study", "--config", str(path), "--out", str(out), "ablation.modes=[zero,mean]"]) == 0
    log = capsys.readouterr().out
    assert "neurons: up to date" in log and "ablation: up to date" not in log
    assert set(pd.read_csv(out / "ablation.csv")["mode"]) == {"none", "zero", "mean"}

    # User errors are one line, no traceback.
    assert main(["ablate", str(out), "--set", "ablation.ps=[7]"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ablation.ps") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    )

    # Only the trained block (top:1 of two): its neurons are the same units, scored the same way.
    whole = load_tensors(out / "neurons" / "mixed-seed0" / "scores.safetensors")
    assert main(["study", "--config", str(path), "--out", str(out), "neurons.layers=trained"]) == 0
    top = load_tensors(out / "neurons" / "mixed-seed0" / "scores.safetensors")
    for key, v in whole.items():
        assert top[key].shape == (1, 64)
        torch.testing.assert_close(top[key], v[1:], rtol=1e-6, atol=1e-7)
    sets = read_json(out / "neurons" / "sets.json")
    assert sets["first_layer"] == 1 and sets["shape"] == [1, 64]
    entry = sets["sets"]["mixed-seed0"]["mean_act"]["20"]["helpful_top"]
    assert entry["n"] == round(64 * 0.2) and list(entry["neurons"]) == ["0"]  # the block's own index
    frame = pd.read_csv(out / "ablation.csv")
    assert (frame[frame["neuron_set"] == "helpful_top"]["n_neurons"] == entry["n"]).any()
    conds, plan = build_conditions(
        sets, top, "mixed-seed0", load_config(path).ablation, [5.0, 20.0], layers=2
    )
    mask = conds[next(e["key"] for e in plan if e["set"] == "helpful_top" and e["p"] == 20.0)].mask
    assert mask.shape == (2, 64) and not mask[0].any()  # placed in block 1 of the whole model
    assert mask[1].nonzero().flatten().tolist() == entry["neurons"]["0"]
    assert all(not c.mask[0].any() and (c.values is None or not c.values[0].any()) for c in conds.values())


def test_rm_names_come_from_the_registry():
    from rmtension.model.kinds import REGISTRY, register

    assert set(REGISTRY) >= {"helpful", "harmless", "mixed"}
    with pytest.raises(ConfigError, match="unknown RM name"):
        load_config(None, ["neurons.rms=[helpful,nope]"])
    with pytest.raises(ConfigError, match="unknown RM name"):
        load_config(None, ["neurons.primary_rm=nope"])
    register("probe_rm", "mixed", "a test-only name")
    try:
        cfg = load_config(
            None, ["neurons.rms=[probe_rm]", "neurons.primary_rm=probe_rm", "ablation.rms=[probe_rm]"]
        )
        assert cfg.neurons.rms == ["probe_rm"] and cfg.ablation.rms == ["probe_rm"]
        with pytest.raises(ValueError, match="already registered"):
            register("probe_rm", "helpful", "another meaning")
    finally:
        REGISTRY.pop("probe_rm")
