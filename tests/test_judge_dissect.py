"""`rmtension judge dissect` on two tiny judges of one family, for BERT and for Llama: the study's neuron and
ablation files, the cross-model overlap by hand from the sets, judge A's scores equal to `api.score_neurons`,
and judges of different shapes refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from rmtension.api import load_judge, load_test_set, score_neurons
from rmtension.cli import main
from rmtension.config import load_config
from rmtension.data.objectives import half_of
from rmtension.judges.select import mask_from_json, stable_seed
from rmtension.judges.neuron_sets import sample_pairs
from tiny import save_tiny

SMALL = ["--max-pairs", "8", "--ps", "20", "--random-draws", "1", "--max-test-pairs", "8", "--modes", "zero"]
SMALL += ["--controls", "layer", "--max-length", "48"]


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_dissect_two_judges_of_one_family(family, tiny_study_run, tmp_path):
    base, cfg, _ = tiny_study_run
    a, b = save_tiny(tmp_path / "a", family, seed=1), save_tiny(tmp_path / "b", family, seed=2)
    out = tmp_path / "dissect"
    argv = [
        "judge",
        "dissect",
        "--rm",
        str(a),
        "--rm",
        str(b),
        "--base",
        str(save_tiny(tmp_path / "base", family)),
    ]
    argv += ["--pairs", "hh:helpful:all,hh:harmless:all", "--config", str(cfg), "--out", str(out), *SMALL]
    assert main(argv) == 0
    for rel in (
        "neurons/sets.json",
        "neurons/overlap.json",
        "ablation.csv",
        "neurons/cross_effect.json",
        "report.html",
    ):
        assert (out / rel).is_file(), rel
    sets = json.loads((out / "neurons" / "sets.json").read_text())
    shape = tuple(sets["shape"])
    mask = lambda rm, name: mask_from_json(sets["sets"][rm]["mean_act"]["20"][name], shape)  # noqa: E731
    ha, hb = mask("helpful-seed0", "helpful_top"), mask("harmless-seed0", "harmless_top")
    cross = json.loads((out / "neurons" / "overlap.json").read_text())["mean_act"]["20"]["cross_model"]
    assert cross["jaccard"] == pytest.approx((ha & hb).sum().item() / (ha | hb).sum().item())
    assert "rms_change" in sets["scorers"]  # a base was given
    # judge A is the "helpful" RM: its scores on the helpful scoring half equal the API's on the same pairs
    data = load_config(str(cfg)).data
    helpful = [p for p in load_test_set("hh:helpful:all", data).pairs if half_of(p, 0) == "half0"]
    pairs = sample_pairs(helpful, 8, stable_seed(0, "helpful"))
    want = score_neurons(load_judge(str(a), template="hh", max_length=48), pairs, scorers=["mean_act"])
    with safe_open(str(out / "neurons" / "helpful-seed0" / "scores.safetensors"), "pt") as f:
        torch.testing.assert_close(
            f.get_tensor("mean_act/helpful"), want.scores["mean_act"], atol=1e-5, rtol=0
        )
    html = (out / "report.html").read_text()
    assert "Shared neurons" in html and "Ablating the neuron sets" in html


def test_dissect_refuses_judges_of_different_shapes_in_one_line(tiny_study_run, tmp_path, capsys):
    _, cfg, _ = tiny_study_run
    argv = [
        "judge",
        "dissect",
        "--rm",
        str(save_tiny(tmp_path / "a", "bert")),
        "--rm",
        str(save_tiny(tmp_path / "b", "llama")),
    ]
    assert (
        main([*argv, "--pairs", "hh:helpful,hh:harmless", "--config", str(cfg), "--out", str(tmp_path / "o")])
        != 0
    )
    err = capsys.readouterr().err.strip()
    assert (
        "judges of different shapes (a: bert [2, 64], b: llama [2, 64])" in err and len(err.splitlines()) == 1
    )
