"""RL's held-out evaluation: k completions per fixed held-out prompt, every `eval_every` updates,
with each completion's exact KL to the initial policy and every judge's reward.

The RL batches themselves are scored on the prompts being optimised; the evaluation prompts come
from prompt groups RL never trains on (`rmtension.policy.prompts.rl_prompts`), so its curves and
its train/test gap measure the policy, not its training prompts. Sampling draws from its own seeded
generator, so evaluating leaves the training trajectory unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rmtension.policy.config import PolicyConfig, RLConfig
from rmtension.policy.sampling import sample_with
from rmtension.rl.rloo import (
    PackedBatch,
    kl_exact,
    pack,
    response_logprobs,
    swapped,
    trunk_states,
)

EVAL_SEED = 7_000_003
"""Offset of the evaluation sampler's seeds, apart from the training steps' `seed * 100003 + step`."""


@dataclass
class HeldOut:
    """The evaluation set of one RL run."""

    prompts: list[list[int]]
    """Token ids of the held-out prompts (chat-formatted)."""
    score: Callable[[list[int], list[list[int]]], dict[str, np.ndarray]]
    """(held-out prompt indices [B], response ids [B]) -> judge -> [B] rewards (z-units, as in training)."""
    k: int = 4
    """Completions per prompt."""
    every: int = 4
    """Evaluate after every this many updates (and at 0 and after the last)."""
    prompts_per_chunk: int = 4
    """Prompts whose [k T V] vocabulary log-probs are held at once for the exact KL."""


def eval_points(steps: int, every: int) -> list[int]:
    """Update counts at which the policy is evaluated: 0, every, 2 every, ..., and `steps` itself.

    >>> eval_points(10, 4)
    [0, 4, 8, 10]
    """
    return sorted(set(range(0, steps + 1, every)) | {steps})


@torch.no_grad()
def evaluate(
    held: HeldOut,
    policy: nn.Module,
    sampler: nn.Module,
    ref: dict[str, torch.Tensor],
    top: int,
    shared_trunk: bool,
    cfg: RLConfig,
    pcfg: PolicyConfig,
    stop_ids: Sequence[int],
    pad_id: int,
    seed: int,
    updates: int,
) -> list[dict]:
    """One row per held-out completion of the policy after `updates` updates: step, prompt, sample,
    kl (exact, along the completion), response_tokens and reward_<judge>."""
    seed_here = EVAL_SEED + seed * 100003 + updates
    drawn = sample_with(sampler, held.prompts, pcfg, held.k, seed_here, stop_ids, pad_id, cfg.max_new_tokens)
    scores = held.score([int(i) for i in drawn.prompt_index], drawn.tokens)
    dev = next(policy.parameters()).device
    kl = np.zeros(len(drawn))
    rows_per_chunk = held.prompts_per_chunk * held.k
    # the policy still has the reference's weights (step 0): both passes would be the same, their KL 0 exactly
    is_ref = all(torch.equal(p, ref[n]) for n, p in policy.named_parameters() if n in ref)
    # rows come grouped by prompt, k per prompt
    for start in range(0, 0 if is_ref else len(drawn), rows_per_chunk):
        rows = range(start, min(len(drawn), start + rows_per_chunk))
        batch = pack(
            [held.prompts[drawn.prompt_index[r]] for r in rows], [drawn.tokens[r] for r in rows], pad_id
        )
        batch = PackedBatch(*(x.to(dev) for x in vars(batch).values()))
        trunk = trunk_states(sampler, batch, top, held.k) if shared_trunk else None
        _, full = response_logprobs(policy, batch, cfg.bf16, trunk, top, full=True)
        with swapped(policy, ref):
            _, ref_full = response_logprobs(policy, batch, cfg.bf16, trunk, top, full=True)
        kl[rows.start : rows.stop] = kl_exact(full, ref_full, batch.response_mask).cpu().numpy()
        del full, ref_full
    return [
        {
            "step": updates,
            "prompt": int(drawn.prompt_index[r]),
            "sample": int(drawn.sample_index[r]),
            "kl": float(kl[r]),
            "response_tokens": len(drawn.tokens[r]),
            **{f"reward_{name}": float(v[r]) for name, v in scores.items()},
        }
        for r in range(len(drawn))
    ]
