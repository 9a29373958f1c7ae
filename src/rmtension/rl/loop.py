"""The RLOO loop (`run_rloo`): sample, score, one policy-gradient step, and, every `eval_every`
updates, the held-out evaluation (`rmtension.rl.heldout`).

A plain loop rather than TRL 1.16's `RLOOTrainer`: without vLLM that trainer samples through plain
`model.generate` (the path `rmtension.policy.sampling.sample` is several times faster than on CPU), it
lives inside the 2,000-line Trainer stack, trains every parameter by default, and its reward
functions all feed the objective, whereas each step here must also log the held-out PM and the
other objective's RM without optimising them.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rmtension.errors import TrainingDiverged
from rmtension.model.arch import n_layers
from rmtension.model.precision import use_bf16
from rmtension.model.scope import set_trainable
from rmtension.policy.config import PolicyConfig, RLConfig
from rmtension.policy.sampling import Sampled, sample_with
from rmtension.rl.rloo import (
    TRAIN_JUDGE,
    PackedBatch,
    ScoreFn,
    pack,
    response_logprobs,
    rl_update,
    snapshot,
    swapped,
    sync_sampler,
    trunk_states,
)
from rmtension.rl.heldout import HeldOut, eval_points, evaluate


@dataclass
class RLRun:
    """What one RL run logs."""

    steps: list[dict]
    """One row per update, for the batch sampled before it (the policy after `step` updates)."""
    evals: list[dict] = field(default_factory=list)
    """One row per held-out completion (`rl_eval.evaluate`), for the policy after `step` updates."""
    eval_s: float = 0.0
    """Wall-clock seconds spent evaluating."""


@dataclass
class RLState:
    """Everything a run needs to continue exactly after `step` updates (`rmtension.loop.checkpoint`
    writes and reads it); handed to `run_rloo`'s `checkpoint` hook after every update."""

    step: int
    """Updates done."""
    params: dict[str, torch.Tensor]
    """The trained parameters (the others are the initial policy's, which the resuming run loads)."""
    optimizer: dict
    """`optimizer.state_dict()`."""
    rng: dict
    """The global torch / numpy / python generator states (`rng_states`)."""
    steps: list[dict]
    evals: list[dict]
    eval_s: float


