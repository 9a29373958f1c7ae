"""Score heads of sequence-classification reward models: one head per objective in one backbone.

A two-head reward model is `AutoModelForSequenceClassification` with `num_labels=2`: its score head
is one `nn.Linear(H, 2)` whose row h is the head of objective `HEADS[h]`, and its `config.json`
names them (`id2label`). Training picks, for every pair, the row of the objective it came from
(`pick_heads`); everything that reads one scalar reward (evaluation, neurons, ablation, best-of-n)
gets a one-head view of it (`single_head`), which is an ordinary `num_labels=1` model.
"""

from __future__ import annotations

import torch
from torch import nn

HEADS = ("helpful", "harmless")
"""Objective of each row of a two-head model's score head; `rmtension.trainer.conflict.HELPFUL`/`HARMLESS`
are these rows' indices."""
HEAD_PATHS = ("score", "classifier")
"""Attribute of the score head on a sequence-classification model: `score` (Llama, GPT-2, GPT-NeoX)
or `classifier` (BERT)."""


def score_head(model: nn.Module) -> str:
    """The attribute name of `model`'s linear score head."""
    for name in HEAD_PATHS:
        if isinstance(getattr(model, name, None), nn.Linear):
            return name
    raise ValueError(f"{type(model).__name__}: no linear score head at any of {HEAD_PATHS}")


def pick_heads(rewards: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """The reward of each row under its own head.

    rewards: [2B, K] (chosen rows, then rejected rows, as `rmtension.model.forward.PairForward` lays
    them out); heads: [B] long, the head of each pair. Returns [2B]: row i is rewards[i, heads[i % B]].
    Gradients reach only the picked entries, so a pair trains only its own head's row.
    """
    if rewards.dim() != 2 or rewards.shape[0] != 2 * heads.shape[0]:
        raise ValueError(
            f"pick_heads: rewards [2B, K] for B={heads.shape[0]} pairs, got {list(rewards.shape)}"
        )
    rows = torch.cat([heads, heads]).to(rewards.device).long()
    return rewards.gather(1, rows[:, None]).squeeze(1)


def set_head_labels(model: nn.Module, heads: tuple[str, ...] = HEADS) -> None:
    """Name the score head's rows in `model.config` (`id2label`, `label2id`), so the saved folder says
    which label is which objective."""
    model.config.id2label = dict(enumerate(heads))
    model.config.label2id = {h: i for i, h in enumerate(heads)}


def head_index(model: nn.Module, head: str) -> int:
    """Row of `head` in `model`'s score head, read from its `config.id2label`."""
    labels = {str(v): int(k) for k, v in model.config.id2label.items()}
    if head not in labels:
        raise ValueError(f"no head {head!r} in this model; its heads are {sorted(labels)}")
    return labels[head]


@torch.no_grad()
def single_head(model: nn.Module, head: str) -> nn.Module:
    """Turn a multi-head model into the `num_labels=1` model of one head, in place; returns it.

    The new head is `nn.Linear(H, 1)` holding row `head_index(model, head)` of the old weight (and
    bias), so its reward equals that column of the multi-head model's logits.
    """
    name = score_head(model)
    old: nn.Linear = getattr(model, name)
    h = head_index(model, head)
    new = nn.Linear(
        old.in_features, 1, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype
    )
    new.weight.copy_(old.weight[h : h + 1])
    if old.bias is not None:
        new.bias.copy_(old.bias[h : h + 1])
    setattr(model, name, new)
    model.config.num_labels = 1
    model.config.id2label, model.config.label2id = {0: head}, {head: 0}
    if hasattr(model, "num_labels"):
        model.num_labels = 1
    return model
