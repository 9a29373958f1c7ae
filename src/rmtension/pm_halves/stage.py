"""The PM halves of Bai et al. (2022), sec. 4: pm_train and pm_test, two reward models trained on
disjoint, prompt-grouped halves of an objective's training pairs.

Outputs: `pm/<objective>/{train,test}/` (HF folders like `rm/<objective>/seed<k>`) and
`pm/<objective>/halves.json` (pair ids of each half and each PM's test accuracy).
"""

from __future__ import annotations

from pathlib import Path

from collections.abc import Sequence

import numpy as np
import torch

from rmtension.run import interrupt
from rmtension.config import config_hash
from rmtension.stats.bootstrap import correct
from rmtension.judges.study_judges import pm_dir, pm_hash
from rmtension.run.runio import inside, stage_complete, write_json, write_manifest
from rmtension.report.section import Section
from rmtension.stats.finding import Finding
from rmtension.run.prepared import trunk_cache
from rmtension.trainer.train import train_steps
from rmtension.run.progress import stage_bar
from rmtension.model.forward import PairForward
from rmtension.model.backbones import load_reward_model
from rmtension.run.log import device, log
from rmtension.trainer.train import train_reward_model

HALVES = ("train", "test")


def split_halves(group_keys: Sequence[str], seed: int, cap: int | None = None) -> tuple[list[int], list[int]]:
    """Indices of two disjoint halves; all pairs of one prompt group land in the same half.

    Groups are visited in a seeded order and each goes to the currently smaller half, so the halves
    differ in size by at most the largest group. `cap` keeps at most that many pairs per half.
    """
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(group_keys):
        groups.setdefault(key, []).append(i)
    keys = list(groups)
    halves: tuple[list[int], list[int]] = ([], [])
    for g in np.random.default_rng(seed).permutation(len(keys)):
        members = groups[keys[int(g)]]
        target = halves[0] if len(halves[0]) <= len(halves[1]) else halves[1]
        if cap is None or len(target) + len(members) <= cap:
            target.extend(members)
    return sorted(halves[0]), sorted(halves[1])


def stage_pm_halves(prep) -> None:
    """Train pm_train on half A and pm_test on half B of each objective's training pairs (the study's recipe)."""

    ctx, cfg = prep.ctx, prep.ctx.cfg
    jobs = {}  # objective -> (stage, hash, halves) not trained yet
    for objective in cfg.pm_halves.objectives:
        stage = f"pm/{objective}"
        h = config_hash(pm_hash(cfg, objective, "train"), pm_hash(cfg, objective, "test"))
        if stage_complete(ctx.run_dir, stage, h):
            continue
        pairs, enc = ctx.bundle.splits[objective]["train"], prep.train[objective]
        if [p.pair_id for p in pairs] != enc.pair_ids:
            raise RuntimeError(f"encoded training pairs of {objective} are out of step with the data bundle")
        keys = [p.group_key for p in pairs]
        jobs[objective] = (stage, h, split_halves(keys, cfg.pm_halves.seed, cfg.pm_halves.max_pairs_per_half))
    if not jobs:
        return
    cache = trunk_cache(prep)  # before the bar: building the cache draws its own
    steps = sum(train_steps(len(idx), cfg.train) for *_, halves in jobs.values() for idx in halves)
    with stage_bar("pm_halves", steps, "step") as bar:
        for objective, (stage, h, halves) in jobs.items():
            train_halves(prep, objective, halves, cache, bar)
            write_manifest(
                ctx.run_dir,
                stage,
                h,
                [pm_dir(ctx.run_dir, objective, hf) for hf in HALVES]
                + [inside(ctx.run_dir, "pm", objective, "halves.json")],
            )


def train_halves(prep, objective: str, halves: tuple[list[int], list[int]], cache, bar) -> None:
    """pm_train on `halves[0]` and pm_test on `halves[1]` (indices into the objective's training pairs),
    each scored on the test sets; writes `pm/<objective>/halves.json`. `cache`: the study's trunk cache
    (or None), `bar`: the stage's progress bar."""

    ctx, cfg = prep.ctx, prep.ctx.cfg
    enc = prep.train[objective]
    record = {"objective": objective, "seed": cfg.pm_halves.seed, "halves": {}}
    for half, idx in zip(HALVES, halves):
        torch.manual_seed(cfg.pm_halves.seed)  # the score head's initialisation, as in stage_train
        model = load_reward_model(ctx.backbone_path, prep.tokenizer, cfg.model.trust_remote_code).to(device())
        log(f"training pm_{half} for {objective} on half {'AB'[HALVES.index(half)]}: {len(idx)} pairs")
        res = train_reward_model(
            model,
            prep.tokenizer,
            enc.subset(idx),
            prep.val[objective],
            cfg.train,
            cfg.pm_halves.seed,
            pm_dir(ctx.run_dir, objective, half),
            cache=cache,
            bar=bar,
        )
        acc = {}
        with PairForward(model, prep.tokenizer.pad_token_id, cfg.train.bf16, cache) as fwd:
            for test, t_enc in prep.tests.items():
                r_c, r_r = fwd.score(t_enc, cfg.eval.batch_size)
                acc[test] = float(correct(r_c, r_r).mean())
        record["halves"][half] = {
            "n_pairs": len(idx),
            "pair_ids": [enc.pair_ids[i] for i in idx],
            "best_val_accuracy": res.best_val_accuracy,
            "test_accuracy": acc,
        }
        log(f"  val {res.best_val_accuracy:.3f}; test " + ", ".join(f"{t} {a:.3f}" for t, a in acc.items()))
        interrupt.check(f"after training pm_{half} of {objective}")
    write_json(inside(ctx.run_dir, "pm", objective, "halves.json"), record)


run = stage_pm_halves
"""The stage contract (`rmtension.study.STAGES`); the PM halves have no section or claim of their own
(best-of-n and RL report what they judge)."""


def sections(run_dir: Path) -> list[Section]:
    return []


def findings(run_dir: Path) -> list[Finding]:
    return []