def rng_states() -> dict:
    """The global generators' states: torch (CPU), numpy's legacy global generator, python's `random`."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])


def run_rloo(
    policy: nn.Module,
    prompts: Sequence[Sequence[int]],
    score: ScoreFn,
    cfg: RLConfig,
    pcfg: PolicyConfig,
    stop_ids: Sequence[int],
    pad_id: int,
    on_step: Callable[[dict], None] | None = None,
    seed: int | None = None,
    heldout: HeldOut | None = None,
    checkpoint: Callable[[RLState], None] | None = None,
    resume: RLState | None = None,
) -> RLRun:
    """Optimise `policy` (fp32, in place) for `cfg.steps` with one RL seed (default: `cfg.seeds[0]`).

    Each step samples k responses for P prompts from the current policy (a bf16 copy when
    `pcfg.precision` is bf16 and the device has native bf16), scores them, and takes one RLOO step. Logged KL and rewards are
    those of the sampled batch, i.e. of the policy before that step's update: `kl` is `kl_exact`
    along the sampled responses, `kl_sample` the sampled log-ratio that the penalty uses. With
    `heldout`, the policy is also evaluated at `eval_points(cfg.steps, heldout.every)`.

    `checkpoint(state)` is called after every update; `resume` (a state from it, `policy` being the
    *initial* policy, which stays the KL reference) continues that run exactly.
    """
    seed = cfg.seeds[0] if seed is None else seed
    top = set_trainable(policy, cfg.trainable, head=False)  # the LM head is tied to the frozen embeddings
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    shared_trunk = top < n_layers(policy)
    ref = snapshot(policy, names)
    bf16 = pcfg.precision == "bf16" and use_bf16(True, next(policy.parameters()).device)
    sampler = copy.deepcopy(policy).to(torch.bfloat16).eval() if bf16 else policy
    optimizer = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0
    )
    order = np.random.default_rng(seed).permutation(len(prompts))
    run, start = RLRun([]), 0
    if resume is not None:
        start = resume_from(resume, policy, optimizer, names, run)
        if sampler is not policy:
            sync_sampler(sampler, policy, names)
    checkpoints = set(eval_points(cfg.steps, heldout.every)) if heldout is not None else set()

    def maybe_evaluate(updates: int) -> None:
        if updates in checkpoints:
            t0 = time.perf_counter()
            run.evals += evaluate(
                heldout, policy, sampler, ref, top, shared_trunk, cfg, pcfg, stop_ids, pad_id, seed, updates
            )
            run.eval_s += time.perf_counter() - t0

    for step in range(start, cfg.steps):
        maybe_evaluate(step)
        t0 = time.perf_counter()
        idx = [
            int(order[(step * cfg.prompts_per_step + i) % len(order)]) for i in range(cfg.prompts_per_step)
        ]
        batch_prompts, step_seed = [prompts[i] for i in idx], seed * 100003 + step
        drawn: Sampled = sample_with(
            sampler, batch_prompts, pcfg, cfg.k, step_seed, stop_ids, pad_id, cfg.max_new_tokens
        )
        t_sample = time.perf_counter() - t0
        prompt_idx = [idx[i] for i in drawn.prompt_index]
        scores = score(prompt_idx, drawn.tokens)
        t_score = time.perf_counter() - t0 - t_sample
        batch = pack([prompts[i] for i in prompt_idx], drawn.tokens, pad_id)
        batch = PackedBatch(*(x.to(next(policy.parameters()).device) for x in vars(batch).values()))
        # The frozen lower blocks are the same in policy, reference and the bf16 sampler: run them once.
        trunk = trunk_states(sampler, batch, top, cfg.k) if shared_trunk else None
        with torch.no_grad(), swapped(policy, ref):
            ref_logp, ref_full = response_logprobs(policy, batch, cfg.bf16, trunk, top, full=True)
        rewards = torch.as_tensor(
            scores[TRAIN_JUDGE], dtype=torch.float32, device=batch.input_ids.device
        ).view(cfg.prompts_per_step, cfg.k)
        out = rl_update(
            policy,
            optimizer,
            batch,
            rewards,
            ref_logp,
            cfg.kl_coef,
            cfg.max_grad_norm,
            cfg.bf16,
            trunk,
            top,
            ref_full,
        )
        del ref_full
        if sampler is not policy:
            sync_sampler(sampler, policy, names)
        row = {
            "step": step,
            "kl": out["kl"],
            "kl_sample": out["kl_sample"],
            **{f"reward_{k}": float(np.mean(v)) for k, v in scores.items()},
            "loss": out["loss"],
            "grad_norm": out["grad_norm"],
            "response_tokens": float(np.mean([len(t) for t in drawn.tokens])),
            "sample_s": t_sample,
            "score_s": t_score,
            "step_s": time.perf_counter() - t0,
        }
        if not np.isfinite(row["loss"]):
            raise TrainingDiverged(f"RL loss became {row['loss']} at step {step}")
        run.steps.append(row)
        if checkpoint is not None:  # before on_step, whose interrupt check may end the run
            params = dict(policy.named_parameters())
            checkpoint(
                RLState(
                    step + 1,
                    {n: params[n].detach().clone() for n in names},
                    copy.deepcopy(optimizer.state_dict()),
                    rng_states(),
                    copy.deepcopy(run.steps),
                    copy.deepcopy(run.evals),
                    run.eval_s,
                )
            )
        if on_step is not None:
            on_step(row)
    maybe_evaluate(cfg.steps)
    return run


@torch.no_grad()
def resume_from(state: RLState, policy: nn.Module, optimizer, names: Sequence[str], run: RLRun) -> int:
    """Load a checkpoint's parameters, optimiser state, generators and logs; returns the next step."""
    if sorted(state.params) != sorted(names):
        from rmtension.errors import ConfigError

        raise ConfigError(
            f"the RL checkpoint trains {len(state.params)} parameters, this run {len(names)}: a different rl.trainable"
        )
    params = dict(policy.named_parameters())
    for n in names:
        params[n].copy_(state.params[n])
    optimizer.load_state_dict(state.optimizer)
    set_rng_states(state.rng)
    run.steps, run.evals, run.eval_s = list(state.steps), list(state.evals), state.eval_s
    return state.step
