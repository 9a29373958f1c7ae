"""The `conflict` stage: gradient conflict of every mixed-data RM, aggregated over steps and seeds.

Reads `rm/<rm>/seed<k>/conflict.csv` (written during training, `rmtension.trainer.conflict`) and writes
`conflict.json`: per RM and block, the mean cosine over training with a two-level bootstrap CI
(seeds, then measured steps within each), the share of measured steps with cosine < 0, the mean
share of parameters with opposite gradient signs, and the mean gradient norms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmtension.config import config_hash
from rmtension.model.kinds import lookup
from rmtension.stats.bootstrap import interval
from rmtension.run.log import log
from rmtension.run.runio import write_json, write_manifest
from rmtension.run.prepared import study_rms

CONFLICT = "conflict.json"


def block_order(name: str) -> tuple[int, int]:
    """layers.0 < layers.1 < ... < other < head."""
    if name.startswith("layers."):
        return 0, int(name.split(".")[1])
    return (1, 0) if name == "other" else (2, 0)


def two_level_mean(per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot] replicates of the mean over seeds of each seed's mean: seeds, then values within a seed, resampled."""
    reps = np.empty(n_boot)
    s = len(per_seed)
    for b in range(n_boot):
        seeds = rng.integers(0, s, size=s) if s > 1 else [0]
        reps[b] = np.mean(
            [per_seed[i][rng.integers(0, len(per_seed[i]), size=len(per_seed[i]))].mean() for i in seeds]
        )
    return reps


def aggregate(
    frames: dict[int, pd.DataFrame], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """{block: {mean_cosine, ci95, share_negative, opposite_sign_share, norm_helpful, norm_harmless, steps}}."""
    rng = np.random.default_rng(seed)
    both = pd.concat([f.assign(seed=s) for s, f in frames.items()], ignore_index=True)
    out = {}
    for block in sorted(both["block"].unique(), key=block_order):
        rows = both[both["block"] == block]
        per_seed = [g["cosine"].to_numpy() for _, g in rows.groupby("seed")]
        out[block] = {
            "mean_cosine": float(np.mean([c.mean() for c in per_seed])),
            "ci95": interval(two_level_mean(per_seed, n_boot, rng), level),
            "share_negative": float((rows["cosine"] < 0).mean()),
            "opposite_sign_share": float(rows["opposite_sign_share"].mean()),
            "norm_helpful": float(rows["norm_helpful"].mean()),
            "norm_harmless": float(rows["norm_harmless"].mean()),
            "steps": int(len(rows)),
        }
    return out


def conflict_rms(run_dir: Path, rms: list[str], seeds: list[int]) -> dict[str, dict[int, Path]]:
    """The study's mixed-data RMs (`rms`) with a conflict.csv for every seed: {rm: {seed: path}}."""
    found = {}
    for name in rms:
        paths = {s: run_dir / "rm" / name / f"seed{s}" / "conflict.csv" for s in seeds}
        if lookup(name).data == "mixed" and all(p.exists() for p in paths.values()):
            found[name] = paths
    return found


def stage_conflict(prep) -> Path | None:
    """conflict.json from every mixed-data RM's conflict.csv; not written when conflict measurement is off."""

    ctx, cfg = prep.ctx, prep.ctx.cfg
    if cfg.train.conflict_every is None:  # off: no conflict.json from an earlier configuration either
        (ctx.run_dir / CONFLICT).unlink(missing_ok=True)
        (ctx.run_dir / "manifests" / "conflict.json").unlink(missing_ok=True)
        return None
    found = conflict_rms(ctx.run_dir, study_rms(cfg), ctx.seeds)
    doc = {
        "method": "cosine of the helpful and harmless parts' loss gradients per block, every "
        f"{cfg.train.conflict_every} optimiser steps; CI: bootstrap over seeds, then measured steps",
        "conflict_every": cfg.train.conflict_every,
        "rms": {
            rm: {
                "blocks": aggregate(
                    {s: pd.read_csv(p) for s, p in paths.items()}, cfg.eval.bootstrap, cfg.data.split_seed
                )
            }
            for rm, paths in found.items()
        },
    }
    out = write_json(ctx.run_dir / CONFLICT, doc)
    write_manifest(ctx.run_dir, "conflict", config_hash(cfg, "conflict"), [CONFLICT])
    for rm, d in doc["rms"].items():
        worst = min(d["blocks"].items(), key=lambda kv: kv[1]["mean_cosine"])
        log(f"conflict: {rm} RM, lowest mean cosine in {worst[0]}: {worst[1]['mean_cosine']:+.3f}")
    return out
