"""Ablation engine, random controls, statistics, the neuron and ablation stages, the CLI and the claims."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from tiny import FAMILIES, save_tiny, tiny_reward_model

from rmtension.config import MIN_EFFECT, StudyConfig, dump_config
from rmtension.data.types import Pair, Turn
from rmtension.model.encode import EncodedPairs
from rmtension.model.precision import bf16_native
from rmtension.model.scoring import score_pairs
from rmtension.model.arch import find_arch
from rmtension.model.trunk import TrunkCache, trunk_fingerprint
from rmtension.judges.ablate import HEAD_STACK, Condition, resolve_bf16, run_conditions
from rmtension.ablation.stats import double_dissociation, paired_t, versus_controls
from rmtension.neurons.cli import paper_claims
from rmtension.stats.pvalues import fmt_p
from rmtension.neurons.config import AblationConfig, NeuronsConfig
from rmtension.ablation.controls import magnitude_bins, magnitude_controls
from rmtension.judges.hooks import ablate, neuron_shape
from rmtension.ablation.influence import (
    compare_matched,
    correctness,
    drop_per_neuron,
    mcnemar_exact,
    resample_index,
)
from rmtension.run.context import StudyContext
from rmtension.run.runio import load_tensors, read_json, stage_complete

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
        "from0_mean": Condition(from_0, values),
        "first_only": Condition(
            torch.zeros(L, N, dtype=torch.bool).index_fill_(1, torch.tensor([3]), True)
            & (torch.arange(L)[:, None] == 0)
        ),
        "empty": Condition(torch.zeros(L, N, dtype=torch.bool)),
        "dup": Condition(from_1.clone()),
    }


def test_many_ablations_of_the_top_block_stack_after_it_and_match_full_forwards():
    """Sets in the last block only (a trained block over a frozen trunk): more conditions than one stack
    of the head-only path, zero and mean, over padded batches; each must equal its own full forward."""
    model = tiny_reward_model("bert", layers=3)
    L, N = neuron_shape(model)
    g = torch.Generator().manual_seed(5)
    values = torch.randn(L, N, generator=g)
    conds = {}
    for i in range(HEAD_STACK + 3):
        mask = torch.zeros(L, N, dtype=torch.bool)
        mask[-1] = torch.rand(N, generator=g) < 0.1 + 0.4 * i / HEAD_STACK
        conds[f"c{i}"] = Condition(mask, values if i % 2 else None)
    enc = _enc(9)
    assert len({len(s) for s in enc.chosen}) > 1  # padded rows
    _, fast = run_conditions(model, enc, 0, conds, batch_size=4, bf16=False)
    direct = _direct(model, enc, conds)
    for key in conds:
        np.testing.assert_allclose(fast[key], direct[key], atol=1e-5, rtol=0, err_msg=key)
    assert len({fast[k].tobytes() for k in conds}) == len(conds)  # each its own answer, none repeated


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_pass_from_the_trunk_cache_gives_the_full_forwards(family):
    """Sets in the two trained blocks of three: the clean pass may start from the cached trunk; a set
    with a neuron below the cache makes it run in full. Both must equal one full forward per condition."""
    model = tiny_reward_model(family, layers=3)
    L, N = neuron_shape(model)
    enc = _enc(8)
    cache = TrunkCache(2, trunk_fingerprint(model, 2))
    cache.add(model, enc, 0, batch_size=3, bf16=False)
    g = torch.Generator().manual_seed(2)
    values = torch.randn(L, N, generator=g)
    above = {}
    for i in range(5):
        mask = torch.rand(L, N, generator=g) < 0.2
        mask[0] = False
        mask[1] = mask[1] & (i % 2 == 0)  # some start in the last block
        above[f"a{i}"] = Condition(mask, values if i % 2 else None)
    below = {**above, "low": Condition(torch.rand(L, N, generator=g) < 0.2)}
    for conds in (above, below):
        clean, fast = run_conditions(model, enc, 0, conds, batch_size=3, bf16=False, cache=cache)
        r_c, r_r = score_pairs(model, enc, 0, batch_size=3, bf16=False)
        np.testing.assert_allclose(clean, r_c - r_r, atol=1e-5)
        direct = _direct(model, enc, conds)
        for key in conds:
            np.testing.assert_allclose(fast[key], direct[key], atol=1e-5, rtol=0, err_msg=key)
    assert len(list(model.base_model.modules())) == len(
        list(tiny_reward_model(family, layers=3).base_model.modules())
    )
    stopped = {}  # the cut really ran: blocks below the cache never ran
    handle = model.base_model.get_submodule(find_arch(model).layers)[0].register_forward_hook(
        lambda *a: stopped.setdefault("ran", True)
    )
    run_conditions(model, enc, 0, above, batch_size=3, bf16=False, cache=cache)
    handle.remove()
    assert "ran" not in stopped


def _direct(model, enc, conds) -> dict[str, np.ndarray]:
    """One full forward per condition with the neurons hooked: what the fast path must reproduce."""
    out = {}
    for key, c in conds.items():
        with ablate(model, c.mask, c.values):
            a_c, a_r = score_pairs(model, enc, 0, batch_size=3, bf16=False)
        out[key] = a_c - a_r
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("stack", [1, 3])
def test_fast_path_equals_a_full_forward_per_condition(family, stack):
    model = tiny_reward_model(family, layers=3)
    enc = _enc()
    conds = _conditions(model)
    clean, fast = run_conditions(model, enc, 0, conds, batch_size=3, bf16=False, resume=True, stack=stack)
    _, slow = run_conditions(model, enc, 0, conds, batch_size=3, bf16=False, resume=False)
    r_c, r_r = score_pairs(model, enc, 0, batch_size=3, bf16=False)
    np.testing.assert_allclose(clean, r_c - r_r, atol=1e-6)
    direct = _direct(model, enc, conds)
    for key in conds:
        np.testing.assert_allclose(fast[key], direct[key], atol=1e-5, rtol=0, err_msg=key)
        np.testing.assert_allclose(slow[key], direct[key], atol=1e-5, rtol=0, err_msg=key)
    np.testing.assert_array_equal(fast["empty"], clean)
    np.testing.assert_array_equal(fast["dup"], fast["from1"])
    assert not np.allclose(fast["from0"], clean) and not np.allclose(fast["first_only"], clean)
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == 0


def test_a_head_that_reads_more_than_position_0_turns_the_top_cut_off():
    model = tiny_reward_model("bert", layers=3)
    model.bert.pooler.forward = lambda h: torch.tanh(
        model.bert.pooler.dense(h.mean(1))
    )  # reads every position
    enc = _enc()
    conds = _conditions(model)
    _, fast = run_conditions(model, enc, 0, conds, batch_size=3, bf16=False)  # the batches (pads) of _direct
    direct = _direct(model, enc, conds)
    for key in conds:
        np.testing.assert_allclose(fast[key], direct[key], atol=1e-5, rtol=0, err_msg=key)


def test_bf16_fast_path_agrees_to_bf16_rounding():
    model = tiny_reward_model("llama", layers=3)
    conds = _conditions(model)
    _, fast = run_conditions(model, _enc(), 0, conds, batch_size=4, bf16=True, resume=True)
    _, slow = run_conditions(model, _enc(), 0, conds, batch_size=4, bf16=True, resume=False)
    for key in conds:  # bf16 keeps 8 bits of mantissa: two ways of summing differ by about 2^-8 of the scale
        scale = max(1.0, float(np.abs(slow[key]).max()))
        np.testing.assert_allclose(fast[key], slow[key], atol=2e-2 * scale, err_msg=key)
    native = bf16_native("cpu")
    assert resolve_bf16(False, "cpu") is False and resolve_bf16(False, "cuda") is False
    assert resolve_bf16("auto", "cpu") is native and resolve_bf16(True, "cpu") is native


# ---- random controls -------------------------------------------------------------------------


def test_magnitude_matched_draws_keep_layer_and_decile():
    g = torch.Generator().manual_seed(3)
    L, N = 3, 40
    means = torch.randn(L, N, generator=g)
    means[1, 5] = means[1, 6]  # a tie, broken by index
    # brute force: rank each layer's neurons by |mean| (ties by index); rank r lies in decile floor(10 r / N)
    brute = torch.zeros(L, N, dtype=torch.long)
    for layer in range(L):
        order = sorted(range(N), key=lambda i: (abs(float(means[layer, i])), i))
        for r, i in enumerate(order):
            brute[layer, i] = (10 * r) // N
    assert torch.equal(magnitude_bins(means), brute)
    assert all(int((brute[layer] == b).sum()) == N // 10 for layer in range(L) for b in range(10))
    mask = torch.zeros(L, N, dtype=torch.bool)
    mask[0, [0, 1, 2, 7]] = True
    mask[2, torch.argsort(means[2].abs())[-6:]] = True  # six of the most active neurons of layer 2
    draws = magnitude_controls(mask, means, draws=25, seed=11)
    assert len(draws) == 25 and not all(torch.equal(d, draws[0]) for d in draws)
    for d in draws:
        for layer in range(L):
            for b in range(10):
                in_bin = brute[layer] == b
                assert int((d[layer] & in_bin).sum()) == int((mask[layer] & in_bin).sum()), (layer, b)
    # the top decile of layer 2 holds 4 neurons and the set has 6 in the top 6 ranks: 4 in decile 9, 2 in 8
    assert int((mask[2] & (brute[2] == 9)).sum()) == 4 and int((mask[2] & (brute[2] == 8)).sum()) == 2
    assert torch.equal(magnitude_controls(mask, means, 25, 11)[7], draws[7])  # seeded


# ---- statistics ------------------------------------------------------------------------------


def test_paired_t_matches_hand_computation():
    # n = 2: t = mean / (sd / sqrt 2) with d = [1, 3]: mean 2, sd sqrt(2), t = 2; Student's t with one degree of
    # freedom is the Cauchy distribution, so the two-sided p is 1 - (2 / pi) atan(2)
    assert paired_t(np.array([1.0, 3.0])) == pytest.approx(1 - 2 / math.pi * math.atan(2.0), rel=1e-9)
    # n = 3: d = [1, 2, 6]: mean 3, sd sqrt(7), t = 3 sqrt(3) / sqrt(7); with two degrees of freedom the
    # two-sided p is 1 - t / sqrt(t^2 + 2)
    t = 3 * math.sqrt(3) / math.sqrt(7)
    assert paired_t(np.array([1.0, 2.0, 6.0])) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert (
        paired_t(np.zeros(5)) == 1.0 and paired_t(np.full(4, 0.3)) == 0.0 and math.isnan(paired_t(np.ones(1)))
    )
    # the set against two draws: v = set - per-pair mean of the draws; delta and p refer to those same v
    ablated = np.array([0.0, 1.0, 5.0])
    draws = [np.array([-1.0, 0.0, 0.0]), np.array([-1.0, -2.0, -2.0])]  # per-pair mean [-1, -1, -1]
    idx = resample_index(3, 200, np.random.default_rng(0))
    v = versus_controls(ablated, draws, idx, 0.95, sd=2.0)
    assert v["delta_vs_random"] == pytest.approx(3.0) and v["std_vs_random"] == pytest.approx(1.5)
    assert v["p_value"] == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)  # v = [1, 2, 6] again
    assert v["std_vs_random_ci_lo"] >= 0.5 and v["std_vs_random_ci_hi"] <= 3.0  # means of [1, 2, 6] / 2


def test_double_dissociation_by_hand():
    clean = {"helpful": np.array([1.0, 3.0]), "harmless": np.array([0.0, 2.0, 4.0])}  # SDs sqrt(2) and 2
    margins = {
        "helpful_only": {"helpful": np.array([0.0, 2.0]), "harmless": np.array([0.0, 2.0, 4.0])},
        "harmless_only": {"helpful": np.array([1.0, 3.0]), "harmless": np.array([-1.0, 1.0, 3.0])},
    }
    idx = {t: resample_index(len(c), 300, np.random.default_rng(1)) for t, c in clean.items()}
    dd = double_dissociation(margins, clean, idx)
    # drops in SD: helpful_only 1/sqrt(2) on helpful, 0 on harmless; harmless_only 0 on helpful, 1/2 on harmless
    assert dd["drops"]["helpful_only"] == pytest.approx({"helpful": 1 / math.sqrt(2), "harmless": 0.0})
    assert dd["drops"]["harmless_only"] == pytest.approx({"helpful": 0.0, "harmless": 0.5})
    want = ((1 / math.sqrt(2) - 0) + (0.5 - 0)) / 2
    assert dd["effect"] == pytest.approx(want)
    assert dd["ci"] == pytest.approx([want, want])  # every pair's difference is the same: no spread
    # a set that hurts both objectives alike is not specific: the interaction cancels it
    both = {s: {t: clean[t] - 0.7 for t in clean} for s in margins}
    assert double_dissociation(both, clean, idx)["effect"] == pytest.approx(0.0, abs=1e-12)


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
    random_draws=3,
    zero_draws=2,
    sweep_draws=1,
    bootstrap=200,
    batch_size=8,
    rms=["mixed", "helpful"],
    modes=["mean", "zero"],
    bf16=False,
)


def test_stages_write_the_documented_outputs(tmp_path):
    run, cfg = _make_run(tmp_path)
    bundle = SimpleNamespace(
        splits={o: {"train": [_pair(o, i, "train") for i in range(10)]} for o in ("helpful", "harmless")},
        test_sets={o: [_pair(o, i, "test") for i in range(9)] for o in ("helpful", "harmless")},
    )
    ctx = StudyContext(run_dir=run, cfg=cfg, bundle=bundle, backbone_path=cfg.model.backbone)
    from rmtension.ablation.run import COLUMNS, run_ablation
    from rmtension.neurons.stage import run_neuron_scoring

    run_neuron_scoring(ctx, NEURONS)
    scores = load_tensors(run / "neurons" / "mixed-seed0" / "scores.safetensors")
    assert {f"{s}/{o}" for s in NEURONS.scorers for o in ("helpful", "harmless")} <= set(scores)
    assert all(scores[f"{s}/helpful"].shape == (2, 64) for s in NEURONS.scorers)
    overlap = read_json(run / "neurons" / "overlap.json")
    assert set(overlap) == set(NEURONS.scorers) and set(overlap["mean_act"]) == {"5", "20"}
    entry = overlap["mean_act"]["5"]
    assert entry["rm"] == "mixed" and "cross_model" in entry and entry["n_helpful"] == 6  # round(5% of 128)
    from rmtension.neurons.stage import neurons_hash

    assert stage_complete(run, "neurons", neurons_hash(ctx, NEURONS))
    # scores made without the trunk cache (the CLI's path) do not stand for the study's cached ones
    assert not stage_complete(run, "neurons", neurons_hash(ctx, NEURONS, trunk=True))

    run_ablation(ctx, ABLATION)
    from rmtension.ablation.run import ablation_hash

    assert stage_complete(run, "ablation", ablation_hash(ctx, ABLATION))
    assert not stage_complete(run, "ablation", ablation_hash(ctx, ABLATION, trunk=True))
    frame = pd.read_csv(run / "ablation.csv")
    assert list(frame.columns) == COLUMNS
    assert set(frame["rm"]) == {"mixed-seed0", "helpful-seed0"}
    frame["control"] = frame["control"].fillna("")
    sets = frame[~frame["neuron_set"].str.contains("random|none|@")]
    # one row per (condition, control kind), each with its own number of draws
    # random_draws only where a claim is decided against the controls: the *_top sets at claim_p, mean mode
    top = sets["neuron_set"].isin(["helpful_top", "harmless_top"])
    for (mode, p, against), want in {
        ("mean", 5.0, True): 3,
        ("mean", 5.0, False): 1,
        ("zero", 5.0, True): 2,
        ("zero", 5.0, False): 2,
        ("mean", 20.0, True): 1,
        ("zero", 20.0, True): 1,
    }.items():
        at = sets[(sets["mode"] == mode) & (sets["p"] == p) & (top == against)]
        assert set(at["control"]) == {"layer", "magnitude"}, (mode, p)
        assert set(at["n_draws"]) == {want}, (mode, p, against)
        assert len(at) == len(at.drop_duplicates(["rm", "neuron_set", "test_set", "control"]))
    main = sets[sets["neuron_set"] == "helpful_top"]
    assert len(main) == 2 * 2 * 2 * 2 * 2  # rms x p x mode x test set x control kind
    assert main["p_value"].between(0, 1).all() and main["delta_vs_random"].notna().all()
    # delta_vs_random and std_vs_random are the same comparison in two units; the CI surrounds the estimate
    np.testing.assert_allclose(main["std_vs_random"] * main["margin_sd"], main["delta_vs_random"], rtol=1e-9)
    assert (main["std_vs_random_ci_lo"] <= main["std_vs_random"] + 1e-12).all()
    assert (main["margin_ci_lo"] <= main["delta_margin"] + 1e-12).all()
    assert (main["margin_ci_hi"] >= main["delta_margin"] - 1e-12).all()
    rand = frame[frame["neuron_set"] == "random:helpful_top"]
    assert set(rand["control"]) == {"layer", "magnitude"} and rand["p_value"].isna().all()
    matched = frame[frame["neuron_set"].str.contains("@")]
    assert not matched.empty and (matched["n_draws"] == 0).all() and (matched["control"] == "").all()
    none = frame[frame["neuron_set"] == "none"]
    assert (none["delta_vs_base"] == 0).all() and (none["margin_sd"] > 0).all()
    influence = read_json(run / "neurons" / "influence.json")
    assert influence["records"] and "sets" in influence["records"][0]
    cross = read_json(run / "neurons" / "cross_effect.json")
    cell = cross[0]["matrix"]["helpful_top"]["helpful"]
    assert set(cross[0]["matrix"]["helpful_top"]) == {"helpful", "harmless"} and set(cell["controls"]) == {
        "layer",
        "magnitude",
    }
    dd = read_json(run / "neurons" / "dissociation.json")["records"]
    assert {(r["rm"], r["p"], r["mode"]) for r in dd} >= {
        ("mixed-seed0", 5.0, "mean"),
        ("mixed-seed0", 5.0, "zero"),
    }
    assert all(r["ci"][0] <= r["effect"] <= r["ci"][1] for r in dd)

    # the paper's unit, derived here from ablation.csv's accuracies: (acc(other) - acc(shared)) / acc(clean)
    # for the size-matched sets, and the interaction of relative drops for the objective-only sets
    def acc(rm, name, test, p=5.0, mode="zero"):
        at = frame[(frame["rm"] == rm) & (frame["neuron_set"] == name) & (frame["test_set"] == test)]
        if name != "none":
            at = at[(at["p"] == p) & (at["mode"] == mode) & (at["scorer"] == "mean_act")]
        return float(at["accuracy"].iloc[0])

    rec = next(
        r
        for r in influence["records"]
        if (r["rm"], r["p"], r["mode"], r["scorer"]) == ("mixed-seed0", 5.0, "zero", "mean_act")
    )
    for c in (c for c in rec["comparisons"] if "matched_rel" in c):
        t, other = c["test_set"], c["other"]
        # a clean accuracy of 0 (a tiny model on 16 pairs) is floored at 1e-12, as relative_drop does
        want = (acc("mixed-seed0", f"{other}@shared", t) - acc("mixed-seed0", f"shared@{other}", t)) / max(
            acc("mixed-seed0", "none", t), 1e-12
        )
        assert c["matched_rel"]["rel_drop"] == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert c["matched_rel"]["ci"][0] <= want + 1e-12 <= c["matched_rel"]["ci"][1] + 2e-12
    r0 = next(
        r for r in dd if (r["rm"], r["p"], r["mode"], r["scorer"]) == ("mixed-seed0", 5.0, "zero", "mean_act")
    )
    within = {
        t: (acc("mixed-seed0", f"{other}_only", t) - acc("mixed-seed0", f"{t}_only", t))
        / max(acc("mixed-seed0", "none", t), 1e-12)
        for t, other in (("helpful", "harmless"), ("harmless", "helpful"))
    }
    assert r0["relative"]["effect"] == pytest.approx((within["helpful"] + within["harmless"]) / 2, abs=1e-12)
    claims = paper_claims(run)
    names = [c.id for c in claims]
    assert {
        "neurons_identified",
        "neurons_shared",
        "shared_outsized",
        "cross_ablation",
        "double_dissociation",
    } <= set(names)
    assert all(c.verdict in ("supported", "not supported", "inconclusive") and c.evidence for c in claims)
    assert "mean ablation" in next(c for c in claims if c.id == "neurons_identified").sentence()


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
            "ablation.zero_draws=1",
            "--set",
            "ablation.controls=[layer]",
            "--set",
            "ablation.bootstrap=100",
        ],
        ["neurons", "claims", str(run)],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output, res.exception)
    assert (
        "Many neurons are shared" in res.output and "zero ablation" in res.output
    )  # no mean ablation: zero's rows
    assert read_json(run / "neurons" / "sets.json")["per_layer"] is True
    assert set(pd.read_csv(run / "ablation.csv")["control"].dropna()) == {"layer"}
    bad = runner.invoke(app, ["neurons", "select", str(run), "--set", "neurons.bogus=1"])
    assert bad.exit_code != 0 and "neurons.bogus: unknown key" in str(bad.exception)


# ---- claims from hand-made files -------------------------------------------------------------


def _row(s: str, t: str, control: str, drop: float, half: float, p: float = 0.01) -> dict:
    """A set row whose margin drop against its controls is `drop` SD with CI drop +- half."""
    return {
        "rm": "mixed-seed0",
        "neuron_set": s,
        "scorer": "mean_act",
        "p": 5.0,
        "mode": "mean",
        "test_set": t,
        "control": control,
        "n_draws": 20,
        "n_neurons": 92,
        "n_pairs": 400,
        "std_vs_random": -drop,
        "std_vs_random_ci_lo": -drop - half,
        "std_vs_random_ci_hi": -drop + half,
        "p_value": p,
    }


def _write_results(
    run: Path, *, own: float, cross: float, half: float, shared: float, interaction: float
) -> None:
    (run / "neurons").mkdir(parents=True)
    rows = []
    for control in ("layer", "magnitude"):
        for s, t, d in (
            ("helpful_top", "helpful", own),
            ("harmless_top", "harmless", own),
            ("helpful_top", "harmless", cross),
            ("harmless_top", "helpful", cross),
        ):
            rows.append(_row(s, t, control, d, half))
    rows.append({**_row("helpful_top", "helpful", "layer", -own, half), "mode": "zero"})  # zero: not read
    pd.DataFrame(rows).to_csv(run / "ablation.csv", index=False)
    comp = {
        "own": True,
        "other": "helpful_only",
        "test_set": "helpful",
        "matched_std": {
            "diff": shared,
            "ci": [shared - half, shared + half],
            "p_value": 0.01,
            "drop_shared": shared,
            "drop_other": 0.0,
            "n_shared": 40,
            "n_other": 40,
        },
    }
    head = {"rm": "mixed-seed0", "scorer": "mean_act", "p": 5.0, "mode": "mean"}
    (run / "neurons" / "influence.json").write_text(
        json.dumps({"ci": 0.95, "records": [{**head, "comparisons": [comp]}]})
    )
    drops = {
        "helpful_only": {"helpful": 0.3, "harmless": 0.1},
        "harmless_only": {"harmless": 0.2, "helpful": 0.0},
    }
    dd = {**head, "effect": interaction, "ci": [interaction - half, interaction + half], "drops": drops}
    dd["n_neurons"] = {"helpful_only": 52, "harmless_only": 52}
    (run / "neurons" / "dissociation.json").write_text(json.dumps({"ci": 0.95, "records": [dd]}))


def _verdicts(run: Path) -> dict[str, str]:
    return {
        c.id: c.verdict for c in paper_claims(run) if c.id not in ("neurons_shared", "neuron_sets_differ")
    }


def test_ablation_claims_follow_the_equivalence_rule(tmp_path):
    # every CI above 0: supported
    _write_results(tmp_path / "a", own=0.3, cross=0.35, half=0.05, shared=0.25, interaction=0.2)
    claims = {c.id: c for c in paper_claims(tmp_path / "a")}
    assert _verdicts(tmp_path / "a") == dict.fromkeys(
        ("neurons_identified", "shared_outsized", "cross_ablation", "double_dissociation"), "supported"
    )
    ident = claims["neurons_identified"]
    assert set(ident.effect) == {
        f"{s} on {t} vs {k}"
        for s, t in (("helpful_top", "helpful"), ("harmless_top", "harmless"))
        for k in ("layer", "magnitude")
    }
    assert ident.effect["helpful_top on helpful vs layer"] == pytest.approx(0.3)
    assert ident.ci95["helpful_top on helpful vs layer"] == pytest.approx([0.25, 0.35])
    assert ident.min_effect == MIN_EFFECT["neurons_identified"]
    # the CI half-width 0.05 is 1.96 SE: detectable 2.80 SE
    assert ident.min_detectable_effect == pytest.approx(0.05 / 1.96 * 2.8016, abs=1e-3)
    assert (
        "mean ablation" in ident.sentence() and "+0.300 [+0.250, +0.350] vs layer-matched" in ident.evidence
    )
    # every CI inside +-min_effect (0.10 to 0.25 SD): not supported (the equivalence rule), never read off a point estimate
    _write_results(tmp_path / "b", own=0.02, cross=-0.01, half=0.03, shared=0.0, interaction=0.01)
    assert set(_verdicts(tmp_path / "b").values()) == {"not supported"}
    # wide CIs that include 0 and reach past 0.10: inconclusive, with the detectable effect stated
    _write_results(tmp_path / "c", own=0.05, cross=0.05, half=0.3, shared=0.05, interaction=0.05)
    claims = {c.id: c for c in paper_claims(tmp_path / "c")}
    assert {c.verdict for n, c in claims.items() if n not in ("neurons_shared", "neuron_sets_differ")} == {
        "inconclusive"
    }
    assert "could detect about" in claims["double_dissociation"].evidence
    # one part failing (the cross effect the wrong way) makes the claim not supported
    _write_results(tmp_path / "d", own=0.3, cross=-0.3, half=0.05, shared=0.25, interaction=0.2)
    assert _verdicts(tmp_path / "d")["cross_ablation"] == "not supported"
    assert {c.verdict for c in paper_claims(tmp_path / "missing")} == {"not run"}
    assert (fmt_p(0.0), fmt_p(0.0312), fmt_p(float("nan"))) == ("< 1e-300", "0.031", "n/a")


def test_findings_carry_the_ablation_numbers(tmp_path):
    from rmtension.ablation.claims import findings as ablation_findings

    _write_results(tmp_path / "a", own=0.3, cross=0.35, half=0.05, shared=0.25, interaction=0.2)
    found = {f.id: f for f in ablation_findings(tmp_path / "a")}
    dd = found["double_dissociation"]
    # the default's design describes these numbers; configs/neurons.yaml decides (tests/test_neuron_claims.py)
    assert dd.verdict == "not run" and dd.numbers["described_verdict"] == "supported"
    assert dd.effect == {"interaction": pytest.approx(0.2)}
    assert (
        dd.ci95 == {"interaction": pytest.approx([0.15, 0.25])}
        and dd.min_effect == MIN_EFFECT["double_dissociation"]
    )
    assert dd.test and dd.null and dd.as_dict()["source_files"] == ["neurons/dissociation.json"]
    ident = found["neurons_identified"]
    assert len(ident.effect) == 4 and ident.min_detectable_effect > 0 and "SD" in ident.key
    assert {found[c].numbers["described_verdict"] for c in ("cross_ablation", "shared_outsized")} == {
        "supported"
    }


def test_neurons_claims_prints_the_neuron_entries_of_findings_json(tmp_path):
    from typer.testing import CliRunner

    from rmtension.cli import _mount, app

    run, _ = _make_run(tmp_path)
    entries = [
        {
            "id": "neuron_sets_differ",
            "claim": "the sets differ",
            "verdict": "inconclusive",
            "evidence": "E1.",
        },
        {"id": "mixed_worse", "claim": "mixed is worse", "verdict": "supported", "evidence": "E2."},
    ]
    (run / "findings.json").write_text(json.dumps({"findings": entries}))
    _mount()
    res = CliRunner().invoke(app, ["neurons", "claims", str(run)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines() == ["The sets differ: inconclusive. E1."]
