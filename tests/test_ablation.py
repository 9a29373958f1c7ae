"""Ablation engine, its statistics, the neuron and ablation stages, the CLI and the claims."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from tiny import FAMILIES, save_tiny, tiny_reward_model

from rmtension.config import StudyConfig, dump_config
from rmtension.run.context import StudyContext
from rmtension.data.types import Pair, Turn
from rmtension.model.encode import EncodedPairs
from rmtension.neurons.ablation import Condition, run_conditions
from rmtension.neurons.claims import fmt_p, paper_claims
from rmtension.neurons.config import AblationConfig, NeuronsConfig
from rmtension.neurons.hooks import ablate, neuron_shape
from rmtension.neurons.influence import (
    compare_matched,
    correctness,
    drop_per_neuron,
    mcnemar_exact,
    resample_index,
)
from rmtension.run.runio import load_tensors, read_json, stage_complete
from rmtension.model.scoring import score_pairs

# ---- the engine ------------------------------------------------------------------------------


def _enc(n: int = 7) -> EncodedPairs:
    g = torch.Generator().manual_seed(1)
    ln = lambda: int(torch.randint(2, 12, (1,), generator=g))  # noqa: E731
    tok = lambda k: torch.randint(4, 260, (k,), generator=g).tolist()  # noqa: E731
    return EncodedPairs(
        [f"p{i}" for i in range(n)], [tok(ln()) for _ in range(n)], [tok(ln()) for _ in range(n)], 0, 0
    )


def _conditions(model) -> dict[str, Condition]:
    L, N = neuron_shape(model)
    g = torch.Generator().manual_seed(0)
    from_0 = torch.rand(L, N, generator=g) < 0.3
    from_1 = from_0.clone()
    from_1[0] = False
    only_last = torch.zeros(L, N, dtype=torch.bool)
    only_last[-1, :5] = True
    values = torch.randn(L, N, generator=g)
    return {
        "from0": Condition(from_0),
        "from1": Condition(from_1),
        "last_mean": Condition(only_last, values),
        "from1_mean": Condition(from_1, values),
        "empty": Condition(torch.zeros(L, N, dtype=torch.bool)),
        "dup": Condition(from_1.clone()),
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_run_conditions_equals_direct_ablation(family):
    model = tiny_reward_model(family, layers=3)
    enc = _enc()
    conds = _conditions(model)
    clean, fast = run_conditions(model, enc, 0, conds, batch_size=3, bf16=False, resume=True)
    _, slow = run_conditions(model, enc, 0, conds, batch_size=3, bf16=False, resume=False)
    r_c, r_r = score_pairs(model, enc, 0, batch_size=3, bf16=False)
    np.testing.assert_allclose(clean, r_c - r_r, atol=1e-6)
    for key, c in conds.items():
        with ablate(model, c.mask, c.values):
            a_c, a_r = score_pairs(model, enc, 0, batch_size=3, bf16=False)
        np.testing.assert_allclose(fast[key], a_c - a_r, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(slow[key], a_c - a_r, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(fast["empty"], clean)
    np.testing.assert_array_equal(fast["dup"], fast["from1"])
    assert not np.allclose(fast["from0"], clean)


def test_run_conditions_bf16_resume_is_exact():
    model = tiny_reward_model("llama", layers=3)
    conds = _conditions(model)
    _, fast = run_conditions(model, _enc(), 0, conds, batch_size=4, bf16=True, resume=True)
    _, slow = run_conditions(model, _enc(), 0, conds, batch_size=4, bf16=True, resume=False)
    for key in conds:
        np.testing.assert_allclose(fast[key], slow[key], atol=1e-6, err_msg=key)
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == 0


# ---- statistics ------------------------------------------------------------------------------


def test_mcnemar_exact_by_hand():
    a = np.array([1.0, 1.0, -1.0, -1.0, 1.0])
    b = np.array([-1.0, 1.0, -1.0, 1.0, -1.0])  # a-only right: 2 pairs, b-only right: 1 pair
    assert mcnemar_exact(a, b) == pytest.approx(stats.binomtest(2, 3, 0.5).pvalue) == pytest.approx(1.0)
    six = np.ones(6)
    assert mcnemar_exact(six, -six) == pytest.approx(2 * 0.5**6)
    assert mcnemar_exact(six, six) == 1.0
    assert correctness(np.array([1.0, 0.0, -2.0])).tolist() == [1.0, 0.5, 0.0]


def test_drop_and_matched_comparison_by_hand():
    clean = np.array([1.0, 1.0, 1.0, 1.0])
    ablated = np.array([1.0, -1.0, -1.0, 1.0])  # accuracy 1.0 -> 0.5
    idx = resample_index(4, 500, np.random.default_rng(0))
    d = drop_per_neuron(clean, ablated, n_neurons=10, idx=idx)
    assert d["drop"] == 0.5 and d["drop_per_neuron"] == 0.05
    assert d["drop_ci"][0] <= 0.5 <= d["drop_ci"][1]
    other = np.array([1.0, 1.0, -1.0, 1.0])  # accuracy 0.75
    m = compare_matched(clean, ablated, other, idx)
    assert m["diff"] == pytest.approx(0.25) and m["drop_a"] == 0.5 and m["drop_b"] == 0.25
    assert m["p_value"] == 1.0  # one discordant pair


# ---- stages on a fake run directory ----------------------------------------------------------


def _pair(obj: str, i: int, split: str) -> Pair:
    q = f"{obj} question {i} {split}"
    return Pair(
        f"{obj}/{split}/{i}",
        (Turn("user", q),),
        f"good answer {i}" * (1 + i % 3),
        f"bad {i}",
        f"{obj}-base",
        "test",
        i + 1,
    )


def _make_run(tmp: Path, family: str = "bert") -> tuple[Path, StudyConfig]:
    run = tmp / "run"
    base = save_tiny(tmp / "backbone", family, seed=9)
    for k, obj in enumerate(("helpful", "harmless", "mixed")):
        save_tiny(run / "rm" / obj / "seed0", family, seed=k)
    data = tmp / "hh"
    for obj in ("helpful", "harmless"):
        for split, n in (("train", 24), ("test", 12)):
            rows = [
                {
                    "chosen": f"\n\nHuman: {obj} q{i} {split}\n\nAssistant: fine answer {i}",
                    "rejected": f"\n\nHuman: {obj} q{i} {split}\n\nAssistant: no",
                }
                for i in range(n)
            ]
            (data / f"{obj}-base").mkdir(parents=True, exist_ok=True)
            (data / f"{obj}-base" / f"{split}.jsonl").write_text(
                "\n".join(json.dumps(r) for r in rows) + "\n"
            )
    cfg = StudyConfig.model_validate(
        {
            "data": {
                "path": str(data),
                "subsets": {"helpful": ["helpful-base"], "harmless": ["harmless-base"]},
            },
            "model": {"backbone": str(base), "max_length": 48},
            "train": {"seeds": [0]},
        }
    )
    (run / "config.yaml").write_text(dump_config(cfg))
    return run, cfg


NEURONS = NeuronsConfig(max_pairs=8, ps=[5, 20], batch_size=4)
ABLATION = AblationConfig(
    max_test_pairs=8,
    random_draws=2,
    bootstrap=200,
    batch_size=8,
    rms=["mixed", "helpful"],
    modes=["zero", "mean"],
)


def test_stages_write_the_documented_outputs(tmp_path):
    run, cfg = _make_run(tmp_path)
    bundle = SimpleNamespace(
        splits={o: {"train": [_pair(o, i, "train") for i in range(10)]} for o in ("helpful", "harmless")},
        test_sets={o: [_pair(o, i, "test") for i in range(9)] for o in ("helpful", "harmless")},
    )
    ctx = StudyContext(run_dir=run, cfg=cfg, bundle=bundle, backbone_path=cfg.model.backbone)
    from rmtension.neurons.ablation_stage import run_ablation
    from rmtension.neurons.stage import run_neuron_scoring

    run_neuron_scoring(ctx, NEURONS)
    scores = load_tensors(run / "neurons" / "mixed-seed0" / "scores.safetensors")
    assert set(scores) == {f"{s}/{o}" for s in NEURONS.scorers for o in ("helpful", "harmless")}
    assert all(v.shape == (2, 64) and v.dtype == torch.float32 for v in scores.values())
    overlap = read_json(run / "neurons" / "overlap.json")
    assert set(overlap) == set(NEURONS.scorers) and set(overlap["mean_act"]) == {"5", "20"}
    entry = overlap["mean_act"]["5"]
    assert {"jaccard", "jaccard_random", "p_value", "n_shared", "n_helpful", "n_harmless"} <= set(entry)
    assert entry["rm"] == "mixed" and "cross_model" in entry and entry["n_helpful"] == 6  # round(5% of 128)
    sets = read_json(run / "neurons" / "sets.json")
    assert set(sets["sets"]) == {"mixed-seed0", "helpful-seed0", "harmless-seed0"}
    assert "mean_act_vs_attribution" in read_json(run / "neurons" / "scorer_agreement.json")
    assert stage_complete(
        run, "neurons", __import__("rmtension.neurons.stage", fromlist=["x"]).neurons_hash(ctx, NEURONS)
    )

    run_ablation(ctx, ABLATION)
    frame = pd.read_csv(run / "ablation.csv")
    assert list(frame.columns[:11]) == [
        "rm",
        "neuron_set",
        "scorer",
        "p",
        "mode",
        "test_set",
        "accuracy",
        "delta_vs_base",
        "delta_vs_random",
        "n_neurons",
        "p_value",
    ]
    assert set(frame["rm"]) == {"mixed-seed0", "helpful-seed0"}
    main = frame[frame["neuron_set"] == "helpful_top"]
    assert len(main) == 2 * 2 * 2 * 2  # rms x p x mode x test set
    assert main["p_value"].between(0, 1).all() and main["delta_vs_random"].notna().all()
    assert (frame[frame["neuron_set"] == "none"]["delta_vs_base"] == 0).all()
    influence = read_json(run / "neurons" / "influence.json")
    assert influence["records"] and "sets" in influence["records"][0]
    cross = read_json(run / "neurons" / "cross_effect.json")
    assert set(cross[0]["matrix"]["helpful_top"]) == {"helpful", "harmless"}
    claims = paper_claims(run)
    assert [c.name for c in claims] == ["identified", "shared", "influence", "cross_effect"]
    assert all(c.verdict in ("supported", "not supported", "inconclusive") and c.sentence for c in claims)


def test_cli_smoke(tmp_path):
    import typer
    from typer.testing import CliRunner

    from rmtension.neurons.cli import ablate
    from rmtension.neurons.cli import app as neurons_app

    run, _ = _make_run(tmp_path, family="llama")
    app = typer.Typer()
    app.add_typer(neurons_app, name="neurons")
    app.command("ablate")(ablate)
    runner = CliRunner()
    small = [
        "--set",
        "neurons.max_pairs=6",
        "--set",
        "neurons.ps=[10]",
        "--set",
        "neurons.rms=[mixed]",
        "--set",
        "neurons.scorers=[mean_act,attribution]",
    ]
    for args in (
        ["neurons", "score", str(run), *small],
        ["neurons", "select", str(run), *small, "--set", "neurons.per_layer=true"],
        ["neurons", "overlap", str(run), *small, "--set", "neurons.per_layer=true"],
        [
            "ablate",
            str(run),
            "--set",
            "ablation.max_test_pairs=6",
            "--set",
            "ablation.modes=[zero]",
            "--set",
            "ablation.random_draws=1",
            "--set",
            "ablation.bootstrap=100",
        ],
        ["neurons", "claims", str(run)],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output, res.exception)
    assert "Shared neurons" in res.output
    assert read_json(run / "neurons" / "sets.json")["per_layer"] is True
    assert (run / "ablation.csv").exists()
    bad = runner.invoke(app, ["neurons", "select", str(run), "--set", "neurons.bogus=1"])
    assert bad.exit_code != 0 and "neurons.bogus: unknown key" in str(bad.exception)


# ---- claims from hand-made files -------------------------------------------------------------


def _write_results(run: Path, *, shared_p: float, own: float, cross: float, matched_ci: list[float]) -> None:
    (run / "neurons").mkdir(parents=True)
    (run / "neurons" / "overlap.json").write_text(
        json.dumps(
            {
                "mean_act": {
                    "5": {
                        "jaccard": 0.3,
                        "jaccard_random": 0.03,
                        "p_value": shared_p,
                        "n_shared": 40,
                        "n_helpful": 92,
                        "n_harmless": 92,
                        "rm": "mixed",
                    }
                }
            }
        )
    )
    rows = []
    for s, t, d in (
        ("helpful_top", "helpful", own),
        ("harmless_top", "harmless", own),
        ("helpful_top", "harmless", cross),
        ("harmless_top", "helpful", cross),
    ):
        rows.append(
            {
                "rm": "mixed-seed0",
                "neuron_set": s,
                "scorer": "mean_act",
                "p": 5.0,
                "mode": "zero",
                "test_set": t,
                "accuracy": 0.6 + d,
                "delta_vs_base": d,
                "delta_vs_random": d,
                "n_neurons": 92,
                "p_value": 0.001 if d < -0.05 else 0.5,
            }
        )
    pd.DataFrame(rows).to_csv(run / "ablation.csv", index=False)
    comp = {
        "own": True,
        "other": "helpful_only",
        "test_set": "helpful",
        "matched": {"diff": sum(matched_ci) / 2, "ci": matched_ci, "p_value": 0.01},
    }
    (run / "neurons" / "influence.json").write_text(
        json.dumps(
            {
                "ci": 0.95,
                "records": [
                    {
                        "rm": "mixed-seed0",
                        "scorer": "mean_act",
                        "p": 5.0,
                        "mode": "zero",
                        "comparisons": [comp],
                    }
                ],
            }
        )
    )


def test_claims_verdicts(tmp_path):
    _write_results(tmp_path / "a", shared_p=1e-9, own=-0.1, cross=-0.08, matched_ci=[0.01, 0.05])
    claims = paper_claims(tmp_path / "a")
    verdicts = {c.name: c.verdict for c in claims}
    assert "40 neurons are in both the top 5% helpful (92)" in claims[1].sentence
    assert "Jaccard 0.300 vs 0.030 expected by chance, hypergeometric p = 1e-09." in claims[1].sentence
    assert (fmt_p(0.0), fmt_p(0.0312), fmt_p(float("nan"))) == ("< 1e-300", "0.031", "n/a")
    assert verdicts == {
        "identified": "supported",
        "shared": "supported",
        "influence": "supported",
        "cross_effect": "supported",
    }
    _write_results(tmp_path / "b", shared_p=0.4, own=-0.1, cross=0.01, matched_ci=[-0.02, 0.03])
    verdicts = {c.name: c.verdict for c in paper_claims(tmp_path / "b")}
    assert verdicts == {
        "identified": "supported",
        "shared": "inconclusive",
        "influence": "inconclusive",
        "cross_effect": "not supported",
    }
    _write_results(tmp_path / "c", shared_p=0.4, own=0.0, cross=0.0, matched_ci=[-0.05, -0.01])
    verdicts = {c.name: c.verdict for c in paper_claims(tmp_path / "c")}
    assert verdicts["identified"] == "not supported" and verdicts["influence"] == "not supported"
    assert verdicts["cross_effect"] == "inconclusive"
    # a drop too small to be significant (p = 0.5) is inconclusive, not evidence against the claim
    _write_results(tmp_path / "d", shared_p=0.4, own=-0.03, cross=0.0, matched_ci=[-0.05, 0.01])
    assert {c.name: c.verdict for c in paper_claims(tmp_path / "d")}["identified"] == "inconclusive"
    assert {c.verdict for c in paper_claims(tmp_path / "missing")} == {"inconclusive"}
