"""configs/default.yaml fixes every claim's margin before the run, and each equals its documented derivation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from rmtension.config import MIN_EFFECT
from rmtension.neurons.config import AblationConfig
from rmtension.stats.verdicts import POST_HOC_MARGINS, min_detectable_effect, post_hoc_margin

DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def ceil_to(step: float, x: float) -> float:
    """The smallest multiple of `step` at or above x."""
    return round(math.ceil(x / step - 1e-9) * step, 10)


def detectable(half_width: float) -> float:
    """What a 95% CI of this half-width detects with 80% power, by hand: (1.96 + 0.8416) / 1.96 x h."""
    return (1.959964 + 0.841621) / 1.959964 * half_width


@pytest.fixture(scope="module")
def margins() -> dict[str, float]:
    return yaml.safe_load(DEFAULT.read_text())["claims"]["min_effect"]


def test_every_margin_is_in_the_config_and_is_the_default(margins):
    assert margins == MIN_EFFECT


def test_margins_equal_their_derivations(margins):
    assert detectable(0.045) == pytest.approx(min_detectable_effect([-0.045, 0.045]), abs=1e-6)
    assert margins["mixed_worse"] == ceil_to(0.01, detectable(0.045)) == 0.07
    for same in (
        "negative_transfer",
        "pcgrad_reduces_interference",
        "combined_keeps_both",
        "tension_is_length_prior",
    ):
        assert margins[same] == margins["mixed_worse"], same
    assert margins["avoidant_vs_misuse"] == ceil_to(0.05, detectable(0.17))  # post hoc, labelled so
    assert margins["neurons_identified"] == margins["cross_ablation"] == ceil_to(0.05, max(0.25, 0.23))
    assert margins["shared_outsized"] == ceil_to(0.05, 0.17)
    assert margins["double_dissociation"] == ceil_to(0.05, 0.06)

    # neuron_sets_differ: two sets of k neurons sharing o have Jaccard o / (2k - o); 0.6 means o = 0.75k, and
    # 8% of k more moved out of the overlap gives 0.67 / 1.33: a drop of about 0.1
    def jaccard(shared: float) -> float:
        return shared / (2 - shared)

    assert jaccard(0.75) == pytest.approx(0.6)
    assert round(jaccard(0.75) - jaccard(0.67), 1) == margins["neuron_sets_differ"]
    # sqrt_kl: over best-of-16's sqrt(KL) range 0..1.35 a slope at the margin gains under 0.14 SD
    assert margins["sqrt_kl"] * 1.35 < 0.14
    assert (margins["tradeoff"], margins["train_test_gap"], margins["conflict_tracks_shared_neurons"]) == (
        0.05,
        0.1,
        0.30,
    )


def test_post_hoc_margins_are_labelled_in_the_config_and_the_findings(tmp_path):
    lines = DEFAULT.read_text().splitlines()
    for claim in POST_HOC_MARGINS:
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{claim}:"))
        comment = [line for line in lines[max(0, at - 3) : at] if line.strip().startswith("#")]
        assert any("POST HOC" in line for line in comment), claim
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert "after the default run" in post_hoc_margin(tmp_path, "avoidant_vs_misuse")
    assert post_hoc_margin(tmp_path, "mixed_worse") == ""
    # a margin the user set in the config is theirs, not the post-hoc default
    (tmp_path / "config.yaml").write_text("name: x\nclaims: {min_effect: {avoidant_vs_misuse: 0.2}}\n")
    assert post_hoc_margin(tmp_path, "avoidant_vs_misuse") == ""


NEURONS = DEFAULT.parent / "neurons.yaml"
PAPER_RELATIVE_DROP = {10: 11.5, 20: 16.9, 30: 19.9}
"""Tanwar & Atanasova (2026): relative accuracy drop (%) from ablating the top 10/20/30% of neurons."""


def test_neurons_config_margins_are_half_the_papers_effects():
    cfg = yaml.safe_load(NEURONS.read_text())
    a = cfg["ablation"]
    # half the paper's effect at each p, rounded up to half a percentage point
    assert a["relative_margins"] == {
        p: ceil_to(0.005, pct / 100 / 2) for p, pct in PAPER_RELATIVE_DROP.items()
    }
    assert a["relative_margins"] == {10: 0.06, 20: 0.085, 30: 0.1}
    # the design the issue fixes: the paper's top-p in zero mode, helpful and harmless RMs of three seeds
    # with four trained blocks, at least 300 test pairs per objective, 5 + 5 matched draws
    assert a["claim_ps"] == sorted(PAPER_RELATIVE_DROP) == cfg["neurons"]["ps"] and a["claim_mode"] == "zero"
    assert a["rms"] == cfg["neurons"]["rms"] == ["helpful", "harmless"]
    assert (
        cfg["train"]["trainable"] == "top:4"
        and len(cfg["train"]["seeds"]) == cfg["neurons"]["max_seeds"] == 3
    )
    assert a["max_test_pairs"] >= 300 and a["random_draws"] == 5 and a["controls"] == ["layer", "magnitude"]
    assert a["positive_control"] == "attribution" and "attribution" in a["scorers"]


def test_a_claim_p_without_its_relative_margin_is_refused():
    with pytest.raises(ValidationError, match=r"no margin for claim p \[20.0\]"):
        AblationConfig.model_validate({"claim_ps": [10, 20], "relative_margins": {10: 0.06}})
    ok = AblationConfig.model_validate({"claim_ps": [10, 20], "relative_margins": {10: 0.06, 20: 0.085}})
    assert ok.relative_margins == {10.0: 0.06, 20.0: 0.085}


def test_mixed_neurons_config_is_the_neurons_design_on_the_mixed_rm():
    """configs/neurons-mixed.yaml: the same margins, data, training and draws as configs/neurons.yaml;
    only the RM ablated (mixed, every set on both objectives) and what follows from it differ."""
    base = yaml.safe_load(NEURONS.read_text())
    mixed = yaml.safe_load((DEFAULT.parent / "neurons-mixed.yaml").read_text())
    a, b = mixed["ablation"], base["ablation"]
    assert a["relative_margins"] == b["relative_margins"]
    assert (
        mixed["data"] == base["data"] and mixed["train"] == base["train"] and mixed["model"] == base["model"]
    )
    for key in ("claim_ps", "claim_mode", "random_draws", "controls", "positive_control", "max_test_pairs"):
        assert a[key] == b[key], key
    assert a["rms"] == mixed["neurons"]["rms"] == ["mixed"] and a["own_objective"] is False
    assert a["influence_matched"] is True
    assert set(a["sets"]) == {"helpful_top", "harmless_top", "shared", "helpful_only", "harmless_only"}
