"""The schema of `findings.json`, checked field by field (no schema library: the rules are few)."""

from __future__ import annotations

import json
import math
from pathlib import Path

VERDICTS = {
    "supported",
    "non-zero but small",
    "not supported",
    "inconclusive",
    "not testable here",
    "not run",
}
REQUIRED_IDS = {
    "mixed_worse",
    "negative_transfer",
    "neurons_identified",
    "neurons_shared",
    "shared_outsized",
    "cross_ablation",
    "neuron_sets_differ",
    "double_dissociation",
    "calibrated",
    "sqrt_kl",
    "train_test_gap",
    "tradeoff",
    "helpful_refusal_undervalued",
}
"""The ids the verdicts issue fixes; later features add their own (avoidant_vs_misuse, pcgrad, ...)."""
LENGTH_CONTROLLED_IDS = {
    "mixed_worse",
    "negative_transfer",
    "tradeoff",
    "calibrated",
    "combined_keeps_both",
    "pcgrad_reduces_interference",
}
"""Claims whose verdicts read the length-controlled estimate (the raw one beside it) when they are decided."""


def _is_ci(v) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
        and v[0] <= v[1]
    )


def check_findings(run_dir: Path) -> list[dict]:
    """Assert that `run_dir/findings.json` follows the schema; return its entries."""
    doc = json.loads((run_dir / "findings.json").read_text())
    entries = doc["findings"]
    ids = [f["id"] for f in entries]
    assert len(ids) == len(set(ids)), f"duplicate ids: {ids}"
    assert REQUIRED_IDS <= set(ids), f"missing ids: {sorted(REQUIRED_IDS - set(ids))}"
    for f in entries:
        where = f"finding {f.get('id')!r}"
        for key in ("paper", "claim", "verdict", "test", "null", "evidence", "id"):
            assert isinstance(f.get(key), str), f"{where}: {key} must be a string"
        assert f["verdict"] in VERDICTS, f"{where}: verdict {f['verdict']!r}"
        assert isinstance(f["source_files"], list) and all(isinstance(s, str) for s in f["source_files"])
        if f["verdict"] == "not run":
            continue
        assert f["test"] and f["null"], f"{where}: a decided claim says its test and its null"
        assert f["source_files"], f"{where}: no source files"
        for s in f["source_files"]:
            assert (run_dir / s).exists(), f"{where}: source file {s} is not in the run directory"
        if f["verdict"] == "not testable here":  # the reason is its evidence; nothing was estimated
            assert f["evidence"], f"{where}: says why it is not testable"
            continue
        assert isinstance(f["effect"], dict) and f["effect"], f"{where}: effect must be a non-empty dict"
        assert isinstance(f["ci95"], dict) and set(f["ci95"]) == set(f["effect"]), (
            f"{where}: one CI per effect"
        )
        for part, ci in f["ci95"].items():
            assert _is_ci(ci), f"{where}: ci95[{part}] = {ci}"
        mde = f["min_detectable_effect"]
        assert isinstance(mde, (int, float)) and mde >= 0, f"{where}: min_detectable_effect {mde}"
        if f["verdict"] == "not supported":
            assert isinstance(f["min_effect"], (int, float)), f"{where}: 'not supported' needs a min_effect"
        _check_length_controlled(f, where)
    return entries


def _check_length_controlled(f: dict, where: str) -> None:
    """decided_on names the estimate the verdict read; a length-controlled one is there for every part,
    estimable (an estimate and a CI) or not (and then why)."""
    assert f["decided_on"] in ("raw", "length-controlled"), f"{where}: decided_on {f['decided_on']!r}"
    if f["id"] in LENGTH_CONTROLLED_IDS:
        assert f["decided_on"] == "length-controlled", (
            f"{where}: must be decided on the length-controlled estimate"
        )
    if f["decided_on"] == "raw":
        return
    lc = f["length_controlled"]
    assert isinstance(lc, dict) and set(lc) == set(f["effect"]), (
        f"{where}: one length-controlled entry per part"
    )
    for part, d in lc.items():
        if d["estimable"]:
            assert isinstance(d["estimate"], (int, float)) and math.isfinite(d["estimate"]), (where, part)
            assert _is_ci(d["ci95"]), f"{where}: length_controlled[{part}].ci95 = {d['ci95']}"
        else:
            assert d["estimate"] is None and isinstance(d["reason"], str) and d["reason"], (where, part)
