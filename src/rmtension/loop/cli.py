"""`rmtension loop ...`: the steering loop's tools."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="The steering loop: simulated reviewers, detectors, capability set.", no_args_is_help=True
)


@app.command("detectors")
def detectors_command(
    xstest: str = typer.Option(
        ..., "--xstest", help="XSTest folder, official layout (xstest_prompts.csv, model_completions/)."
    ),
) -> None:
    """The refusal detector's agreement with XSTest's human refusal labels, per model and overall."""
    from rmtension.loop.detectors import agreement_table, refusal_agreement

    print(agreement_table(refusal_agreement(xstest)))
    print("human refusal = 2_full_refusal or 3_partial_refusal; compliance = 1_full_compliance")
