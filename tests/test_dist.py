"""The distributed glue in one process: shards, gathers and main-only writes are exact identities.

Their behaviour across two processes is checked in tests/test_distributed.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rmtension.run import dist


def test_shards_are_disjoint_strided_and_cover_everything():
    items = list(range(11))
    shards = [dist.shard_of(items, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert sorted(sum(shards, [])) == items
    assert dist.shard_of(items, 2, 20) == [2] and dist.shard_of(items, 15, 20) == []
    assert dist.shard(items) == items  # one process: everything


def test_gather_rows_puts_rows_back_in_their_original_order():
    idx = [2, 0, 3, 1]
    values = torch.tensor([[20.0, 2.0], [0.0, 0.5], [30.0, 3.0], [10.0, 1.0]])
    assert dist.gather_rows(idx, values, 4).tolist() == [[0.0, 0.5], [10.0, 1.0], [20.0, 2.0], [30.0, 3.0]]
    assert dist.gather_rows([], torch.zeros(0, 3), 0).shape == (0, 3)
    with pytest.raises(ValueError, match="exactly once"):
        dist.gather_rows([0, 0], torch.zeros(2, 1), 2)
    with pytest.raises(ValueError, match=r"\[2, C\]"):
        dist.gather_rows([0, 1], torch.zeros(2), 2)


def test_sums_and_flags_across_one_process_are_the_values():
    t = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    assert torch.equal(dist.sum_across(t), t)
    assert dist.any_across(True) and not dist.any_across(False)
    assert dist.stack_across(t).shape == (1, 2, 3)


def test_main_only_runs_once_and_nested_calls_do_not_wait():
    calls = []

    def outer():
        calls.append("outer")
        return dist.main_only(lambda: calls.append("inner") or "inner done")

    assert dist.is_main() and dist.world_size() == 1
    assert dist.main_only(outer) == "inner done"
    assert calls == ["outer", "inner"]


@pytest.mark.parametrize(
    ("family", "blocks"), [("bert", ["BertLayer"]), ("llama", ["LlamaDecoderLayer"]), ("gpt2", ["GPT2Block"])]
)
def test_fsdp_wraps_every_block_but_one_holding_the_input_embedding(family, blocks, monkeypatch):
    """BERT lists BertEmbeddings among its blocks; accelerate shards the input embedding on its own too."""
    from transformers import AutoModelForSequenceClassification

    from tiny import tiny_config

    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP", raising=False)
    model = AutoModelForSequenceClassification.from_config(tiny_config(family))
    plugin = SimpleNamespace(transformer_cls_names_to_wrap=None)
    dist._fsdp_wrap_classes(plugin, model)
    assert plugin.transformer_cls_names_to_wrap == blocks
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "BertEmbeddings,BertSelfAttention")
    dist._fsdp_wrap_classes(plugin, model)
    assert plugin.transformer_cls_names_to_wrap == (
        ["BertSelfAttention"] if family == "bert" else ["BertEmbeddings", "BertSelfAttention"]
    )
