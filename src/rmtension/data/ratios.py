"""The data-ratio sweep's training sets: mixed RMs of one size whose pairs are a share r helpful.

The size is the matched size n, the smaller single objective's training set, so every point of the
sweep sees as many pairs as each single-objective RM. Each share is a seeded prefix of that
objective's training pairs (`rmtension.data.splits.take`, the training salt), so the sets are
nested: the helpful pairs at r = 0.25 are among those at r = 0.75. The sweep's ends and middle are
RMs the study trains anyway: r = 0 the harmless RM, r = 1 the helpful RM, r = 0.5 the mixed RM
(`ratio_views`); the others train as `mixed_r<r>` with the mixed RM's validation pairs.
"""

from __future__ import annotations

from rmtension.data.splits import take
from rmtension.data.types import Pair
from rmtension.model.kinds import REUSED_RATIOS, ratio_rm

REUSED = REUSED_RATIOS


def ratio_views(ratios: list[float]) -> dict[float, str]:
    """Share -> the RM that stands for it on the frontier."""
    return {r: REUSED[float(r)] if float(r) in REUSED else ratio_rm(r) for r in ratios}


def ratio_split(splits: dict[str, dict[str, list[Pair]]], r: float, seed: int) -> dict[str, list[Pair]]:
    """Training pairs of share r helpful at the matched size, and the mixed RM's validation pairs."""
    helpful, harmless = splits["helpful"]["train"], splits["harmless"]["train"]
    n = min(len(helpful), len(harmless))
    n_help = round(r * n)
    train = take(helpful, n_help, seed, "train") + take(harmless, n - n_help, seed, "train")
    return {"train": train, "val": splits["mixed"]["val"]}


def add_ratio_splits(splits: dict[str, dict[str, list[Pair]]], ratios: list[float], seed: int) -> None:
    """Add the split `mixed_r<r>` of every share that trains its own RM (in place)."""
    for r in ratios:
        if float(r) not in REUSED:
            splits[ratio_rm(r)] = ratio_split(splits, r, seed)
