"""Planted neurons: a positive control for `neurons_identified`. It must come out "supported", with CIs
that cover the planted value, and the unplanted twin must not.

configs/planted-neurons.yaml appends a marker to the chosen reply of every "harmless" pair (two random
halves of helpful-base as the objectives, as in the placebo) and lets the harmless RM train only MLP
neurons 0..S-1 of its one trained block, its score head frozen: what that RM learns, S carries, by
construction. The twin is the same config without the plant (`data.plant_marker={}`,
`train.plant_neurons={}`). Real data and the packaged MiniLM (marked `real`).

The planted value is computed here, not by the ablation stage: the relative accuracy drop
(acc_clean - acc_without_S) / acc_clean of each seed's harmless RM when exactly S is zeroed, averaged
over seeds. Zeroing S leaves, by construction, the base backbone with S zeroed under each seed's own
frozen head (test_only_the_planted_neurons_moved checks the construction), so one forward of the base
backbone gives every seed's ablated scores. The claim compares the top attribution neurons with
random ones of the same layer; random sets hold about 10% of S, so the claim's effect sits at or just
under the planted value, and its CI must cover it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from findings_schema import check_findings
from rmtension.cli import main
from rmtension.config import load_config
from rmtension.data.objectives import build_dataset
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.model.encode import collate, encode_pairs

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "planted-neurons.yaml"
BLOCK = "bert.encoder.layer.5"  # MiniLM's top block, the one `top:1` trains


def _study(out: Path, hh_root: Path, *overrides: str) -> Path:
    argv = ["study", "--config", str(CONFIG), "--out", str(out), f"data.path={hh_root}", *overrides]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory, hh_root) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("planted-neurons")
    twin = ("data.plant_marker={}", "train.plant_neurons={}")
    return _study(base / "planted", hh_root), _study(base / "twin", hh_root, *twin)


def _config(run: Path):
    return load_config(run / "config.yaml")


@pytest.mark.real
def test_only_the_planted_neurons_moved(planted_runs):
    planted, _ = planted_runs
    cfg = _config(planted)
    n = cfg.train.plant_neurons["harmless"]
    base = load_file(str(Path(resolve_backbone(cfg.model.backbone)) / "model.safetensors"))
    base = {k.removeprefix("bert."): v for k, v in base.items()}
    for seed in cfg.train.seeds:
        rm = load_file(str(planted / "rm" / "harmless" / f"seed{seed}" / "model.safetensors"))
        up, down = rm[f"{BLOCK}.intermediate.dense.weight"], rm[f"{BLOCK}.output.dense.weight"]
        b_up = base[f"{BLOCK.removeprefix('bert.')}.intermediate.dense.weight"]
        b_down = base[f"{BLOCK.removeprefix('bert.')}.output.dense.weight"]
        assert torch.equal(up[n:], b_up[n:]) and torch.equal(down[:, n:], b_down[:, n:])
        assert not torch.equal(up[:n], b_up[:n]) and not torch.equal(down[:, :n], b_down[:, :n])
        others = [k for k in rm if k.startswith("bert.") and k.removeprefix("bert.") in base]
        for (
            name
        ) in others:  # every other weight of the backbone is the base's (the pooler, new, is the head's)
            if "intermediate.dense" not in name and "output.dense.weight" not in name:
                assert torch.equal(rm[name], base[name.removeprefix("bert.")]), name
        assert len(others) > 90
    summary = json.loads((planted / "data" / "summary.json").read_text())
    assert summary["planted_marker"]["harmless"]["test"] == 150  # every harmless test pair carries it


def _scores(model, head_models, enc, pad_id: int, zero: int) -> list[np.ndarray]:
    """[N] margins of each head model over one forward of `model` with its top block's neurons 0..zero-1 zeroed."""
    down = model.bert.encoder.layer[5].output.dense
    hook = down.register_forward_pre_hook(
        lambda _m, args: (torch.cat([torch.zeros_like(args[0][..., :zero]), args[0][..., zero:]], -1),)
    )
    try:
        last = {}
        for side in ("chosen", "rejected"):
            rows = []
            for i in range(0, len(enc), 32):
                batch = collate(getattr(enc, side)[i : i + 32], pad_id)
                with torch.no_grad():
                    rows.append(model.bert(**batch).last_hidden_state)  # [B, T, H]
            last[side] = rows
    finally:
        hook.remove()
    out = []
    for m in head_models:
        r = {
            side: torch.cat([m.classifier(m.bert.pooler(h)).squeeze(-1) for h in last[side]]) for side in last
        }
        out.append((r["chosen"] - r["rejected"]).numpy())
    return out


def planted_value(run: Path, hh_root: Path) -> tuple[float, list[float]]:
    """Mean over seeds of (acc_clean - acc with exactly S zeroed) / acc_clean on the harmless test pairs,
    and the per-seed values. acc_clean per seed is the eval stage's (tension.json); this path's own clean
    accuracy of seed 0 must equal it (the same pairs, the same scores)."""
    cfg = _config(run)
    n = cfg.train.plant_neurons["harmless"]
    pairs = build_dataset(cfg.data, str(hh_root)).test_sets["harmless"]
    tok = load_tokenizer(resolve_backbone(cfg.model.backbone), cfg.model.max_length)
    enc = encode_pairs(pairs, tok, cfg.model.max_length)
    rms = [load_reward_model(str(run / "rm" / "harmless" / f"seed{s}"), tok).eval() for s in cfg.train.seeds]
    clean = json.loads((run / "tension.json").read_text())["accuracy"]["harmless"]["harmless"]["per_seed"]
    own = (_scores(rms[0], rms[:1], enc, tok.pad_token_id, 0)[0] > 0).mean()
    assert own == pytest.approx(clean[0], abs=1.5 / len(pairs)), (own, clean[0])
    ablated = _scores(rms[0], rms, enc, tok.pad_token_id, n)
    drops = [(a - (m > 0).mean()) / a for a, m in zip(clean, ablated)]
    return float(np.mean(drops)), drops


@pytest.mark.real
def test_planted_neurons_are_identified_and_covered(planted_runs, hh_root):
    planted, _ = planted_runs
    found = {f["id"]: f for f in check_findings(planted)}["neurons_identified"]
    value, per_seed = planted_value(planted, hh_root)
    assert value > found["min_effect"], (value, per_seed)  # the plant reaches past the margin
    assert found["verdict"] == "supported", found["evidence"]
    for part, (lo, hi) in found["ci95"].items():
        assert lo <= value <= hi, (part, value, per_seed, [lo, hi])


@pytest.mark.real
def test_unplanted_twin_is_not_supported(planted_runs):
    _, twin = planted_runs
    summary = json.loads((twin / "data" / "summary.json").read_text())
    assert "planted_marker" not in summary
    found = {f["id"]: f for f in check_findings(twin)}["neurons_identified"]
    assert found["verdict"] != "supported", found["evidence"]
