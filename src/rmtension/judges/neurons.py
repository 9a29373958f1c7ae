"""Neuron scores from one streaming pass: running sums only, never per-token activations.

Each batch holds B pairs as 2B rows (chosen rows [0, B), rejected rows [B, 2B), right padding;
see `rmtension.model.encode.collate_pairs`). For every layer the hook reads the activations
[2B, T, N] once and folds them into [N] sums; padding is removed by the attention mask.

Scores, each [layers, neurons] float32 (Tanwar & Atanasova 2026 name the first three
"absolute", "prob" and "change"):

- `mean_act`    mean activation over real tokens of chosen and rejected.
- `fire_rate`   fraction of real tokens with activation > 0; for gated MLPs, with act(gate) > 0.
- `rms_change`  sqrt(mean over real tokens of (trained - base backbone)^2), the base run on the same batch.
- `attribution` per pair, sum over tokens of a * d(r_chosen - r_rejected)/da, averaged over pairs.
                Zeroing a neuron changes the margin by about -attribution (first order), so a large
                positive value marks a neuron the preference relies on. Not in the paper.
- `contrast`    token-mean activation on chosen minus token-mean on rejected.

Where the head reads: a reward model's score reads one position of the last block (position 0 for
BERT-style heads, `rmtension.model.readout`; the last real token otherwise, `read_positions`). Beside
the token scores, every pass records `mean_act_read` (the mean activation at that position over the
chosen and rejected rows) and, with attribution, `attribution_read` (a * d(margin)/da at that position,
averaged over pairs). Mean ablation replaces a neuron by `mean_act_read`, never by its token mean: a
token mean written into the read position is an off-distribution value, not the neuron's removal.

Gated MLPs (Llama, SmolLM2: down(act(gate) * up)): the sign of a neuron's activation act(gate) * up
is not identifiable (negating row j of up and column j of down leaves the network unchanged), so
there fire_rate reads act(gate), whose sign is, and mean_act is ranked by |mean|
(`rmtension.judges.select.ranked_by_magnitude`); the stored mean_act keeps its sign (mean ablation
uses it). Attribution (a * da-gradient) and |contrast| do not change under the flip.

With `per_pair=True` every pair's own sums are kept too (`rmtension.judges.pairsums`), so the
overlap nulls re-split the pairs by re-aggregating, without another forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rmtension.run import dist
from rmtension.model.arch import neuron_hook_name
from rmtension.model.readout import reads_first
from rmtension.model.encode import EncodedPairs, batches, collate_pairs
from rmtension.judges.hooks import frozen, gate_hooks, is_gated, neuron_hooks, neuron_shape
from rmtension.judges.pairsums import STATS, PairSums, scores_from_sums, stats_for
from rmtension.model.scoring import autocast
from rmtension.model.stop import StopForward
from rmtension.model.trunk import TrunkCache, cut_trunk, trunk_fingerprint

SCORERS = ("mean_act", "fire_rate", "rms_change", "attribution", "contrast")
NEEDS_BASE = frozenset({"rms_change"})
NEEDS_GRAD = frozenset({"attribution"})
BASE_SCORERS = ("mean_act", "fire_rate", "contrast")
"""Scorers of the base backbone itself (`score_base`): its head is untrained, so attribution is
meaningless, and its rms_change against itself is 0."""


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


def read_positions(mask: torch.Tensor, first: bool) -> torch.Tensor:
    """mask [R, T] (1 = real token, right padding) -> [R] long: the position the score head reads in
    each row, 0 when it reads the first position (`first`), else the row's last real token."""
    if first:
        return torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
    return (mask.long().sum(1) - 1).clamp(min=0)


