"""Hook points on MLP neurons, named like paths (`layers.3.mlp.act`).

A neuron is `(layer, index)`: column `index` of the MLP output projection's input at block
`layer`. That input is the post-nonlinearity activation for BERT/MiniLM, GPT-2 and GPT-NeoX and
act(gate) * up for gated MLPs (Llama, SmolLM2), so one forward pre-hook on the output projection
reads or rewrites the neurons of every family in `rmtension.model.arch`, which finds the projection
from the module structure, never the model's name.

For gated MLPs `gate_hooks` also reads act(gate) (a forward hook on the gate projection, the
activation applied to its output): the gate's sign is identifiable, the neuron's is not (negating
row j of up and column j of down leaves the network unchanged), so fire rates are read from it.

Hooks exist only inside a context manager that removes them on exit, exception or not:

    with neuron_hooks(model, {"layers.0.mlp.act": fn}):   # fn(acts [B, T, N]) -> None | [B, T, N]
        model(**batch)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from rmtension.model.arch import blocks, find_arch, get_path, mlp_out, n_layers, n_neurons, neuron_hook_name

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]
"""Called with a layer's activations [B, T, N]; returns None (read only) or the replacement [B, T, N]."""

_NAME = re.compile(r"^layers\.(\d+)\.mlp\.act$")


def hook_layer(name: str) -> int:
    """`layers.3.mlp.act` -> 3."""
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"unknown hook point {name!r}: expected 'layers.<i>.mlp.act'")
    return int(m.group(1))


def hook_names(model: nn.Module) -> list[str]:
    return [neuron_hook_name(i) for i in range(n_layers(model))]


def neuron_shape(model: nn.Module) -> tuple[int, int]:
    """(layers, neurons per layer)."""
    return n_layers(model), n_neurons(model)


GATES = {"llama": ("mlp.gate_proj", "mlp.act_fn")}
"""Gated families: paths, from a block, of the gate projection and of the activation applied to it."""


def is_gated(model: nn.Module) -> bool:
    """True for gated MLPs, whose neuron is act(gate) * up."""
    return find_arch(model).gated


def gate_parts(model: nn.Module, layer: int) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """(gate projection, activation function) of block `layer` of a gated model."""
    spec = find_arch(model)
    if spec.family not in GATES:
        raise ValueError(f"{spec.family}: no gated MLP")
    gate, act = GATES[spec.family]
    block = blocks(model)[layer]
    return get_path(block, gate), get_path(block, act)


@contextlib.contextmanager
def gate_hooks(model: nn.Module, fns: Mapping[int, Callable[[torch.Tensor], None]]) -> Iterator[None]:
    """Call fns[layer](act(gate) [B, T, N], detached) at every forward of those layers' gates; always removed.

    Read only: the forward is unchanged. An empty `fns` (e.g. a model without gates) installs nothing.
    """
    handles = []
    try:
        for layer, fn in fns.items():
            gate, act = gate_parts(model, layer)

            def hook(module, args, output, fn=fn, act=act):
                with torch.no_grad():
                    fn(act(output.detach()))

            handles.append(gate.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def neuron_hooks(model: nn.Module, fns: Mapping[str, HookFn]) -> Iterator[None]:
    """Install `fns` as forward pre-hooks on the named layers' MLP output projections; always removed."""
    handles = []
    try:
        for name, fn in fns.items():
            module = mlp_out(model, hook_layer(name))
            handles.append(module.register_forward_pre_hook(_pre_hook(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


def _pre_hook(fn: HookFn):
    def hook(module: nn.Module, args: tuple):
        out = fn(args[0])
        return None if out is None else (out, *args[1:])

    return hook


@contextlib.contextmanager
def capture(
    model: nn.Module, layers: Sequence[int] | None = None, detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Record each named layer's activations [B, T, N] of the latest forward into the yielded dict.

    With `detach=False` the stored tensors stay in the autograd graph (for gradients w.r.t. them).
    """
    layers = range(n_layers(model)) if layers is None else layers
    cache: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> HookFn:
        def fn(acts: torch.Tensor) -> None:
            cache[name] = acts.detach() if detach else acts

        return fn

    with neuron_hooks(model, {neuron_hook_name(i): recorder(neuron_hook_name(i)) for i in layers}):
        yield cache


def intervene(acts: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """acts [B, T, N] with the neurons in `mask` [N] (bool) set to 0, or to `values` [N] if given."""
    mask = mask.to(acts.device)
    if values is None:
        return acts.masked_fill(mask, 0.0)
    return torch.where(mask, values.to(device=acts.device, dtype=acts.dtype), acts)


@contextlib.contextmanager
def ablate(model: nn.Module, mask: torch.Tensor, values: torch.Tensor | None = None) -> Iterator[None]:
    """Zero-ablate (or, with `values` [L, N], mean-ablate) the neurons in `mask` [L, N] (bool).

    Layers with no neuron in `mask` get no hook.
    """
    if mask.shape != neuron_shape(model):
        raise ValueError(f"mask shape {tuple(mask.shape)} != model neurons {neuron_shape(model)}")

    def replacer(layer: int) -> HookFn:
        row, vals = mask[layer], None if values is None else values[layer]
        return lambda acts: intervene(acts, row, vals)

    fns = {neuron_hook_name(i): replacer(i) for i in range(mask.shape[0]) if bool(mask[i].any())}
    with neuron_hooks(model, fns):
        yield


@contextlib.contextmanager
def capture_block_inputs(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Record the residual stream entering each block in `layers` ([B, T, H], detached); always removed."""
    cache: dict[int, torch.Tensor] = {}
    handles = []

    def recorder(layer: int):
        def hook(module, args, kwargs):
            cache[layer] = (args[0] if args else kwargs["hidden_states"]).detach()

        return hook

    try:
        for layer in layers:
            handles.append(blocks(model)[layer].register_forward_pre_hook(recorder(layer), with_kwargs=True))
        yield cache
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters temporarily need no gradient (gradients w.r.t. activations only); flags restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
