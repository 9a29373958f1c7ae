"""Gradient conflict and PCGrad: hand-worked values, the measurement leaves training unchanged, and a
PCGrad run that reduces to plain training when nothing conflicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import synthetic
from tiny import tiny_reward_model, tiny_tokenizer

from rmtension.config import TrainConfig
from rmtension.trainer.conflict import block_names, conflict_stats, dot64, pcgrad, pcgrad_update, per_block
from rmtension.conflict.aggregate import aggregate, two_level_mean
from rmtension.trainer.train import train_reward_model


def test_cosine_and_projection_on_a_two_parameter_problem():
    g_a, g_b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    cos, na, nb, opposite = conflict_stats(g_a, g_b)
    assert cos == pytest.approx(-1 / math.sqrt(2)) and na == 1.0 and nb == pytest.approx(math.sqrt(2))
    assert opposite == 0.5  # coordinate 0: 1 * -1 < 0 -> opposite; coordinate 1: 0 * 1 -> not
    assert conflict_stats(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 3.0]))[3] == 0.5
    # a coordinate at rounding level (1e-9 of the largest) does not count, whatever its sign
    assert conflict_stats(torch.tensor([1.0, 1e-9, 2.0]), torch.tensor([-1.0, -1.0, 3.0]))[
        3
    ] == pytest.approx(1 / 3)
    # g_a' = g_a - (g_a.g_b / |g_b|^2) g_b = [1, 0] + 0.5 [-1, 1] = [0.5, 0.5];  g_b' = g_b + g_a = [0, 1]
    assert pcgrad(g_a, g_b, 0.5, 0.5).tolist() == pytest.approx([0.25, 0.75])
    # no conflict: the plain weighted sum
    assert pcgrad(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), 0.25, 0.75).tolist() == [1.0, 0.75]
    # the projected pair no longer conflicts: g_a'.g_b = 0 and g_b'.g_a = 0
    assert float(torch.tensor([0.5, 0.5]) @ g_b) == 0.0 and float(torch.tensor([0.0, 1.0]) @ g_a) == 0.0


def test_per_block_statistics_and_block_scope():
    # two parameters in block x ([1, 0] vs [-1, 1] as above) and one in block y (same direction)
    a = [torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])]
    b = [torch.tensor([-1.0]), torch.tensor([1.0]), torch.tensor([4.0])]
    stats = per_block(a, b, ["x", "x", "y"])
    assert stats["x"][0] == pytest.approx(-1 / math.sqrt(2)) and stats["y"][0] == pytest.approx(1.0)
    blockwise = pcgrad_update(a, b, 0.5, 0.5, ["x", "x", "y"])
    assert [float(t) for t in blockwise] == pytest.approx([0.25, 0.75, 3.0])
    # globally the three coordinates are one vector: a.b = -1 + 0 + 8 > 0, so no projection
    assert [float(t) for t in pcgrad_update(a, b, 0.5, 0.5)] == pytest.approx([0.0, 0.5, 3.0])


def test_blocks_of_a_tiny_llama_reward_model():
    model = tiny_reward_model("llama", layers=3)
    names = [n for n, _ in model.named_parameters()]
    blocks = block_names(model, names)
    assert {b for b, n in zip(blocks, names) if n.startswith("model.layers.1.")} == {"layers.1"}
    assert (
        blocks[names.index("score.weight")] == "head" and blocks[names.index("model.norm.weight")] == "other"
    )


def test_two_level_bootstrap_and_aggregate():
    # one seed: the replicates are the plain bootstrap of the mean of its values
    reps = two_level_mean([np.array([0.0, 1.0])], 4000, np.random.default_rng(0))
    assert reps.mean() == pytest.approx(0.5, abs=0.02) and reps.std() == pytest.approx(
        0.5 / math.sqrt(2), abs=0.02
    )
    frame = lambda cos: pd.DataFrame(  # noqa: E731
        {
            "step": [1, 1, 2, 2],
            "block": ["layers.1", "head"] * 2,
            "cosine": cos,
            "norm_helpful": 1.0,
            "norm_harmless": 2.0,
            "opposite_sign_share": 0.25,
            "n_helpful": 4,
            "n_harmless": 4,
        }
    )
    out = aggregate({0: frame([-0.2, 0.5, -0.4, 0.7]), 1: frame([0.0, 0.3, -0.2, 0.1])}, n_boot=200)
    assert list(out) == ["layers.1", "head"]
    # mean over seeds of each seed's mean: ((-0.2 - 0.4) / 2 + (0 - 0.2) / 2) / 2 = -0.2
    assert out["layers.1"]["mean_cosine"] == pytest.approx(-0.2) and out["layers.1"]["share_negative"] == 0.75
    assert out["head"]["share_negative"] == 0.0 and out["head"]["steps"] == 4


def train(tmp_path, name, **kw):
    """A tiny BERT reward model (dropout 0.1 on hidden states and attention) on a mixed set: objectives alternate."""
    tok = tiny_tokenizer("bert")
    tr, va = synthetic(tok, 40, "train"), synthetic(tok, 12, "val", seed=1)
    model = tiny_reward_model("bert", layers=2)
    assert model.config.hidden_dropout_prob > 0
    cfg = TrainConfig(epochs=1, batch_size=8, lr=3e-3, eval_every=2, checkpoint_every=50, bf16=False, **kw)
    res = train_reward_model(
        model, tok, tr, va, cfg, 3, tmp_path / name, progress=False, objectives=np.arange(40) % 2
    )
    return model, res


def state_bytes(model) -> list[bytes]:
    return [p.detach().numpy().tobytes() for p in model.parameters()]


def test_measuring_conflict_leaves_training_identical_with_dropout(tmp_path):
    off, res_off = train(tmp_path, "off")
    on, res_on = train(tmp_path, "on", conflict_every=2)
    assert state_bytes(on) == state_bytes(off)
    assert res_on.metrics["loss"] == res_off.metrics["loss"]
    rows = pd.read_csv(tmp_path / "on" / "conflict.csv")
    # 40 pairs in batches of 8: steps 1..5; measured at steps 1, 3, 5 (every 2 and the last), or skipped
    m = res_on.metrics["conflict"]
    assert set(rows["step"]) <= {1, 3, 5} and m["measured_steps"] + m["skipped_steps"] == 3
    assert (
        set(rows["block"]) >= {"layers.0", "layers.1", "head", "other"}
        and rows["cosine"].between(-1, 1).all()
    )
    assert not (tmp_path / "off" / "conflict.csv").exists() and "conflict" not in res_off.metrics


def test_pcgrad_equals_plain_training_when_one_objective_fills_every_batch(tmp_path):
    tok = tiny_tokenizer("llama")
    tr, va = synthetic(tok, 40, "train"), synthetic(tok, 12, "val", seed=1)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=3e-3, eval_every=2, checkpoint_every=50, bf16=False)
    models = []
    for name, pcg in (("plain", False), ("pcgrad", True)):
        torch.manual_seed(0)
        model = tiny_reward_model("llama", layers=2)
        train_reward_model(
            model,
            tok,
            tr,
            va,
            cfg,
            3,
            tmp_path / name,
            progress=False,
            objectives=np.zeros(len(tr), int),
            pcgrad=pcg,
        )
        models.append(model)
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_pcgrad_step_on_a_real_batch_matches_gradients_taken_by_hand():
    from rmtension.model.encode import collate_pairs
    from rmtension.model.forward import PairForward
    from rmtension.trainer.conflict import pcgrad_step
    from rmtension.trainer.losses import bradley_terry_loss

    tok = tiny_tokenizer("llama")
    tr = synthetic(tok, 12, "train")
    # the "harmless" half prefers the opposite reply, so the two objectives' gradients conflict
    for i in range(1, 12, 2):
        tr.chosen[i], tr.rejected[i] = tr.rejected[i], tr.chosen[i]
    model = tiny_reward_model("llama", layers=2)
    params = [p for p in model.parameters() if p.requires_grad]
    objectives = np.array([0, 1] * 6)
    idx = list(range(12))
    cfg = TrainConfig(bf16=False)

    def grad_of(part):  # the mean Bradley-Terry loss of `part`, straight through the model
        r = model(**collate_pairs(tr, part, tok.pad_token_id)).logits.squeeze(-1)
        loss = bradley_terry_loss(r[: len(part)], r[len(part) :])
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    g_h, g_r = (
        grad_of([i for i in idx if objectives[i] == 0]),
        grad_of([i for i in idx if objectives[i] == 1]),
    )
    dot = float(g_h @ g_r)
    assert dot < 0  # the projection branch runs
    # Yu et al. 2020, eq. 1, on both; the plain mean loss weights the two halves 1/2 each
    expected = 0.5 * (g_h - dot / float(g_r @ g_r) * g_r) + 0.5 * (g_r - dot / float(g_h @ g_h) * g_h)
    assert not torch.allclose(expected, 0.5 * (g_h + g_r))
    with PairForward(model, tok.pad_token_id, False) as fwd:
        pcgrad_step(
            fwd,
            tr,
            idx,
            objectives,
            cfg,
            params,
            block_names(model, [n for n, _ in model.named_parameters()]),
            1.0,
        )
    got = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_dot64_sums_chunks_in_float64_whatever_the_chunk_size():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    want = float((a.double() * b.double()).sum())
    for chunk in (1, 7, 333, 1000, 4096):
        assert dot64(a, b, chunk) == pytest.approx(want, rel=1e-12, abs=1e-12)
    # an fp32 value whose square is lost in an fp32 sum next to a large one: float64 keeps it
    big = torch.tensor([1e7, 1.0])  # both exact in fp32; 1e14 + 1 is exact in float64, not in fp32
    assert dot64(big, big) == 1e14 + 1.0
    assert float(big @ big) != 1e14 + 1.0
