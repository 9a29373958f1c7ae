"""Which part of a model trains: one parser of `all` / `head` / `top:K` and one freezer."""

from __future__ import annotations

from torch import nn

from rmtension.model.arch import base_model, find_arch, get_path


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
