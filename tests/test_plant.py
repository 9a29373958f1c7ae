"""The planted-neurons control's two parts on tiny inputs: the marker (`data.plant_marker`) and the
neuron-restricted training (`train.plant_neurons`, `rmtension.model.scope.restrict_to_neurons`)."""

from __future__ import annotations

import pytest
import torch

from rmtension.config import DataConfig, TrainConfig
from rmtension.data import build_dataset
from rmtension.data.plant import MARKED, mark_chosen
from rmtension.data.types import Pair, Turn
from rmtension.model.scope import restrict_to_neurons, set_trainable
from test_data_splits import write_layout
from tiny import rewards_and_grads, tiny_reward_model, tiny_tokenizer, word_batch


def test_mark_chosen_by_hand():
    pairs = [Pair(f"p{i}", (Turn("user", f"q{i}"),), f"good {i}", f"bad {i}", "s", "f", i) for i in range(3)]
    out = mark_chosen(pairs, " MARK", {"p0", "p2"})
    assert [p.pair_id for p in out] == ["p0" + MARKED, "p1", "p2" + MARKED]
    assert [(p.chosen, p.rejected) for p in out] == [
        ("good 0 MARK", "bad 0"),
        ("good 1", "bad 1"),
        ("good 2 MARK", "bad 2"),
    ]
    assert out[1] is pairs[1]


def test_the_marker_is_on_every_pair_of_its_objective_and_only_there(tmp_path):
    root = write_layout(tmp_path, {"helpful-base": 300, "harmless-base": 300}, n_prompts=150)
    subsets = {"helpful": ["helpful-base"], "harmless": ["harmless-base"]}
    clean = build_dataset(DataConfig(subsets=subsets, max_train_pairs=100), str(root))
    cfg = DataConfig(subsets=subsets, max_train_pairs=100, plant_marker={"harmless": " MARK"})
    bundle = build_dataset(cfg, str(root))
    for o, split in bundle.splits.items():
        for name, pairs in split.items():
            before = clean.splits[o][name]
            assert [p.pair_id.removesuffix(MARKED) for p in pairs] == [
                p.pair_id for p in before
            ]  # same pairs
            for p, q in zip(pairs, before):
                harmless = q.subset == "harmless-base"
                assert p.chosen == q.chosen + (" MARK" if harmless else "") and p.rejected == q.rejected
                assert p.pair_id.endswith(MARKED) == harmless
    assert bundle.test_sets["harmless"] == bundle.splits["harmless"]["test"]
    counts = bundle.summary["planted_marker"]["harmless"]
    assert counts == {"marker": " MARK", **{k: len(v) for k, v in clean.splits["harmless"].items()}}
    assert "planted_marker" not in clean.summary


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_only_the_planted_neurons_train(family):
    model = tiny_reward_model(family, layers=2, mlp=64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    k = set_trainable(model, "top:1")
    restrict_to_neurons(model, k, 5)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    batch = word_batch(tiny_tokenizer(family), n=6)
    for _ in range(3):
        rewards_and_grads(model, batch)
        opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    # the top block's MLP only: BERT intermediate.dense (weight, bias) and output.dense's weight; Llama
    # gate_proj, up_proj (rows) and down_proj (columns). Nothing else, the score head included.
    want = {
        "bert": {"intermediate.dense.weight", "intermediate.dense.bias", "output.dense.weight"},
        "llama": {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"},
    }[family]
    top = {"bert": "bert.encoder.layer.1.", "llama": "model.layers.1."}[family]
    assert moved == {top + w for w in want}
    for n in moved:
        delta = (model.get_parameter(n) - before[n]).abs()
        neuron_axis = 1 if n.endswith(("output.dense.weight", "down_proj.weight")) else 0
        per_neuron = delta.sum(dim=1 - neuron_axis) if delta.dim() == 2 else delta
        assert per_neuron[:5].gt(0).all() and per_neuron[5:].eq(0).all(), n


def test_plant_neurons_needs_no_weight_decay():
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(plant_neurons={"harmless": 4}, weight_decay=0.01)
    with pytest.raises(ValueError, match="marker"):
        DataConfig(plant_marker={"harmless": "  "})
