"""Which blocks the neuron stage analyses (`judges.layers`), and its sets placed in the whole model.

With `neurons.layers: trained` scores, pair sums and sets cover the blocks the RMs trained, from
`first_layer` up (recorded as `first_layer` in `neurons/sets.json`); the ablation engine hooks the
whole model, so a set over those K blocks becomes a [layers, N] mask with zeros below (`model_mask`).
"""

from __future__ import annotations

import torch

from rmtension.errors import ArtifactError, ConfigError
from rmtension.model.scope import parse_scope
from rmtension.neurons.config import NeuronsConfig


def first_layer(cfg: NeuronsConfig, trainable: str, layers: int) -> int:
    """First block whose neurons are analysed (`NeuronsConfig.layers`)."""
    if cfg.layers == "all":
        return 0
    k = parse_scope(trainable, layers)
    if k == 0:
        raise ConfigError(
            f"neurons.layers: trained, but train.trainable={trainable!r} trains no block; set neurons.layers: all"
        )
    return layers - k


def model_mask(doc: dict, x: torch.Tensor, layers: int) -> torch.Tensor:
    """A [K, N] tensor over the analysed blocks (a set, or values) as [layers, N] of the whole model,
    zeros (False) in the blocks below `doc["first_layer"]`."""
    first = int(doc.get("first_layer", 0))
    if first + x.shape[0] != layers:
        raise ArtifactError(
            f"neurons/sets.json covers blocks {first}..{first + x.shape[0] - 1}; the model has {layers}"
        )
    out = torch.zeros(layers, *x.shape[1:], dtype=x.dtype)
    out[first:] = x
    return out
