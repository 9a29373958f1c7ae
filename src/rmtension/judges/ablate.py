"""Run many ablations of one reward model on the same test pairs, reusing the clean forward.

A condition ablates the neurons of a mask [L, N] from its first ablated layer l onwards, so
blocks below l, and everything in block l except the MLP's output projection, are the clean
model's. Each batch runs the clean model once and keeps, at every l some condition starts at, the
neuron activations a_l [2B, T, N] and the state next to the projection's output. A condition
then starts *after* block l: the projection is linear, so ablating the columns `cols` changes its
output by

    delta = (target - a_l[..., cols]) @ W_l[cols]        W_l [N, H]: the projection's weight per neuron

(target 0, or the replacement values), and block l's output is `out_l + delta` (pre-norm
families, which add the MLP output to the residual stream) or `norm(pre_l + delta)` (BERT:
`POST_NORM`, pre_l being the norm's clean input). The rest of the model runs from there
(`rmtension.model.trunk.cut_trunk` feeds the states in place of the embeddings), with several
conditions stacked in one batch of `stack` x 2B rows, each row group with its own masks. In the
last block of a model whose head reads position 0 (`rmtension.model.readout`), the query, the MLP
and the norms run at position 0 only; the first batch checks that this gives the clean model's
rewards and turns it off if not. In `POST_NORM` families a condition may start after the last
block too: then only the head runs, and ablating the top block's neurons (the trained block below a
frozen trunk) costs a rank-|S| product and a norm per condition, at the read position.
Conditions with no neurons reuse the clean result, and identical conditions run once.

A set with a neuron in block 0 (every set over all blocks ranked by activation, and its random controls)
shares nothing with the clean pass but block 0: such a condition costs about a full forward less one
block, whatever the engine; only the per-block sets of a layer sweep, or sets in the upper blocks, share
more. `rmtension.judges.attribution` estimates every set's effect from one forward and backward instead,
for ranking and screening only.

`resume=False` is the reference: one full forward per condition, hooks on every ablated layer.
In float32 both agree to about 1e-6 (tests/test_ablation.py, benchmarks/ablation.py); under bf16
autocast they differ by bf16 rounding, as any two bf16 computations of the same sum do.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rmtension.model.arch import blocks, find_arch, get_path, mlp_out, neuron_hook_name
from rmtension.model.encode import EncodedPairs, batches, collate_pairs
from rmtension.model.precision import use_bf16
from rmtension.model.readout import read_first, reads_first
from rmtension.model.scoring import autocast
from rmtension.model.trunk import TrunkCache, cut_trunk, trunk_fingerprint
from rmtension.judges.hooks import ablate, capture, capture_block_inputs, neuron_hooks, neuron_shape
from rmtension.run import dist
from rmtension.run.log import log

POST_NORM = {"bert": "output.LayerNorm"}
"""Families whose block output is norm(MLP output + residual): path, from a block, of that norm.
The other families (llama, gpt2, gpt_neox) add the MLP output to the residual stream."""
STACK = {"cpu": 1, "cuda": 8}
"""Conditions per forward by device type: on a CPU a bigger batch only adds memory traffic (MiniLM,
32 pairs: 2.0 s per condition unstacked, 2.7 s stacked by 4), on a GPU it fills the device."""
HEAD_STACK = 64
"""Conditions per forward when only the head runs after them (they start after the last block): the
rows are one position each, so stacking saves the per-call overhead and costs no memory traffic."""


def resolve_bf16(setting: bool | str, dev: torch.device | str) -> bool:
    """`ablation.bf16`: False: float32; True or "auto": bf16 where the hardware computes it natively
    (`rmtension.model.precision`), float32 elsewhere (on an AVX2 CPU bf16 is emulated and far slower)."""
    return use_bf16(setting is True or setting == "auto", dev)


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
    stack: int | None = None,
    cache: TrunkCache | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Margins r_chosen - r_rejected [P] (in `enc` order) of the clean model and under each condition.

    `cache`: the study's trunk cache. When it holds every pair of `enc` and no condition ablates a
    block below it (the sets of the trained blocks), the clean pass starts from the cached states too,
    so the frozen blocks never run.

    `resume`: the fast path of the module docstring; False runs every condition through the whole
    model (the reference). `stack`: conditions per forward (rows = stack x 2 x batch_size). Each
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
        groups[c.first_layer].append(fp)

    device = next(model.parameters()).device
    stack = max(1, stack or STACK.get(device.type, 1))
    was_training = model.training
    model.eval()
    clean = np.zeros(len(enc))
    margins = {fp: np.zeros(len(enc)) for fp in unique}
    mine: list[int] = []
    top = resume and reads_first(model)
    skip = _cached_blocks(model, cache, enc, unique.values()) if resume else 0
    if skip:  # the model runs cut to its blocks above the cache: masks and layers count from there
        unique = {
            fp: Condition(c.mask[skip:], None if c.values is None else c.values[skip:])
            for fp, c in unique.items()
        }
        groups = defaultdict(list)
        for fp, c in unique.items():
            groups[c.first_layer].append(fp)
    above = cut_trunk(model, cache.k) if skip else contextlib.nullcontext([])
    inputs = above.__enter__()
    try:
        for j, idx in enumerate(dist.shard(batches(enc.lengths(), batch_size, None, group_by_length=True))):
            mine += idx
            if skip:
                tokens, cached = cache.batch(enc, idx, pad_id)
                for stand_in in inputs:
                    stand_in.value = cached.to(device)
            else:
                tokens = collate_pairs(enc, idx, pad_id)
            batch = {k: v.to(device) for k, v in tokens.items()}
            if not resume:
                clean[idx] = _margins(model, batch, bf16)[0]
                for fp, c in unique.items():
                    with ablate(model, c.mask, c.values):
                        margins[fp][idx] = _margins(model, batch, bf16)[0]
                continue
            check = j == 0 and top  # the first clean forward runs in full, to check the cut against
            with _clean_states(model, sorted(groups)) as states, read_first(model, top and not check):
                clean[idx] = _margins(model, batch, bf16)[0]
            if check:
                top = _read_first_holds(model, batch, bf16, clean[idx])
                if top:  # this batch's clean pass ran in full: the head-only conditions need position 0
                    states.keep_first_position([s for s in groups if _head_only(model, s)])
            for start, fps in sorted(groups.items()):
                size = HEAD_STACK if _head_only(model, start) else stack
                for k in range(0, len(fps), size):
                    part = fps[k : k + size]
                    out = _run_stacked(model, batch, start, states, [unique[fp] for fp in part], bf16, top)
                    for fp, m in zip(part, out):
                        margins[fp][idx] = m
    finally:
        above.__exit__(None, None, None)
        model.train(was_training)
    fps = list(margins)
    local = torch.from_numpy(
        np.stack([clean[mine]] + [margins[fp][mine] for fp in fps], axis=1)
    )  # [n, 1 + F]
    both = dist.gather_rows(mine, local, len(enc)).numpy()  # [P, 1 + F]
    clean = both[:, 0].copy()
    margins = {fp: both[:, 1 + j].copy() for j, fp in enumerate(fps)}
    return clean, {key: clean.copy() if fp is None else margins[fp] for key, fp in alias.items()}


def _cached_blocks(model: nn.Module, cache: TrunkCache | None, enc: EncodedPairs, conds) -> int:
    """How many lower blocks the clean pass can skip by starting from `cache` (0: it cannot)."""
    if cache is None:
        return 0
    skip = neuron_shape(model)[0] - cache.k
    fits = (
        skip > 0
        and all(c.first_layer >= skip for c in conds)
        and all(pid in cache.states for pid in enc.pair_ids)
        and trunk_fingerprint(model, cache.k) == cache.fingerprint
    )
    return skip if fits else 0


def _margins(model: nn.Module, batch: dict[str, torch.Tensor], bf16: bool, groups: int = 1) -> np.ndarray:
    """[groups, B] margins of a batch whose rows are `groups` blocks of (B chosen, B rejected)."""
    with autocast(bf16, batch["input_ids"].device):
        r = model(**batch).logits.squeeze(-1).float()
    r = r.reshape(groups, -1)
    b = r.shape[1] // 2
    return (r[:, :b] - r[:, b:]).double().cpu().numpy()


class _States:
    """What the clean pass keeps for the conditions starting at each layer (see `_clean_states`)."""

    def __init__(self) -> None:
        self.acts: dict[int, torch.Tensor] = {}
        """layer l -> neuron activations [2B, T, N]."""
        self.base: dict[int, torch.Tensor] = {}
        """layer l -> block l's output (pre-norm families) or its norm's input (POST_NORM)."""
        self.inputs: dict[int, torch.Tensor] = {}
        """layer l -> the residual stream entering block l (where a condition starts in the last block)."""

    def keep_first_position(self, layers: Sequence[int]) -> None:
        """Keep position 0 only of what these layers' conditions start from ([2B, 1, .])."""
        for layer in layers:
            for d in (self.acts, self.base):
                if layer in d:
                    d[layer] = d[layer][:, :1]


