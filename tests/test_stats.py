import numpy as np
import pandas as pd
import pytest

from rmtension.config import EvalConfig
from rmtension.tension.table import tension_table
from rmtension.stats.bootstrap import calibration, correct


def test_correct_counts_ties_as_half():
    assert correct(np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]


def test_calibration_of_a_perfectly_calibrated_model_is_near_zero():
    rng = np.random.default_rng(0)
    margins = rng.normal(0, 2, size=20000)
    # draw outcomes with P(chosen preferred) = sigmoid(margin); flip pairs the model gets "wrong"
    p = 1 / (1 + np.exp(-margins))
    won = rng.random(20000) < p
    cal = calibration(np.where(won, margins, -margins), bins=10)
    assert cal["ece"] < 0.02


def test_calibration_detects_overconfidence_by_hand():
    # Half the pairs have margin log 3 (p = 0.75), half -log 3 (p = 0.25): the model is 75% sure and right half the time.
    # Both orientations: bin 7 holds 10 predictions of 0.75, observed 0.5; bin 2 holds 10 of 0.25, observed 0.5.
    margins = np.array([np.log(3)] * 5 + [-np.log(3)] * 5)
    cal = calibration(margins, bins=10)
    assert cal["ece"] == pytest.approx(0.25, abs=1e-9)
    assert {p["bin"] for p in cal["points"]} == {2, 7}


def _frames(acc_by_seed, n=400, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for acc in acc_by_seed:
        won = rng.random(n) < acc
        out.append(
            pd.DataFrame(
                {
                    "pair_id": [f"p{i}" for i in range(n)],
                    "subset": "s",
                    "r_chosen": np.where(won, 1.0, 0.0),
                    "r_rejected": np.where(won, 0.0, 1.0),
                }
            )
        )
    return out


def test_tension_table_reports_negative_interference_when_mixed_is_worse():
    scores = {
        "helpful": {"helpful": _frames([0.8, 0.8], seed=1)},
        "harmless": {"helpful": _frames([0.6, 0.6], seed=2)},
        "mixed": {"helpful": _frames([0.6, 0.6], seed=3)},
    }
    t = tension_table(scores, EvalConfig(bootstrap=500))
    inter = t["interference"]["helpful"]
    assert inter["best_single"] == "helpful"
    assert inter["ci95"][1] < 0 and inter["mixed_minus_best_single"] < -0.1
    acc = t["accuracy"]["helpful"]["helpful"]
    assert acc["ci95"][0] < acc["mean"] < acc["ci95"][1] and len(acc["per_seed"]) == 2


def test_interference_splits_into_dilution_and_negative_transfer():
    frames = {
        "helpful": _frames([0.88, 0.86], seed=1),
        "harmless": _frames([0.55, 0.57], seed=2),
        "mixed": _frames([0.56, 0.54], seed=3),
        "helpful_half": _frames([0.74, 0.72], seed=4),
    }
    t = tension_table({rm: {"helpful": f} for rm, f in frames.items()}, EvalConfig(bootstrap=400))
    d = t["interference"]["helpful"]

    def acc(rm):  # mean over seeds and pairs, by hand
        return np.mean([(f.r_chosen > f.r_rejected).mean() for f in frames[rm]])

    assert d["best_single"] == "helpful"
    assert d["mixed_minus_best_single"] == pytest.approx(acc("mixed") - acc("helpful"))
    assert d["dilution"]["estimate"] == pytest.approx(acc("helpful_half") - acc("helpful"))
    assert d["negative_transfer"]["estimate"] == pytest.approx(acc("mixed") - acc("helpful_half"))
    assert d["dilution"]["ci95"][1] < 0 and d["negative_transfer"]["ci95"][1] < 0
    assert d["p_value"] < 0.01 and 0 < d["negative_transfer"]["p_value"] <= 1
    # without the control there is no split
    t2 = tension_table({rm: {"helpful": frames[rm]} for rm in ("helpful", "harmless", "mixed")}, EvalConfig())
    assert "dilution" not in t2["interference"]["helpful"]


def test_best_single_is_chosen_once_not_inside_every_replicate():
    # three RMs of equal accuracy: a max inside each replicate would push the CI below the point estimate
    frames = {rm: _frames([0.7, 0.7, 0.7], seed=k) for k, rm in enumerate(("helpful", "harmless", "mixed"))}
    t = tension_table({rm: {"h": f} for rm, f in frames.items()}, EvalConfig(bootstrap=2000), seed=5)
    d = t["interference"]["h"]
    best = d["best_single"]
    diff = np.mean([(f.r_chosen > f.r_rejected).mean() for f in frames["mixed"]]) - np.mean(
        [(f.r_chosen > f.r_rejected).mean() for f in frames[best]]
    )
    assert d["mixed_minus_best_single"] == pytest.approx(diff)
    centre = (d["ci95"][0] + d["ci95"][1]) / 2
    assert abs(centre - diff) < 0.01  # the per-replicate max shifts the centre by about 2x its bias


def test_tension_table_rejects_misaligned_scores():
    a, b = _frames([0.7]), _frames([0.7])
    b[0] = b[0].iloc[::-1].reset_index(drop=True)
    scores = {"helpful": {"t": a}, "harmless": {"t": b}, "mixed": {"t": _frames([0.7])}}
    with pytest.raises(ValueError, match="aligned"):
        tension_table(scores, EvalConfig(bootstrap=100))
