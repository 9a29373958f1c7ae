"""RLOO policy gradient against a learned reward, with a KL penalty to the initial policy.

Ahmadian et al. (2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
Human Feedback in LLMs"): k samples per prompt, each sample's baseline is the mean reward of the
other k - 1, one REINFORCE step per batch (on-policy, so no ratio clipping). The reward is the
sequence-level r - beta * KL, with KL = sum_t log pi(y_t) - log pi_ref(y_t) on the sampled tokens
(Stiennon et al. 2020; Bai et al. 2022, sec. 4.1).

The loop that uses these pieces is `rmtension.rl.loop.run_rloo`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rmtension.model.arch import n_layers
from rmtension.model.encode import pad
from rmtension.model.scoring import autocast
from rmtension.model.stop import stop_at
from transformers import DynamicCache
from rmtension.model.trunk import cut_trunk


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """[P, k] -> [P, k]: r_i - mean_{j != i} r_j (leave-one-out baseline, k >= 2).

    >>> rloo_advantages(torch.tensor([[1.0, 2.0, 3.0]])).tolist()
    [[-1.5, 0.0, 1.5]]
    """
    k = rewards.shape[-1]
    baseline = (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


def kl_per_sequence(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] log-probs of the sampled tokens under policy and reference, [B, T] mask -> [B].

    sum_t (log pi - log pi_ref): a single-sample unbiased estimate of KL(pi || pi_ref) per sequence.
    """
    return ((logp - ref_logp) * mask).sum(dim=-1)


def kl_exact(logq: torch.Tensor, ref_logq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, V] log-probs of policy and reference over the vocabulary, [B, T] mask -> [B].

    sum_t KL(pi(. | x, y_<t) || pi_ref(. | x, y_<t)) along the sampled prefix: its expectation is the
    sequence KL, like `kl_per_sequence`, but it is never negative and has far less variance
    (Schulman 2020, "Approximating KL divergence"), so it is what the RL curves are plotted against.
    """
    return ((logq.exp() * (logq - ref_logq)).sum(dim=-1) * mask).sum(dim=-1)


def rloo_loss(logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE loss -mean_b A_b * sum_t log pi(y_bt); logp [B, T], mask [B, T], advantages [B] (no grad)."""
    return -(advantages.detach() * (logp * mask).sum(dim=-1)).mean()


@dataclass
class PackedBatch:
    """Prompt (left-padded to Lp) followed by response (right-padded to T)."""

    input_ids: torch.Tensor
    """[B, Lp + T]"""
    attention_mask: torch.Tensor
    """[B, Lp + T]"""
    response_ids: torch.Tensor
    """[B, T]"""
    response_mask: torch.Tensor
    """[B, T] float, 1 on generated tokens (the stop token included)."""


