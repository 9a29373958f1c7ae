"""`rmtension study`: data -> training (3 objectives x seeds) -> evaluation -> tension -> the stages
its config turns on (neurons, ablation, PM halves, best-of-n, RL) -> report.

Each stage writes its outputs atomically and then a manifest with its config hash and the
content hash of each output. A stage whose manifest matches is skipped, so a changed config
recomputes only what depends on it, and an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from rmtension.ablation import stage as ablation_stage
from rmtension.audit import stage as audit_stage
from rmtension.bon import stage as bon_stage
from rmtension.combine import stage as combine_stage
from rmtension.config import StudyConfig, dump_config
from rmtension.conflict import stage as conflict_stage
from rmtension.data import stage as data_stage
from rmtension.data.stage import prepare
from rmtension.eval import stage as eval_stage
from rmtension.model.precision import precision_note
from rmtension.neurons import stage as neurons_stage
from rmtension.neurons.claims import settings_sentence
from rmtension.pm_halves import stage as pm_halves_stage
from rmtension.report.document import Contents, write_report
from rmtension.report.section import Section
from rmtension.rl import stage as rl_stage
from rmtension.run import dist, interrupt
from rmtension.run.log import duration, log
from rmtension.run.prepared import Prepared
from rmtension.run.quiet import quiet_third_party
from rmtension.run.runio import atomic_write_text, read_json
from rmtension.stats.finding import CLAIMS, Finding
from rmtension.tension import stage as tension_stage
from rmtension.train import stage as train_stage


def run_study(
    cfg: StudyConfig,
    out: str | Path | None = None,
    only: Collection[str] | None = None,
    force: Collection[str] = (),
    report: bool = True,
) -> Path:
    """Run (or resume) the study, or the stages named in `only` of it; returns the run directory.

    The one orchestrator: `rmtension study` runs every enabled stage of `STAGES`, and `rmtension bon`,
    `rl`, `ablate` and `neurons score` run the same list filtered by `only` (the data stage always
    runs first: every other stage starts from what it prepares). Stages named in `force` recompute
    even when their manifest matches. `report`: write the report afterwards (when `report.enabled`).
    """
    run_dir = Path(out or Path("runs") / cfg.name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    quiet_third_party()
    torch.manual_seed(0)
    np.random.seed(0)
    t0 = time.perf_counter()
    note = precision_note(cfg.train.bf16, dist.device())
    if note:
        log(note)
    stages = enabled_stages(cfg, only)
    report = report and cfg.report.enabled
    clock = StageClock(["prepare", *(s.name for s in stages), *(["report"] if report else [])])
    with interrupt.graceful_sigint():
        with clock("prepare"):
            prep = prepare(run_dir, cfg)
        prep.force = frozenset(force)
        for s in stages:
            interrupt.check(f"before {s.name}")
            with clock(s.name):
                s.run(prep)
        if report:
            with clock("report"):
                write_study_report(run_dir)
    prep.timings["total_s"] = time.perf_counter() - t0
    write_timings(run_dir, clock.seconds, prep.timings)
    if (run_dir / "tension.json").exists() and only is None:
        print_summary(run_dir, read_json(run_dir / "tension.json"), prep.timings)
    return run_dir


class StageClock:
    """The study's stage lines and times: `stage i/n <name>: started` when a stage starts, `...: done in
    <wall time>` when it ends, and each stage's wall seconds in `seconds` (timings.json), also for a
    stage that failed."""

    def __init__(self, names: list[str]):
        self.names = names
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        label = f"stage {self.names.index(name) + 1}/{len(self.names)} {name}"
        log(f"{label}: started")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        log(f"{label}: done in {duration(self.seconds[name])}")


def write_timings(run_dir: Path, seconds: dict[str, float], extra: dict[str, float]) -> None:
    """timings.json: wall seconds per stage of this invocation (a resumed run times only what it redid;
    a stage that was up to date takes about 0 s). Not a result. Call it from every process:
    the write is main-only and ends in a barrier."""
    doc = {
        "unit": "wall seconds of the last `rmtension study` invocation",
        "device": str(dist.device()),
        "torch_threads": torch.get_num_threads(),
        "stages": {k: round(v, 2) for k, v in seconds.items()},
        "detail": {k: round(v, 2) for k, v in extra.items()},
    }
    atomic_write_text(run_dir / "timings.json", json.dumps(doc, indent=2) + "\n")
    log("stage times: " + ", ".join(f"{k} {duration(v)}" for k, v in seconds.items()))


@dataclass(frozen=True)
class Stage:
    """One stage of the study: its name (the config section that turns it on, if any) and its package's
    `stage` module, whose contract is `run(prep)`, `sections(run_dir)` and `findings(run_dir)`."""

    name: str
    contract: ModuleType
    optional: bool = True
    """Runs only when its config section is present and enabled; False: always (the core study)."""

    def run(self, prep: Prepared) -> object:
        return self.contract.run(prep)

    def sections(self, run_dir: Path) -> list[Section]:
        return self.contract.sections(run_dir)

    def findings(self, run_dir: Path) -> list[Finding]:
        return self.contract.findings(run_dir)


STAGES: tuple[Stage, ...] = (
    Stage("data", data_stage, optional=False),
    Stage("train", train_stage, optional=False),
    Stage("eval", eval_stage, optional=False),
    Stage("tension", tension_stage, optional=False),
    Stage("conflict", conflict_stage, optional=False),
    Stage("audit", audit_stage),
    Stage("combine", combine_stage),
    Stage("neurons", neurons_stage),
    Stage("ablation", ablation_stage),
    Stage("pm_halves", pm_halves_stage),
    Stage("bon", bon_stage),
    Stage("rl", rl_stage),
)
"""Every stage in the order they run, report and claim: the one list the study, the filtered commands
(`rmtension bon`, `rl`, `ablate`, `neurons score`) and the report loop over. The data stage runs first
and always (`prepare`: every other stage starts from what it hands on)."""


def findings(run_dir: str | Path) -> list[Finding]:
    """Every stage's findings, in the order of `rmtension.stats.finding.CLAIMS`."""
    out = [f for stage in STAGES for f in stage.findings(Path(run_dir))]
    order = list(CLAIMS)
    return sorted(out, key=lambda f: order.index(f.id) if f.id in order else len(order))


def sections(run_dir: str | Path) -> list[Section]:
    """Every stage's report sections, in stage order (each names its report part)."""
    return [s for stage in STAGES for s in stage.sections(Path(run_dir))]


def write_study_report(run_dir: str | Path) -> Path:
    """findings.json, report.md and report.html of a run directory; returns the HTML path."""
    return write_report(run_dir, Contents(sections, findings, settings_sentence))


def enabled_stages(cfg: StudyConfig, only: Collection[str] | None = None) -> list[Stage]:
    """The `STAGES` that run: the core ones and those whose config section is present and enabled,
    in order, limited to the names in `only` when given. The sections' cross-checks already ran in
    `StudyConfig`'s validator."""
    on = lambda s: s.name != "data" and (not s.optional or _enabled(getattr(cfg, s.name)))  # noqa: E731
    return [s for s in STAGES if on(s) and (only is None or s.name in only)]


def _enabled(section: object) -> bool:
    return section is not None and getattr(section, "enabled", True)


def extra_stages(cfg: StudyConfig) -> list[tuple[str, Callable[[Prepared], object]]]:
    """The enabled optional stages as `(name, run)`, in order."""
    return [(s.name, s.run) for s in enabled_stages(cfg) if s.optional]


def print_summary(run_dir: Path, table: dict, timings: dict) -> None:
    log("tension table (accuracy, mean over seeds [95% CI]):")
    tests = sorted({t for by in table["accuracy"].values() for t in by})
    width = max([len("RM"), *map(len, table["accuracy"])]) + 2
    dist.print_main("  " + "RM".ljust(width) + "".join(t.ljust(26) for t in tests))
    for rm, by in table["accuracy"].items():
        cells = [
            f"{by[t]['mean']:.3f} [{by[t]['ci95'][0]:.3f}, {by[t]['ci95'][1]:.3f}]".ljust(26) for t in tests
        ]
        dist.print_main("  " + rm.ljust(width) + "".join(cells))
    for t, d in table["interference"].items():
        dist.print_main(
            f"  interference on {t}: {d['mixed_minus_best_single']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        )
    log(f"done in {duration(timings.get('total_s', 0))}; run directory: {run_dir}")
    report = run_dir / "report.html"
    if report.exists():
        log(f"report: {report}")
