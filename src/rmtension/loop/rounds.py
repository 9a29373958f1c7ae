"""One round of the steering loop: sample pairs, have a reviewer label them, train the PM on the
labels, improve the policy against the PM by best-of-n distillation (expert iteration).

    1. sample    π_{r-1} draws two replies per prompt                      -> pairs.json
    2. label     gold scores both; the reviewer labels each pair            -> labels.json
    3. pm        the PM takes `pm_steps` Bradley-Terry steps on the labels  -> pm/model.safetensors
    4. improve   π_{r-1} draws n replies per prompt, the PM picks the best,
                 π takes `distill_steps` NLL steps on the picks             -> policy/ (HF folder), improve.json

Each phase writes its output atomically and a rerun skips every phase whose output is there,
loading it instead; every phase is deterministic given its inputs and `RoundSpec` (seeded samplers
and batch orders, eval-mode models), so a round killed anywhere resumes to the same policy, bit for
bit. The PM is warm-started: it continues from the state it is handed (PM_{r-1}) and trains on
this round's labelled pairs plus `history` (the (chosen, rejected) transcripts of D_0 ... D_{r-1}).
The policy's master weights are fp32; distillation trains every parameter or the top K blocks
(`RoundSpec.policy_trainable`); each phase's optimiser starts fresh.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from rmtension.data.types import Turn, render_transcript
from rmtension.errors import ArtifactError
from rmtension.loop.checkpoint import save_policy_folder
from rmtension.loop.measure import kl_per_reply
from rmtension.loop.reviewer import SimulatedReviewer, labels_file
from rmtension.model.encode import collate
from rmtension.model.scoring import autocast
from rmtension.policy.sampling import Policy, build_prompt_ids, decode_responses, load_policy
from rmtension.model.arch import n_layers
from rmtension.model.scope import set_trainable
from rmtension.rl.rloo import pack, response_logprobs, trunk_states
from rmtension.trainer.losses import bradley_terry_loss

GoldFn = Callable[[Sequence[tuple[Turn, ...]], Sequence[str]], np.ndarray]
"""(contexts [N], replies [N]) -> [N] gold scores."""
PHASES = ("sample", "label", "pm", "improve")


@dataclass(frozen=True)
class RoundSpec:
    """What one round does; every field enters its outputs."""

    round: int
    seed: int = 0
    """Seed of the policy's samplers and of the PM's batch order (the reviewer has its own)."""
    max_new_tokens: int = 32
    max_prompt_tokens: int = 256
    n_best_of: int = 4
    """Replies drawn per prompt for best-of-n distillation."""
    pm_steps: int = 8
    pm_lr: float = 1e-3
    pm_batch: int = 8
    distill_steps: int = 2
    distill_lr: float = 1e-3
    pm_max_length: int = 512
    bf16: bool = False
    """PM and distillation forward and backward passes under bf16 autocast (master weights fp32;
    `rmtension.model.scoring.autocast`). Set by the loop only where bf16 is native (`use_bf16`), so a
    run resumed on a machine of the other kind is refused (`check_spec`) rather than mixed."""
    policy_trainable: str = "all"
    """What of the policy distillation trains: `all`, or `top:K` blocks (`model.scope`; the LM head,
    tied to the embeddings, stays frozen), the frozen blocks' states computed once per round."""
    draw_rows: int = 64
    """Rows per decode batch of the round's draws (a seeded draw depends on the batch plan)."""
    fresh_after: bool = True
    """`improve` draws two fresh replies per prompt from π_r for its KL and gold (improve.json); off,
    both are None there (the steering loop measures them on held-out prompts instead)."""


@dataclass
class Pairs:
    """Two replies per prompt: `a[i]` and `b[i]` answer `prompt[i]`."""

    prompt: list[int]
    a: list[str]
    b: list[str]


