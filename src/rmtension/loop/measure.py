"""What the steering loop measures of a policy π_r after each round (`measure_policy`).

On the held-out prompts π_r draws two replies per prompt (seeded). From them:

- gold reward per prompt (mean of its two replies' gold scores) and the proxy reward of PM_r on the
  same replies (their gap is the over-optimisation);
- KL(π_r ‖ π_0) per reply, the exact per-token KL summed along the reply (`rmtension.rl.rloo.kl_exact`);
- the high end: the two replies of a prompt are a fresh pair; PM_0 and PM_r agree with gold when
  they order it as gold does (pairs gold ties are left out). The top quartile is the pairs whose mean
  gold score is at or above the 75th percentile of this round's pairs;
- behaviour drift of all replies (`rmtension.loop.behaviour`);
- on XSTest prompts, greedy replies judged by the refusal detector: the compliance rate on
  should-respond prompts and the refusal rate on should-refuse prompts;
- the capability score (`rmtension.loop.capability`, greedy, exact match).

Everything per prompt / item is kept, so the claims can pair arms by seed and prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rmtension.data.types import Turn
from rmtension.loop.behaviour import behaviour
from rmtension.loop.capability import Item, score_policy
from rmtension.loop.detectors import hedges, refuses
from rmtension.policy.sampling import Policy, build_prompt_ids, decode_responses
from rmtension.model.arch import base_model, find_arch, get_path, n_layers
from rmtension.model.scoring import autocast
from rmtension.rl.rloo import kl_exact, pack, response_logprobs, swapped, trunk_states

GoldFn = Callable[[Sequence[tuple[Turn, ...]], Sequence[str]], np.ndarray]
ScoreFn = Callable[[Sequence[tuple[Turn, ...]], Sequence[str]], np.ndarray]
"""(contexts [N], replies [N]) -> [N] scores (gold, or a PM's reward)."""
MEASURE_SALT = 7


@dataclass(frozen=True)
class Probes:
    """The fixed sets a policy is measured on; the same for every arm, seed and round."""

    heldout: list[tuple[Turn, ...]]
    capability: list[Item]
    xstest_respond: list[tuple[Turn, ...]]
    xstest_refuse: list[tuple[Turn, ...]]
    max_new_tokens: int = 32
    max_prompt_tokens: int = 192
    draw_rows: int = 64
    """Rows per decode batch (`RoundConfig.draw_rows`)."""


def agreement(score_a: np.ndarray, score_b: np.ndarray, gold_a: np.ndarray, gold_b: np.ndarray) -> np.ndarray:
    """[N] x4 -> [N] float: 1 where sign(score_a − score_b) = sign(gold_a − gold_b), 0 where not, NaN
    where gold ties (no order to agree with). A judge's own tie counts as disagreement."""
    gold_sign = np.sign(np.asarray(gold_a, np.float64) - np.asarray(gold_b, np.float64))
    judge_sign = np.sign(np.asarray(score_a, np.float64) - np.asarray(score_b, np.float64))
    out = (judge_sign == gold_sign).astype(np.float64)
    out[gold_sign == 0] = np.nan
    return out


def top_quartile(pair_gold: np.ndarray) -> np.ndarray:
    """[N] mean gold score of each pair -> [N] bool: at or above the 75th percentile."""
    pair_gold = np.asarray(pair_gold, np.float64)
    return pair_gold >= np.quantile(pair_gold, 0.75)


@torch.no_grad()
def kl_per_reply(
    policy: Policy,
    reference: dict[str, torch.Tensor],
    prompts: list[list[int]],
    replies: list[list[int]],
    bf16: bool = False,
) -> np.ndarray:
    """[N] prompts, [N] replies -> [N] exact KL(π ‖ π_ref) summed along each reply (nats). A policy
    whose every parameter equals the reference's (round 0) has KL exactly 0: not computed.

    The blocks below the lowest one whose parameters differ from the reference's run once, shared by
    both passes (`rl.rloo.trunk_states`); `bf16`: the passes under bf16 autocast where native."""
    model = policy.model
    differs = changed_params(model, reference)
    if not differs:
        return np.zeros(len(prompts))
    top = top_blocks_changed(model, differs)
    out = np.zeros(len(prompts), np.float64)
    for rows, group in kl_batches(prompts, replies):
        batch = pack([prompts[i] for i in rows], [replies[i] for i in rows], policy.pad_id)
        trunk = None
        if top < n_layers(model):
            with autocast(bf16):
                trunk = trunk_states(model, batch, top, group)
        _, logq = response_logprobs(model, batch, bf16, trunk, top, full=True)
        with swapped(model, {n: reference[n] for n in differs if n in reference}):
            _, ref_logq = response_logprobs(model, batch, bf16, trunk, top, full=True)
        out[rows] = kl_exact(logq, ref_logq, batch.response_mask).double().numpy()
    return out


def changed_params(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> list[str]:
    """Names of `model`'s parameters that the reference lacks or holds with other values (bit for bit)."""
    return [n for n, p in model.named_parameters() if n not in reference or not torch.equal(p, reference[n])]


def kl_batches(
    prompts: Sequence[Sequence[int]], replies: Sequence[Sequence[int]], rows: int = 16
) -> list[tuple[list[int], int]]:
    """Batches of row indices for `kl_per_reply`, little padding: the rows of one prompt together
    (their prompt then runs once in the trunk), prompts by length, and each batch's group size (the
    rows per prompt when every prompt of the batch has that many, else 1)."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(tuple(p), []).append(i)
    groups = sorted(by_prompt.values(), key=lambda g: (len(prompts[g[0]]), max(len(replies[i]) for i in g)))
    out, current = [], []
    for g in groups:
        if current and len(current) + len(g) > rows:
            out.append(current)
            current = []
        current = current + g
    if current:
        out.append(current)
    batches = []
    for batch in out:
        sizes = {len(by_prompt[tuple(prompts[i])]) for i in batch}
        batches.append((batch, sizes.pop() if len(sizes) == 1 else 1))
    return batches


def top_blocks_changed(model: torch.nn.Module, names: Sequence[str]) -> int:
    """K >= 1 such that no parameter in `names` lies below the top K blocks; every block when one of
    them is an embedding's (a tied LM head is one)."""
    named = dict(model.named_parameters())
    changed = {id(named[n]) for n in names}
    spec, base = find_arch(model), base_model(model)
    blocks = list(get_path(base, spec.layers))
    if any(id(p) in changed for e in spec.embeddings for p in get_path(base, e).parameters()):
        return len(blocks)
    lowest = next((i for i, b in enumerate(blocks) if any(id(p) in changed for p in b.parameters())), None)
    return 1 if lowest is None else len(blocks) - lowest


def greedy_replies(policy: Policy, contexts: Sequence[tuple[Turn, ...]], probes: Probes) -> list[str]:
    if not contexts:
        return []
    ids = [build_prompt_ids(policy.tokenizer, c, probes.max_prompt_tokens) for c in contexts]
    drawn = policy.draw(
        ids, n=1, max_new_tokens=probes.max_new_tokens, temperature=0.0, batch_size=probes.draw_rows
    )
    return decode_responses(policy.tokenizer, drawn.tokens)


def measure_policy(
    policy: Policy,
    reference: dict[str, torch.Tensor],
    pm_r: ScoreFn,
    pm_0: ScoreFn | None,
    gold: GoldFn,
    probes: Probes,
    seed: int,
    bf16: bool = False,
) -> dict:
    """Every per-round measure of `policy` (π_r) as a JSON-able dict (module docstring); `pm_0` None:
    PM_0 is PM_r (its scores are PM_r's); `bf16`: the KL's passes under bf16 autocast where native
    (`kl_per_reply`)."""
    ctx = probes.heldout
    ids = [build_prompt_ids(policy.tokenizer, c, probes.max_prompt_tokens) for c in ctx]
    salted = seed * 1_000_003 + MEASURE_SALT
    drawn = policy.draw(
        ids,
        n=2,
        max_new_tokens=probes.max_new_tokens,
        temperature=1.0,
        seed=salted,
        batch_size=probes.draw_rows,
    )
    replies = decode_responses(policy.tokenizer, drawn.tokens)
    both = [ctx[p] for p in drawn.prompt_index.tolist()]
    g, r = gold(both, replies), pm_r(both, replies)
    r0 = r if pm_0 is None else pm_0(both, replies)
    kl = kl_per_reply(policy, reference, [ids[p] for p in drawn.prompt_index.tolist()], drawn.tokens, bf16)
    ga, gb = g[0::2], g[1::2]
    respond = greedy_replies(policy, probes.xstest_respond, probes)
    refuse = greedy_replies(policy, probes.xstest_refuse, probes)
    cap = score_policy(policy, probes.capability, batch_size=probes.draw_rows) if probes.capability else None
    return {
        "gold": ((ga + gb) / 2).tolist(),
        "proxy": ((r[0::2] + r[1::2]) / 2).tolist(),
        "kl": ((kl[0::2] + kl[1::2]) / 2).tolist(),
        "agree_pm0": agreement(r0[0::2], r0[1::2], ga, gb).tolist(),
        "agree_pmr": agreement(r[0::2], r[1::2], ga, gb).tolist(),
        "top_quartile": top_quartile((ga + gb) / 2).tolist(),
        "behaviour": asdict(behaviour(replies)),
        "words": [float(len(x.split())) for x in replies],
        "finished": [float(f) for f in drawn.finished],  # 0: cut at max_new_tokens (the length ceiling)
        "refuses": [float(refuses(x)) for x in replies],
        "hedges": [float(hedges(x)) for x in replies],
        "xstest_comply": [float(not refuses(x)) for x in respond],
        "xstest_refuse": [float(refuses(x)) for x in refuse],
        "capability": cap.correct.astype(float).tolist() if cap else [],
        "replies": replies,
    }
