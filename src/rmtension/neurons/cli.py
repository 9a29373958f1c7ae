"""`rmtension neurons score|select|overlap|claims RUN_DIR` and `rmtension ablate RUN_DIR`.

Each command reads the study config saved in `RUN_DIR/config.yaml`, applies `--set key=value`
overrides (`neurons.max_pairs=64`, `ablation.modes=[zero]`, `model.max_length=128`) and writes
into the run directory, like the study stage it repeats.

Imports inside functions: the CLI answers --help and a bad argument in under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rmtension.config import StudyConfig, load_config, resolve_data_path
from rmtension.errors import ArtifactError
from rmtension.ablation.claims import ablation_claims
from rmtension.neurons.claims import overlap_claims
from rmtension.stats.finding import (
    CROSS_ABLATION,
    DOUBLE_DISSOCIATION,
    NEURON_SETS_DIFFER,
    NEURONS_IDENTIFIED,
    NEURONS_SHARED,
    SHARED_OUTSIZED,
    Finding,
)
from rmtension.stats.pvalues import p_phrase
from rmtension.neurons.config import AblationConfig, NeuronsConfig
from rmtension.run.context import StudyContext
from rmtension.run.runio import read_json

app = typer.Typer(
    help="Score MLP neurons, select objective neuron sets and measure their overlap.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

RunDir = Annotated[
    Path, typer.Argument(help="Run directory written by `rmtension study` (holds config.yaml).")
]
Overrides = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Config override key=value (repeatable).")
]


def load_stage_configs(
    run_dir: Path, overrides: list[str] | None = None
) -> tuple[StudyConfig, NeuronsConfig, AblationConfig]:
    """The study config of a run plus its neuron and ablation sections (defaults where the run had none)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; is {run_dir} a run directory of `rmtension study`?")
    study = load_config(path, overrides, present=("neurons", "ablation"))
    return study, study.neurons, study.ablation


NEURON_CLAIMS = (
    NEURONS_IDENTIFIED,
    NEURONS_SHARED,
    NEURON_SETS_DIFFER,
    SHARED_OUTSIZED,
    CROSS_ABLATION,
    DOUBLE_DISSOCIATION,
)
"""The six claims of Tanwar & Atanasova (2026) on neurons, in report order."""


def paper_claims(
    run_dir: str | Path,
    p: float = 5.0,
    scorer: str = "mean_act",
    mode: str = "mean",
    alpha: float = 0.05,
    rm_objective: str | None = "mixed",
) -> list[Finding]:
    """The six neuron claims, in report order: the neuron stage's overlap claims and the ablation
    stage's (`rmtension.ablation.claims.ablation_claims`); "not run" where a file is absent."""
    found = {
        f.id: f
        for f in [
            *overlap_claims(run_dir, p, scorer, alpha),
            *ablation_claims(run_dir, p, scorer, mode, rm_objective),
        ]
    }
    return [found[cid] for cid in NEURON_CLAIMS]


def build_context(run_dir: Path, study: StudyConfig) -> StudyContext:
    """Data and backbone of a run, re-derived from its config (splits are seeded, so they match)."""
    from rmtension.data import build_dataset
    from rmtension.model.backbones import resolve_backbone

    bundle = build_dataset(study.data, resolve_data_path(study.data))
    backbone = resolve_backbone(study.model.backbone, study.model.cache_dir)
    return StudyContext(run_dir=Path(run_dir).resolve(), cfg=study, bundle=bundle, backbone_path=backbone)


@app.command("score")
def score(run_dir: RunDir, overrides: Overrides = None) -> None:
    """Score every neuron of the run's RMs, then select the sets and measure their overlap."""
    from rmtension.study import run_study  # noqa: PLC0415 (the study imports every stage: seconds the other commands skip)

    study, _, _ = load_stage_configs(run_dir, overrides)
    run_study(study, run_dir, only=("neurons",), force=("neurons",), report=False)
    typer.echo(f"wrote {Path(run_dir) / 'neurons'}")


@app.command("select")
def select(run_dir: RunDir, overrides: Overrides = None) -> None:
    """Recompute neurons/sets.json from the saved scores (e.g. with other `neurons.ps`)."""
    from rmtension.neurons.stage import select_sets

    _, ncfg, _ = load_stage_configs(run_dir, overrides)
    typer.echo(f"wrote {select_sets(Path(run_dir), ncfg)}")


@app.command("overlap")
def overlap(run_dir: RunDir, overrides: Overrides = None) -> None:
    """Recompute neurons/overlap.json and scorer_agreement.json from sets.json and the scores."""
    from rmtension.neurons.config import p_key
    from rmtension.neurons.stage import compute_overlap

    _, ncfg, _ = load_stage_configs(run_dir, overrides)
    a, b = compute_overlap(Path(run_dir), ncfg)
    for scorer, by_p in read_json(a).items():
        for p, o in by_p.items():
            typer.echo(
                f"{scorer:12s} p={p_key(float(p)):>4s}%  shared {o['n_shared']:6.0f}  Jaccard {o['jaccard']:.3f} "
                f"(chance {o['jaccard_random']:.3f}, p {p_phrase(o['p_value'])})"
            )
    typer.echo(f"wrote {a} and {b}")


@app.command("claims")
def claims(run_dir: RunDir, overrides: Overrides = None) -> None:
    """Print one sentence per paper claim from the run's neuron and ablation results: the neuron
    entries of its findings.json; recomputed from the results when overrides are given or the run
    has no findings.json yet."""
    findings = run_dir / "findings.json"
    if not overrides and findings.exists():
        ids = set(NEURON_CLAIMS)
        for f in read_json(findings)["findings"]:
            if f["id"] in ids:
                typer.echo(f"{f['claim'][0].upper()}{f['claim'][1:]}: {f['verdict']}. {f['evidence']}")
        return

    _, ncfg, acfg = load_stage_configs(run_dir, overrides)
    for c in paper_claims(
        run_dir, p=acfg.claim_p, scorer=acfg.scorers[0], alpha=acfg.alpha, rm_objective=ncfg.primary_rm
    ):
        typer.echo(c.statement().replace("**", ""))


def ablate(run_dir: RunDir, overrides: Overrides = None) -> None:
    """Ablate the run's neuron sets and random controls; write ablation.csv and influence.json."""
    from rmtension.study import run_study  # noqa: PLC0415 (the study imports every stage: seconds the other commands skip)

    study, _, _ = load_stage_configs(run_dir, overrides)
    run_study(study, run_dir, only=("ablation",), force=("ablation",), report=False)
    typer.echo(f"wrote {Path(run_dir) / 'ablation.csv'}")


def mount(root: typer.Typer) -> None:
    """Add `neurons score|select|overlap|claims` and `ablate` to the `rmtension` command."""
    root.add_typer(
        app, name="neurons", help="Score MLP neurons, select objective neuron sets, measure their overlap."
    )
    root.command("ablate")(ablate)