def at_positions(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [R, T, N], positions [R] -> [R, N] float32: each row's value at its position."""
    rows = torch.arange(x.shape[0], device=x.device)
    return x[rows, positions.to(x.device)].float()


def row_sums(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [R, T, N], mask [R, T] (1 = real token) -> [R, N] float32: each row's sum over its real tokens.

    Padding is replaced by 0 before the sum (never multiplied, so a non-finite padded value cannot leak).
    """
    return torch.where(mask.bool().unsqueeze(-1), x.float(), 0.0).sum(1)


@dataclass
class NeuronSums:
    """Running sums over one data set; every tensor is [L, N] float64 on the CPU.

    With `per_pair` (`zeros(..., pairs=P)`) each pair's own contributions are kept as well
    (`rmtension.judges.pairsums`); `add_batch` then takes the batch's pair positions.
    """

    act: torch.Tensor
    act_chosen: torch.Tensor
    fire: torch.Tensor
    sq_change: torch.Tensor
    attr: torch.Tensor
    tokens: float = 0.0
    chosen_tokens: float = 0.0
    pairs: int = 0
    per_pair: PairSums | None = None
    batch_pairs: torch.Tensor | None = None
    """[B] positions (in 0..P-1) of the current batch's pairs; per-pair mode only."""
    act_read: torch.Tensor | None = None
    """[L, N] sum over rows of the activation at the position the head reads."""
    attr_read: torch.Tensor | None = None
    """[L, N] sum over rows of activation * margin gradient at the read position."""
    read_rows: float = 0.0
    read_at: torch.Tensor | None = None
    """[2B] the read position of each row of the current batch (`read_positions`); None: not recorded."""

    @classmethod
    def zeros(
        cls, layers: int, neurons: int, pairs: int | None = None, stats: Sequence[str] = STATS
    ) -> "NeuronSums":
        z = lambda: torch.zeros(layers, neurons, dtype=torch.float64)  # noqa: E731
        per_pair = None if pairs is None else PairSums.zeros(pairs, layers, neurons, stats)
        return cls(z(), z(), z(), z(), z(), per_pair=per_pair, act_read=z(), attr_read=z())

    def add_batch(self, mask: torch.Tensor, pair_idx: Sequence[int] | None = None) -> None:
        """Count the tokens and pairs of a batch: mask [2B, T], chosen rows first; pair_idx [B] their positions."""
        b = mask.shape[0] // 2
        self.tokens += float(mask.sum())
        self.chosen_tokens += float(mask[:b].sum())
        self.pairs += b
        if self.per_pair is not None:
            if pair_idx is None or len(pair_idx) != b:
                raise ValueError("per-pair sums need the positions of the batch's pairs")
            self.batch_pairs = torch.as_tensor(list(pair_idx), dtype=torch.long)
            per_row = mask.sum(1).double().cpu()
            self.per_pair.chosen_tokens[self.batch_pairs] += per_row[:b]
            self.per_pair.rejected_tokens[self.batch_pairs] += per_row[b:]

    def _fold(self, name: str, layer: int, rows: torch.Tensor) -> None:
        """rows [2B, N]: per-row sums of one statistic of one layer."""
        b = rows.shape[0] // 2
        rows = rows.double().cpu()
        total = {"act": self.act, "fire": self.fire, "sq_change": self.sq_change, "attr": self.attr}[name]
        total[layer] += rows.sum(0)
        if name == "act":
            self.act_chosen[layer] += rows[:b].sum(0)
        pp = self.per_pair
        if pp is None:
            return
        if name == "act":
            for stat, part in (("act_chosen", rows[:b]), ("act_rejected", rows[b:])):
                if stat in pp.stats:
                    pp.stats[stat][self.batch_pairs, layer] += part
        elif name in pp.stats:
            pp.stats[name][self.batch_pairs, layer] += rows[:b] + rows[b:]

    def add_layer(
        self,
        layer: int,
        acts: torch.Tensor,
        mask: torch.Tensor,
        base: torch.Tensor | None = None,
        fire_from: torch.Tensor | None = None,
    ) -> None:
        """Fold one layer's activations [2B, T, N] (chosen rows first) into the sums.

        `fire_from` [2B, T, N]: what "fires" is read from (act(gate) for gated MLPs); default `acts`.
        """
        self._fold("act", layer, row_sums(acts, mask))
        if self.read_at is not None:
            self.act_read[layer] += at_positions(acts, self.read_at).double().sum(0).cpu()
            if layer == 0:
                self.read_rows += float(len(self.read_at))
        fires = (fire_from if fire_from is not None else acts) > 0
        self._fold("fire", layer, row_sums(fires, mask))
        if base is not None:
            diff = acts.float() - base.float()
            self._fold("sq_change", layer, row_sums(diff * diff, mask))

    def add_attribution(
        self, layer: int, acts: torch.Tensor, grads: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """Fold activations and margin gradients [2B, T, N] of one layer into the attribution sums."""
        self._fold("attr", layer, row_sums(acts.float() * grads.float(), mask))
        if self.read_at is not None:
            self.attr_read[layer] += (
                at_positions(acts.float() * grads.float(), self.read_at).double().sum(0).cpu()
            )

    def add_across_processes(self) -> None:
        """Replace every running sum by its sum over processes (each one scored its own shard)."""
        sums = dist.sum_across(
            torch.stack([self.act, self.act_chosen, self.fire, self.sq_change, self.attr])
        )  # [5, L, N]
        self.act, self.act_chosen, self.fire, self.sq_change, self.attr = sums.unbind(0)
        self.act_read, self.attr_read = dist.sum_across(torch.stack([self.act_read, self.attr_read])).unbind(
            0
        )
        counts = dist.sum_across(
            torch.tensor(
                [self.tokens, self.chosen_tokens, float(self.pairs), self.read_rows], dtype=torch.float64
            )
        )
        self.tokens, self.chosen_tokens, self.pairs = float(counts[0]), float(counts[1]), int(counts[2])
        self.read_rows = float(counts[3])
        pp = self.per_pair
        if pp is not None:  # each process filled its own pairs' rows; the others are 0
            pp.stats = {s: dist.sum_across(v) for s, v in pp.stats.items()}
            pp.chosen_tokens = dist.sum_across(pp.chosen_tokens)
            pp.rejected_tokens = dist.sum_across(pp.rejected_tokens)

    def finalize(self, scorers: Sequence[str] = SCORERS) -> dict[str, torch.Tensor]:
        """Scores [L, N] float32 from the sums."""
        sums = {
            "act_chosen": self.act_chosen,
            "act_rejected": self.act - self.act_chosen,
            "fire": self.fire,
            "sq_change": self.sq_change,
            "attr": self.attr,
        }
        out = scores_from_sums(
            sums, self.chosen_tokens, self.tokens - self.chosen_tokens, self.pairs, scorers
        )
        if self.read_rows > 0:  # where the head reads (module docstring)
            if "mean_act" in scorers:
                out["mean_act_read"] = self.act_read / self.read_rows
            if "attribution" in scorers:
                out["attribution_read"] = self.attr_read / max(1, self.pairs)
        return {s: v.float() for s, v in out.items()}


@dataclass
class NeuronScores:
    """Scores of one model on one data set."""

    scores: dict[str, torch.Tensor]
    """scorer -> [L, N] float32."""
    n_pairs: int
    n_tokens: int
    meta: dict[str, str] = field(default_factory=dict)
    pair_sums: PairSums | None = None
    """Each pair's own sums (pairs in `enc` order), when scored with `per_pair=True`."""


# ---- the streaming pass ----------------------------------------------------------------------


def score_neurons(
    models: Mapping[str, nn.Module],
    enc: EncodedPairs,
    pad_id: int,
    base: nn.Module | None = None,
    scorers: Sequence[str] = SCORERS,
    batch_size: int = 16,
    bf16: bool = True,
    per_pair: bool = False,
    score_base: bool = False,
    cache: TrunkCache | None = None,
) -> dict[str, NeuronScores]:
    """Score every neuron of each model in `models` on the pairs of `enc`, in one pass.

    `cache`: a trunk cache holding every pair of `enc`, whose frozen blocks every model (and the
    base) shares: then each model runs cut to its top `cache.k` blocks over the cached states, and
    the scores cover those blocks only ([k, N]).

    Each batch runs the base backbone once (for `rms_change`, or for `score_base`) and then every
    model, so several reward models share the base forward. Models must share the architecture and
    the tokenizer. Returns model name -> NeuronScores (the same on every process: each scores its
    shard of the length-sorted batches and the running sums are added before the division).

    `per_pair`: also keep each pair's sums (`NeuronScores.pair_sums`, for the overlap nulls).
    `score_base`: also score the base backbone itself, as model "base", with the scorers that mean
    something for it (`BASE_SCORERS`: its score head is untrained and its rms_change is 0).
    Gated MLPs (meta "gated": "true"): fire_rate counts act(gate) > 0, see `rmtension.judges.hooks`.
    """
    unknown = set(scorers) - set(SCORERS)
    if unknown:
        raise ValueError(f"unknown scorers {sorted(unknown)}; choose from {SCORERS}")
    if (NEEDS_BASE & set(scorers) or score_base) and base is None:
        raise ValueError("rms_change and score_base need the base backbone (base=...)")
    if score_base and "base" in models:
        raise ValueError("a model named 'base' would clash with the scored base backbone")
    everyone = list(models.values()) + ([base] if base is not None else [])
    with contextlib.ExitStack() as cut:
        inputs = []
        if cache is not None:
            for m in everyone:
                if trunk_fingerprint(m, cache.k) != cache.fingerprint:
                    raise ValueError("score_neurons: a model's frozen blocks differ from the trunk cache's")
                inputs += cut.enter_context(cut_trunk(m, cache.k))
        return _score_all(
            models, enc, pad_id, base, scorers, batch_size, bf16, per_pair, score_base, cache, inputs
        )


def _score_all(models, enc, pad_id, base, scorers, batch_size, bf16, per_pair, score_base, cache, inputs):
    """`score_neurons` on models already cut to their top blocks when `cache` is given (their stand-ins:
    `inputs`)."""
    first = next(iter(models.values()))
    shape = neuron_shape(first)
    for name, m in list(models.items()) + ([("base", base)] if base is not None else []):
        if neuron_shape(m) != shape:
            raise ValueError(f"model {name}: neurons {neuron_shape(m)} != {shape}")
    gated = is_gated(first)
    reads_at_first = reads_first(first)
    device = next(first.parameters()).device
    n_pairs = len(enc) if per_pair else None
    sums = {name: NeuronSums.zeros(*shape, n_pairs, stats_for(scorers)) for name in models}
    base_scorers = [s for s in scorers if s in BASE_SCORERS]
    if score_base:
        sums["base"] = NeuronSums.zeros(*shape, n_pairs, stats_for(base_scorers))
    need_base = bool(NEEDS_BASE & set(scorers)) or score_base
    modes = [(m, m.training) for m in list(models.values()) + ([base] if base is not None else [])]
    for m, _ in modes:
        m.eval()
    try:
        for idx in dist.shard(batches(enc.lengths(), batch_size, None, group_by_length=True)):
            if cache is None:
                tokens = collate_pairs(enc, idx, pad_id)
            else:
                tokens, states = cache.batch(enc, idx, pad_id)
                for stand_in in inputs:
                    stand_in.value = states.to(device)
            batch = {k: v.to(device) for k, v in tokens.items()}
            mask = batch["attention_mask"]
            for s in sums.values():
                s.read_at = read_positions(mask, reads_at_first)
            base_acts, base_gates = (
                _base_activations(base, batch, bf16, shape[0]) if need_base else (None, None)
            )
            if score_base:
                sums["base"].add_batch(mask.cpu(), idx)
                for layer, a in enumerate(base_acts):
                    sums["base"].add_layer(
                        layer, a, mask, fire_from=None if base_gates is None else base_gates[layer]
                    )
            for name, model in models.items():
                sums[name].add_batch(mask.cpu(), idx)
                _score_batch(
                    model,
                    batch,
                    sums[name],
                    base_acts if NEEDS_BASE & set(scorers) else None,
                    bool(NEEDS_GRAD & set(scorers)),
                    bf16,
                )
    finally:
        for m, was in modes:
            m.train(was)
    meta = {"gated": str(gated).lower()}
    out = {}
    for name, s in sums.items():
        s.add_across_processes()
        which = base_scorers if name == "base" and score_base else scorers
        out[name] = NeuronScores(s.finalize(which), s.pairs, int(s.tokens), dict(meta), s.per_pair)
    return out


@torch.no_grad()
def _base_activations(
    base: nn.Module, batch: dict[str, torch.Tensor], bf16: bool, layers: int
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The base backbone's neuron activations per layer [2B, T, N], and act(gate) per layer for gated MLPs."""
    device = batch["input_ids"].device
    acts: dict[int, torch.Tensor] = {}
    gates: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def fn(a: torch.Tensor) -> None:
            acts[layer] = a.detach()
            if layer == layers - 1:
                raise StopForward

        return fn

    gated = is_gated(base)
    gate_fns = {i: (lambda i: lambda g: gates.__setitem__(i, g))(i) for i in range(layers)} if gated else {}
    with (
        neuron_hooks(base, {neuron_hook_name(i): keep(i) for i in range(layers)}),
        gate_hooks(base, gate_fns),
        autocast(bf16, device),
    ):
        try:
            base(**batch)
        except StopForward:
            pass
    return [acts[i] for i in range(layers)], [gates[i] for i in range(layers)] if gated else None


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
    gates: dict[int, torch.Tensor] = {}  # act(gate) of gated MLPs: the gate projection runs first

    def reader(layer: int):
        def fn(acts: torch.Tensor) -> torch.Tensor | None:
            base = None if base_acts is None else base_acts[layer]
            sums.add_layer(layer, acts.detach(), mask, base, gates.pop(layer, None))
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
    gate_fns = (
        {i: (lambda i: lambda g: gates.__setitem__(i, g))(i) for i in range(layers)}
        if is_gated(model)
        else {}
    )
    grad_ctx = torch.enable_grad() if with_grad else torch.no_grad()
    with (
        grad_ctx,
        frozen(model),
        neuron_hooks(model, fns),
        gate_hooks(model, gate_fns),
        autocast(bf16, mask.device),
    ):
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
