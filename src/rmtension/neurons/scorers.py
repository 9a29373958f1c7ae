"""Neuron scores from one streaming pass: running sums only, never per-token activations.

Each batch holds B pairs as 2B rows (chosen rows [0, B), rejected rows [B, 2B), right padding;
see `rmtension.model.encode.collate_pairs`). For every layer the hook reads the activations
[2B, T, N] once and folds them into [N] sums; padding is removed by the attention mask.

Scores, each [layers, neurons] float32 (Tanwar & Atanasova 2026 name the first three
"absolute", "prob" and "change"):

- `mean_act`    mean activation over real tokens of chosen and rejected.
- `fire_rate`   fraction of real tokens with activation > 0.
- `rms_change`  sqrt(mean over real tokens of (trained - base backbone)^2), the base run on the same batch.
- `attribution` per pair, sum over tokens of a * d(r_chosen - r_rejected)/da, averaged over pairs.
                Zeroing a neuron changes the margin by about -attribution (first order), so a large
                positive value marks a neuron the preference relies on. Not in the paper.
- `contrast`    token-mean activation on chosen minus token-mean on rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rmtension.run import dist
from rmtension.model.arch import neuron_hook_name
from rmtension.model.encode import EncodedPairs, batches, collate_pairs
from rmtension.neurons.hooks import frozen, neuron_hooks, neuron_shape
from rmtension.model.scoring import autocast
from rmtension.model.stop import StopForward

SCORERS = ("mean_act", "fire_rate", "rms_change", "attribution", "contrast")
NEEDS_BASE = frozenset({"rms_change"})
NEEDS_GRAD = frozenset({"attribution"})


# ---- pure update functions -------------------------------------------------------------------


def real_tokens(acts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """acts [R, T, N], mask [R, T] (1 = real token) -> [M, N] float32, the M real tokens in row order.

    Padding is dropped before any arithmetic; with chosen rows first, the first M_chosen rows
    belong to chosen sequences.
    """
    return acts[mask.bool()].float()


def fire_counts(real: torch.Tensor) -> torch.Tensor:
    """real [M, N] -> [N] number of tokens with activation > 0."""
    return (real > 0).sum(0, dtype=torch.int32)


def sq_change_sums(real: torch.Tensor, real_base: torch.Tensor) -> torch.Tensor:
    """real, real_base [M, N] (same tokens) -> [N] sum over tokens of (real - real_base)^2."""
    diff = real - real_base
    return (diff * diff).sum(0)


def attribution_sums(real: torch.Tensor, real_grads: torch.Tensor) -> torch.Tensor:
    """real, real_grads [M, N] -> [N] sum over tokens of activation * gradient."""
    return (real * real_grads).sum(0)


@dataclass
class NeuronSums:
    """Running sums over one data set; every tensor is [L, N] float64 on the CPU."""

    act: torch.Tensor
    act_chosen: torch.Tensor
    fire: torch.Tensor
    sq_change: torch.Tensor
    attr: torch.Tensor
    tokens: float = 0.0
    chosen_tokens: float = 0.0
    pairs: int = 0

    @classmethod
    def zeros(cls, layers: int, neurons: int) -> "NeuronSums":
        z = lambda: torch.zeros(layers, neurons, dtype=torch.float64)  # noqa: E731
        return cls(z(), z(), z(), z(), z())

    def add_batch(self, mask: torch.Tensor) -> None:
        """Count the tokens and pairs of a batch: mask [2B, T], chosen rows first."""
        b = mask.shape[0] // 2
        self.tokens += float(mask.sum())
        self.chosen_tokens += float(mask[:b].sum())
        self.pairs += b

    def add_layer(
        self, layer: int, acts: torch.Tensor, mask: torch.Tensor, base: torch.Tensor | None = None
    ) -> None:
        """Fold one layer's activations [2B, T, N] (chosen rows first) into the sums."""
        real = real_tokens(acts, mask)
        n_chosen = int(mask[: mask.shape[0] // 2].sum())
        chosen = real[:n_chosen].sum(0)
        self.act_chosen[layer] += chosen.double().cpu()
        self.act[layer] += (chosen + real[n_chosen:].sum(0)).double().cpu()
        self.fire[layer] += fire_counts(real).double().cpu()
        if base is not None:
            self.sq_change[layer] += sq_change_sums(real, real_tokens(base, mask)).double().cpu()

    def add_attribution(
        self, layer: int, acts: torch.Tensor, grads: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """Fold activations and margin gradients [2B, T, N] of one layer into the attribution sums."""
        self.attr[layer] += attribution_sums(real_tokens(acts, mask), real_tokens(grads, mask)).double().cpu()

    def add_across_processes(self) -> None:
        """Replace every running sum by its sum over processes (each one scored its own shard)."""
        sums = dist.sum_across(
            torch.stack([self.act, self.act_chosen, self.fire, self.sq_change, self.attr])
        )  # [5, L, N]
        self.act, self.act_chosen, self.fire, self.sq_change, self.attr = sums.unbind(0)
        counts = dist.sum_across(
            torch.tensor([self.tokens, self.chosen_tokens, float(self.pairs)], dtype=torch.float64)
        )
        self.tokens, self.chosen_tokens, self.pairs = float(counts[0]), float(counts[1]), int(counts[2])

    def finalize(self, scorers: Sequence[str] = SCORERS) -> dict[str, torch.Tensor]:
        """Scores [L, N] float32 from the sums."""
        tokens = max(self.tokens, 1.0)
        rejected = max(self.tokens - self.chosen_tokens, 1.0)
        out = {
            "mean_act": self.act / tokens,
            "fire_rate": self.fire / tokens,
            "rms_change": (self.sq_change / tokens).sqrt(),
            "attribution": self.attr / max(self.pairs, 1),
            "contrast": self.act_chosen / max(self.chosen_tokens, 1.0)
            - (self.act - self.act_chosen) / rejected,
        }
        return {s: out[s].float() for s in scorers}


@dataclass
class NeuronScores:
    """Scores of one model on one data set."""

    scores: dict[str, torch.Tensor]
    """scorer -> [L, N] float32."""
    n_pairs: int
    n_tokens: int
    meta: dict[str, str] = field(default_factory=dict)


# ---- the streaming pass ----------------------------------------------------------------------


def score_neurons(
    models: Mapping[str, nn.Module],
    enc: EncodedPairs,
    pad_id: int,
    base: nn.Module | None = None,
    scorers: Sequence[str] = SCORERS,
    batch_size: int = 16,
    bf16: bool = True,
) -> dict[str, NeuronScores]:
    """Score every neuron of each model in `models` on the pairs of `enc`, in one pass.

    Each batch runs the base backbone once (only for `rms_change`) and then every model, so
    several reward models share the base forward. Models must share the architecture and the
    tokenizer. Returns model name -> NeuronScores (the same on every process: each scores its
    shard of the length-sorted batches and the running sums are added before the division).
    """
    unknown = set(scorers) - set(SCORERS)
    if unknown:
        raise ValueError(f"unknown scorers {sorted(unknown)}; choose from {SCORERS}")
    if NEEDS_BASE & set(scorers) and base is None:
        raise ValueError("rms_change needs the base backbone (base=...)")
    first = next(iter(models.values()))
    shape = neuron_shape(first)
    for name, m in list(models.items()) + ([("base", base)] if base is not None else []):
        if neuron_shape(m) != shape:
            raise ValueError(f"model {name}: neurons {neuron_shape(m)} != {shape}")
    device = next(first.parameters()).device
    sums = {name: NeuronSums.zeros(*shape) for name in models}
    modes = [(m, m.training) for m in list(models.values()) + ([base] if base is not None else [])]
    for m, _ in modes:
        m.eval()
    try:
        for idx in dist.shard(batches(enc.lengths(), batch_size, None, group_by_length=True)):
            batch = {k: v.to(device) for k, v in collate_pairs(enc, idx, pad_id).items()}
            mask = batch["attention_mask"]
            base_acts = _base_activations(base, batch, bf16, shape[0]) if NEEDS_BASE & set(scorers) else None
            for name, model in models.items():
                sums[name].add_batch(mask.cpu())
                _score_batch(model, batch, sums[name], base_acts, bool(NEEDS_GRAD & set(scorers)), bf16)
    finally:
        for m, was in modes:
            m.train(was)
    for s in sums.values():
        s.add_across_processes()
    return {name: NeuronScores(s.finalize(scorers), s.pairs, int(s.tokens)) for name, s in sums.items()}


@torch.no_grad()
def _base_activations(
    base: nn.Module, batch: dict[str, torch.Tensor], bf16: bool, layers: int
) -> list[torch.Tensor]:
    device = batch["input_ids"].device
    acts: dict[str, torch.Tensor] = {}

    def keep(layer: int):
        def fn(a: torch.Tensor) -> None:
            acts[neuron_hook_name(layer)] = a.detach()
            if layer == layers - 1:
                raise StopForward

        return fn

    with neuron_hooks(base, {neuron_hook_name(i): keep(i) for i in range(layers)}), autocast(bf16, device):
        try:
            base(**batch)
        except StopForward:
            pass
    return [acts[neuron_hook_name(i)] for i in range(layers)]


def _score_batch(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    sums: NeuronSums,
    base_acts: list[torch.Tensor] | None,
    with_grad: bool,
    bf16: bool,
) -> None:
    """One forward (plus one backward w.r.t. activations when `with_grad`) of one model on one batch."""
    mask = batch["attention_mask"]
    layers = sums.act.shape[0]
    kept: list[torch.Tensor | None] = [None] * layers

    def reader(layer: int):
        def fn(acts: torch.Tensor) -> torch.Tensor | None:
            sums.add_layer(layer, acts.detach(), mask, None if base_acts is None else base_acts[layer])
            if not with_grad:
                if layer == layers - 1:  # the rest of the network (last projection, head) is not needed
                    raise StopForward
                return None
            if not acts.requires_grad:  # first hooked layer under frozen parameters: start the graph here
                acts = acts.detach().requires_grad_(True)
            kept[layer] = acts
            return acts

        return fn

    fns = {neuron_hook_name(i): reader(i) for i in range(layers)}
    grad_ctx = torch.enable_grad() if with_grad else torch.no_grad()
    with grad_ctx, frozen(model), neuron_hooks(model, fns), autocast(bf16, mask.device):
        try:
            rewards = model(**batch).logits.squeeze(-1).float()
        except StopForward:
            return
    if with_grad:
        b = rewards.shape[0] // 2
        margin = rewards[:b] - rewards[b:]
        # Rows are independent, so the gradient of the summed margin holds every pair's own gradient.
        grads = torch.autograd.grad(margin.sum(), kept, allow_unused=True)
        for layer, (acts, g) in enumerate(zip(kept, grads)):
            if g is not None:
                sums.add_attribution(layer, acts.detach(), g, mask)
