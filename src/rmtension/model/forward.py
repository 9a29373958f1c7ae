"""One way to get [2B] rewards for a batch of pairs, with or without a cached trunk."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rmtension.run import dist, shards
from rmtension.model.attention import fused_attention
from rmtension.model.encode import EncodedPairs, batches, collate_pairs
from rmtension.model.readout import read_first
from rmtension.model.scoring import autocast
from rmtension.model.trunk import TrunkCache, cut_trunk


class PairForward:
    """Computes rewards for pairs of `enc`, through the full model or its top part over a trunk cache.

    Use as a context manager: with a cache, the model is cut to its top K blocks inside the block
    and restored on exit. A model whose head reads one position of the last block runs that block
    at that position only (`rmtension.model.readout`, off with `read_first=False`): the rewards and
    gradients are the full model's. The other blocks' self-attention runs with one fused QKV
    projection, and under CPU autocast in fp32 (`rmtension.model.attention`; not on sharded weights).

    `runner`: what training forwards call, normally the model wrapped for data parallelism
    (`Accelerator.prepare`), whose backward syncs gradients. The cut is made on `model`, inside
    the wrapper, so the wrapped forward runs the top blocks and DDP syncs the same trainable
    parameters it was built with. None: `model` itself. `score` always calls `model`.
    """

    def __init__(
        self,
        model: nn.Module,
        pad_id: int,
        bf16: bool,
        cache: TrunkCache | None = None,
        runner: nn.Module | None = None,
        read_first: bool = True,
    ):
        self.model, self.pad_id, self.bf16, self.cache = model, pad_id, bf16, cache
        self.read_first = read_first
        self.runner = model if runner is None else runner
        self.device = next(model.parameters()).device
        self._stack: contextlib.ExitStack | None = None
        self._inputs = None

    def __enter__(self) -> "PairForward":
        with contextlib.ExitStack() as stack:  # a failed enter undoes the ones before it
            if self.cache is not None:
                self._inputs = stack.enter_context(cut_trunk(self.model, self.cache.k))
            stack.enter_context(read_first(self.model, self.read_first))
            # After read_first, which patches the last block. Not on sharded weights: FSDP and ZeRO-3
            # gather a module's weights when it is called, and the fused projection reads them without a call.
            stack.enter_context(fused_attention(self.model, not shards.is_sharded(self.model)))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        if self._stack is not None:
            self._stack.__exit__(*exc)
            self._stack = self._inputs = None

    def __call__(self, enc: EncodedPairs, idx: Sequence[int]) -> torch.Tensor:
        """[2B] float32 rewards from `runner`: chosen rows first, then rejected."""
        return self._rewards(self.runner, enc, idx)

    def plain(self, enc: EncodedPairs, idx: Sequence[int]) -> torch.Tensor:
        """[2B] rewards from `model` itself, outside any data-parallel wrapper (its hooks do not fire)."""
        return self._rewards(self.model, enc, idx)

    def _rewards(self, module: nn.Module, enc: EncodedPairs, idx: Sequence[int]) -> torch.Tensor:
        if self.cache is None:
            batch = collate_pairs(enc, idx, self.pad_id)
        else:
            batch, states = self.cache.batch(enc, idx, self.pad_id)
            for stand_in in self._inputs:
                stand_in.value = states.to(self.device)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with autocast(self.bf16, self.device):
            return module(**batch).logits.squeeze(-1).float()

    @torch.no_grad()
    def score(self, enc: EncodedPairs, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Rewards of chosen and rejected, each [N] ([N, K] for a model with K heads), in `enc` order
        (eval mode), on every process.

        Each process scores its shard of the length-sorted batches, so every pair sees the same
        batch (and padding) as in a single-process run; the rows are gathered back in order.
        With sharded weights (FSDP, ZeRO-3) every forward is a collective, so a process with fewer
        batches runs its first batch again, unrecorded, until all have run the same number.
        """
        was_training = self.model.training
        self.model.eval()
        plan = batches(enc.lengths(), batch_size, None, group_by_length=True)
        own = dist.shard(plan)
        rounds = -(-len(plan) // dist.world_size()) if shards.is_sharded(self.model) else len(own)
        k = int(getattr(self.model.config, "num_labels", 1) or 1)  # heads: [2B] rewards, or [2B, K]
        mine: list[int] = []
        rows = [torch.zeros(0, 2 * k, dtype=torch.float64)]
        for j in range(rounds):
            if j >= len(own):
                self._rewards(self.model, enc, plan[0])
                continue
            idx = own[j]
            r = self._rewards(self.model, enc, idx).double().cpu().reshape(2 * len(idx), k)
            rows.append(torch.cat([r[: len(idx)], r[len(idx) :]], dim=1))  # [B, 2K]: chosen, rejected
            mine += idx
        self.model.train(was_training)
        both = dist.gather_rows(mine, torch.cat(rows), len(enc)).numpy()  # [N, 2K]
        if k == 1:
            return both[:, 0].copy(), both[:, 1].copy()
        return both[:, :k].copy(), both[:, k:].copy()
