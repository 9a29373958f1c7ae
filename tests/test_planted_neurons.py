"""Planted neurons: a positive control for `neurons_identified`. It must come out "supported", with CIs
that cover the planted value, and the unplanted twin must not.

configs/planted-neurons.yaml appends a marker to the chosen reply of every "harmless" pair (two random
halves of helpful-base as the objectives, as in the placebo) and lets the harmless RM train only MLP
neurons 0..S-1 of its one trained block, its score head frozen: what that RM learns, S carries, by
construction. The twin is the same config without the plant (`data.plant_marker={}`,
`train.plant_neurons={}`). Real data and the packaged MiniLM (marked `real`).

The planted values are computed here, not by the ablation stage, with this file's own hooks and random
draws: per seed, the relative accuracy drop (acc_random - acc_zeroed) / acc_clean on the harmless test
pairs when (a) exactly S and (b) the claim's own set, the top 10% attribution neurons, are zeroed, each
against layer-matched random sets of the same size. Every RM of the study has the base backbone below its
top block (test_only_the_planted_neurons_moved checks the construction), so one forward of the lower
blocks serves every seed and condition; this path's clean accuracy must equal the eval stage's.

The CI must cover (b), the true value of what the claim estimates; (a), the plant itself, must reach past
the margin, and the claim's set must be mostly S. (a) is not asserted inside the CI: the set holds about
60% of S plus high-attribution base neurons whose removal also moves the frozen head, so (b) sits about
0.15-0.29 above (a) on each seed of a first 5-seed run (150 test pairs); what covered (a) there was seed noise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rmtension.config import load_config
from rmtension.data.objectives import build_dataset
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.model.encode import collate, encode_pairs
from studykit import module_dir, shipped_study

BLOCK = "bert.encoder.layer.5"  # MiniLM's top block, the one `top:1` trains


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory, hh_root) -> Iterator[tuple[Path, Path]]:
    twin = ("data.plant_marker={}", "train.plant_neurons={}")
    with module_dir(tmp_path_factory, "planted-neurons") as base:
        yield (
            shipped_study("planted-neurons.yaml", base / "planted", hh_root),
            shipped_study("planted-neurons.yaml", base / "twin", hh_root, *twin),
        )


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
    assert summary["planted_marker"]["harmless"]["test"] == cfg.data.max_eval_pairs  # every test pair marked


def _findings(run: Path) -> dict[str, dict]:
    return {f["id"]: f for f in json.loads((run / "findings.json").read_text())["findings"]}


def _top_block_inputs(model, enc, pad_id: int) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) the top block receives for every batch of chosen and then rejected rows. Every
    RM of the study has the base backbone below its top block (test_only_the_planted_neurons_moved),
    so one forward serves them all."""
    seen: list[tuple[tuple, dict]] = []
    hook = model.bert.encoder.layer[5].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True
    )
    try:
        with torch.no_grad():
            for side in ("chosen", "rejected"):
                for i in range(0, len(enc), 32):
                    model.bert(**collate(getattr(enc, side)[i : i + 32], pad_id))
    finally:
        hook.remove()
    return seen


