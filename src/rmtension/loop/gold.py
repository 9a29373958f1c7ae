"""The gold judge that plays the humans, and how good it is.

The default gold (`GoldConfig`): `members` MiniLMs, every parameter fine-tuned by Bradley-Terry on
HH training pairs of the **gold share** of the training split (`gold_share`: pairs whose hash puts
them there); the proxy PMs and the loop's prompts only ever see the other share. Each member's
scores are z-scored on its own training pairs' replies and the members averaged, so gold is in
standard deviations of a member's score (what the reviewer's β multiplies) and an ensemble is a
plain mean. Alternatively `judges:` names any judges `rmtension.api.load_judge` reads, rendered as
HH transcripts and combined the same way.

`gold_accuracy` is the gold's raw accuracy on HH test pairs and its length-controlled accuracy
(`rmtension.stats.length`, lengths in words), so one can see whether gold is mostly a length prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from rmtension.data.splits import unit_hash
from rmtension.data.types import Pair, Turn, render_transcript
from rmtension.loop.config import GoldConfig
from rmtension.loop.rounds import RoundSpec, train_pm, write_json
from rmtension.model.scoring import score_texts
from rmtension.stats.length import length_controlled

GOLD_SHARE = 0.5
"""Share of the training split (by pair hash) that only the gold trains on."""
NORM_PAIRS = 256


def gold_share(pairs: Sequence[Pair], share: float = GOLD_SHARE) -> tuple[list[Pair], list[Pair]]:
    """(gold's pairs, the proxies' pairs): a fixed split of `pairs` by a hash of each pair's prompt, so a
    prompt's pairs fall on one side."""
    gold = [p for p in pairs if unit_hash("loop-gold", p.group_key) < share]
    keep = {id(p) for p in gold}
    return gold, [p for p in pairs if id(p) not in keep]


def texts_of(pairs: Sequence[Pair]) -> tuple[list[str], list[str]]:
    return [render_transcript(p.context, p.chosen) for p in pairs], [
        render_transcript(p.context, p.rejected) for p in pairs
    ]


class Gold:
    """A scoring function (contexts [N], replies [N]) -> [N] gold scores over z-scored members."""

    def __init__(
        self,
        members: list[tuple[torch.nn.Module, object]],
        norms: list[tuple[float, float]],
        max_length: int,
        bf16: bool = False,
    ):
        self.members, self.norms, self.max_length, self.bf16 = members, norms, max_length, bf16

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(texts))
        for (model, tok), (mean, sd) in zip(self.members, self.norms):
            out += (score_texts(model, tok, list(texts), self.max_length, bf16=self.bf16) - mean) / sd
        return out / len(self.members)

    def __call__(self, contexts: Sequence[tuple[Turn, ...]], replies: Sequence[str]) -> np.ndarray:
        return self.score_texts([render_transcript(tuple(c), r) for c, r in zip(contexts, replies)])


def member_norm(model, tok, texts: Sequence[str], max_length: int, bf16: bool = False) -> tuple[float, float]:
    s = score_texts(model, tok, list(texts), max_length, bf16=bf16)
    return float(s.mean()), float(s.std()) or 1.0


def build_gold(
    cfg: GoldConfig, pairs: Sequence[Pair], folder: Path, cache_dir: str | None, bf16: bool = False
) -> Gold:
    """Train (or reload from `folder`) the gold members on `pairs` (the gold share), or load `cfg.judges`;
    `bf16`: training and scoring under bf16 autocast where native (`RoundSpec.bf16`)."""
    from rmtension.judges.load import load_judge
    from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
    from rmtension.model.scope import set_trainable

    chosen, rejected = texts_of(pairs)
    norm_texts = (chosen + rejected)[: 2 * NORM_PAIRS]
    members = []
    if cfg.judges:
        for source in cfg.judges:
            judge = load_judge(source, max_length=cfg.max_length, cache_dir=cache_dir)
            members.append((judge.model.eval(), judge.tokenizer))
    else:
        path = resolve_backbone(cfg.backbone, cache_dir)
        tok = load_tokenizer(path, cfg.max_length)
        for m in range(cfg.members):
            file = folder / f"member{m}" / "model.safetensors"
            torch.manual_seed(10_000 + m)
            model = load_reward_model(path, tok)
            set_trainable(model, cfg.trainable)
            if file.exists():
                load_model(model, str(file))
            else:
                idx = np.random.default_rng([m, 0x474F4C44]).permutation(len(chosen))[: cfg.pairs]
                spec = RoundSpec(
                    round=0,
                    seed=m,
                    pm_steps=cfg.steps,
                    pm_lr=cfg.lr,
                    pm_batch=cfg.batch,
                    pm_max_length=cfg.max_length,
                    bf16=bf16,
                )
                losses = train_pm(model, tok, [chosen[i] for i in idx], [rejected[i] for i in idx], spec)
                file.parent.mkdir(parents=True, exist_ok=True)
                write_json(file.parent / "losses.json", losses)
                save_model(model, str(file) + ".tmp")
                Path(str(file) + ".tmp").replace(file)
            members.append((model.eval(), tok))
    norms = [member_norm(model, tok, norm_texts, cfg.max_length, bf16) for model, tok in members]
    return Gold(members, norms, cfg.max_length, bf16)


def pair_accuracy(score, pairs: Sequence[Pair], n_boot: int, seed: int = 0) -> dict:
    """Raw accuracy (bootstrap CI over pairs) and length-controlled accuracy of `score` (contexts,
    replies -> scores) on `pairs`; lengths in words."""
    ctx = [p.context for p in pairs]
    c = (score(ctx, [p.chosen for p in pairs]) > score(ctx, [p.rejected for p in pairs])).astype(np.float64)
    rng = np.random.default_rng(seed)
    boots = c[rng.integers(0, len(c), (n_boot, len(c)))].mean(1)
    words = lambda xs: np.array([len(x.split()) for x in xs])  # noqa: E731
    lc = length_controlled(
        c, words([p.chosen for p in pairs]), words([p.rejected for p in pairs]), n_boot, rng
    )
    return {
        "n": len(pairs),
        "accuracy": float(c.mean()),
        "ci95": [float(x) for x in np.quantile(boots, [0.025, 0.975])],
        "length_controlled": lc.as_dict(),
    }
