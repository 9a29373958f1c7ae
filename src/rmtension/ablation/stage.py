"""The ablation stage's contract (`rmtension.study.STAGES`): `run(prep)` ablates the neuron sets and
their random controls (`rmtension.ablation.run`), `sections` are the ablation heatmaps, the p-sweep
and the cross-effects (`rmtension.ablation.report`), `findings` the four ablation claims
(`rmtension.ablation.claims`)."""

from __future__ import annotations

from pathlib import Path

from rmtension.ablation import claims, report
from rmtension.ablation.run import run_ablation
from rmtension.judges.ablate import resolve_bf16
from rmtension.neurons.config import claim_settings
from rmtension.report.section import Section, in_part
from rmtension.run import dist
from rmtension.run.prepared import Prepared, top_cache
from rmtension.stats.finding import Finding


def run(prep: Prepared) -> Path:
    """ablation.csv, neurons/influence.json, neurons/dissociation.json, cross_effect.json."""
    cfg = prep.ctx.cfg.ablation
    trunk = top_cache(prep, resolve_bf16(cfg.bf16, dist.device()))
    return run_ablation(prep.ctx, cfg, "ablation" in prep.force, prep.tokenizer, trunk)


def sections(run_dir: Path) -> list[Section]:
    st = claim_settings(run_dir)
    return in_part(
        "ablations",
        report.section_ablation(run_dir, st),
        report.section_sweep(run_dir, st),
        report.section_cross(run_dir, st),
    )


def findings(run_dir: Path) -> list[Finding]:
    return claims.findings(run_dir)
