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
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from rmtension.audit.stage import stage_audit
from rmtension.combine.stage import stage_combine
from rmtension.config import StudyConfig, dump_config
from rmtension.model.precision import precision_note, use_bf16
from rmtension.neurons.ablation import resolve_bf16
from rmtension.neurons.ablation_stage import run_ablation
from rmtension.neurons.stage import run_neuron_scoring
from rmtension.optimise.bon_stage import stage_bon
from rmtension.optimise.pm_halves import stage_pm_halves
from rmtension.optimise.rl_stage import stage_rl
from rmtension.report.document import write_report
from rmtension.rm.conflict_stage import stage_conflict
from rmtension.rm.stages import (
    Prepared,
    caches_trunk,
    prepare,
    stage_eval,
    stage_tension,
    stage_train,
    trunk_cache,
)
from rmtension.run import dist, interrupt
from rmtension.run.log import duration, log
from rmtension.run.quiet import quiet_third_party
from rmtension.run.runio import atomic_write_text


def run_study(cfg: StudyConfig, out: str | Path | None = None) -> Path:
    """Run (or resume) the whole study; returns the run directory."""
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
    extra = extra_stages(cfg)
    report = ["report"] if cfg.report.enabled else []
    stage = StageClock(["prepare", "train", "eval", "tension", "conflict", *dict(extra), *report])
    with interrupt.graceful_sigint():
        with stage("prepare"):
            prep = prepare(run_dir, cfg)
        with stage("train"):
            stage_train(prep)
        with stage("eval"):
            stage_eval(prep)
        with stage("tension"):
            table = stage_tension(prep)
        with stage("conflict"):
            stage_conflict(prep)
        for name, stage_fn in extra:
            interrupt.check(f"before {name}")
            with stage(name):
                stage_fn(prep)
        if cfg.report.enabled:
            with stage("report"):
                write_report(run_dir)
    prep.timings["total_s"] = time.perf_counter() - t0
    write_timings(run_dir, stage.seconds, prep.timings)
    print_summary(run_dir, table, prep.timings)
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


def stage_neurons(prep: Prepared) -> Path:
    """neurons/: scores, sets and overlap of each analysed RM (`rmtension.neurons.stage`)."""
    cfg = prep.ctx.cfg.neurons
    return run_neuron_scoring(prep.ctx, cfg, tokenizer=prep.tokenizer, trunk=_top_cache(prep, cfg.bf16))


def stage_ablation(prep: Prepared) -> Path:
    """ablation.csv, cross_effect.json, neurons/influence.json (`rmtension.neurons.ablation_stage`)."""
    cfg = prep.ctx.cfg.ablation
    bf16 = resolve_bf16(cfg.bf16, dist.device())
    return run_ablation(prep.ctx, cfg, tokenizer=prep.tokenizer, trunk=_top_cache(prep, bf16))


def _top_cache(prep: Prepared, stage_bf16: bool) -> Callable[[], object] | None:
    """What gives the trunk cache (built if need be, as for evaluation, and only when the stage runs)
    when the neuron sets lie in the trained blocks above it and the stage computes in the cache's
    precision (`train.bf16`), so the neuron and ablation forwards always start from it: a resumed
    study computes what an uninterrupted one does. A stage in fp32 over a bf16 cache runs whole."""
    cfg, device = prep.ctx.cfg, dist.device()
    same_precision = use_bf16(stage_bf16, device) == use_bf16(cfg.train.bf16, device)
    uses = caches_trunk(cfg) and cfg.neurons.layers == "trained" and same_precision
    return (lambda: trunk_cache(prep)) if uses else None


STAGES: tuple[tuple[str, Callable[[Prepared], object]], ...] = (
    ("audit", stage_audit),
    ("combine", stage_combine),
    ("neurons", stage_neurons),
    ("ablation", stage_ablation),
    ("pm_halves", stage_pm_halves),
    ("bon", stage_bon),
    ("rl", stage_rl),
)
"""The stages after the tension table, in order; each is named after the config section that turns it on."""


def extra_stages(cfg: StudyConfig) -> list[tuple[str, Callable[[Prepared], object]]]:
    """The `STAGES` whose config section is present and enabled, in order.

    Each is `(name, fn(prep))`; the sections' cross-checks already ran in `StudyConfig`'s validator.
    """
    on = lambda section: section is not None and getattr(section, "enabled", True)  # noqa: E731
    return [(name, fn) for name, fn in STAGES if on(getattr(cfg, name))]


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
