"""Which held-out prompts best-of-n and RL optimise on: test-split conversations whose prompt group
(`Pair.group_key`, the first user turn) no RM or PM was trained or validated on, one per group.

The data splits keep groups apart already; this is checked again here, at the point of use, because
a prompt the judges were trained on would make a learned judge look better than it is: its train/test
gap and its curves must be measured on prompts that are new to every judge. RL gets two disjoint sets
of such groups: the prompts it trains on and the fixed prompts it is evaluated on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from rmtension.data.types import Turn

RULE = "test-split prompts, one per prompt group, from groups in no split's train or val set"
"""What prompt selection guarantees; part of the stage hashes, so a change of rule re-samples."""


def trained_groups(splits: dict[str, dict[str, list]]) -> set[str]:
    """Group keys of every train and val pair of every objective (and control) of the data bundle.

    The PM halves train on halves of an objective's training pairs and validate on its val pairs, so
    these groups cover every RM and PM.
    """
    return {p.group_key for by in splits.values() for name in ("train", "val") for p in by.get(name, [])}


def select_prompts(
    test_sets: dict, objectives: Sequence[str], n: int, seed: int, exclude: Iterable[str] = ()
) -> list[dict]:
    """n held-out conversation contexts that end in a user turn, in equal shares from each objective's
    test split, at most one per prompt group and none from a group in `exclude`.

    Returns dicts with `prompt_id` (the pair id), `objective`, `group` and `context` (tuple of Turn).
    """
    out: list[dict] = []
    seen = set(exclude)
    rng = np.random.default_rng(seed)
    shares = [n // len(objectives) + (i < n % len(objectives)) for i in range(len(objectives))]
    for objective, share in zip(objectives, shares):
        pairs = test_sets[objective]
        taken = 0
        for i in rng.permutation(len(pairs)):
            p = pairs[int(i)]
            if taken == share:
                break
            if p.group_key in seen or not p.context or p.context[-1].role != "user":
                continue
            seen.add(p.group_key)
            out.append(
                {"prompt_id": p.pair_id, "objective": objective, "group": p.group_key, "context": p.context}
            )
            taken += 1
    return out


def rl_prompts(
    test_sets: dict, objectives: Sequence[str], n_train: int, n_eval: int, seed: int, exclude: Iterable[str]
) -> tuple[list[dict], list[dict]]:
    """(training prompts, evaluation prompts) of RL: disjoint prompt groups, none in `exclude`.

    The evaluation set is drawn first, so it does not change with `n_train`; every RL seed and
    objective shares both sets (seeds change the order and the samples, not the prompts).
    """
    exclude = set(exclude)
    evaluation = select_prompts(test_sets, objectives, n_eval, seed + 2, exclude)
    train = select_prompts(
        test_sets, objectives, n_train, seed + 1, exclude | {p["group"] for p in evaluation}
    )
    return train, evaluation


def prompts_to_json(prompts: list[dict]) -> list[dict]:
    return [{**p, "context": [{"role": t.role, "content": t.content} for t in p["context"]]} for p in prompts]


def prompts_from_json(rows: list[dict]) -> list[dict]:
    return [{**p, "context": tuple(Turn(t["role"], t["content"]) for t in p["context"])} for p in rows]
