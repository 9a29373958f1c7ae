"""`report.md` and a self-contained `report.html` (inline CSS and images), built only from run-directory files.

The report always has the same top-level sections (`PARTS`), in this order: summary of findings,
data, tension table, calibration, training curves, neurons, ablations, best-of-n and RL,
provenance. A part whose stage was not configured says so in one line ("not run in this study
(enable `neurons:` in the config)"), so the section list is the same for every run. Every number
names the file it came from; every table is also `tables/<anchor>_<i>.csv` and every figure
`figures/<name>.png` and `.pdf` (`rmtension.report.figures`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rmtension.audit.report import section_audit
from rmtension.combine.report import section_combine
from rmtension.neurons.report import section_ablation, section_cross, section_overlap, section_sweep
from rmtension.optimise.report import section_bon, section_examples, section_frontier, section_rl
from rmtension.report.behaviour import section_avoidant_misuse
from rmtension.report.conflict import section_conflict
from rmtension.report.core import (
    configured,
    read_config,
    section_calibration,
    section_data,
    section_tension,
    section_training,
)
from rmtension.report.findings import section_summary, write_findings
from rmtension.report.provenance import section_provenance
from rmtension.report.section import Section, prune_figures, write_document

__all__ = ["PARTS", "Part", "Section", "build_sections", "write_report"]


@dataclass(frozen=True)
class Part:
    """One top-level section: the section functions it gathers and what to say when none has results."""

    anchor: str
    title: str
    builders: tuple[Callable[[Path], Section | None], ...]
    """Section functions, each `fn(run_dir) -> Section | None`."""
    enable: tuple[str, ...] = ()
    """Config sections any of which runs the stage(s) behind it; empty for the core study."""
    hint: str = ""
    """What to enable, for the "not run" sentence."""
    expects: str = ""
    """The file(s) whose absence means the part has nothing to show."""


PARTS: tuple[Part, ...] = (
    Part("summary", "Summary of findings", (section_summary,)),
    Part("data", "Data", (section_data,), expects="data/summary.json"),
    Part("tension", "Tension table", (section_tension,), expects="tension.json"),
    Part("calibration", "Calibration", (section_calibration,), expects="tension.json"),
    Part(
        "behaviour",
        "Avoidant or open to misuse",
        (section_avoidant_misuse,),
        expects="tension.json rows xstest-should-respond and xstest-should-refuse (set `data.xstest_path`)",
    ),
    Part("audit", "Helpful refusals (audit)", (section_audit,), ("audit",), "`audit:`", "audit.json"),
    Part(
        "conflict",
        "Where the objectives conflict",
        (section_conflict,),
        expects="conflict.json (set `train.conflict_every`)",
    ),
    Part(
        "combine",
        "Combining the objectives",
        (section_combine,),
        ("combine",),
        "`combine:`",
        "combine/frontier.csv",
    ),
    Part("training", "Training curves", (section_training,), expects="rm/<objective>/seed<k>/metrics.json"),
    Part("neurons", "Neurons", (section_overlap,), ("neurons",), "`neurons:`", "neurons/overlap.json"),
    Part(
        "ablations",
        "Ablations",
        (section_ablation, section_sweep, section_cross),
        ("ablation",),
        "`neurons:` and `ablation:`",
        "ablation.csv",
    ),
    Part(
        "optimisation",
        "Best-of-n and RL",
        (section_bon, section_rl, section_frontier, section_examples),
        ("bon", "rl"),
        "`policy:`, `pm_halves:` and `bon:` or `rl:`",
        "bon.csv, bon_fit.json or rl.csv",
    ),
)
"""Every part before provenance, in report order."""


def not_run_sentence(part: Part, config: dict) -> str:
    if part.enable and not any(configured(config, k) for k in part.enable):
        return f"Not run in this study (enable {part.hint} in the config)."
    return f"No results in this run directory (`{part.expects}` is missing)."


def build_part(part: Part, run_dir: Path, config: dict) -> Section:
    found = [s for s in (build(run_dir) for build in part.builders) if s is not None]
    if len(found) == 1 and found[0].anchor == part.anchor:
        return found[0]
    s = Section(part.title, part.anchor, subsections=found)
    if not found:
        s.paragraphs.append(not_run_sentence(part, config))
    return s


def build_sections(run_dir: Path) -> list[Section]:
    """All top-level sections, in `PARTS` order, then provenance."""
    config = read_config(run_dir)
    return [build_part(p, run_dir, config) for p in PARTS] + [section_provenance(run_dir)]


SECTION_ANCHORS = tuple(p.anchor for p in PARTS) + ("provenance",)
"""The top-level anchors every report has (`<section id=...>` in the HTML)."""


def write_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html, tables/*.csv and figures/* from the files in `run_dir`; returns the HTML path."""
    run_dir = Path(run_dir)
    (run_dir / "figures" / "index.json").unlink(
        missing_ok=True
    )  # `save` re-lists the figures this build makes
    write_findings(run_dir)  # findings.json first: the summary section reads it
    sections = build_sections(run_dir)
    made = {p.stem for s in _walk(sections) for _, p in s.figures}
    prune_figures(run_dir, made)
    return write_document(run_dir, "rmtension report", sections)


def _walk(sections: list[Section]):
    for s in sections:
        yield s
        yield from _walk(s.subsections)
