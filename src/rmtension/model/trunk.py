"""Frozen-trunk caching.

When only the top K blocks (and the head) train, the frozen lower part of the network gives
the same output for a sequence every time. We compute block (L-K)'s input once per sequence,
keep it, and train a model whose embedding returns the cached states and whose block list is
only the top K. The model's own forward still builds masks, positions and pooling, so this
works for every family in the architecture registry. Trunk outputs depend only on the
backbone, so one cache serves every objective and seed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from rmtension.model.arch import base_model, find_arch, get_path, n_layers
from rmtension.model.encode import EncodedPairs, collate, collate_pairs
from rmtension.model.precision import use_bf16
from rmtension.model.scoring import autocast
from rmtension.model.stop import stop_at


class CachedInput(nn.Module):
    """Stands in for the embedding: returns the states set on it (or zeros, for extra embeddings)."""

    def __init__(self, zeros: bool = False):
        super().__init__()
        self.zeros = zeros
        self.value: torch.Tensor | None = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        assert self.value is not None, "CachedInput used without states"
        return torch.zeros_like(self.value) if self.zeros else self.value


def trunk_fingerprint(model: nn.Module, k: int) -> str:
    """Hash of the frozen lower parameters, to check that a cache still fits a model."""
    spec = find_arch(model)
    base = base_model(model)
    layers = get_path(base, spec.layers)
    h = hashlib.sha256()
    mods = [get_path(base, e) for e in spec.embeddings] + list(layers[: len(layers) - k])
    for m in mods:
        for name, p in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes()[:4096])
            h.update(str(float(p.detach().float().sum())).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_trunk(
    model: nn.Module,
    seqs: Sequence[Sequence[int]],
    k: int,
    pad_id: int,
    batch_size: int = 32,
    bf16: bool = True,
    bar=None,
) -> list[torch.Tensor]:
    """Input of block L-k (or the last block's output when k == 0) for each sequence: list of [T_i, H].

    `bar`: a progress bar (tqdm) advanced by the sequences of each batch.
    """
    n = n_layers(model)
    cut = n - k
    stop = stop_at(model, cut) if cut < n else stop_at(model, n - 1, output=True)
    was_training = model.training
    model.eval()
    out: list[torch.Tensor | None] = [None] * len(seqs)
    device = next(model.parameters()).device
    store = torch.bfloat16 if use_bf16(bf16, device) else torch.float32
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    try:
        with stop as run:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = collate([seqs[i] for i in idx], pad_id)
                with autocast(bf16, device):
                    h = run(**{kk: v.to(device) for kk, v in batch.items()})
                h = h.to(store).cpu()
                for row, i in enumerate(idx):
                    out[i] = h[row, : len(seqs[i])].clone()
                if bar is not None:
                    bar.update(len(idx))
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


class TrunkCache:
    """Cached trunk states for the chosen and rejected sequences of many pair sets, keyed by pair id."""

    def __init__(self, k: int, fingerprint: str):
        self.k = k
        self.fingerprint = fingerprint
        self.states: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(
        self,
        model: nn.Module,
        enc: EncodedPairs,
        pad_id: int,
        batch_size: int = 32,
        bf16: bool = True,
        bar=None,
    ) -> None:
        """Cache the pairs of `enc` not cached yet; `bar` advances by two sequences per pair."""
        todo = [i for i, pid in enumerate(enc.pair_ids) if pid not in self.states]
        if not todo:
            return
        sub = enc.subset(todo)
        states = compute_trunk(model, sub.chosen + sub.rejected, self.k, pad_id, batch_size, bf16, bar)
        n = len(sub)
        for j, pid in enumerate(sub.pair_ids):
            self.states[pid] = (states[j], states[n + j])

    def batch(
        self, enc: EncodedPairs, idx: Sequence[int], pad_id: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Token batch (for masks and pooling) and padded states [2B, T, H], chosen rows first."""
        tokens = collate_pairs(enc, idx, pad_id)
        seqs = [self.states[enc.pair_ids[i]][0] for i in idx] + [self.states[enc.pair_ids[i]][1] for i in idx]
        lengths = [len(enc.chosen[i]) for i in idx] + [len(enc.rejected[i]) for i in idx]
        if any(s.shape[0] != n for s, n in zip(seqs, lengths)):
            raise ValueError(
                "trunk cache does not match these token ids (pair ids reused for different pairs?)"
            )
        states = pad_sequence(seqs, batch_first=True)  # [2B, T, H], zeros after each row's length
        width = tokens["input_ids"].shape[1]
        if states.shape[1] < width:
            states = torch.nn.functional.pad(states, (0, 0, 0, width - states.shape[1]))
        return tokens, states


@contextlib.contextmanager
def cut_trunk(model: nn.Module, k: int) -> Iterator[list[CachedInput]]:
    """Temporarily turn `model` into its top-k part fed by CachedInput modules; always restored."""
    spec = find_arch(model)
    base = base_model(model)
    parent_path, _, name = spec.layers.rpartition(".")
    parent = get_path(base, parent_path)
    full_layers = getattr(parent, name)
    originals = []
    inputs = []
    for j, emb_path in enumerate(spec.embeddings):
        p_path, _, attr = emb_path.rpartition(".")
        owner = get_path(base, p_path)
        originals.append((owner, attr, getattr(owner, attr)))
        stand_in = CachedInput(zeros=j > 0)
        inputs.append(stand_in)
        setattr(owner, attr, stand_in)
    setattr(parent, name, nn.ModuleList(list(full_layers)[len(full_layers) - k :]))
    try:
        yield inputs
    finally:
        setattr(parent, name, full_layers)
        for owner, attr, module in originals:
            setattr(owner, attr, module)
