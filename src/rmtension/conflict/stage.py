"""The conflict stage: `conflict.json` from the per-step `rm/<rm>/seed<k>/conflict.csv` the trainer
writes (`rmtension.conflict.aggregate`), the report section "Where the objectives conflict" and the
PCGrad claim (`rmtension.conflict.report`)."""

from __future__ import annotations

from pathlib import Path

from rmtension.conflict.aggregate import stage_conflict as run  # noqa: F401 (the stage contract)
from rmtension.conflict.report import pcgrad_reduces_interference, section_conflict
from rmtension.report.section import Section, in_part
from rmtension.stats.finding import Finding


def sections(run_dir: Path) -> list[Section]:
    return in_part("conflict", section_conflict(run_dir))


def findings(run_dir: Path) -> list[Finding]:
    return [pcgrad_reduces_interference(run_dir)]
