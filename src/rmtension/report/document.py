"""`report.md` and a self-contained `report.html` (inline CSS and images), built only from run-directory files.

The report always has the same top-level sections, in this order: summary of findings, `PARTS`
(data, tension table, calibration, ..., best-of-n and RL), provenance. The writer imports no stage:
the study hands it each stage's section functions and findings (`Contents`, built from `study.STAGES`). A part whose stage was not configured says so in one line ("not run in this study
(enable `neurons:` in the config)"), so the section list is the same for every run. Every number
names the file it came from; every table is also `tables/<anchor>_<i>.csv` and every figure
`figures/<name>.png` and `.pdf` (`rmtension.report.figures`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rmtension.report.findings import section_summary, write_findings
from rmtension.report.provenance import section_provenance
from rmtension.report.section import Section, prune_figures, write_document
from rmtension.run.runio import configured, read_config
from rmtension.stats.finding import Finding

__all__ = ["PARTS", "Part", "Section", "build_sections", "write_report"]


@dataclass(frozen=True)
class Part:
    """One top-level section of the report: where the stages' sections go and what to say when none has results."""

    anchor: str
    title: str
    enable: tuple[str, ...] = ()
    """Config sections any of which runs the stage(s) behind it; empty for the core study."""
    hint: str = ""
    """What to enable, for the "not run" sentence."""
    expects: str = ""
    """The file(s) whose absence means the part has nothing to show."""


PARTS: tuple[Part, ...] = (
    Part("data", "Data", expects="data/summary.json"),
    Part("tension", "Tension table", expects="tension.json"),
    Part("calibration", "Calibration", expects="tension.json"),
    Part(
        "behaviour",
        "Avoidant or open to misuse",
        expects="tension.json rows xstest-should-respond and xstest-should-refuse (set `data.xstest_path`)",
    ),
    Part("audit", "Helpful refusals (audit)", ("audit",), "`audit:`", "audit.json"),
    Part("conflict", "Where the objectives conflict", expects="conflict.json (set `train.conflict_every`)"),
    Part("combine", "Combining the objectives", ("combine",), "`combine:`", "combine/frontier.csv"),
    Part("training", "Training curves", expects="rm/<objective>/seed<k>/metrics.json"),
    Part("neurons", "Neurons", ("neurons",), "`neurons:`", "neurons/overlap.json"),
    Part("ablations", "Ablations", ("ablation",), "`neurons:` and `ablation:`", "ablation.csv"),
    Part(
        "optimisation",
        "Best-of-n and RL",
        ("bon", "rl"),
        "`policy:`, `pm_halves:` and `bon:` or `rl:`",
        "bon.csv, bon_fit.json or rl.csv",
    ),
)
"""Every part between the summary of findings and provenance, in report order; each stage's sections
say which part they go in (`Section.part`)."""


@dataclass(frozen=True)
class Contents:
    """What the stages give the report, each a function of the run directory: their sections (each
    placed in a part, `Section.part`), their findings, and sentences on the settings the claims were read at."""

    sections: Callable[[Path], list[Section]]
    findings: Callable[[Path], list[Finding]]
    settings: Callable[[Path], list[str]]


def not_run_sentence(part: Part, config: dict) -> str:
    if part.enable and not any(configured(config, k) for k in part.enable):
        return f"Not run in this study (enable {part.hint} in the config)."
    return f"No results in this run directory (`{part.expects}` is missing)."


def build_part(part: Part, found: Sequence[Section], config: dict) -> Section:
    """The part's one section as it is, or its sections as subsections, or the "not run" sentence."""
    if len(found) == 1 and found[0].anchor == part.anchor:
        return found[0]
    s = Section(part.title, part.anchor, subsections=found)
    if not found:
        s.paragraphs.append(not_run_sentence(part, config))
    return s


def build_sections(run_dir: Path, contents: Contents) -> list[Section]:
    """All top-level sections: the summary of findings, `PARTS` in order, then provenance."""
    config = read_config(run_dir)
    found = contents.sections(run_dir)
    parts = [build_part(p, [s for s in found if s.part == p.anchor], config) for p in PARTS]
    return [section_summary(run_dir, contents.settings(run_dir)), *parts, section_provenance(run_dir)]


SECTION_ANCHORS = ("summary",) + tuple(p.anchor for p in PARTS) + ("provenance",)
"""The top-level anchors every report has (`<section id=...>` in the HTML)."""


def write_report(run_dir: str | Path, contents: Contents) -> Path:
    """Write findings.json, report.md, report.html, tables/*.csv and figures/* from the files in `run_dir`
    and what the stages give (`contents`); returns the HTML path."""
    run_dir = Path(run_dir)
    (run_dir / "figures" / "index.json").unlink(
        missing_ok=True
    )  # `save` re-lists the figures this build makes
    write_findings(run_dir, contents.findings(run_dir))  # findings.json first: the summary section reads it
    sections = build_sections(run_dir, contents)
    made = {p.stem for s in _walk(sections) for _, p in s.figures}
    prune_figures(run_dir, made)
    return write_document(run_dir, "rmtension report", sections)


def _walk(sections: list[Section]):
    for s in sections:
        yield s
        yield from _walk(s.subsections)
