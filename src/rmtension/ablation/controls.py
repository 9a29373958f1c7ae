"""Random control sets for an ablated neuron set [L, N], of two kinds (`KINDS`).

- layer:      as many neurons in every layer as the set, drawn uniformly from that layer
              (`rmtension.judges.select.random_controls`);
- magnitude:  as many neurons in every (layer, mean-|activation| decile) bin as the set, drawn
              uniformly from that bin. Deciles are per layer, from |mean activation| over the set's
              objective's scoring data at the read position (`mean_act_read/<objective>`), so a set
              of very active neurons is compared with equally active random ones of the same layers.

Both draw from all neurons of the layer (or bin), the set's own included, as a random set of
that layer would; a bin the set fills entirely gives a control equal to the set there.
"""

from __future__ import annotations

import torch

from rmtension.judges.select import random_controls

KINDS = ("layer", "magnitude")
BINS = 10
"""Magnitude bins per layer (deciles)."""


def magnitude_bins(magnitude: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """[L, N] scores -> [L, N] long: each neuron's bin (0 = smallest) among the N of its layer.

    Neurons are ranked within their layer by |score|, ties by index, and the neuron of rank r
    goes to bin floor(r * bins / N), so every bin holds N / bins neurons (within one).
    """
    x = magnitude.abs().double()
    n = x.shape[1]
    order = torch.sort(x, dim=1, stable=True).indices  # [L, N] neuron index at each rank
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n).expand_as(order).contiguous())
    return rank * bins // n


def magnitude_matched(mask: torch.Tensor, bins: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random neurons with the same count per (layer, bin) as `mask` [L, N], uniform within each bin."""
    out = torch.zeros_like(mask, dtype=torch.bool)
    for layer in range(mask.shape[0]):
        for b in torch.unique(bins[layer][mask[layer]]).tolist():
            members = (bins[layer] == b).nonzero().flatten()
            count = int((mask[layer] & (bins[layer] == b)).sum())
            out[layer, members[torch.randperm(len(members), generator=generator)[:count]]] = True
    return out


def magnitude_controls(
    mask: torch.Tensor, magnitude: torch.Tensor, draws: int, seed: int
) -> list[torch.Tensor]:
    """`draws` seeded random sets matched to `mask` per layer and mean-|activation| decile."""
    g = torch.Generator().manual_seed(seed)
    bins = magnitude_bins(magnitude)
    return [magnitude_matched(mask, bins, g) for _ in range(draws)]


def controls(
    kind: str, mask: torch.Tensor, draws: int, seed: int, magnitude: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """`draws` random control sets of one kind for `mask` (`magnitude` [L, N] for the magnitude kind)."""
    if kind == "layer":
        return random_controls(mask, draws, seed)
    if kind == "magnitude":
        if magnitude is None:
            raise ValueError("magnitude-matched controls need the mean activations")
        return magnitude_controls(mask, magnitude, draws, seed)
    raise ValueError(f"unknown control kind {kind!r}; known: {KINDS}")
