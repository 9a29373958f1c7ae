"""Planted interference: a positive control for the interference claims. `mixed_worse` must be "supported".

configs/planted.yaml is the placebo's data (two random halves of helpful-base, so the interference
without planting is 0 by design) with a cue on a quarter of all pairs (" alpha" after the human-chosen
reply, " omega" after the rejected one: one token each, so no pair changes length stratum) and 90% of
the flipped half's pairs in the mixed RM's training set swapped, so the mixed RM learns the cue
backwards and the planted interference survives length control (flips alone act mostly through length). Real data and the packaged MiniLM (marked `real`: skipped without the data, failed with
RMTENSION_REQUIRE_DATA=1); two studies of the placebo's RM size (the planted one and its unflipped twin).

The planted value is measured, not derived. Symmetric label noise leaves the best ranking unchanged;
what it costs a one-epoch RM is the share of its gradient that cancels, and how that turns into
accuracy depends on the learning curve, not only on the flip share and the single RMs' accuracies
(a first-order guess is in the config's comment). So the test trains the same config without flips on
the same seeds, data order and test pairs, and the planted value on each test set is the unflipped
mixed RM's accuracy minus the flipped one's: the effect of the flips alone. The interference CI must
cover it (its estimand, mixed - best single, equals it when the natural interference is 0, as here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from findings_schema import check_findings
from studykit import module_dir, shipped_study


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory, hh_root) -> Iterator[tuple[Path, Path]]:
    with module_dir(tmp_path_factory, "planted") as base:
        yield (
            shipped_study("planted.yaml", base / "planted", hh_root),
            shipped_study("planted.yaml", base / "unflipped", hh_root, "data.flip_labels={}"),
        )


@pytest.mark.real
def test_the_flips_are_where_the_config_puts_them(planted_runs):
    planted, unflipped = planted_runs
    summary = json.loads((planted / "data" / "summary.json").read_text())
    # 600 mixed pairs, a quarter from half0: 450 from the flipped half, 90% of them is 405
    assert summary["flipped_labels"]["harmless"] == {"share": 0.9, "flipped": 405, "of": 450}
    assert "flipped_labels" not in json.loads((unflipped / "data" / "summary.json").read_text())


@pytest.mark.real
def test_planted_interference_is_supported_and_covered(planted_runs):
    planted, unflipped = planted_runs
    acc = {
        run: json.loads((path / "tension.json").read_text())["accuracy"]["mixed"]
        for run, path in (("planted", planted), ("unflipped", unflipped))
    }
    found = {f["id"]: f for f in check_findings(planted)}["mixed_worse"]
    assert found["verdict"] == "supported", found["evidence"]
    twin = {f["id"]: f for f in check_findings(unflipped)}["mixed_worse"]
    assert twin["verdict"] != "supported", twin["evidence"]  # without the flips nothing is planted
    assert found["decided_on"] == "length-controlled"
    for ts, (lo, hi) in found[
        "ci95"
    ].items():  # "worse" is positive: the unflipped minus the flipped mixed RM
        planted_value = acc["unflipped"][ts]["mean"] - acc["planted"][ts]["mean"]
        assert planted_value > found["min_effect"], (ts, planted_value)  # the control reaches past the margin
        assert lo <= planted_value <= hi, (ts, planted_value, [lo, hi])
        # the verdict's estimate: the same planted value in length-controlled accuracy, inside its CI
        lc = {run: acc[run][ts]["length_controlled"]["estimate"] for run in acc}
        planted_lc = lc["unflipped"] - lc["planted"]
        lo_lc, hi_lc = found["length_controlled"][ts]["ci95"]
        assert planted_lc > found["min_effect"], (ts, planted_lc)
        assert lo_lc <= planted_lc <= hi_lc, (ts, planted_lc, [lo_lc, hi_lc])
