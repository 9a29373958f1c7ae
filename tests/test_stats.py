import numpy as np
import pandas as pd
import pytest

from rmtension.config import EvalConfig
from rmtension.rm.evaluate import tension_table
from rmtension.rm.stats import calibration, correct


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


def test_tension_table_rejects_misaligned_scores():
    a, b = _frames([0.7]), _frames([0.7])
    b[0] = b[0].iloc[::-1].reset_index(drop=True)
    scores = {"helpful": {"t": a}, "harmless": {"t": b}, "mixed": {"t": _frames([0.7])}}
    with pytest.raises(ValueError, match="aligned"):
        tension_table(scores, EvalConfig(bootstrap=100))
