"""The train stage: one reward model per registered RM name and seed, `rm/<rm>/seed<k>/` (an HF folder,
`metrics.json`, `metrics.jsonl`), each trained by `rmtension.trainer.train`; its report section is the
training curves."""

from __future__ import annotations

from pathlib import Path

import torch

from rmtension.model.kinds import lookup
from rmtension.report.core import section_training
from rmtension.report.section import Section, in_part
from rmtension.run import interrupt
from rmtension.run.log import device, log
from rmtension.run.progress import stage_bar
from rmtension.run.prepared import Prepared, pair_heads, pair_objectives, study_rms, train_hash, trunk_cache
from rmtension.run.runio import stage_complete, write_manifest
from rmtension.stats.finding import Finding
from rmtension.model.backbones import load_reward_model
from rmtension.trainer.train import train_reward_model, train_steps
from rmtension.model.trunk import trunk_fingerprint


def run(prep: Prepared) -> None:
    """Train every RM of the study that is not trained yet (a complete one is skipped)."""
    ctx, cfg = prep.ctx, prep.ctx.cfg
    jobs = []  # (objective, seed, stage, hash) not trained yet
    for objective in study_rms(cfg):
        for seed in cfg.train.seeds:
            stage, h = f"train/{objective}/seed{seed}", train_hash(cfg, objective, seed)
            if not stage_complete(ctx.run_dir, stage, h):
                jobs.append((objective, seed, stage, h))
    if not jobs:
        return
    cache = trunk_cache(prep)  # before the bar: building the cache draws its own
    steps = sum(train_steps(len(prep.train[lookup(o).data]), cfg.train) for o, *_ in jobs)
    with stage_bar("train", steps, "step") as bar:
        for objective, seed, stage, h in jobs:
            data = lookup(objective).data
            torch.manual_seed(seed)  # seeds the score head's initialisation
            heads = lookup(objective).heads or None
            model = load_reward_model(
                ctx.backbone_path, prep.tokenizer, cfg.model.trust_remote_code, heads=heads
            ).to(device())
            if cache is not None and trunk_fingerprint(model, cache.k) != cache.fingerprint:
                raise RuntimeError("backbone trunk differs from the cached trunk")
            out = ctx.rm_dir(objective, seed)
            log(f"training {objective} RM, seed {seed}: {len(prep.train[data])} pairs")
            res = train_reward_model(
                model,
                prep.tokenizer,
                prep.train[data],
                prep.val[data],
                cfg.train,
                seed,
                out,
                cache=cache,
                bar=bar,
                objectives=None if heads else pair_objectives(prep, data),
                pcgrad=lookup(objective).pcgrad,
                resume_key=h,
                heads=(pair_heads(prep, "train"), pair_heads(prep, "val")) if heads else None,
                plant_neurons=cfg.train.plant_neurons.get(objective),
            )
            log(
                f"  best val accuracy {res.best_val_accuracy:.3f} at step {res.best_step}, "
                f"{res.metrics['pairs_per_s']:.1f} pairs/s"
            )
            write_manifest(ctx.run_dir, stage, h, [out])
            interrupt.check("after training " + stage)


def sections(run_dir: Path) -> list[Section]:
    return in_part("training", section_training(run_dir))


def findings(run_dir: Path) -> list[Finding]:
    return []
