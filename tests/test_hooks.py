"""Neuron hooks on tiny models of every family: what they read, what ablation does, and cleanup."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import FAMILIES, tiny_reward_model

from rmtension.model.arch import find_arch, get_path, mlp_out, n_layers
from rmtension.model.encode import collate
from rmtension.judges.hooks import (
    ablate,
    capture,
    capture_block_inputs,
    frozen,
    hook_layer,
    hook_names,
    intervene,
    neuron_hooks,
    neuron_shape,
)

SEQS = [[5, 9, 33, 70, 101, 7, 12], [40, 41, 42], [200, 13, 77, 8, 9]]


def _batch() -> dict[str, torch.Tensor]:
    return collate(SEQS, pad_id=0)  # right padding: rows 1 and 2 are padded


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _some_neurons(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(neuron_shape(model), generator=g) < 0.2


def _all_hooks(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _zero_columns(model, mask: torch.Tensor, values: torch.Tensor | None = None):
    """A copy of `model` with the output projection's weight zeroed along the neuron dimension.

    With `values`, the removed contribution W[:, j] * v_j is moved into the bias instead, which is
    what replacing activation j by v_j does.
    """
    edited = copy.deepcopy(model)
    dim = find_arch(model).neuron_dim
    with torch.no_grad():
        for layer in range(mask.shape[0]):
            proj = mlp_out(edited, layer)
            idx = mask[layer].nonzero().flatten()
            w = proj.weight
            cols = w.index_select(dim, idx)  # Linear: [out, k]; Conv1D: [k, out]
            if values is not None:
                v = values[layer, idx]
                shift = cols @ v if dim == 1 else v @ cols
                if proj.bias is None:
                    proj.bias = torch.nn.Parameter(torch.zeros(shift.shape[0]))
                proj.bias += shift
            w.index_fill_(dim, idx, 0.0)
    return edited


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_ablation_equals_zeroed_weight_columns(family):
    model = tiny_reward_model(family)
    mask = _some_neurons(model)
    batch = _batch()
    with ablate(model, mask):
        hooked = _logits(model, batch)
    expected = _logits(_zero_columns(model, mask), batch)
    assert not torch.allclose(hooked, _logits(model, batch), atol=1e-4), "ablation should change the output"
    torch.testing.assert_close(hooked, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_ablation_equals_bias_shift(family):
    model = tiny_reward_model(family)
    mask = _some_neurons(model, seed=1)
    values = torch.randn(neuron_shape(model), generator=torch.Generator().manual_seed(2))
    batch = _batch()
    with ablate(model, mask, values):
        hooked = _logits(model, batch)
    torch.testing.assert_close(
        hooked, _logits(_zero_columns(model, mask, values), batch), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_model_unchanged_after_context(family):
    model = tiny_reward_model(family)
    batch = _batch()
    before = _logits(model, batch)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    with (
        ablate(model, _some_neurons(model)),
        capture(model) as acts,
        capture_block_inputs(model, [1]),
        frozen(model),
    ):
        _logits(model, batch)
        assert _all_hooks(model) > 0
    assert acts and _all_hooks(model) == 0
    torch.testing.assert_close(_logits(model, batch), before, atol=0, rtol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags


def test_hooks_removed_on_exception():
    model = tiny_reward_model("llama")
    with pytest.raises(RuntimeError, match="boom"):
        with ablate(model, _some_neurons(model)), capture(model):
            raise RuntimeError("boom")
    assert _all_hooks(model) == 0


def _reference_activations(model, family: str, batch) -> list[torch.Tensor]:
    """The neuron activations read from the family's own modules (the slow, family-specific way)."""
    out: list[torch.Tensor] = []
    handles = []
    for block in get_path(model.base_model, find_arch(model).layers):
        if family == "bert":
            handles.append(block.intermediate.register_forward_hook(lambda m, a, o: out.append(o)))
        elif family == "llama":
            mlp = block.mlp
            handles.append(
                mlp.register_forward_hook(
                    lambda m, a, o: out.append(m.act_fn(m.gate_proj(a[0])) * m.up_proj(a[0]))
                )
            )
        elif family == "gpt2":
            handles.append(
                block.mlp.c_fc.register_forward_hook(lambda m, a, o, blk=block: out.append(blk.mlp.act(o)))
            )
        else:
            handles.append(
                block.mlp.dense_h_to_4h.register_forward_hook(
                    lambda m, a, o, blk=block: out.append(blk.mlp.act(o))
                )
            )
    try:
        _logits(model, batch)
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_reads_post_nonlinearity(family):
    model = tiny_reward_model(family)
    batch = _batch()
    with capture(model) as acts:
        _logits(model, batch)
    ref = _reference_activations(model, family, batch)
    assert list(acts) == hook_names(model) and len(ref) == n_layers(model)
    for i, name in enumerate(hook_names(model)):
        assert acts[name].shape == (3, 7, 64)
        torch.testing.assert_close(acts[name], ref[i], atol=1e-6, rtol=1e-6)


def test_intervene_by_hand():
    acts = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    mask = torch.tensor([False, True, False, True])
    assert intervene(acts, mask).tolist() == [[[0, 0, 2, 0], [4, 0, 6, 0], [8, 0, 10, 0]]]
    vals = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    assert intervene(acts, mask, vals).tolist() == [[[0, -2, 2, -4], [4, -2, 6, -4], [8, -2, 10, -4]]]


def test_hook_names_read_as_paths():
    assert hook_layer("layers.3.mlp.act") == 3
    with pytest.raises(ValueError, match="unknown hook point"):
        hook_layer("blocks.3.mlp.hook_post")
    model = tiny_reward_model("bert")
    with pytest.raises(ValueError, match="mask shape"):
        with ablate(model, torch.zeros(3, 64, dtype=torch.bool)):
            pass
    # an empty mask installs nothing
    with ablate(model, torch.zeros(neuron_shape(model), dtype=torch.bool)), neuron_hooks(model, {}):
        assert _all_hooks(model) == 0