def _delta_start(model: nn.Module, layer: int) -> bool:
    """Whether a condition starting at `layer` can start after that block: any block but the last,
    and the last one too in `POST_NORM` families, where the clean pass sees the norm's input there
    (pre-norm families capture a block's output as the next block's input, which the last lacks)."""
    return layer < neuron_shape(model)[0] - 1 or find_arch(model).family in POST_NORM


def _head_only(model: nn.Module, layer: int) -> bool:
    """Whether conditions starting at `layer` start after the last block (only the head runs)."""
    return layer == neuron_shape(model)[0] - 1 and _delta_start(model, layer)


@contextlib.contextmanager
def _clean_states(model: nn.Module, starts: Sequence[int]) -> Iterator[_States]:
    """Record, during the clean forward, what the conditions starting at `starts` need."""
    family = find_arch(model).family
    out = _States()
    after = [layer for layer in starts if _delta_start(model, layer)]
    last = [layer for layer in starts if not _delta_start(model, layer)]
    handles = []

    def norm_input(layer: int):
        def hook(module, args):
            out.base[layer] = args[0].detach()

        return hook

    with contextlib.ExitStack() as stack:
        acts = stack.enter_context(capture(model, after))
        if family in POST_NORM:
            for layer in after:
                norm = get_path(blocks(model)[layer], POST_NORM[family])
                handles.append(norm.register_forward_pre_hook(norm_input(layer)))
            entering = stack.enter_context(capture_block_inputs(model, last))
        else:
            entering = stack.enter_context(capture_block_inputs(model, [*(x + 1 for x in after), *last]))
        try:
            yield out
        finally:
            for h in handles:
                h.remove()
        for layer in after:
            out.acts[layer] = acts[neuron_hook_name(layer)]
            if family not in POST_NORM:
                out.base[layer] = entering[layer + 1]
        out.inputs = {layer: entering[layer] for layer in last}


