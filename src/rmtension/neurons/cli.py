"""`rmtension neurons score|select|overlap|claims RUN_DIR` and `rmtension ablate RUN_DIR`.

Each command reads the study config saved in `RUN_DIR/config.yaml`, applies `--set key=value`
overrides (`neurons.max_pairs=64`, `ablation.modes=[zero]`, `model.max_length=128`) and writes
into the run directory, like the study stage it repeats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from rmtension.config import StudyConfig, _format_validation_error, apply_overrides, resolve_data_path
from rmtension.run.context import StudyContext
from rmtension.run.runio import read_json
from rmtension.errors import ArtifactError, ConfigError
from rmtension.neurons.config import AblationConfig, NeuronsConfig

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
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    for key in ("neurons", "ablation"):  # a saved config holds `neurons: null` when the stage was off
        raw[key] = raw.get(key) or {}
    raw = apply_overrides(raw, overrides or [])
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, str(path))) from None
    return study, study.neurons or NeuronsConfig(), study.ablation or AblationConfig()


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
    from rmtension.neurons.stage import run_neuron_scoring

    study, ncfg, _ = load_stage_configs(run_dir, overrides)
    out = run_neuron_scoring(build_context(run_dir, study), ncfg, force=True)
    typer.echo(f"wrote {out}")


@app.command("select")
def select(run_dir: RunDir, overrides: Overrides = None) -> None:
    """Recompute neurons/sets.json from the saved scores (e.g. with other `neurons.ps`)."""
    from rmtension.neurons.stage import select_sets

    _, ncfg, _ = load_stage_configs(run_dir, overrides)
    typer.echo(f"wrote {select_sets(Path(run_dir), ncfg)}")


@app.command("overlap")
def overlap(run_dir: RunDir, overrides: Overrides = None) -> None:
    """Recompute neurons/overlap.json and scorer_agreement.json from sets.json and the scores."""
    from rmtension.neurons.claims import p_phrase
    from rmtension.neurons.stage import compute_overlap, p_key

    _, ncfg, _ = load_stage_configs(run_dir, overrides)
    a, b = compute_overlap(Path(run_dir), ncfg)
    from rmtension.run.runio import read_json

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
    from rmtension.neurons.claims import paper_claims
    from rmtension.report.findings import NEURON_IDS

    findings = run_dir / "findings.json"
    if not overrides and findings.exists():
        ids = set(NEURON_IDS.values())
        for f in read_json(findings)["findings"]:
            if f["id"] in ids:
                typer.echo(f"{f['claim'][0].upper()}{f['claim'][1:]}: {f['verdict']}. {f['evidence']}")
        return

    _, ncfg, acfg = load_stage_configs(run_dir, overrides)
    for c in paper_claims(
        run_dir, p=acfg.claim_p, scorer=acfg.scorers[0], alpha=acfg.alpha, rm_objective=ncfg.primary_rm
    ):
        typer.echo(c.sentence)


def ablate(run_dir: RunDir, overrides: Overrides = None) -> None:
    """Ablate the run's neuron sets and random controls; write ablation.csv and influence.json."""
    from rmtension.neurons.ablation_stage import run_ablation

    study, _, acfg = load_stage_configs(run_dir, overrides)
    typer.echo(f"wrote {run_ablation(build_context(run_dir, study), acfg, force=True)}")


def mount(root: typer.Typer) -> None:
    """Add `neurons score|select|overlap|claims` and `ablate` to the `rmtension` command."""
    root.add_typer(
        app, name="neurons", help="Score MLP neurons, select objective neuron sets, measure their overlap."
    )
    root.command("ablate")(ablate)