def write_json(path: Path, obj) -> None:
    """`obj` as JSON into `path`, atomically (a temporary of this process, then a rename: workers of
    `loop run --workers` may write the same file, e.g. config.json, at once)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def draw(policy: Policy, prompt_ids: list[list[int]], n: int, spec: RoundSpec, salt: int):
    seed = spec.seed * 1_000_003 + spec.round * 101 + salt
    return policy.draw(
        prompt_ids,
        n=n,
        max_new_tokens=spec.max_new_tokens,
        temperature=1.0,
        seed=seed,
        batch_size=spec.draw_rows,
    )


def pm_texts(
    contexts: Sequence[tuple[Turn, ...]], prompt: Sequence[int], replies: Sequence[str]
) -> list[str]:
    """The transcripts a PM reads: each prompt's conversation followed by its reply."""
    return [render_transcript(tuple(contexts[p]), r) for p, r in zip(prompt, replies)]


def pm_rewards(
    pm: torch.nn.Module, tokenizer, texts: Sequence[str], max_length: int, bf16: bool = False
) -> torch.Tensor:
    """[N] texts -> [N] PM rewards (the first logit, fp32), one right-padded batch; `bf16`: under bf16
    autocast where native."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    with autocast(bf16):
        return pm(**collate(ids, tokenizer.pad_token_id)).logits[:, 0].float()


def preference_pairs(
    contexts: Sequence[tuple[Turn, ...]], pairs: Pairs, a_preferred: Sequence[bool]
) -> list[tuple[str, str]]:
    """(chosen, rejected) PM transcripts of labelled pairs: the next round's `history`."""
    texts_a, texts_b = pm_texts(contexts, pairs.prompt, pairs.a), pm_texts(contexts, pairs.prompt, pairs.b)
    return [(x, y) if pick else (y, x) for x, y, pick in zip(texts_a, texts_b, a_preferred)]


class EnsemblePM(torch.nn.Module):
    """Several PMs read as one (Coste et al. 2024, "Reward Model Ensembles Help Mitigate
    Overoptimization"): the reward is the members' minimum (`wco`, worst-case) or their mean minus
    `lam` times their variance (`uwo`, uncertainty-weighted). `train_pm` trains each member on its own
    batch order; the aggregate is what best-of-n picks by and what the loop measures."""

    def __init__(self, members: Sequence[torch.nn.Module], aggregate: str = "wco", lam: float = 1.0):
        super().__init__()
        if aggregate not in ("wco", "uwo"):
            raise ValueError(f"aggregate must be wco or uwo, got {aggregate!r}")
        self.members, self.aggregate, self.lam = torch.nn.ModuleList(members), aggregate, lam

    def forward(self, **batch):
        r = torch.stack([m(**batch).logits[:, 0] for m in self.members])  # [K, N]
        agg = r.min(0).values if self.aggregate == "wco" else r.mean(0) - self.lam * r.var(0, unbiased=False)
        return _Logits(agg[:, None])


@dataclass
class _Logits:
    logits: torch.Tensor


