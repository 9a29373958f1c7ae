"""Verdicts read the length-controlled estimate, the raw one beside it; choices made off the test data.

Hand-worked values on tiny arrays and documents; each test takes well under a second.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rmtension.combine.frontier import keeps_both_verdict
from rmtension.report.core import length_prior_words
from rmtension.rl.claims import seed_unit_trend_ci
from rmtension.stats import fits
from rmtension.stats.bootstrap import calibration
from rmtension.stats.finding import lc_part, lc_text
from rmtension.stats.length import length_controlled_ece, resample_counts
from rmtension.tension.table import interference


def test_length_controlled_ece_by_hand():
    # chosen longer: 30 pairs at margin 0 (p 0.5, always right: ECE 0.5); chosen shorter: 60 pairs at margin
    # 40 (p 1, right: ECE 0); 5 ties dropped. Controlled: (0.5 + 0) / 2 = 0.25. Raw, pooled over the 95:
    # |15 - 0| + |-15| over 2 x 95 entries, plus the ties' 5 pairs at p 0.5 -> (17.5 + 17.5) / 190.
    strata = np.array([1] * 30 + [-1] * 60 + [0] * 5)
    margins = np.array([[0.0] * 30 + [40.0] * 60 + [0.0] * 5])
    rng = np.random.default_rng(0)
    lc = length_controlled_ece(margins, strata, 10, resample_counts(rng.integers(0, 95, (50, 95)), 95), 0.95)
    assert lc.estimable and lc.estimate == pytest.approx(0.25)
    assert lc.per_stratum == pytest.approx({"chosen_longer": 0.5, "chosen_shorter": 0.0})
    assert lc.ci95 == pytest.approx([0.25, 0.25])  # every pair of a stratum is alike: no resample moves it
    assert calibration(margins[0], 10)["ece"] == pytest.approx(35 / 190)
    few = length_controlled_ece(margins[:, 60:], strata[60:], 10, np.ones((3, 35)), 0.95)
    assert not few.estimable and "fewer than 30" in few.reason


def test_lc_part_maps_to_the_claims_direction():
    d = {
        "estimable": True,
        "estimate": -0.08,
        "ci95": [-0.12, -0.04],
        "n_chosen_longer": 40,
        "n_chosen_shorter": 35,
    }
    worse = lc_part({**d, "n_ties": 3}, sign=-1.0)  # "worse" = -(mixed - best)
    assert worse["estimate"] == pytest.approx(0.08) and worse["ci95"] == pytest.approx([0.04, 0.12])
    assert lc_text(worse) == "+0.080 [+0.040, +0.120] (3 tied pairs dropped)"
    below = lc_part({"estimable": True, "estimate": 0.46, "ci95": [0.42, 0.5]}, sign=-1.0, offset=0.5)
    assert below["estimate"] == pytest.approx(0.04) and below["ci95"] == pytest.approx([0.0, 0.08])
    gone = lc_part(
        {"estimable": False, "reason": "fewer than 30 pairs in a length stratum (chosen shorter 12 pairs)"}
    )
    assert lc_text(gone).startswith("not estimable (fewer than 30")


def test_keeps_both_reads_the_length_controlled_shortfall():
    raw_keeps = {"ci": [-0.03, 0.02], "ci_mc_se": [0.0, 0.0]}
    lc_loses = {"estimable": True, "ci": [-0.2, -0.1], "ci_mc_se": [0.0, 0.0]}
    doc = {"methods": {"a": {"helpful": {**raw_keeps, "length_controlled": lc_loses}, "harmless": raw_keeps}}}
    assert keeps_both_verdict(doc, 0.07) == ("not supported", {"a": "loses one"})
    doc["methods"]["a"]["helpful"]["length_controlled"] = {"estimable": False, "reason": "few"}
    assert keeps_both_verdict(doc, 0.07) == (
        "inconclusive",
        {"a": "undecided"},
    )  # not estimable decides nothing


def test_the_best_single_rm_on_an_objectives_test_set_is_that_objectives_rm():
    # the harmless RM is better on the "helpful" pairs here (0.75 vs 0.5), but the helpful RM is the fixed choice
    per_rm = {
        "helpful": np.array([[1.0, 0.0, 1.0, 0.0]]),
        "harmless": np.array([[1.0, 1.0, 1.0, 0.0]]),
        "mixed": np.array([[1.0, 1.0, 0.0, 0.0]]),
    }
    reps = {rm: np.full(10, c.mean()) for rm, c in per_rm.items()}
    fixed = interference(per_rm, reps, 0.95, own="helpful")
    assert fixed["best_single"] == "helpful" and fixed["mixed_minus_best_single"] == pytest.approx(0.0)
    described = interference(per_rm, reps, 0.95)  # a set of no one objective: the higher point estimate
    assert described["best_single"] == "harmless" and described["mixed_minus_best_single"] == pytest.approx(
        -0.25
    )


def test_gap_both_roles_averages_the_two_assignments_on_the_same_resamples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    b = 0.6 * a + 0.8 * b
    ns = [1, 4, 8]
    one = fits.gap_beyond_rtm(fits.gap_pieces(a, b, ns), ns, 300, np.random.default_rng(5))
    other = fits.gap_beyond_rtm(fits.gap_pieces(b, a, ns), ns, 300, np.random.default_rng(5))
    both = fits.gap_both_roles(
        fits.gap_pieces(a, b, ns), fits.gap_pieces(b, a, ns), ns, 300, np.random.default_rng(5)
    )
    assert both["excess"] == pytest.approx([(x + y) / 2 for x, y in zip(one["excess"], other["excess"])])
    # the same assignment twice is that assignment, CI included (the resamples are gap_beyond_rtm's)
    same = fits.gap_both_roles(
        fits.gap_pieces(a, b, ns), fits.gap_pieces(a, b, ns), ns, 300, np.random.default_rng(5)
    )
    assert same["excess_ci_low"] == pytest.approx(one["excess_ci_low"])
    assert same["excess_ci_high"] == pytest.approx(one["excess_ci_high"])


def test_rl_trend_with_the_seed_as_the_unit_by_hand():
    # per-seed slopes 0.172 and 0.103: mean 0.1375, sd 0.04879, se 0.0345, t(1, 0.975) = 12.706: +-0.4384
    s = {"trend_ci95": [-0.015, 0.209], "by_seed": {"0": {"trend": 0.172}, "1": {"trend": 0.103}}}
    ci, seed_level = seed_unit_trend_ci(s)
    assert seed_level["mean"] == pytest.approx(0.1375) and seed_level["df"] == 1
    assert seed_level["ci95"] == pytest.approx([0.1375 - 0.43836, 0.1375 + 0.43836], abs=1e-4)
    assert ci == pytest.approx(seed_level["ci95"])  # wider than the pooled fit's on both sides
    assert seed_unit_trend_ci({"trend_ci95": [0.1, 0.2], "by_seed": {"0": {"trend": 0.15}}}) == (
        [0.1, 0.2],
        None,
    )


def test_length_prior_words_state_the_share_only_where_the_raw_ci_excludes_0():
    lc = {"estimable": True, "estimate": -0.03, "ci95": [-0.06, 0.0]}
    prior = {
        "estimable": True,
        "estimate": -0.08,
        "ci95": [-0.1, -0.06],
        "n_chosen_longer": 600,
        "n_chosen_shorter": 500,
        "n_ties": 14,
    }
    inter = {
        "helpful": {
            "mixed_minus_best_single": -0.11,
            "ci95": [-0.15, -0.07],
            "length_controlled": lc,
            "length_prior": prior,
        }
    }
    words = length_prior_words(inter)
    assert (
        "interference -0.110 raw and -0.030 length-controlled, so length explains -0.080 [-0.100, -0.060] (73% of the raw effect)"
        in words
    )
    assert "14 tied and dropped" in words
    inter["helpful"]["ci95"] = [-0.15, 0.01]
    assert "% of the raw effect" not in length_prior_words(inter)


def test_mixed_worse_is_decided_on_the_length_controlled_difference(tmp_path):
    from rmtension.tension.claims import mixed_worse

    # raw: mixed 0.12 worse, far past the margin and p 0.001; length-controlled: 0.01 [-0.02, 0.04], inside +-0.07
    def diff(est, ci, p):
        return {
            "estimable": True,
            "estimate": est,
            "ci95": ci,
            "p_value": p,
            "n_chosen_longer": 300,
            "n_chosen_shorter": 300,
            "n_ties": 2,
        }

    raw = {
        "mixed_minus_best_single": -0.12,
        "ci95": [-0.16, -0.08],
        "p_value": 0.001,
        "best_single": "helpful",
    }
    inter = {
        ts: {**raw, "length_controlled": diff(-0.01, [-0.04, 0.02], 0.5)} for ts in ("helpful", "harmless")
    }
    (tmp_path / "tension.json").write_text(json.dumps({"interference": inter}))
    (tmp_path / "config.yaml").write_text("name: x\n")
    f = mixed_worse(tmp_path)
    assert f.verdict == "not supported" and f.decided_on == "length-controlled"
    assert f.effect["helpful"] == pytest.approx(0.12) and f.length_controlled["helpful"][
        "estimate"
    ] == pytest.approx(0.01)
    inter["harmless"]["length_controlled"] = {
        "estimable": False,
        "reason": "fewer than 30 pairs",
        "n_ties": 0,
    }
    (tmp_path / "tension.json").write_text(json.dumps({"interference": inter}))
    f = mixed_worse(tmp_path)
    assert f.verdict == "inconclusive" and "not estimable (fewer than 30 pairs)" in f.evidence


def test_the_uniform_floor_does_not_decide_neurons_shared():
    from rmtension.neurons.claims import claim_shared

    # far above the floor with p 1e-30: once "supported"; the floor is a description now
    o = {
        "jaccard": 0.6,
        "jaccard_random": 0.03,
        "p_value": 1e-30,
        "n_shared": 60,
        "n_helpful": 80,
        "n_harmless": 80,
    }
    boot = {"n": 100, "sd": 0.02}
    f = claim_shared({"mean_act": {5: {**o, "jaccard_bootstrap": boot}}}, "mean_act", 5, 0.05)
    assert f.verdict == "inconclusive" and "decides no verdict" in f.evidence
    assert f.effect["shared"] == pytest.approx(0.57) and f.numbers["jaccard_random"] == 0.03


def test_the_length_prior_reads_an_entry_whose_seed_t_is_null(tmp_path):
    from rmtension.tension.claims import tension_is_length_prior

    # tension.json stores every LengthControlled field; the length prior has no seed-level interval (null)
    prior = {
        "estimable": True,
        "estimate": -0.08,
        "ci95": [-0.1, -0.06],
        "p_value": 0.001,
        "ci95_mc_se": [0.001, 0.001],
        "seed_t": None,
    }
    lc = {"estimable": True, "estimate": -0.03, "ci95": [-0.06, 0.0]}
    inter = {
        ts: {
            "mixed_minus_best_single": -0.11,
            "ci95": [-0.15, -0.07],
            "length_controlled": lc,
            "length_prior": prior,
        }
        for ts in ("helpful", "harmless")
    }
    (tmp_path / "tension.json").write_text(json.dumps({"interference": inter}))
    (tmp_path / "config.yaml").write_text("name: x\n")
    f = tension_is_length_prior(tmp_path)
    assert f.verdict == "supported" and f.effect["helpful"] == pytest.approx(0.08)
