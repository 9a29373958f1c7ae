"""One way to get [2B] rewards for a batch of pairs, with or without a cached trunk."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rmtension.encode import EncodedPairs, batches, collate_pairs
from rmtension.scoring import autocast
from rmtension.trunk import TrunkCache, cut_trunk


class PairForward:
    """Computes rewards for pairs of `enc`, through the full model or its top part over a trunk cache.

    Use as a context manager: with a cache, the model is cut to its top K blocks inside the block
    and restored on exit.
    """

    def __init__(self, model: nn.Module, pad_id: int, bf16: bool, cache: TrunkCache | None = None):
        self.model, self.pad_id, self.bf16, self.cache = model, pad_id, bf16, cache
        self.device = next(model.parameters()).device
        self._ctx = None
        self._inputs = None

    def __enter__(self) -> "PairForward":
        if self.cache is not None:
            self._ctx = cut_trunk(self.model, self.cache.k)
            self._inputs = self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
            self._ctx = self._inputs = None

    def __call__(self, enc: EncodedPairs, idx: Sequence[int]) -> torch.Tensor:
        """[2B] float32 rewards: chosen rows first, then rejected."""
        if self.cache is None:
            batch = collate_pairs(enc, idx, self.pad_id)
        else:
            batch, states = self.cache.batch(enc, idx, self.pad_id)
            for stand_in in self._inputs:
                stand_in.value = states.to(self.device)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with autocast(self.bf16, self.device):
            return self.model(**batch).logits.squeeze(-1).float()

    @torch.no_grad()
    def score(self, enc: EncodedPairs, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Rewards of chosen and rejected, each [N], in `enc` order (eval mode)."""
        was_training = self.model.training
        self.model.eval()
        r_c = np.zeros(len(enc))
        r_r = np.zeros(len(enc))
        for idx in batches(enc.lengths(), batch_size, None, group_by_length=True):
            r = self(enc, idx).cpu().numpy()
            r_c[idx], r_r[idx] = r[: len(idx)], r[len(idx) :]
        self.model.train(was_training)
        return r_c, r_r