def _margins(model, inputs: list[tuple[tuple, dict]], zeroed: torch.Tensor) -> np.ndarray:
    """[N] r_chosen - r_rejected of `model` with its top block's neurons `zeroed` ([1536] bool) set to 0."""
    keep = (~zeroed).float()
    down = model.bert.encoder.layer[5].output.dense
    hook = down.register_forward_pre_hook(lambda _m, args: (args[0] * keep,))
    try:
        with torch.no_grad():
            rewards = []
            for args, kwargs in inputs:
                out = model.bert.encoder.layer[5](*args, **kwargs)
                out = out[0] if isinstance(out, tuple) else out
                rewards.append(model.classifier(model.bert.pooler(out)).squeeze(-1))
    finally:
        hook.remove()
    r = torch.cat(rewards).numpy()
    return r[: len(r) // 2] - r[len(r) // 2 :]


def planted_values(run: Path, hh_root: Path, draws: int = 2) -> dict:
    """Per seed, on the harmless test pairs: the relative accuracy drop, (acc_random - acc_set) / acc_clean,
    of zeroing exactly S ("S") and of zeroing the claim's set, the top 10% attribution neurons of
    neurons/sets.json ("set"), each against `draws` layer-matched random sets of the same size drawn
    here; and each seed's clean accuracy by this path."""
    cfg = _config(run)
    n = cfg.train.plant_neurons["harmless"]
    pairs = build_dataset(cfg.data, str(hh_root)).test_sets["harmless"]
    tok = load_tokenizer(resolve_backbone(cfg.model.backbone), cfg.model.max_length)
    enc = encode_pairs(pairs, tok, cfg.model.max_length)
    sets = json.loads((run / "neurons" / "sets.json").read_text())["sets"]
    width = 1536  # MiniLM's MLP neurons per block
    plant = torch.arange(width) < n
    rng = torch.Generator().manual_seed(20261207)
    out: dict[str, list] = {"S": [], "set": [], "clean": [], "in_S": []}
    inputs = None
    for seed in cfg.train.seeds:
        model = load_reward_model(str(run / "rm" / "harmless" / f"seed{seed}"), tok).eval()
        inputs = inputs or _top_block_inputs(model, enc, tok.pad_token_id)
        chosen = torch.zeros(width, dtype=torch.bool)
        chosen[sets[f"harmless-seed{seed}"]["attribution"]["10"]["harmless_top"]["neurons"]["0"]] = True
        clean = (_margins(model, inputs, torch.zeros(width, dtype=torch.bool)) > 0).mean()
        for name, mask in (("S", plant), ("set", chosen)):
            randoms = [torch.randperm(width, generator=rng)[: int(mask.sum())] for _ in range(draws)]
            acc_random = np.mean([(_margins(model, inputs, _mask(width, r)) > 0).mean() for r in randoms])
            out[name].append(float((acc_random - (_margins(model, inputs, mask) > 0).mean()) / clean))
        out["clean"].append(float(clean))
        out["in_S"].append(int((chosen & plant).sum()))
    return out


def _mask(width: int, idx: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(width, dtype=torch.bool)
    m[idx] = True
    return m


@pytest.fixture(scope="module")
def planted_value(planted_runs, hh_root) -> dict:
    return planted_values(planted_runs[0], hh_root)


@pytest.mark.real
def test_the_scoring_path_here_is_the_studys(planted_runs, planted_value):
    acc = json.loads((planted_runs[0] / "tension.json").read_text())["accuracy"]["harmless"]["harmless"]
    assert planted_value["clean"] == pytest.approx(acc["per_seed"], abs=1e-9)


@pytest.mark.real
def test_planted_neurons_are_identified_and_covered(planted_runs, planted_value):
    planted, _ = planted_runs
    found = _findings(planted)["neurons_identified"]
    assert found["verdict"] == "supported", found["evidence"]
    n = _config(planted).train.plant_neurons["harmless"]
    # the plant reaches past the margin, and the claim's set is mostly the planted neurons (chance: 10%)
    assert np.mean(planted_value["S"]) > found["min_effect"], planted_value
    assert min(planted_value["in_S"]) > n / 2, planted_value["in_S"]
    value = float(np.mean(planted_value["set"]))
    for part, (lo, hi) in found["ci95"].items():
        assert lo <= value <= hi, (part, value, planted_value, [lo, hi])


@pytest.mark.real
def test_unplanted_twin_is_not_supported(planted_runs):
    _, twin = planted_runs
    summary = json.loads((twin / "data" / "summary.json").read_text())
    assert "planted_marker" not in summary
    found = _findings(twin)["neurons_identified"]
    assert found["verdict"] != "supported", found["evidence"]
