"""Which part of a model trains: one parser of `all` / `head` / `top:K` and one freezer."""

from __future__ import annotations

import torch
from torch import nn

from rmtension.model.arch import ArchSpec, base_model, find_arch, get_path


def parse_scope(scope: str, n_layers: int) -> int:
    """Number of trainable top blocks: `all` -> n_layers, `head` -> 0, `top:K` -> K."""
    if scope == "all":
        return n_layers
    if scope == "head":
        return 0
    k = int(scope.split(":", 1)[1])
    if k > n_layers:
        raise ValueError(f"trainable={scope}: the model has only {n_layers} layers")
    return k


def set_trainable(model: nn.Module, scope: str, head: bool = True) -> int:
    """Freeze everything outside `scope`; returns K, the number of trainable top blocks.

    `scope`: `all`, `head` (nothing of the base model) or `top:K` (the top K blocks and what the
    base model holds beside blocks and embeddings, i.e. the final norm). `head`: whether the
    parameters outside the base model (a reward model's score head, a policy's LM head) train
    under `top:K`; a head tied to the embeddings stays frozen either way.
    """
    spec = find_arch(model)
    base = base_model(model)
    layers = get_path(base, spec.layers)
    k = parse_scope(scope, len(layers))
    for p in model.parameters():
        p.requires_grad_(True)
    if scope == "all":
        return k
    if scope == "head":
        frozen = [base]
    else:
        frozen = [get_path(base, e) for e in spec.embeddings] + list(layers[: len(layers) - k])
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    if not head:
        inside = {id(p) for p in base.parameters()}
        for p in model.parameters():
            if id(p) not in inside:
                p.requires_grad_(False)
    return k


def neuron_weights(block: nn.Module, spec: ArchSpec) -> list[tuple[nn.Parameter, int]]:
    """(parameter, neuron dimension) of every weight of `block`'s MLP that belongs to one neuron per
    slice: the output projection's weight (its input side) and, for each `nn.Linear` of the block whose
    output size is the neuron count (BERT's `intermediate.dense`, a gated MLP's gate and up), its
    weight and bias (the output side)."""
    out = get_path(block, spec.mlp_out)
    n = out.weight.shape[spec.neuron_dim]
    found = [(out.weight, spec.neuron_dim)]
    for m in block.modules():
        if isinstance(m, nn.Linear) and m is not out and m.out_features == n:
            found += [(m.weight, 0)] + ([(m.bias, 0)] if m.bias is not None else [])
    if len(found) == 1:
        raise ValueError(f"{spec.family}: no MLP input projection with {n} outputs in the block")
    return found


def restrict_to_neurons(model: nn.Module, k: int, n: int) -> list:
    """Let only MLP neurons 0..n-1 of the top `k` blocks train; returns the gradient hooks' handles.

    Everything is frozen except those neurons' weights (`neuron_weights`): whole tensors keep
    requires_grad, and a hook zeroes the gradient of every other neuron's slice, so with no weight
    decay AdamW leaves those entries exactly as they were (zero gradient: zero first and second
    moments, zero update). The score head is frozen too: what the model learns, those n neurons carry.
    """
    spec = find_arch(model)
    layers = get_path(base_model(model), spec.layers)
    for p in model.parameters():
        p.requires_grad_(False)
    handles = []
    for block in list(layers)[len(layers) - k :]:
        for weight, dim in neuron_weights(block, spec):
            if n > weight.shape[dim]:
                raise ValueError(f"plant_neurons={n}: a block has only {weight.shape[dim]} neurons")
            shape = [1] * weight.dim()
            shape[dim] = weight.shape[dim]
            keep = (torch.arange(weight.shape[dim]) < n).to(weight.dtype).view(shape).to(weight.device)
            weight.requires_grad_(True)
            handles.append(weight.register_hook(lambda g, keep=keep: g * keep))
    return handles
