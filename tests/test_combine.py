"""Combining the objectives (`rmtension.combine`): the dials, weight interpolation, the gate, the
frontier's Pareto points and hypervolume, the claim's rule, and the stage in a tiny study."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from rmtension.judges.dials import (
    dial,
    hypervolume,
    interpolate_state,
    pareto_mask,
    standardise,
    standardiser,
)
from rmtension.combine.frontier import COLUMNS, keeps_both_verdict, select_dial
from rmtension.judges.gate import masked_mean, train_gate
from rmtension.model.forward import PairForward
from test_train import synthetic
from tiny import tiny_reward_model, tiny_tokenizer


def test_dial_at_one_is_the_standardised_helpful_score_and_at_zero_the_harmless_one():
    ref_h = np.array([1.0, 3.0, 5.0, 7.0])  # mean 4, SD sqrt(5)
    ref_m = np.array([-2.0, 2.0])  # mean 0, SD 2
    r_h, r_m = np.array([4.0, 9.0]), np.array([1.0, -3.0])
    z_h, z_m = standardise(r_h, standardiser(ref_h)), standardise(r_m, standardiser(ref_m))
    np.testing.assert_allclose(dial(z_h, z_m, 1.0), [0.0, 5 / np.sqrt(5)])
    np.testing.assert_allclose(dial(z_h, z_m, 0.0), [0.5, -1.5])
    np.testing.assert_allclose(dial(z_h, z_m, 0.25), [0.25 * 0 + 0.75 * 0.5, 0.25 * np.sqrt(5) + 0.75 * -1.5])
    # the gated dial: one weight per row
    np.testing.assert_allclose(dial(z_h, z_m, np.array([1.0, 0.0])), [0.0, -1.5])
    with pytest.raises(ValueError, match="no spread"):
        standardiser(np.ones(3))


def test_pareto_points_and_hypervolume_by_hand():
    pts = np.array([[0.6, 0.7], [0.7, 0.6], [0.65, 0.65], [0.6, 0.6], [0.55, 0.4]])
    assert pareto_mask(pts).tolist() == [True, True, True, False, False]
    # the union of [0.5, x] x [0.5, y]: 0.2 x 0.1 (right strip) + 0.15 x 0.05 + 0.1 x 0.05
    assert hypervolume(pts) == pytest.approx(0.2 * 0.1 + 0.15 * 0.05 + 0.1 * 0.05)
    assert hypervolume(np.array([[0.4, 0.9]])) == 0.0  # below 0.5 on one axis: nothing
    assert pareto_mask(np.array([[0.6, 0.6], [0.6, 0.6]])).tolist() == [True, True]  # ties dominate neither


def test_weight_interpolation_end_points_reproduce_the_two_rms():
    tok = tiny_tokenizer("llama")
    helpful, harmless = tiny_reward_model("llama", seed=0).eval(), tiny_reward_model("llama", seed=1).eval()
    enc = synthetic(tok, 6, "w")
    a, b = helpful.state_dict(), harmless.state_dict()
    model = tiny_reward_model("llama", seed=2).eval()

    def scores(m):
        with PairForward(m, tok.pad_token_id, False) as fwd:
            return fwd.score(enc, batch_size=4)

    for lam, target in ((1.0, helpful), (0.0, harmless)):
        model.load_state_dict(interpolate_state(a, b, lam))
        for got, want in zip(scores(model), scores(target)):
            np.testing.assert_allclose(got, want, atol=1e-6)
    # an entry both share (a frozen layer) keeps its bytes: 0.3 x + 0.7 x is not x in float32
    x = torch.randn(64)
    assert torch.equal(interpolate_state({"w": x}, {"w": x.clone()}, 0.3)["w"], x)
    assert not torch.equal(0.3 * x + 0.7 * x, x)
    half = interpolate_state(a, b, 0.5)
    key = next(k for k, v in a.items() if v.is_floating_point())
    torch.testing.assert_close(half[key], (a[key] + b[key]) / 2)
    with pytest.raises(ValueError, match="differ in keys"):
        interpolate_state(a, {k: v for k, v in b.items() if k != key}, 0.5)


def test_the_gate_learns_a_separable_toy_problem():
    rng = np.random.default_rng(0)
    centre = np.zeros(8)
    centre[3] = 3.0
    x = np.concatenate([rng.normal(size=(100, 8)) + centre, rng.normal(size=(100, 8)) - centre])
    y = np.r_[np.ones(100), np.zeros(100)]
    gate = train_gate(x, y, steps=300, lr=0.05, l2=1e-3)
    held = np.concatenate([rng.normal(size=(50, 8)) + centre, rng.normal(size=(50, 8)) - centre])
    w = gate(held)
    assert ((w > 0.5) == np.r_[np.ones(50), np.zeros(50)].astype(bool)).mean() == 1.0
    assert np.argmax(np.abs(gate.weight)) == 3  # it found the informative feature
    with pytest.raises(ValueError, match="both objectives"):
        train_gate(x, np.ones(200), steps=1, lr=0.1, l2=0.0)


def test_masked_mean_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert masked_mean(hidden, mask).tolist() == [[2.0, 3.0]]


def test_select_dial_maximises_the_worst_validation_shortfall():
    own = {"helpful": 0.6, "harmless": 0.7}
    val = {
        0.0: {"helpful": 0.50, "harmless": 0.70},  # worst -0.10
        0.5: {"helpful": 0.58, "harmless": 0.66},  # worst -0.04
        1.0: {"helpful": 0.60, "harmless": 0.55},  # worst -0.15
    }
    assert select_dial(val, own) == 0.5
    tie = {0.0: {"helpful": 0.6, "harmless": 0.7}, 0.4: {"helpful": 0.6, "harmless": 0.7}}
    assert select_dial(tie, own) == 0.4  # nearer the middle


def test_keeps_both_verdict_follows_the_non_inferiority_rule():
    def doc(**methods):
        return {
            "methods": {m: {"helpful": {"ci": h}, "harmless": {"ci": g}} for m, (h, g) in methods.items()}
        }

    assert keeps_both_verdict(doc(a=([-0.03, 0.02], [-0.05, 0.01])), 0.07)[0] == "supported"
    # one method's CI reaches below -0.07 on harmless: undecided; another loses one outright
    verdict, standing = keeps_both_verdict(
        doc(a=([-0.03, 0.02], [-0.09, 0.01]), b=([-0.2, -0.1], [0, 0.1])), 0.07
    )
    assert verdict == "inconclusive" and standing == {"a": "undecided", "b": "loses one"}
    assert keeps_both_verdict(doc(b=([-0.2, -0.1], [0, 0.1]), c=([0, 0.1], [-0.3, -0.08])), 0.07)[0] == (
        "not supported"
    )


def test_a_study_with_combine_writes_the_frontier(tmp_path):
    from rmtension.cli import main
    from studykit import tiny_config

    cfg = tiny_config(tmp_path, "llama", combine={"grid": 4, "bootstrap": 200}, report={"enabled": False})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["study", "--config", str(tmp_path / "cfg.yaml"), "--out", str(out)]) == 0
    front = pd.read_csv(out / "combine" / "frontier.csv")
    assert list(front.columns) == COLUMNS
    methods = set(front["method"])
    assert {
        "rm:helpful",
        "rm:harmless",
        "rm:mixed",
        "reward_interp",
        "two_head_dial",
        "gated",
        "gated_mean",
    } <= methods
    assert {"weight_interp", "data_ratio"} <= methods
    assert sorted(front.loc[front["method"] == "data_ratio", "dial"]) == [0.0, 0.25, 0.5, 0.75, 1.0]
    # thirds: lambda x + (1 - lambda) x rounds away from x, so the frozen trunk must be copied, not mixed
    np.testing.assert_allclose(
        sorted(front.loc[front["method"] == "reward_interp", "dial"]), [0, 1 / 3, 2 / 3, 1]
    )
    by = front.set_index(["method", front["dial"].fillna(-1)])
    tension = json.loads((out / "tension.json").read_text())["accuracy"]
    cols = ["seed_mean_acc_helpful", "seed_mean_acc_harmless"]
    # a dial's end is its RM (standardising is monotone), and so is an end of the weight path
    for share, rm in ((0.0, "harmless"), (0.5, "mixed"), (1.0, "helpful")):  # the RMs the study trains anyway
        np.testing.assert_allclose(by.loc[("data_ratio", share), cols], by.loc[(f"rm:{rm}", -1), cols])
    for share in (0.25, 0.75):  # the others train their own: mixed_r<share>, evaluated like any RM
        got = by.loc[("data_ratio", share), cols].to_numpy()
        view = tension[f"mixed_r{share:g}"]
        np.testing.assert_allclose(got, [view["helpful"]["mean"], view["harmless"]["mean"]])
    for end, rm in ((1.0, "helpful"), (0.0, "harmless")):
        np.testing.assert_allclose(by.loc[("reward_interp", end), cols], by.loc[(f"rm:{rm}", -1), cols])
        np.testing.assert_allclose(
            by.loc[("weight_interp", end), cols], by.loc[(f"rm:{rm}", -1), cols], atol=1e-9
        )
        head = f"two_head:{rm}"
        got = by.loc[("two_head_dial", end), cols].to_numpy()
        np.testing.assert_allclose(got, [tension[head]["helpful"]["mean"], tension[head]["harmless"]["mean"]])
    summary = json.loads((out / "combine" / "summary.json").read_text())
    assert set(summary["selected_dial"]) == {
        "reward_interp",
        "two_head_dial",
        "weight_interp",
        "gated",
        "data_ratio",
    }
    assert 0.0 <= summary["gate"]["accuracy"]["all"] <= 1.0
    for m, d in summary["keeps_both"]["methods"].items():
        for t in ("helpful", "harmless"):
            lo, hi = d[t]["ci"]
            assert lo <= d[t]["estimate"] + 1e-9 and d[t]["estimate"] <= hi + 1e-9, (m, t, d)
    # the stage is cached: a second run redoes nothing, so the files keep their bytes
    before = (out / "combine" / "frontier.csv").read_bytes()
    assert main(["study", "--config", str(tmp_path / "cfg.yaml"), "--out", str(out)]) == 0
    assert (out / "combine" / "frontier.csv").read_bytes() == before
    # the report: the section, its figure and the finding, decided from summary.json by the rule
    from rmtension.study import write_study_report as write_report

    html = write_report(out).read_text()
    assert 'id="combine"' in html and "combine_frontier.png" in html
    assert (out / "figures" / "combine_frontier.pdf").exists()
    found = {f["id"]: f for f in json.loads((out / "findings.json").read_text())["findings"]}
    expected, _ = keeps_both_verdict(summary["keeps_both"], 0.07)
    assert found["combined_keeps_both"]["verdict"] == expected
    assert set(found["combined_keeps_both"]["ci95"]) == {
        f"{m}/{t}" for m in summary["keeps_both"]["methods"] for t in ("helpful", "harmless")
    }


def test_ratio_splits_are_matched_in_size_nested_and_of_their_share():
    from rmtension.data.ratios import add_ratio_splits, ratio_split
    from rmtension.data.types import Pair, Turn

    def pairs(kind, n):
        return [
            Pair(f"{kind}{i}", (Turn("user", f"{kind} {i}"),), "a", "b", kind, "f", i + 1) for i in range(n)
        ]

    splits = {
        "helpful": {"train": pairs("helpful", 40)},
        "harmless": {"train": pairs("harmless", 30)},
        "mixed": {"val": pairs("val", 4)},
    }
    quarter, three = ratio_split(splits, 0.25, 0), ratio_split(splits, 0.75, 0)
    for got, share in ((quarter, 0.25), (three, 0.75)):
        assert len(got["train"]) == 30  # the smaller objective's size
        assert sum(p.subset == "helpful" for p in got["train"]) == round(share * 30)
        assert got["val"] == splits["mixed"]["val"]
    ids = lambda split, kind: {p.pair_id for p in split["train"] if p.subset == kind}  # noqa: E731
    assert ids(quarter, "helpful") <= ids(three, "helpful") and ids(three, "harmless") <= ids(
        quarter, "harmless"
    )
    add_ratio_splits(splits, [0.0, 0.25, 0.5, 1.0], 0)
    assert "mixed_r0.25" in splits and not {"mixed_r0", "mixed_r0.5", "mixed_r1"} & set(splits)


def test_keeps_both_ignores_a_bound_within_two_monte_carlo_ses_of_the_margin():
    # a lower bound of -0.0694 against -0.07 with an MC SE of 0.0011 (1,000 replicates) is 0.5 SE away:
    # another bootstrap seed would often put it below, so it keeps nothing; with an SE of 0.0001 (6 SE) it keeps both
    def doc(se):
        part = {"ci": [-0.0694, 0.02], "ci_mc_se": [se, se]}
        return {"methods": {"a": {"helpful": part, "harmless": {"ci": [-0.03, 0.02], "ci_mc_se": [se, se]}}}}

    assert keeps_both_verdict(doc(0.0011), 0.07) == ("inconclusive", {"a": "undecided"})
    assert keeps_both_verdict(doc(0.0001), 0.07)[0] == "supported"
