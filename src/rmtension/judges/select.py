"""Neuron sets as bool masks [layers, neurons]: top p%, set algebra and matched random controls."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

SET_NAMES = ("helpful_top", "harmless_top", "shared", "helpful_only", "harmless_only")
SET_OBJECTIVE = {
    "helpful_top": "helpful",
    "helpful_only": "helpful",
    "harmless_top": "harmless",
    "harmless_only": "harmless",
    "shared": "both",
}
"""Which objective's scoring data a set comes from (for mean ablation)."""


def top_count(total: int, p: float) -> int:
    """Neurons in the top p% of `total` (at least one when p > 0)."""
    if not 0 <= p <= 100:
        raise ValueError(f"p must be a percentage in [0, 100], got {p}")
    return 0 if p == 0 else min(total, max(1, round(total * p / 100)))


def _top_rows(x: torch.Tensor, k: int) -> torch.Tensor:
    """x [R, M] -> bool [R, M]: values >= the k-th largest of their row.

    A few ties at the threshold are all kept. A tied block that would more than double the set
    is left out instead: such scores do not rank those neurons (e.g. rms_change is 0 everywhere
    when training left the MLPs unchanged), so they are not "top".
    """
    if k == 0:
        return torch.zeros_like(x, dtype=torch.bool)
    kth = torch.topk(x, k, dim=1).values[:, -1:]
    keep = x >= kth
    heavy = keep.sum(1, keepdim=True) > 2 * k
    return torch.where(heavy, x > kth, keep)


def top_percent(
    scores: torch.Tensor, p: float, per_layer: bool = False, magnitude: bool = False
) -> torch.Tensor:
    """Top p% of neurons by score (the paper's global-percentile rule, or per layer).

    scores [L, N] -> bool [L, N]. A neuron is kept when its score is at least the k-th largest,
    k = round(p% of the neurons ranked); a few ties at the threshold are all kept, so a set can
    be slightly larger than p%, but a tied block that would more than double it is dropped (a
    constant score selects nothing). `magnitude` ranks by |score|. NaN scores are never selected.
    """
    return top_percent_rows(scores.unsqueeze(0), p, per_layer, magnitude)[0]


def top_percent_rows(
    scores: torch.Tensor, p: float, per_layer: bool = False, magnitude: bool = False
) -> torch.Tensor:
    """`top_percent` of each of R score tensors at once: scores [R, L, N] -> bool [R, L, N]."""
    x = scores.abs() if magnitude else scores
    x = torch.nan_to_num(x.float(), nan=-math.inf)
    R, L, N = x.shape
    rows = x.reshape(R * L, N) if per_layer else x.reshape(R, L * N)
    top = _top_rows(rows, top_count(rows.shape[1], p)) & torch.isfinite(rows)
    return top.reshape(R, L, N)


GATED_MAGNITUDE = frozenset({"mean_act"})
"""Scorers ranked by |score| in gated MLPs, where the sign of act(gate) * up is not identifiable."""


def ranked_by_magnitude(scorer: str, magnitude: Sequence[str], gated: bool = False) -> bool:
    """Whether `scorer` ranks neurons by |score|: configured so (`neurons.magnitude`), or a mean
    activation of a gated MLP (negating up row j and down column j flips neuron j's sign and leaves
    the network unchanged, so only |mean| is a property of the network)."""
    return scorer in magnitude or (gated and scorer in GATED_MAGNITUDE)


def neuron_sets(
    helpful: torch.Tensor, harmless: torch.Tensor, p: float, per_layer: bool = False, magnitude: bool = False
) -> dict[str, torch.Tensor]:
    """The five sets from one model's scores on helpful and on harmless data ([L, N] each)."""
    h = top_percent(helpful, p, per_layer, magnitude)
    s = top_percent(harmless, p, per_layer, magnitude)
    return {
        "helpful_top": h,
        "harmless_top": s,
        "shared": h & s,
        "helpful_only": h & ~s,
        "harmless_only": s & ~h,
    }


def per_layer_counts(mask: torch.Tensor) -> list[int]:
    """bool [L, N] -> neurons per layer."""
    return [int(c) for c in mask.sum(1)]


def stable_seed(*parts: object) -> int:
    """A seed from names and numbers that is the same in every process (unlike hash())."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def matched_random(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random neurons with the same count per layer as `mask` [L, N], uniform over each layer."""
    out = torch.zeros_like(mask, dtype=torch.bool)
    for layer, count in enumerate(per_layer_counts(mask)):
        if count:
            out[layer, torch.randperm(mask.shape[1], generator=generator)[:count]] = True
    return out


def random_controls(mask: torch.Tensor, draws: int, seed: int) -> list[torch.Tensor]:
    """`draws` seeded random sets matched to `mask` per layer (drawn from all neurons of the layer)."""
    g = torch.Generator().manual_seed(seed)
    return [matched_random(mask, g) for _ in range(draws)]


def matched_subset(source: torch.Tensor, like: torch.Tensor, seed: int) -> torch.Tensor:
    """Random neurons of `source` [L, N], as many as `like` has, per layer where `source` allows.

    Layers where `source` has fewer than `like` give all they have; the shortfall is drawn from the
    rest of `source`. Used to compare `shared` with an equally large part of `helpful_only`.
    """
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros_like(source, dtype=torch.bool)
    for layer, (want, have) in enumerate(zip(per_layer_counts(like), per_layer_counts(source))):
        idx = source[layer].nonzero().flatten()
        out[layer, idx[torch.randperm(have, generator=g)[: min(want, have)]]] = True
    short = int(like.sum()) - int(out.sum())
    rest = (source & ~out).flatten().nonzero().flatten()
    if short > 0 and len(rest):
        out.view(-1)[rest[torch.randperm(len(rest), generator=g)[:short]]] = True
    return out


def size_matched(a: torch.Tensor, b: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Equally large versions of sets a and b: the larger one is cut to a random subset the
    size (and, where it can, the per-layer counts) of the smaller; the smaller one is kept."""
    if int(b.sum()) >= int(a.sum()):
        return a, matched_subset(b, a, seed)
    return matched_subset(a, b, seed), b


def mask_to_pairs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """bool [L, N] -> sorted [(layer, index), ...]."""
    return [(int(a), int(b)) for a, b in mask.nonzero().tolist()]


def pairs_to_mask(pairs: Sequence[Sequence[int]], shape: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for layer, index in pairs:
        mask[layer, index] = True
    return mask


def mask_to_json(mask: torch.Tensor) -> dict:
    """Compact JSON form: count, count per layer and the indices in each non-empty layer."""
    return {
        "n": int(mask.sum()),
        "per_layer": per_layer_counts(mask),
        "neurons": {str(i): row.nonzero().flatten().tolist() for i, row in enumerate(mask) if row.any()},
    }


def mask_from_json(d: dict, shape: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for layer, idx in d["neurons"].items():
        mask[int(layer), torch.as_tensor(idx, dtype=torch.long)] = True
    return mask