def _neuron_weights(model: nn.Module, layer: int) -> torch.Tensor:
    """[N, H]: row n is what neuron n's activation adds to the output projection's output."""
    w = mlp_out(model, layer).weight
    return w.T if find_arch(model).neuron_dim == 1 else w


def _start_state(model: nn.Module, states: _States, layer: int, c: Condition) -> torch.Tensor:
    """Block `layer`'s output [2B, T, H] with the condition's neurons of that layer ablated."""
    a = states.acts[layer]
    cols = c.mask[layer].nonzero().flatten().to(a.device)
    w = _neuron_weights(model, layer)[cols].float()  # [k, H]
    target = 0.0 if c.values is None else c.values[layer, cols].to(a.device).float()
    delta = (target - a[..., cols].float()) @ w  # [2B, T, H]
    family = find_arch(model).family
    if family in POST_NORM:
        norm = get_path(blocks(model)[layer], POST_NORM[family])
        return norm(states.base[layer].float() + delta)
    return (states.base[layer].float() + delta).to(states.base[layer].dtype)


def _run_stacked(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    start: int,
    states: _States,
    conds: list[Condition],
    bf16: bool,
    top: bool,
) -> np.ndarray:
    """[C, B] margins of conditions that all start at layer `start`, run in one stacked forward."""
    n_layers = neuron_shape(model)[0]
    c = len(conds)
    with autocast(bf16, batch["input_ids"].device):
        if _delta_start(model, start):
            first = start + 1
            state = torch.cat([_start_state(model, states, start, x) for x in conds])
        else:
            first = start
            state = states.inputs[start].repeat(c, 1, 1)
    after_last = first == n_layers  # only the head is left: no block to cut to its read position
    if after_last and top:  # the head reads position 0: the state there is all it needs (masks too)
        state, batch = state[:, :1], {k: v[:, :1] for k, v in batch.items()}
    tokens = {k: v.repeat(c, 1) for k, v in batch.items()}
    fns = _stacked_hooks(conds, first, neuron_shape(model))
    with (
        cut_trunk(model, n_layers - first) as inputs,
        neuron_hooks(model, fns),
        read_first(model, top and not after_last),
    ):
        for stand_in in inputs:
            stand_in.value = state
        return _margins(model, tokens, bf16, groups=c)


def _stacked_hooks(conds: list[Condition], first: int, shape: tuple[int, int]) -> dict:
    """Hook functions for the model cut at layer `first`: row group i is ablated by conds[i].

    Only the ablated columns are written (in place: the activations feed nothing but the output
    projection), so a hook costs C x rows x |cols|, not a copy of the whole [C * 2B, T, N].
    """
    n_layers = shape[0]
    fns = {}
    for layer in range(first, n_layers):
        if not any(bool(x.mask[layer].any()) for x in conds):
            continue
        parts = []  # per row group: (ablated columns, their values or None for zero)
        for x in conds:
            cols = x.mask[layer].nonzero().flatten()
            parts.append((cols, None if x.values is None else x.values[layer, cols].float()))

        def fn(acts: torch.Tensor, parts=parts) -> torch.Tensor:  # acts [C * 2B, T, N]
            rows = acts.reshape(len(parts), -1, acts.shape[-1])  # a view: acts is contiguous
            if rows.data_ptr() != acts.data_ptr() or not acts.is_contiguous():
                rows = rows.clone()
            for i, (cols, vals) in enumerate(parts):
                if len(cols):
                    cols = cols.to(acts.device)
                    rows[i][:, cols] = 0.0 if vals is None else vals.to(device=acts.device, dtype=acts.dtype)
            return rows.reshape(acts.shape)

        fns[neuron_hook_name(layer - first)] = fn  # the cut model numbers its blocks from 0
    return fns


def _read_first_holds(model: nn.Module, batch: dict[str, torch.Tensor], bf16: bool, full: np.ndarray) -> bool:
    """Whether cutting the last block to position 0 leaves this batch's margins (`full`) unchanged."""
    with read_first(model, True):
        cut = _margins(model, batch, bf16)[0]
    tol = 3e-2 if bf16 else 1e-4
    ok = bool(np.allclose(cut, full, atol=tol, rtol=tol))
    if not ok:
        log("ablation: this model's head does not read position 0 only; the last block runs in full")
    return ok
