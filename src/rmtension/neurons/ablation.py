"""Run many ablations of one reward model on the same test pairs, reusing the clean forward.

Ablating neurons from layer l onwards leaves blocks 0..l-1 untouched, so each batch runs the
clean model once, keeps the residual stream entering every block that some condition starts
at, and runs each condition only from its first ablated layer (`rmtension.model.trunk.cut_trunk`
feeds the kept states in place of the embeddings). Conditions with no neurons reuse the clean
result, and identical conditions run once.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rmtension.run import dist
from rmtension.model.encode import EncodedPairs, batches, collate_pairs
from rmtension.neurons.hooks import ablate, capture_block_inputs, neuron_shape
from rmtension.model.scoring import autocast
from rmtension.model.trunk import cut_trunk


@dataclass(frozen=True)
class Condition:
    """One intervention: zero (values None) or replace (values [L, N]) the neurons in mask [L, N]."""

    mask: torch.Tensor
    values: torch.Tensor | None = None

    @property
    def first_layer(self) -> int | None:
        """First layer with an ablated neuron; None for an empty set."""
        rows = self.mask.any(1).nonzero()
        return int(rows[0]) if len(rows) else None

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.mask.cpu().numpy().tobytes())
        if self.values is not None:
            h.update((self.values.float() * self.mask).cpu().numpy().tobytes())  # only ablated values matter
        return h.hexdigest()


@torch.no_grad()
def run_conditions(
    model: nn.Module,
    enc: EncodedPairs,
    pad_id: int,
    conditions: Mapping[str, Condition],
    batch_size: int = 32,
    bf16: bool = True,
    resume: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Margins r_chosen - r_rejected [P] (in `enc` order) of the clean model and under each condition.

    `resume` starts each condition at its first ablated layer from the clean residual stream
    (identical results, fewer FLOPs); without it every condition runs the whole model. Each
    process runs its shard of the batches; the margins are gathered back in `enc` order.
    """
    shape = neuron_shape(model)
    for key, c in conditions.items():
        if tuple(c.mask.shape) != shape:
            raise ValueError(f"condition {key}: mask shape {tuple(c.mask.shape)} != model neurons {shape}")
    unique: dict[str, Condition] = {}
    alias: dict[str, str | None] = {}
    for key, c in conditions.items():
        if c.first_layer is None:
            alias[key] = None  # nothing ablated: the clean result
            continue
        fp = c.fingerprint()
        unique.setdefault(fp, c)
        alias[key] = fp
    groups: dict[int, list[str]] = defaultdict(list)
    for fp, c in unique.items():
        groups[c.first_layer if resume else 0].append(fp)
    starts = sorted(layer for layer in groups if layer > 0)

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    clean = np.zeros(len(enc))
    margins = {fp: np.zeros(len(enc)) for fp in unique}
    mine: list[int] = []
    try:
        for idx in dist.shard(batches(enc.lengths(), batch_size, None, group_by_length=True)):
            mine += idx
            batch = {k: v.to(device) for k, v in collate_pairs(enc, idx, pad_id).items()}
            with capture_block_inputs(model, starts) as states:
                clean[idx] = _margins(model, batch, bf16)
            for start, fps in sorted(groups.items()):
                _run_group(
                    model,
                    batch,
                    start,
                    states.get(start),
                    [(fp, unique[fp]) for fp in fps],
                    margins,
                    idx,
                    bf16,
                )
    finally:
        model.train(was_training)
    fps = list(margins)
    local = torch.from_numpy(
        np.stack([clean[mine]] + [margins[fp][mine] for fp in fps], axis=1)
    )  # [n, 1 + F]
    both = dist.gather_rows(mine, local, len(enc)).numpy()  # [P, 1 + F]
    clean = both[:, 0].copy()
    margins = {fp: both[:, 1 + j].copy() for j, fp in enumerate(fps)}
    return clean, {key: clean.copy() if fp is None else margins[fp] for key, fp in alias.items()}


def _margins(model: nn.Module, batch: dict[str, torch.Tensor], bf16: bool) -> np.ndarray:
    with autocast(bf16, batch["input_ids"].device):
        r = model(**batch).logits.squeeze(-1).float()
    b = r.shape[0] // 2
    return (r[:b] - r[b:]).double().cpu().numpy()


def _run_group(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    start: int,
    state: torch.Tensor | None,
    items: list[tuple[str, Condition]],
    out: dict[str, np.ndarray],
    idx: list[int],
    bf16: bool,
) -> None:
    """Run conditions that all begin at layer `start`, from the clean residual `state` [2B, T, H]."""
    if start == 0:
        for fp, c in items:
            with ablate(model, c.mask, c.values):
                out[fp][idx] = _margins(model, batch, bf16)
        return
    n_layers = neuron_shape(model)[0]
    with cut_trunk(model, n_layers - start) as inputs:
        for stand_in in inputs:
            stand_in.value = state
        # The cut model numbers its blocks from 0: shift the masks to match.
        for fp, c in items:
            values = None if c.values is None else c.values[start:]
            with ablate(model, c.mask[start:], values):
                out[fp][idx] = _margins(model, batch, bf16)
