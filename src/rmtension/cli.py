"""The `rmtension` command. Every user-facing error is one line on stderr and a non-zero exit.

Imports inside functions: the CLI answers --help and a bad argument in under a second.
"""

from __future__ import annotations

import sys

import typer

from rmtension.errors import RmtensionError

app = typer.Typer(
    name="rmtension",
    help="Helpfulness/harmlessness tension in reward models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def study(
    config: str = typer.Option("configs/default.yaml", "--config", "-c", help="Study config (YAML)."),
    out: str = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<name>)."),
    data: str = typer.Option(
        None,
        "--data",
        help="HH-RLHF folder, official layout (data.path; default: $RMTENSION_DATA, then the hub).",
    ),
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides, e.g. train.lr=1e-4 train.seeds=[0,1]"
    ),
    resume: bool = typer.Option(
        True, "--resume/--fresh", help="Reuse completed stages and checkpoints (default)."
    ),
    help_config: bool = typer.Option(
        False, "--help-config", help="Print every config key with its type, default and meaning, by section."
    ),
) -> None:
    """Run the whole study: data, training (3 objectives x seeds), evaluation, analyses, report."""
    import shutil
    from pathlib import Path

    from rmtension.config import describe_config, load_config, resolve_data_path
    from rmtension.data.objectives import check_source

    if help_config:
        print("\n".join(describe_config()))
        return
    cfg = load_config(config, ([f"data.path={data}"] if data else []) + (overrides or []))
    check_source(
        cfg.data, resolve_data_path(cfg.data), probe=True
    )  # no data: one line now, before torch loads
    from rmtension.run import dist
    from rmtension.study import run_study

    if not resume and out and Path(out).exists():
        dist.main_only(shutil.rmtree, out)  # once, before any process writes there
    run_study(cfg, out)


@app.command()
def report(run_dir: str = typer.Argument(..., help="A run directory written by `rmtension study`.")) -> None:
    """Rebuild report.md and report.html from the files in RUN_DIR."""
    from pathlib import Path

    from rmtension.errors import RmtensionError
    from rmtension.study import write_study_report

    if not (Path(run_dir) / "config.yaml").exists():
        raise RmtensionError(f"{run_dir}: not a run directory (no config.yaml)")
    print(write_study_report(run_dir))


@app.command()
def compare(
    run_dirs: list[str] = typer.Argument(
        ..., help="Two or more run directories written by `rmtension study`."
    ),
    out: str = typer.Option("runs/compare", "--out", "-o", help="Folder for the comparison report."),
) -> None:
    """Put several runs side by side in one report (e.g. MiniLM vs SmolLM2, or different mix ratios)."""
    from rmtension.report.compare import compare_runs
    from rmtension.study import findings

    print(compare_runs(run_dirs, out, findings))


def _mount(command: str | None = None) -> None:
    """Sub-command groups live next to the code they drive. `bench` alone imports no torch, so
    a batch-only bench server starts (and restarts) in about a second."""
    from rmtension.bench.cli import app as bench_app

    app.add_typer(bench_app, name="bench")  # `bench serve|add-reviewer|revoke|load-batch|...`
    if command == "bench":
        return
    from rmtension.data.cli import app as data_app
    from rmtension.judge.cli import mount as mount_judge
    from rmtension.loop.cli import app as loop_app
    from rmtension.neurons.cli import mount as mount_neurons
    from rmtension.policy.cli import app as optimise_app

    app.add_typer(data_app, name="data", help="Inspect preference data.")
    mount_neurons(app)  # `neurons score|select|overlap|claims`, `ablate`
    app.add_typer(optimise_app)  # `policy sample`, `bon`, `rl`
    mount_judge(app)  # `judge eval|dissect`
    app.add_typer(loop_app, name="loop", help="The steering loop: run, report, detectors, capability set.")


OWN_COMMANDS = ("study", "report", "compare")
"""The commands defined here. They run without the sub-command groups, whose modules import torch:
a `rmtension study` that has no data says so in about half a second."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] not in OWN_COMMANDS:
        _mount(args[0] if args else None)
    try:
        app(args=args, standalone_mode=False)
        from rmtension.run import dist

        dist.shutdown()  # under a distributed launch: tear the process group down before exiting
    except RmtensionError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # typer/click exits for --help and usage errors
        return int(e.code or 0)
    except Exception as e:  # click usage errors etc.
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
