"""Attribution patching: a first-order estimate of every neuron's ablation effect on the pair margin.

One forward and one backward per batch give, for every neuron (l, n) and pair p,

    effect[p, l, n] ~= sum_t (v[l, n] - a[r, t, l, n]) * d margin_p / d a[r, t, l, n]   summed over both rows r of p

where a are the neuron activations (`rmtension.judges.hooks`), margin_p = reward(chosen) - reward(rejected),
and v is the ablated value: 0 (zero ablation) or the replacement value (mean ablation). This is the
linearisation of the margin around the clean activations, as TransformerLens users compute it
("attribution patching"). Writing G = sum_t g and AG = sum_t a * g (g the gradient), the estimate is
v * G - AG for any v, so one backward serves zero and mean ablation, and a set's estimate is the sum of its
neurons' estimates: a masked sum, so a sweep over thousands of sets costs one matrix product per batch.

It is an estimate: ablations that move the model far from the clean point (large sets, low layers) are
not linear in the activations. Use it to rank neurons, to choose positive controls and to screen sweeps,
never to decide a claim's verdict: every verdict reads the exact ablations of `rmtension.judges.ablate`.
`benchmarks/attribution.py` measures its agreement with them (Spearman and error).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rmtension.judges.ablate import Condition
from rmtension.judges.hooks import capture, frozen, neuron_shape
from rmtension.model.arch import base_model, find_arch, get_path, neuron_hook_name
from rmtension.model.encode import EncodedPairs, batches, collate_pairs
from rmtension.model.readout import read_first
from rmtension.run import dist


def gradient_sums(
    acts: torch.Tensor, grads: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, AG), each [R, N]: G = sum_t mask * grads and AG = sum_t mask * acts * grads.

    acts, grads [R, T, N]: one layer's neuron activations and the margin's gradient w.r.t. them, for R
    rows (sequences); mask [R, T]: 1 on tokens, 0 on padding.
    """
    m = mask.to(grads.dtype).unsqueeze(-1)  # [R, T, 1]
    return (grads * m).sum(1), (acts * grads * m).sum(1)


def neuron_effects(
    g_sum: torch.Tensor, ag_sum: torch.Tensor, values: torch.Tensor | None = None
) -> torch.Tensor:
    """Estimated change of the margin when each neuron is ablated: [..., N] = values * G - AG.

    g_sum, ag_sum [..., N] from `gradient_sums` (summed over a pair's two rows, or per row); values
    [N] (broadcast over the leading dimensions) the replacement values, None for zero ablation (= -AG).
    """
    if values is None:
        return -ag_sum
    return values.to(g_sum.dtype) * g_sum - ag_sum


