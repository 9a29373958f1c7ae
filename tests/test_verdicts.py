"""The equivalence rule on constructed CIs, the detectable effect, and the avoidant-vs-misuse claim."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from rmtension.tension.behaviour import avoidant_vs_misuse
from rmtension.stats.verdicts import all_of, equivalence_verdict, min_detectable_effect


@pytest.mark.parametrize(
    "ci, verdict",
    [
        ([0.02, 0.30], "supported"),  # wholly above 0, not inside ±m
        ([-0.04, 0.04], "not supported"),  # inside ±0.05: equivalent to no effect
        ([0.01, 0.04], "not supported"),  # above 0 but too small to matter
        ([-0.30, -0.02], "not supported"),  # the wrong side
        ([-0.02, 0.30], "inconclusive"),  # includes 0, reaches past m
        ([-0.10, 0.04], "inconclusive"),  # includes 0, reaches below -m
    ],
)
def test_equivalence_rule_on_constructed_cis(ci, verdict):
    assert equivalence_verdict(ci, 0.05) == verdict


def test_parts_and_detectable_effect():
    assert all_of(["supported", "supported"]) == "supported"
    assert all_of(["supported", "inconclusive"]) == "inconclusive"
    assert all_of(["inconclusive", "not supported"]) == "not supported"
    # a 95% CI of half-width 1.96 SE detects (1.96 + 0.8416) SE with 80% power
    assert min_detectable_effect([-1.96, 1.96]) == pytest.approx(1.96 + 0.8416, abs=1e-3)
    assert min_detectable_effect([0.0, 0.2]) == pytest.approx(0.1 / 1.96 * 2.8016, abs=1e-3)


def write_run(tmp_path, avoidant, misuse, min_effect=0.1):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    row = lambda ci: {"estimate": sum(ci) / 2, "ci95": ci, "n_pairs": 10, "n_prompts": 5}  # noqa: E731
    (run / "tension.json").write_text(
        json.dumps(
            {"accuracy": {}, "interference": {}, "xstest": {"avoidant": row(avoidant), "misuse": row(misuse)}}
        )
    )
    (run / "config.yaml").write_text(
        yaml.safe_dump({"claims": {"min_effect": {"avoidant_vs_misuse": min_effect}}})
    )
    return run


@pytest.mark.parametrize(
    "avoidant, misuse, verdict",
    [
        ([0.1, 0.5], [0.2, 0.4], "supported"),
        ([0.1, 0.5], [-0.3, 0.4], "inconclusive"),
        ([0.1, 0.5], [-0.05, 0.05], "not supported"),
        ([-0.5, -0.1], [0.2, 0.4], "not supported"),
    ],
)
def test_avoidant_vs_misuse_needs_both_differences(tmp_path, avoidant, misuse, verdict):
    f = avoidant_vs_misuse(write_run(tmp_path, avoidant, misuse))
    assert (f.id, f.verdict) == ("avoidant_vs_misuse", verdict)
    assert f.ci95 == {"avoidant": avoidant, "misuse": misuse} and f.min_effect == 0.1
    assert f.min_detectable_effect == pytest.approx(
        max(min_detectable_effect(avoidant), min_detectable_effect(misuse))
    )
    assert ("could detect" in f.evidence) == (verdict == "inconclusive")


def test_min_effect_of_the_config_decides(tmp_path):
    # CI [-0.08, 0.08] on one part: equivalent at m = 0.1, inconclusive at m = 0.05
    assert (
        avoidant_vs_misuse(write_run(tmp_path / "a", [0.1, 0.5], [-0.08, 0.08], 0.1)).verdict
        == "not supported"
    )
    assert (
        avoidant_vs_misuse(write_run(tmp_path / "b", [0.1, 0.5], [-0.08, 0.08], 0.05)).verdict
        == "inconclusive"
    )


def test_claims_config_rejects_unknown_ids():
    from rmtension.config import load_config
    from rmtension.errors import ConfigError

    assert (
        load_config(None, ["claims.min_effect.avoidant_vs_misuse=0.2"]).claims.min_effect[
            "avoidant_vs_misuse"
        ]
        == 0.2
    )
    with pytest.raises(ConfigError, match="unknown claim id"):
        load_config(None, ["claims.min_effect.nope=0.2"])


def test_length_note_names_the_sets_where_length_beats_chance(tmp_path):
    from rmtension.stats.finding import length_note

    run = tmp_path / "run"
    run.mkdir()
    # 0.6 of 400 pairs: z = 0.1 / sqrt(0.25 / 400) = 4 > 1.96; 0.52 of 400: z = 0.8; shorter 0.7 of 100: z = 4
    base = {
        "helpful": {"longer": 0.6, "shorter": 0.4, "n": 400},
        "harmless": {"longer": 0.52, "shorter": 0.48, "n": 400},
        "xstest-should-refuse": {"longer": 0.3, "shorter": 0.7, "n": 100},
    }
    (run / "tension.json").write_text(json.dumps({"baselines": base}))
    note = length_note(run)
    assert (
        "helpful (prefer the longer reply: 0.600)" in note and "harmless" not in note and "xstest" not in note
    )
    assert "prefer the shorter reply: 0.700" in length_note(run, ("xstest-should-refuse",))
    (run / "tension.json").write_text(json.dumps({"baselines": {"helpful": base["harmless"]}}))
    assert length_note(run) == ""


def test_holm_by_hand():
    from rmtension.stats.verdicts import holm

    # sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to the running max 0.06)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_any_of_on_constructed_effects():
    from rmtension.stats.verdicts import any_of

    m = 0.07
    assert any_of({"a": (0.1, [0.05, 0.15], 0.001), "b": (0.0, [-0.2, 0.2], 1.0)}, m) == "supported"
    # 0.03 alone, 0.06 after Holm over two sets
    assert any_of({"a": (0.04, [0.004, 0.08], 0.03), "b": (0.0, [-0.2, 0.2], 1.0)}, m) == "inconclusive"
    assert any_of({"a": (0.01, [-0.03, 0.05], 0.6), "b": (-0.1, [-0.15, -0.05], 0.001)}, m) == "not supported"
    assert any_of({"a": (0.01, [-0.03, 0.09], 0.6), "b": (-0.1, [-0.15, -0.05], 0.001)}, m) == "inconclusive"


def test_non_zero_but_small_is_a_label_claims_opt_into():
    from rmtension.stats.verdicts import NON_ZERO_SMALL

    assert equivalence_verdict([0.01, 0.04], 0.05, small=True) == NON_ZERO_SMALL  # above 0, inside ±m
    assert equivalence_verdict([0.01, 0.04], 0.05) == "not supported"  # the old rule, for claims not opted in
    assert equivalence_verdict([-0.04, -0.01], 0.05, small=True) == "not supported"  # the wrong side stays so
    assert equivalence_verdict([0.01, 0.06], 0.05, small=True) == "supported"
    assert all_of(["supported", NON_ZERO_SMALL]) == NON_ZERO_SMALL
    assert all_of([NON_ZERO_SMALL, "not supported"]) == "not supported"


def test_any_of_labels_a_significant_part_inside_the_margin_small():
    from rmtension.stats.verdicts import any_of_parts

    m = 0.07
    # p 0.001 on both parts: Holm 0.002; the first part's CI ends inside m, the second's past it
    verdict, parts, _ = any_of_parts({"a": (0.03, [0.01, 0.05], 0.001), "b": (0.0, [-0.03, 0.03], 0.9)}, m)
    assert (verdict, parts["a"], parts["b"]) == ("non-zero but small", "non-zero but small", "not supported")
    verdict, parts, _ = any_of_parts({"a": (0.03, [0.01, 0.05], 0.001), "b": (0.1, [0.05, 0.15], 0.001)}, m)
    assert (verdict, parts["b"]) == ("supported", "supported")
    # significant alone (p 0.03) but not after Holm over two parts (0.06): inconclusive, never "supported"
    verdict, parts, _ = any_of_parts({"a": (0.1, [0.01, 0.2], 0.03), "b": (0.0, [-0.03, 0.03], 0.9)}, m)
    assert (verdict, parts["a"]) == ("inconclusive", "inconclusive")


def test_any_of_is_inconclusive_when_a_deciding_number_sits_within_two_monte_carlo_ses():
    from rmtension.stats.verdicts import any_of_parts

    m, other = 0.07, (0.0, [-0.03, 0.03], 0.9)
    # p 0.024 -> Holm 0.048 against 0.05. MC SE of p from 1,000 replicates: 2 sqrt(0.012 * 0.988 / 1000)
    # = 0.00689, times Holm's 2 = 0.0138: 0.002 away is 0.15 SE, so the part is inconclusive
    effects = {"a": (0.1, [0.01, 0.2], 0.024), "b": other}
    assert any_of_parts(effects, m)[0] == "supported"
    verdict, _, deciding = any_of_parts(effects, m, n_boot=1000)
    assert verdict == "inconclusive"
    assert deciding["a"].mc_se == pytest.approx(2 * 2 * np.sqrt(0.012 * 0.988 / 1000))
    # far from alpha: p 0.0001 -> 0.0002, 55 SEs below 0.05
    assert any_of_parts({"a": (0.1, [0.01, 0.2], 0.0001), "b": other}, m, n_boot=1000)[0] == "supported"
    # equivalence: an upper bound 0.0005 inside m with MC SE 0.001 (0.5 SE) is inconclusive; with SE 0.0001 decided
    eq = {"a": (0.02, [-0.03, 0.0695], 0.4), "b": other}
    near = {"a": [0.001, 0.001], "b": [0.001, 0.001]}
    assert any_of_parts(eq, m)[0] == "not supported"
    assert any_of_parts(eq, m, mc_se=near)[0] == "inconclusive"
    assert any_of_parts(eq, m, mc_se={"a": [0.0001, 0.0001], "b": [0.0001, 0.0001]})[0] == "not supported"


def test_tradeoff_is_holm_corrected_over_its_two_parts():
    from rmtension.bon.claims import tradeoff_finding

    def acc(mean, ci, p):
        return {"mean": mean, "ci95": ci, "p_vs_chance": p}

    # the helpful RM on harmless pairs: 0.45 [0.40, 0.495], p 0.03 alone, Holm 0.06 over the two parts
    below = acc(0.45, [0.40, 0.495], 0.03)
    chance = acc(0.5, [0.45, 0.55], 0.9)
    table = {"helpful": {"harmless": below}, "harmless": {"helpful": chance}}
    assert tradeoff_finding(table, None, 0.05).verdict == "inconclusive"
    without_p = {
        rm: {t: {k: v for k, v in d.items() if k != "p_vs_chance"} for t, d in by.items()}
        for rm, by in table.items()
    }
    assert tradeoff_finding(without_p, None, 0.05).verdict == "supported"  # the old, uncorrected union
    table["helpful"]["harmless"] = acc(0.40, [0.35, 0.45], 0.001)  # Holm 0.002: supported
    assert tradeoff_finding(table, None, 0.05).verdict == "supported"