def pack(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> PackedBatch:
    """Each prompt left-padded to the longest, then its response right-padded to the longest (at least 1)."""
    p_ids, p_mask = pad(prompts, pad_id, side="left")
    r_ids, r_mask = pad(responses, pad_id, side="right", width=max(1, max(len(r) for r in responses)))
    ids, mask = torch.cat([p_ids, r_ids], dim=1), torch.cat([p_mask, r_mask], dim=1)
    lp = p_ids.shape[1]
    return PackedBatch(ids, mask, ids[:, lp:], mask[:, lp:].float())


@torch.no_grad()
def trunk_states(trunk_model: nn.Module, batch: PackedBatch, k: int, group: int) -> torch.Tensor:
    """[B, Lp + T, H] float32 input of block L - k at every position, from the frozen lower blocks.

    Rows come in groups of `group` that share a prompt (RLOO's k samples). Each prompt runs once,
    its KV cache is copied to the group, and only the responses run per row: causal attention
    means prompt states do not depend on what follows, so this equals a full pass per row at
    about (Lp + k T) / (k (Lp + T)) of the cost. Positions outside a row's tokens stay zero.
    """

    b, width = batch.input_ids.shape
    t = batch.response_ids.shape[1]
    lp, dev = width - t, batch.input_ids.device
    out = None
    with stop_at(trunk_model, n_layers(trunk_model) - k) as run:
        stopped = lambda **kw: run(**kw).float()  # noqa: E731
        for start in range(0, b, group):
            rows = slice(start, min(b, start + group))
            g = rows.stop - rows.start
            prompt_mask = batch.attention_mask[rows, :lp]
            if not bool((batch.input_ids[rows, :lp] == batch.input_ids[start, :lp]).all()) or not bool(
                (prompt_mask == prompt_mask[0]).all()
            ):
                raise ValueError(f"rows {rows.start}..{rows.stop - 1} do not share one prompt")
            lo = lp - int(prompt_mask[0].sum())
            cache = DynamicCache(config=trunk_model.config)
            n_p = lp - lo
            h_prompt = stopped(
                input_ids=batch.input_ids[start : start + 1, lo:lp],
                position_ids=torch.arange(n_p, device=dev)[None],
                past_key_values=cache,
                use_cache=True,
            )
            cache.batch_repeat_interleave(g)
            mask = torch.cat([prompt_mask[:, lo:], batch.attention_mask[rows, lp:]], dim=1)
            h_resp = stopped(
                input_ids=batch.input_ids[rows, lp:],
                attention_mask=mask,
                position_ids=(n_p + torch.arange(t, device=dev))[None].expand(g, -1),
                past_key_values=cache,
                use_cache=True,
            )
            if out is None:
                out = h_prompt.new_zeros(b, width, h_prompt.shape[-1])
            out[rows, lo:lp] = h_prompt
            out[rows, lp:] = h_resp
    return out


@contextlib.contextmanager
def swapped(model: nn.Module, params: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Temporarily run `model` with other values for the named parameters (the reference policy)."""
    if not params:
        yield
        return
    named = dict(model.named_parameters())
    saved = {n: named[n].data for n in params}
    try:
        for n, t in params.items():
            named[n].data = t
        yield
    finally:
        for n, t in saved.items():
            named[n].data = t


def response_logprobs(
    model: nn.Module,
    batch: PackedBatch,
    bf16: bool,
    trunk: torch.Tensor | None = None,
    k: int = 0,
    full: bool = False,
):
    """[B, T] log pi(y_t | prompt, y_<t) of the response tokens; with `full`, also the detached
    [B, T, V] log-probs over the vocabulary at each response position (for `kl_exact`).

    With `trunk` ([B, Lp + T, H] from `trunk_states`) only the top `k` blocks run (`rmtension.model.trunk.cut_trunk`),
    so the policy and the reference share one pass through the frozen lower blocks.
    """

    t = batch.response_ids.shape[1]
    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=pos,
        use_cache=False,
        logits_to_keep=t + 1,
    )
    with contextlib.ExitStack() as stack:
        if trunk is not None:
            for stand_in in stack.enter_context(cut_trunk(model, k)):
                stand_in.value = trunk  # the token embedding returns it; extra embeddings return zeros
        with autocast(bf16, batch.input_ids.device):
            logits = model(**kwargs).logits[:, -t - 1 : -1].float()  # position j predicts token j + 1
    logz = logits.logsumexp(dim=-1, keepdim=True)
    token = (logits.gather(-1, batch.response_ids.unsqueeze(-1)) - logz).squeeze(-1)
    return (token, (logits - logz).detach()) if full else token


def snapshot(model: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Detached copies of the named parameters (the reference policy's trainable part)."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in names}


@torch.no_grad()
def sync_sampler(sampler: nn.Module, policy: nn.Module, names: Sequence[str]) -> None:
    """Copy the trained parameters into the (bf16) sampling copy."""
    src, dst = dict(policy.named_parameters()), dict(sampler.named_parameters())
    for n in names:
        dst[n].copy_(src[n])


def rl_update(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: PackedBatch,
    rewards: torch.Tensor,
    ref_logp: torch.Tensor,
    kl_coef: float,
    max_grad_norm: float,
    bf16: bool,
    trunk: torch.Tensor | None = None,
    top: int = 0,
    ref_full: torch.Tensor | None = None,
) -> dict:
    """One RLOO step. rewards: [P, k] judge rewards in batch order (prompt-major); ref_logp [B, T];
    ref_full: optional [B, T, V] reference log-probs, for the exact KL that is logged.

    The penalty uses the sampled log-ratio (the standard per-sample KL reward, Stiennon et al. 2020).
    The policy stays in eval mode (dropout would make log pi noisy). Returns loss, KL (`kl`: exact
    when `ref_full` is given, else the sampled estimate; `kl_sample`), advantages and grad norm.
    """
    p, k = rewards.shape
    logp, full = response_logprobs(policy, batch, bf16, trunk, top, full=True)  # [B, T], [B, T, V]
    kl = kl_per_sequence(logp.detach(), ref_logp, batch.response_mask)  # [B]
    exact = kl_exact(full, ref_full, batch.response_mask) if ref_full is not None else kl
    del full
    adv = rloo_advantages(rewards - kl_coef * kl.view(p, k)).flatten()  # [B]
    loss = rloo_loss(logp, batch.response_mask, adv)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [q for q in policy.parameters() if q.requires_grad], max_grad_norm
    )
    optimizer.step()
    return {
        "loss": float(loss.detach()),
        "kl": float(exact.mean()),
        "kl_sample": float(kl.mean()),
        "advantages": adv,
        "grad_norm": float(grad_norm),
    }


ScoreFn = Callable[[list[int], list[list[int]]], dict[str, np.ndarray]]
"""(prompt indices [B], response token ids [B]) -> judge name -> [B] rewards; `TRAIN_JUDGE` is optimised.

Each judge is logged as `reward_<name>` (`reward_train_pm`, `reward_test_pm`, ...)."""
TRAIN_JUDGE = "train_pm"
