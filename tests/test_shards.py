"""Sharded-parameter helpers in one process: without sharding they are identities or copies.

Their behaviour on real shards (FSDP 2 and DeepSpeed ZeRO-3 over two processes) is checked in
tests/test_distributed.py.
"""

from __future__ import annotations

import torch

from rmtension.run import shards


def test_whole_tensors_pass_through_unsharded():
    """Without FSDP or ZeRO-3 nothing is sharded: gathering and cutting give back the same values."""
    model = torch.nn.Linear(3, 2)
    assert not shards.is_sharded(model)
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 3)}},
        "param_groups": [{"lr": 0.1}],
    }
    out = shards.full_tensors_on_main(state)
    assert torch.equal(out["state"][0]["exp_avg"], state["state"][0]["exp_avg"]) and out["param_groups"] == [
        {"lr": 0.1}
    ]
    t = torch.zeros(2, 3)
    assert shards.like_param(t, model.weight) is t
    part = shards.local_part(model.weight)
    assert torch.equal(part, model.weight) and part.data_ptr() != model.weight.data_ptr()  # a copy
    assert torch.equal(shards.local_part(model.weight, t), t) and torch.equal(
        shards.whole_of(model.weight, part), part
    )
    shards.set_param(model.weight, t)
    assert torch.equal(model.weight, t)
    whole = shards.gathered_state_dict(model)
    assert set(whole) == {"weight", "bias"} and torch.equal(whole["weight"], t)


def test_a_whole_optimiser_state_cut_for_unsharded_parameters_loads_back_unchanged():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    saved = shards.full_tensors_on_main(opt.state_dict())
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    cut = shards.cut_optimizer_state(fresh, saved)
    fresh.load_state_dict(cut)
    for a, b in zip(opt.state.values(), fresh.state.values()):
        assert set(a) == {"step", "exp_avg", "exp_avg_sq"} and all(torch.equal(a[k], b[k]) for k in a)
