"""Gradient conflict between the objectives inside one RM's training, and PCGrad (Yu et al. 2020).

At a measured step the batch is split by the objective each pair came from, and the gradient of
each part's mean Bradley-Terry loss is taken with respect to the trainable parameters in its own
backward pass (`torch.autograd.grad`: the optimiser and `.grad` are not touched). Per block (a
transformer block, the score head, and "other" for the final norm or pooler) the two gradients
give a cosine, two norms and the share of parameters whose gradient signs disagree. The RNG
state is saved and restored around the extra passes, so a model with dropout trains exactly as
with the measurement off.

PCGrad: where the two gradients conflict (cosine < 0), each is projected onto the normal plane of
the other before they are combined with the weights of the plain mean loss (n_a/n, n_b/n), so
without conflict the update is the plain gradient.

    cos, norm_a, norm_b, opposite = conflict_stats(g_a, g_b)        # g: [P] flattened gradients
    g = pcgrad(g_a, g_b, w_a, w_b)                                  # [P]
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from rmtension.model.arch import base_model, blocks
from rmtension.trainer.losses import bradley_terry_loss, split_rewards
from rmtension.run import dist

CSV_COLUMNS = (
    "step",
    "block",
    "cosine",
    "norm_helpful",
    "norm_harmless",
    "opposite_sign_share",
    "n_helpful",
    "n_harmless",
)
"""Columns of `rm/<rm>/seed<k>/conflict.csv`, one row per measured step and block."""


SIGN_FLOOR = 1e-6
"""A coordinate counts towards the opposite-sign share only where both gradients exceed this
fraction of their largest coordinate: the sign of a gradient at rounding level is noise (it can
differ between one process and several)."""


def conflict_stats(g_a: torch.Tensor, g_b: torch.Tensor) -> tuple[float, float, float, float]:
    """(cosine, |g_a|, |g_b|, share of coordinates with opposite signs) of two flat gradients [P].

    The cosine is 0 when either gradient is zero. A coordinate is opposite when the two signs
    differ and both magnitudes are above `SIGN_FLOOR` times their gradient's largest one.
    """
    g_a, g_b = g_a.double(), g_b.double()
    na, nb = float(g_a.norm()), float(g_b.norm())
    cos = float(g_a @ g_b) / (na * nb) if na > 0 and nb > 0 else 0.0
    if not g_a.numel():
        return cos, na, nb, 0.0
    big = (g_a.abs() > SIGN_FLOOR * g_a.abs().max()) & (g_b.abs() > SIGN_FLOOR * g_b.abs().max())
    opposite = float((((g_a * g_b) < 0) & big).double().mean())
    return cos, na, nb, opposite


def dot64(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 22) -> float:
    """a . b of two flat tensors [P], accumulated in float64 a chunk at a time (at most 2 x `chunk`
    float64 values in memory, whatever P)."""
    return sum(
        float(a[i : i + chunk].double() @ b[i : i + chunk].double()) for i in range(0, a.numel(), chunk)
    )


def pcgrad(g_a: torch.Tensor, g_b: torch.Tensor, w_a: float, w_b: float) -> torch.Tensor:
    """w_a * g_a' + w_b * g_b', where a conflicting gradient is projected off the other (Yu et al. 2020).

    g_a' = g_a - (g_a . g_b / |g_b|^2) g_b when g_a . g_b < 0, else g_a; g_b' likewise with the
    original g_a. Shapes: [P] -> [P].
    """
    # The inner products in float64: an fp32 dot over millions of coordinates rounds differently
    # with the BLAS's split of the sum over threads, and the projection would carry that last digit
    # into the weights (a resumed run must train bit for bit as an uninterrupted one).
    dot = dot64(g_a, g_b)
    pa, pb = g_a, g_b
    if dot < 0:
        nb2, na2 = dot64(g_b, g_b), dot64(g_a, g_a)
        if nb2 > 0:
            pa = g_a - (dot / nb2) * g_b
        if na2 > 0:
            pb = g_b - (dot / na2) * g_a
    return w_a * pa + w_b * pb


def block_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The block each named parameter belongs to: `layers.<i>`, `head` (outside the base model) or `other`."""
    params = dict(model.named_parameters())
    owner: dict[int, str] = {}
    for i, block in enumerate(blocks(model)):
        for p in block.parameters():
            owner[id(p)] = f"layers.{i}"
    inside = {id(p) for p in base_model(model).parameters()}
    return [owner.get(id(params[n]), "other" if id(params[n]) in inside else "head") for n in names]


def per_block(
    grads_a: Sequence[torch.Tensor], grads_b: Sequence[torch.Tensor], blocks_of: Sequence[str]
) -> dict[str, tuple[float, float, float, float]]:
    """`conflict_stats` per block, over the flattened gradients of that block's parameters, in block order."""
    out = {}
    for block in dict.fromkeys(blocks_of):
        sel = [i for i, b in enumerate(blocks_of) if b == block]
        out[block] = conflict_stats(
            torch.cat([grads_a[i].reshape(-1) for i in sel]), torch.cat([grads_b[i].reshape(-1) for i in sel])
        )
    return out


