"""Length-controlled accuracy (`rmtension.stats.length`) on hand-worked values, and its keys in the tension table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rmtension.config import EvalConfig
from rmtension.tension.table import TestSetInfo as SetInfo
from rmtension.tension.table import tension_table
from rmtension.stats.bootstrap import seed_pair_bootstrap, seed_resamples
from rmtension.stats.length import (
    length_controlled_accuracy,
    length_strata,
    not_estimable_reason,
    resample_counts,
)


def test_strata_by_hand():
    assert length_strata(np.array([5, 3, 4]), np.array([2, 3, 9])).tolist() == [1, 0, -1]


def test_resample_counts_by_hand():
    # replicate 0 draws pairs 0, 0, 2; replicate 1 draws 1, 2, 2
    counts = resample_counts(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    assert counts.tolist() == [[2, 0, 1], [0, 1, 2]]


def test_a_pure_length_prior_scores_one_half():
    # chosen longer on 40 pairs, shorter on 30, ties on 5: "prefer the longer reply" is right on the 40
    strata = np.array([1] * 40 + [-1] * 30 + [0] * 5)
    c = np.array([[1.0] * 40 + [0.0] * 30 + [0.5] * 5])  # [1, 75]
    rng = np.random.default_rng(0)
    weights = resample_counts(rng.integers(0, 75, size=(200, 75)), 75)
    lc, reps = length_controlled_accuracy(c, strata, weights, seed_resamples(1, 200, rng), 0.95)
    assert (lc.estimable, lc.estimate) == (True, 0.5)
    assert (lc.n_chosen_longer, lc.n_chosen_shorter, lc.n_ties) == (40, 30, 5)
    assert lc.per_stratum == {"chosen_longer": 1.0, "chosen_shorter": 0.0}
    assert np.allclose(reps, 0.5) and lc.ci95 == pytest.approx([0.5, 0.5])


def test_point_estimate_and_replicates_match_a_loop_by_hand():
    rng = np.random.default_rng(3)
    s, n, b = 3, 80, 50
    strata = rng.choice([1, -1, 0], size=n, p=[0.5, 0.4, 0.1])
    c = (rng.random((s, n)) < 0.7).astype(float)
    pair_idx = rng.integers(0, n, size=(b, n))
    seed_idx = seed_resamples(s, b, rng)
    lc, reps = length_controlled_accuracy(c, strata, resample_counts(pair_idx, n), seed_idx, 0.9)
    # by hand: per seed, the mean of the two stratum means; then the mean over seeds
    by_seed = [(c[k, strata == 1].mean() + c[k, strata == -1].mean()) / 2 for k in range(s)]
    assert lc.estimate == pytest.approx(np.mean(by_seed))
    for r in range(b):  # replicate r: the resampled pairs of each stratum, for each resampled seed
        drawn = pair_idx[r]
        longer, shorter = drawn[strata[drawn] == 1], drawn[strata[drawn] == -1]
        per_seed = [(c[k, longer].mean() + c[k, shorter].mean()) / 2 for k in seed_idx[r]]
        assert reps[r] == pytest.approx(np.mean(per_seed))
    assert lc.ci95 == pytest.approx(np.quantile(reps, [0.05, 0.95]).tolist())


def test_a_small_stratum_is_not_estimable_and_says_so():
    strata = np.array([1] * 29 + [-1] * 100 + [0] * 3)
    assert "chosen longer 29" in not_estimable_reason(strata)
    c = np.ones((2, len(strata)))
    rng = np.random.default_rng(0)
    weights = resample_counts(rng.integers(0, len(strata), size=(100, len(strata))), len(strata))
    lc, reps = length_controlled_accuracy(c, strata, weights, seed_resamples(2, 100, rng), 0.95)
    assert (lc.estimable, lc.estimate, lc.ci95, reps) == (False, None, None, None)
    assert lc.n_ties == 3 and "fewer than 30 pairs" in lc.reason
    assert not_estimable_reason(np.array([1] * 30 + [-1] * 30)) == ""


def _frames(correct_by_seed: list[np.ndarray]) -> list[pd.DataFrame]:
    return [
        pd.DataFrame(
            {
                "pair_id": [f"p{i}" for i in range(len(c))],
                "subset": "s",
                "r_chosen": c.astype(float),
                "r_rejected": 1.0 - c.astype(float),
            }
        )
        for c in correct_by_seed
    ]


def _info(len_chosen: np.ndarray, len_rejected: np.ndarray) -> SetInfo:
    lengths = np.stack([len_chosen, len_rejected], axis=1)
    return SetInfo([f"p{i}" for i in range(len(len_chosen))], lengths, lengths)


def test_tension_table_puts_the_length_prior_beside_the_raw_interference():
    # 120 chosen-longer and 80 chosen-shorter pairs. The helpful RM prefers the longer reply (raw 0.6),
    # the harmless and the mixed RM the shorter one (raw 0.4): raw interference 0.4 - 0.6 = -0.2, all of it
    # length: every RM's length-controlled accuracy is 0.5 in every replicate, so the controlled interference
    # is 0 with CI [0, 0] and the length prior is -0.2.
    longer = np.array([1] * 120 + [0] * 80, dtype=bool)
    len_c = np.where(longer, 50, 10)
    len_r = np.full(200, 20)
    prefers_longer, prefers_shorter = longer.astype(int), (~longer).astype(int)
    scores = {
        "helpful": {"h": _frames([prefers_longer] * 2)},
        "harmless": {"h": _frames([prefers_shorter] * 2)},
        "mixed": {"h": _frames([prefers_shorter] * 2)},
    }
    t = tension_table(scores, EvalConfig(bootstrap=300), seed=4, info={"h": _info(len_c, len_r)})
    inter = t["interference"]["h"]
    assert inter["mixed_minus_best_single"] == pytest.approx(-0.2) and inter["best_single"] == "helpful"
    assert inter["length_controlled"]["estimate"] == pytest.approx(0.0)
    assert inter["length_controlled"]["ci95"] == pytest.approx([0.0, 0.0])
    prior = inter["length_prior"]
    assert prior["estimate"] == pytest.approx(-0.2)
    assert prior["ci95"] == pytest.approx(inter["ci95"])  # the controlled part never moves: same replicates
    for rm in ("helpful", "harmless", "mixed"):
        lc = t["accuracy"][rm]["h"]["length_controlled"]
        assert lc["estimate"] == pytest.approx(0.5) and lc["n_chosen_longer"] == 120 and lc["n_ties"] == 0


def test_raw_cis_are_the_old_draws_and_length_keys_are_additive():
    rng = np.random.default_rng(1)
    n = 150
    per_rm = {
        rm: [rng.random(n) < p for _ in range(3)]
        for rm, p in (("helpful", 0.7), ("harmless", 0.6), ("mixed", 0.6))
    }
    scores = {rm: {"h": _frames(cs)} for rm, cs in per_rm.items()}
    len_c, len_r = rng.integers(1, 60, n), rng.integers(1, 60, n)
    cfg = EvalConfig(bootstrap=200)
    t = tension_table(scores, cfg, seed=7, info={"h": _info(len_c, len_r)})
    # the raw CIs as the table drew them before length control: pairs once, then each RM's seeds
    old = np.random.default_rng(7)
    pair_idx = old.integers(0, n, size=(200, n))
    for rm, cs in per_rm.items():
        reps = seed_pair_bootstrap(np.stack(cs).astype(float), 200, old, pair_idx)
        assert t["accuracy"][rm]["h"]["ci95"] == pytest.approx(np.quantile(reps, [0.025, 0.975]).tolist())
        assert {"mean", "sd", "ci95", "length_matched", "length_controlled"} <= set(t["accuracy"][rm]["h"])
    ties = int((len_c == len_r).sum())
    assert t["accuracy"]["mixed"]["h"]["length_controlled"]["n_ties"] == ties
    assert {"length_controlled", "length_prior", "ci95", "p_value"} <= set(t["interference"]["h"])


def test_one_judge_alone_by_hand():
    from rmtension.stats.length import length_controlled

    # one seed, chosen longer on 40 pairs (right on 30) and shorter on 40 (right on 10), 2 ties:
    # (30/40 + 10/40) / 2 = 0.5, while the raw accuracy is (30 + 10 + 1) / 82
    len_c = np.array([9] * 40 + [1] * 40 + [5, 5])
    len_r = np.full(82, 5)
    c = np.array([1.0] * 30 + [0.0] * 10 + [1.0] * 10 + [0.0] * 30 + [1.0, 0.0])
    lc = length_controlled(c, len_c, len_r, 400, np.random.default_rng(0))
    assert lc.estimate == pytest.approx(0.5) and lc.n_ties == 2
    assert lc.per_stratum == {"chosen_longer": 0.75, "chosen_shorter": 0.25}
    assert lc.ci95[0] < 0.5 < lc.ci95[1]


def test_pcgrad_and_calibration_get_length_controlled_entries():
    # mixed_pcgrad prefers the longer reply, mixed the shorter: raw difference 0.6 - 0.4 = +0.2 on 120 longer
    # and 80 shorter pairs, all of it length: the controlled difference is 0 in every replicate
    longer = np.array([1] * 120 + [0] * 80, dtype=bool)
    len_c, len_r = np.where(longer, 50, 10), np.full(200, 20)
    prefers_longer, prefers_shorter = longer.astype(int), (~longer).astype(int)
    scores = {
        "helpful": {"helpful": _frames([prefers_longer] * 2)},
        "harmless": {"helpful": _frames([prefers_shorter] * 2)},
        "mixed": {"helpful": _frames([prefers_shorter] * 2)},
        "mixed_pcgrad": {"helpful": _frames([prefers_longer] * 2)},
    }
    t = tension_table(scores, EvalConfig(bootstrap=200), seed=1, info={"helpful": _info(len_c, len_r)})
    pc = t["pcgrad"]["helpful"]
    assert pc["estimate"] == pytest.approx(0.2) and pc["p_value"] < 0.05
    assert pc["length_controlled"]["estimate"] == pytest.approx(0.0)
    assert pc["length_controlled"]["ci95"] == pytest.approx([0.0, 0.0])
    # on the "helpful" test set the best single RM is the helpful RM, fixed, and its controlled gap has seed_t
    inter = t["interference"]["helpful"]
    assert inter["best_single"] == "helpful" and "seed_t" in inter["length_controlled"]
    cal = t["calibration"]["mixed"]["helpful"]["length_controlled"]
    assert cal["estimable"] and set(cal["per_stratum"]) == {"chosen_longer", "chosen_shorter"}
