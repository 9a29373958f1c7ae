"""Where things live inside a transformer, detected from the module structure.

A small registry of architecture families. Each entry says where the blocks, the embeddings
and the MLP output projection are; the family is picked by checking which of these paths
exist in the model, never by its name. The MLP output projection's *input* is the MLP
neuron activation for every family: the post-nonlinearity activation for BERT, GPT-2 and
GPT-NeoX, and act(gate) * up for gated MLPs (Llama, SmolLM2).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    family: str
    layers: str
    """Path, from the base model, of the ModuleList of transformer blocks."""
    embeddings: tuple[str, ...]
    """Paths, from the base model, of the modules whose outputs sum into block 0's input.
    The first one is the token embedding."""
    mlp_out: str
    """Path, from a block, of the MLP output projection (down_proj, output.dense, c_proj, ...)."""
    neuron_dim: int
    """Dimension of the output projection's weight that indexes neurons (1 for nn.Linear, 0 for GPT-2's Conv1D)."""
    gated: bool = False


REGISTRY: tuple[ArchSpec, ...] = (
    ArchSpec("llama", "layers", ("embed_tokens",), "mlp.down_proj", 1, gated=True),
    ArchSpec("bert", "encoder.layer", ("embeddings",), "output.dense", 1),
    ArchSpec("gpt2", "h", ("wte", "wpe"), "mlp.c_proj", 0),
    ArchSpec("gpt_neox", "layers", ("embed_in",), "mlp.dense_4h_to_h", 1),
)


def get_path(module: nn.Module, path: str) -> nn.Module:
    for part in path.split(".") if path else []:
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _has(module: nn.Module, path: str) -> bool:
    try:
        get_path(module, path)
        return True
    except (AttributeError, IndexError, TypeError):
        return False


def base_model(model: nn.Module) -> nn.Module:
    """The bare transformer inside a task model (`model.bert`, `model.model`, ...)."""
    return getattr(model, "base_model", model)


def find_arch(model: nn.Module) -> ArchSpec:
    """The registry entry whose paths all exist in `model`."""
    base = base_model(model)
    for spec in REGISTRY:
        if not (_has(base, spec.layers) and all(_has(base, e) for e in spec.embeddings)):
            continue
        blocks = get_path(base, spec.layers)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0 and _has(blocks[0], spec.mlp_out):
            return spec
    raise ValueError(
        f"unsupported architecture {type(model).__name__}: none of "
        f"{[s.family for s in REGISTRY]} matches its module structure"
    )


def blocks(model: nn.Module) -> nn.ModuleList:
    return get_path(base_model(model), find_arch(model).layers)


def mlp_out(model: nn.Module, layer: int) -> nn.Module:
    return get_path(blocks(model)[layer], find_arch(model).mlp_out)


def n_layers(model: nn.Module) -> int:
    return len(blocks(model))


def n_neurons(model: nn.Module) -> int:
    """MLP width (neurons per layer)."""
    spec = find_arch(model)
    return mlp_out(model, 0).weight.shape[spec.neuron_dim]


def neuron_hook_name(layer: int) -> str:
    """Hook names read as paths, the same for every family."""
    return f"layers.{layer}.mlp.act"