def pcgrad_update(
    grads_a: Sequence[torch.Tensor],
    grads_b: Sequence[torch.Tensor],
    w_a: float,
    w_b: float,
    blocks_of: Sequence[str] | None = None,
) -> list[torch.Tensor]:
    """Per-parameter combined gradients: PCGrad over all parameters at once, or per block (`blocks_of`)."""
    groups = [list(range(len(grads_a)))]
    if blocks_of is not None:
        groups = [[i for i, b in enumerate(blocks_of) if b == block] for block in dict.fromkeys(blocks_of)]
    out: list[torch.Tensor | None] = [None] * len(grads_a)
    for sel in groups:
        flat = pcgrad(
            torch.cat([grads_a[i].reshape(-1) for i in sel]),
            torch.cat([grads_b[i].reshape(-1) for i in sel]),
            w_a,
            w_b,
        )
        start = 0
        for i in sel:
            n = grads_a[i].numel()
            out[i] = flat[start : start + n].view_as(grads_a[i])
            start += n
    return out  # type: ignore[return-value]


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run extra forward passes without moving any RNG the training draws from (torch, CUDA, numpy, random)."""
    torch_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


HELPFUL, HARMLESS = 0, 1
"""Codes of `objectives`, the per-pair objective array of a mixed training set."""


def part_grad(
    fwd, train, part: Sequence[int], cfg, params: Sequence[nn.Parameter]
) -> tuple[list[torch.Tensor], float]:
    """Gradient of the mean loss over the pairs `part` (one tensor per parameter, summed over processes), and that loss.

    Each process takes its shard of `part` and weights its mean loss by its share, so the sum over
    processes is the gradient of the mean over all of `part`. Runs the unwrapped model
    (`fwd.plain`), so no data-parallel hook fires, and `.grad` and the optimiser are untouched.
    """

    mine = dist.shard(list(part))
    if mine:
        r_c, r_r = split_rewards(fwd.plain(train, mine))
        loss = bradley_terry_loss(r_c, r_r, cfg.margin, cfg.center_rewards_coef) * (len(mine) / len(part))
    else:  # more processes than pairs: this one adds zeros
        loss = sum(p.sum() for p in params) * 0.0
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    flat = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])
    flat = dist.sum_across(torch.cat([flat.detach(), loss.detach().reshape(1).to(flat.dtype)]))
    out, start = [], 0
    for p in params:
        out.append(flat[start : start + p.numel()].view_as(p))
        start += p.numel()
    return out, float(flat[-1])


def split_by_objective(idx: Sequence[int], objectives: np.ndarray) -> tuple[list[int], list[int]]:
    """(helpful pairs, harmless pairs) of batch `idx`, in batch order."""
    return [i for i in idx if objectives[i] == HELPFUL], [i for i in idx if objectives[i] == HARMLESS]


def measure(
    fwd, train, idx, objectives, cfg, params, blocks_of: Sequence[str], step: int
) -> list[dict] | None:
    """One measured step: a `CSV_COLUMNS` row per block, or None (skipped: fewer than 2 pairs of an objective)."""
    helpful, harmless = split_by_objective(idx, objectives)
    if min(len(helpful), len(harmless)) < 2:
        return None
    with rng_preserved():
        (g_h, _), (g_r, _) = (
            part_grad(fwd, train, helpful, cfg, params),
            part_grad(fwd, train, harmless, cfg, params),
        )
    return [
        dict(zip(CSV_COLUMNS, (step, block, cos, na, nb, opp, len(helpful), len(harmless))))
        for block, (cos, na, nb, opp) in per_block(g_h, g_r, blocks_of).items()
    ]


def pcgrad_step(fwd, train, idx, objectives, cfg, params, blocks_of: Sequence[str], scale: float) -> float:
    """Add `scale` times the PCGrad-combined gradient of batch `idx` to each parameter's `.grad`; the batch's mean loss.

    The weights are each part's share of the batch, as in the plain mean loss, so a batch without
    conflict gets the plain gradient; a batch of one objective gets that objective's gradient.
    """
    helpful, harmless = split_by_objective(idx, objectives)
    if not helpful or not harmless:
        combined, loss = part_grad(fwd, train, idx, cfg, params)
    else:
        (g_h, l_h), (g_r, l_r) = (
            part_grad(fwd, train, helpful, cfg, params),
            part_grad(fwd, train, harmless, cfg, params),
        )
        w_h, w_r = len(helpful) / len(idx), len(harmless) / len(idx)
        combined = pcgrad_update(g_h, g_r, w_h, w_r, blocks_of if cfg.pcgrad_scope == "block" else None)
        loss = w_h * l_h + w_r * l_r
    if not math.isfinite(loss) or not all(bool(torch.isfinite(g).all()) for g in combined):
        return float("nan")  # the caller stops training; nothing reaches the optimiser
    for p, g in zip(params, combined):
        p.grad = g * scale if p.grad is None else p.grad + g * scale
    return loss