def train_pm(pm, tokenizer, chosen: list[str], rejected: list[str], spec: RoundSpec) -> list[float]:
    """`pm_steps` AdamW steps of the Bradley-Terry loss on batches drawn with the round's seed; the losses.
    An `EnsemblePM` trains member k with seed `spec.seed * 1000 + k` (its losses concatenated)."""
    if isinstance(pm, EnsemblePM):
        out = []
        for k, member in enumerate(pm.members):
            out += train_pm(member, tokenizer, chosen, rejected, replace(spec, seed=spec.seed * 1000 + k))
        return out
    pm.eval()  # no dropout: the steps are deterministic
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=spec.pm_lr, weight_decay=0.0)
    rng = np.random.default_rng([spec.seed, spec.round, 0x504D])
    losses = []
    for _ in range(spec.pm_steps):
        idx = rng.choice(len(chosen), size=min(spec.pm_batch, len(chosen)), replace=False)
        texts = [chosen[i] for i in idx] + [rejected[i] for i in idx]
        r = pm_rewards(pm, tokenizer, texts, spec.pm_max_length, spec.bf16)
        loss = bradley_terry_loss(*r.chunk(2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


DISTILL_ROWS = 8
"""Replies per backward pass of `distill`: the step's gradient is accumulated over micro-batches of
this many rows. One pass over all 64 picks of a round (prompts up to 192 tokens) keeps every layer's
activations of about 14k tokens for SmolLM2-135M's backward, more than 20 GB in fp32; 8 rows keep
about an eighth of that."""


def distill(
    policy: Policy,
    prompt_ids: list[list[int]],
    picks: list[list[int]],
    spec: RoundSpec,
    rows: int = DISTILL_ROWS,
) -> list[float]:
    """`distill_steps` AdamW steps of −mean_i Σ_t log π(y_it | x_i) on the picked replies; the losses.
    Each step's gradient is summed over micro-batches of `rows` replies, each padded on its own."""
    model = policy.model
    full = spec.policy_trainable == "all"  # every parameter, as loaded
    top = n_layers(model) if full else set_trainable(model, spec.policy_trainable, head=False)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=spec.distill_lr, weight_decay=0.0
    )
    parts = [
        pack(prompt_ids[i : i + rows], picks[i : i + rows], policy.pad_id) for i in range(0, len(picks), rows)
    ]
    trunks = [None] * len(parts)
    if top < n_layers(model):  # the frozen lower blocks do not change over the steps: run them once
        with torch.no_grad(), autocast(spec.bf16):
            trunks = [trunk_states(model, batch, top, 1) for batch in parts]
    losses = []
    for _ in range(spec.distill_steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for batch, trunk in zip(parts, trunks):
            logp = response_logprobs(model, batch, spec.bf16, trunk, top)  # [rows, T]
            loss = -(logp * batch.response_mask).sum(-1).sum() / len(picks)
            loss.backward()
            total += float(loss.detach())
        opt.step()
        losses.append(total)
    return losses


@dataclass
class RoundResult:
    """What a round produced (also in its folder)."""

    pairs: Pairs
    a_preferred: list[bool]
    flip_rate: float
    pm_losses: list[float]
    distill_losses: list[float]
    kl: float | None
    """Mean exact KL(π_r ‖ π_ref) along fresh samples of π_r on the round's prompts (nats per reply);
    None without `RoundSpec.fresh_after`."""
    gold_before: float
    """Mean gold score of the n replies π_{r-1} drew for distillation."""
    gold_picked: float
    """Mean gold score of the PM's picks among them."""
    gold_after: float | None
    """Mean gold score of the fresh samples of π_r that the KL is measured on (None as `kl`)."""


def run_round(
    folder: str | Path,
    spec: RoundSpec,
    policy: Policy,
    reference: dict[str, torch.Tensor],
    pm: torch.nn.Module,
    pm_tokenizer,
    contexts: Sequence[tuple[Turn, ...]],
    gold: GoldFn,
    reviewer: SimulatedReviewer,
    after_phase: Callable[[str], None] | None = None,
    history: Sequence[tuple[str, str]] = (),
) -> RoundResult:
    """One round in `folder`, resuming from the phases already there. `policy` (π_{r-1}) and `pm`
    (PM_{r-1}) are updated in place; `reference` holds π_0's parameters (for the KL);
    `after_phase(name)` is called as each phase completes; `history`: earlier rounds' (chosen,
    rejected) PM transcripts, trained on together with this round's."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = lambda name: after_phase(name) if after_phase else None  # noqa: E731
    check_spec(folder, spec, reviewer)
    prompt_ids = [build_prompt_ids(policy.tokenizer, c, spec.max_prompt_tokens) for c in contexts]

    if not (folder / "pairs.json").exists():
        drawn = draw(policy, prompt_ids, 2, spec, salt=0)
        replies = decode_responses(policy.tokenizer, drawn.tokens)
        write_json(
            folder / "pairs.json", asdict(Pairs(list(range(len(contexts))), replies[0::2], replies[1::2]))
        )
        done("sample")
    pairs = Pairs(**json.loads((folder / "pairs.json").read_text()))

    if not (folder / "labels.json").exists():
        ctx = [contexts[p] for p in pairs.prompt]
        if hasattr(reviewer, "label_round"):  # people on the bench (`rmtension.loop.bench_reviewer`)
            labels = reviewer.label_round(folder, spec.round, ctx, pairs.a, pairs.b)
        else:
            labels = reviewer.label(
                pairs.a, pairs.b, gold(ctx, pairs.a), gold(ctx, pairs.b), stream=spec.round
            )
        write_json(
            folder / "labels.json",
            labels_file(labels),
        )
        done("label")
    labels = json.loads((folder / "labels.json").read_text())

    pm_file = folder / "pm" / "model.safetensors"
    if not pm_file.exists():
        both = preference_pairs(contexts, pairs, labels["a_preferred"]) + list(history)
        chosen, rejected = [c for c, _ in both], [r for _, r in both]
        pm_losses = train_pm(pm, pm_tokenizer, chosen, rejected, spec)
        pm_file.parent.mkdir(exist_ok=True)
        save_model(pm, str(pm_file) + ".tmp")
        os.replace(str(pm_file) + ".tmp", pm_file)
        write_json(folder / "pm" / "losses.json", pm_losses)
        done("pm")
    load_model(pm, str(pm_file))
    pm_losses = json.loads((folder / "pm" / "losses.json").read_text())

    if not (folder / "improve.json").exists():
        write_json(
            folder / "improve.json",
            improve(folder, spec, policy, reference, pm, pm_tokenizer, contexts, gold, prompt_ids),
        )
        done("improve")
    policy.model = load_policy(str(folder / "policy"), precision="fp32")
    out = json.loads((folder / "improve.json").read_text())
    return RoundResult(pairs, labels["a_preferred"], labels["flip_rate"], pm_losses, **out)


def improve(folder, spec, policy, reference, pm, pm_tokenizer, contexts, gold, prompt_ids) -> dict:
    """Best-of-n distillation against the PM, then the KL of the new policy; saves it to folder/policy."""
    n = spec.n_best_of
    drawn = draw(policy, prompt_ids, n, spec, salt=1)
    replies = decode_responses(policy.tokenizer, drawn.tokens)
    prompt = drawn.prompt_index.tolist()
    with torch.no_grad():
        texts = pm_texts(contexts, prompt, replies)
        scores = pm_rewards(pm, pm_tokenizer, texts, spec.pm_max_length, spec.bf16)
    best = scores.view(len(prompt_ids), n).argmax(-1)  # [P]: the PM's pick per prompt
    picks = [drawn.tokens[p * n + int(best[p])] for p in range(len(prompt_ids))]
    gold_all = gold([contexts[p] for p in prompt], replies).reshape(len(prompt_ids), n)
    losses = distill(policy, prompt_ids, picks, spec)
    save_policy_folder(policy.model, policy.tokenizer, folder / "policy")
    out = {
        "distill_losses": losses,
        "kl": None,
        "gold_before": float(gold_all.mean()),
        "gold_picked": float(gold_all[np.arange(len(prompt_ids)), best.numpy()].mean()),
        "gold_after": None,
    }
    if spec.fresh_after:
        after = draw(policy, prompt_ids, 2, spec, salt=2)  # fresh samples of π_r
        after_prompts = after.prompt_index.tolist()
        after_replies = decode_responses(policy.tokenizer, after.tokens)
        after_ids = [prompt_ids[p] for p in after_prompts]
        out["kl"] = float(kl_per_reply(policy, reference, after_ids, after.tokens, spec.bf16).mean())
        out["gold_after"] = float(gold([contexts[p] for p in after_prompts], after_replies).mean())
    return out


def check_spec(folder: Path, spec: RoundSpec, reviewer: SimulatedReviewer) -> None:
    """Record the round's spec and reviewer in folder/spec.json; a folder holding another's is an error
    (its phases would be reused). Gold, contexts and the initial models are the caller's to keep fixed."""
    wanted = json.loads(json.dumps({"spec": asdict(spec), "reviewer": asdict(reviewer)}))
    path = folder / "spec.json"
    if path.exists() and json.loads(path.read_text()) != wanted:
        raise ArtifactError(
            f"{path}: the folder holds a round of another spec or reviewer; use a fresh folder"
        )
    write_json(path, wanted)