def set_effects(effects: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Estimated margin change of ablating each set: [P, S] = effects [P, K] @ masks [K, S] (0/1).

    K indexes neurons (flattened layers x neurons); a set's estimate is the sum of its neurons'.
    """
    return effects @ masks.to(effects.dtype)


def most_harmful(effects: torch.Tensor, k: int) -> torch.Tensor:
    """bool [L, N]: the k neurons whose estimated ablation lowers the mean margin most (most negative
    `effects` [L, N], e.g. `Attribution.mean_effects`); ties broken by index. A positive control's set."""
    order = torch.argsort(effects.flatten(), stable=True)[:k]
    mask = torch.zeros(effects.numel(), dtype=torch.bool)
    mask[order] = True
    return mask.reshape(effects.shape)


@dataclass
class Attribution:
    """Per-pair sums of one forward and backward over pairs, in `enc` order."""

    clean: np.ndarray
    """[P] clean margins."""
    g_sum: torch.Tensor
    """[P, L, N] float64: G, the margin's gradient w.r.t. each neuron summed over positions and both rows."""
    ag_sum: torch.Tensor
    """[P, L, N] float64: AG, activation times gradient, summed the same way."""

    def effects(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """[P, L, N] estimated margin change per pair of ablating each neuron alone (values [L, N] or None)."""
        return neuron_effects(self.g_sum, self.ag_sum, values)

    def mean_effects(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """[L, N] estimated mean margin change over pairs: the ranking of neurons."""
        return self.effects(values).mean(0)


def attribute(model: nn.Module, enc: EncodedPairs, pad_id: int, batch_size: int = 16) -> Attribution:
    """One forward and one backward per batch, in the model's dtype (no bf16 autocast): the sums
    `Attribution` holds for every pair, 2 x P x L x N float64 (MiniLM, 1,000 pairs: 150 MB).

    The parameters get no gradient (`frozen`); the embedding output is made to require one, so the
    gradient reaches the neuron activations of every layer.
    """
    shape = neuron_shape(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    clean = np.zeros(len(enc))
    g_all = torch.zeros(len(enc), *shape, dtype=torch.float64)
    ag_all = torch.zeros(len(enc), *shape, dtype=torch.float64)
    mine: list[int] = []
    embed = get_path(base_model(model), find_arch(model).embeddings[0])
    try:
        with (
            frozen(model),
            torch.enable_grad(),
            _requires_grad_output(embed),
            read_first(model),
            capture(model, detach=False) as acts,
        ):
            for idx in dist.shard(batches(enc.lengths(), batch_size, None, group_by_length=True)):
                mine += idx
                batch = {k: v.to(device) for k, v in collate_pairs(enc, idx, pad_id).items()}
                r = model(**batch).logits.squeeze(-1)
                b = len(idx)
                margin = r[:b] - r[b:]
                names = [neuron_hook_name(i) for i in range(shape[0])]
                grads = torch.autograd.grad(margin.sum(), [acts[n] for n in names])
                rows = batch["attention_mask"]
                for layer, (name, g) in enumerate(zip(names, grads)):
                    a = acts[name].detach().double()  # [2B, T, N]; [2B, 1, N] in a block cut to position 0
                    g_sum, ag_sum = gradient_sums(a, g.double(), rows[:, : a.shape[1]])
                    g_all[idx, layer] = (g_sum[:b] + g_sum[b:]).cpu()
                    ag_all[idx, layer] = (ag_sum[:b] + ag_sum[b:]).cpu()
                clean[idx] = margin.detach().double().cpu().numpy()
                acts.clear()
    finally:
        model.train(was_training)
    local = torch.cat(
        [torch.from_numpy(clean[mine])[:, None], g_all[mine].flatten(1), ag_all[mine].flatten(1)], 1
    )
    both = dist.gather_rows(mine, local, len(enc))
    k = shape[0] * shape[1]
    return Attribution(
        both[:, 0].numpy().copy(),
        both[:, 1 : 1 + k].reshape(-1, *shape),
        both[:, 1 + k :].reshape(-1, *shape),
    )


def estimate_conditions(
    model: nn.Module,
    enc: EncodedPairs,
    pad_id: int,
    conditions: Mapping[str, Condition],
    batch_size: int = 16,
    attribution: Attribution | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The `estimate` mode of `rmtension.judges.ablate.run_conditions`: the same arguments and results
    (clean margins [P] and each condition's margins [P]), the ablated margins estimated as clean plus the
    sum of the set's neurons' first-order effects. One forward and backward for all conditions (or none,
    given `attribution` of the same pairs). An estimate: never a verdict's input (module docstring).
    """
    shape = neuron_shape(model)
    for key, c in conditions.items():
        if tuple(c.mask.shape) != shape:
            raise ValueError(f"condition {key}: mask shape {tuple(c.mask.shape)} != model neurons {shape}")
    att = attribution if attribution is not None else attribute(model, enc, pad_id, batch_size)
    by_values: dict[int | None, list[str]] = {}
    tensors: dict[int | None, torch.Tensor | None] = {None: None}
    for key, c in conditions.items():
        slot = None if c.values is None else id(c.values)
        tensors.setdefault(slot, c.values)
        by_values.setdefault(slot, []).append(key)
    out: dict[str, np.ndarray] = {}
    for slot, keys in by_values.items():
        values = tensors[slot]
        effects = att.effects(None if values is None else values.double()).flatten(1)  # [P, L * N]
        masks = torch.stack([conditions[k].mask.flatten() for k in keys], 1)  # [L * N, S]
        sets = set_effects(effects, masks).numpy()  # [P, S]
        for j, key in enumerate(keys):
            out[key] = att.clean + sets[:, j]
    return att.clean.copy(), {key: out[key] for key in conditions}


@contextlib.contextmanager
def _requires_grad_output(module: nn.Module):
    """The module's output requires a gradient (the graph starts there when no parameter needs one)."""

    def hook(mod, args, output):
        return output.requires_grad_() if not output.requires_grad else output

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
