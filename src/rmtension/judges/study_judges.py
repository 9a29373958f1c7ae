"""The study's judges for best-of-n and RL: each PM half (`pm/<objective>/{train,test}/`) and study RM,
where its folder is and what its weights depend on, and the hashes of best-of-n's samples and scores
that RL reads back as its reward scale."""

from __future__ import annotations

from pathlib import Path

from rmtension.config import OBJECTIVES, config_hash
from rmtension.policy.prompts import RULE
from rmtension.run.prepared import train_hash, train_settings
from rmtension.run.runio import inside


def pm_dir(run_dir: Path, objective: str, half: str) -> Path:
    """HF folder of pm_train (`half="train"`) or pm_test (`half="test"`) of an objective."""
    return inside(run_dir, "pm", objective, half)


def pm_hash(cfg, objective: str, half: str) -> str:
    return config_hash(
        cfg.data,
        cfg.model,
        train_settings(cfg.train),
        cfg.pm_halves.model_copy(update={"objectives": []}),
        objective,
        half,
        "pm",
    )


def judge_paths(prep) -> dict[str, object]:
    """Judge name -> HF folder: every PM half, and the study RM (first seed) of each objective."""
    ctx, cfg = prep.ctx, prep.ctx.cfg
    paths = {}
    for o in cfg.pm_halves.objectives:
        paths[f"pm_train_{o}"] = pm_dir(ctx.run_dir, o, "train")
        paths[f"pm_test_{o}"] = pm_dir(ctx.run_dir, o, "test")
    for o in OBJECTIVES:
        paths[f"rm_{o}"] = ctx.rm_dir(o, ctx.seeds[0])
    if two_head_judges(cfg):  # its heads, for the combined judges' picks (`rmtension.judges.combined`)
        for h in ("helpful", "harmless"):
            paths[f"rm_two_head_{h}"] = (ctx.rm_dir("two_head", ctx.seeds[0]), h)
    return paths


def two_head_judges(cfg) -> bool:
    """Whether best-of-n also scores with two_head's heads: the combine stage trains it."""
    return cfg.combine is not None and cfg.combine.two_head


def judge_hashes(prep) -> dict[str, str]:
    """What each judge's weights depend on (the study RMs' train hash, the PM halves' hash)."""
    cfg = prep.ctx.cfg
    out = {f"rm_{o}": train_hash(cfg, o, prep.ctx.seeds[0]) for o in OBJECTIVES}
    if two_head_judges(cfg):
        for h in ("helpful", "harmless"):
            out[f"rm_two_head_{h}"] = train_hash(cfg, "two_head", prep.ctx.seeds[0]) + f":{h}"
    for o in cfg.pm_halves.objectives:
        out[f"pm_train_{o}"], out[f"pm_test_{o}"] = pm_hash(cfg, o, "train"), pm_hash(cfg, o, "test")
    return out


def sample_hash(cfg) -> str:
    b = cfg.bon
    return config_hash(
        cfg.data,
        cfg.policy,
        {"n_prompts": b.n_prompts, "n_samples": b.n_samples, "prompt_objectives": b.prompt_objectives},
        RULE,
        "bon/sample",
    )


def score_hash(prep) -> str:
    return config_hash(
        sample_hash(prep.ctx.cfg), judge_hashes(prep), prep.ctx.cfg.model.max_length, "bon/score"
    )
